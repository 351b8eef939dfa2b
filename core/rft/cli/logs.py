"""The training log of a ReinforcementStep: a log file on the local dev node, else the pods/log API."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from rft.api.reinforcement_step import TERMINAL_PHASES, ReinforcementStep
from rft.sdk.errors import RftError
from rft.sdk.kube import KubeClient, translate_api_error

LOG_PATH_ANNOTATION = "rft-operator.io/log-path"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


def newest_pod(pods: list[Any]) -> Any:
    """The pod created last (a retried Job has several)."""
    return max(
        pods, key=lambda pod: (pod.metadata.creation_timestamp is not None, pod.metadata.creation_timestamp)
    )


def read_log_file(pod: Any, tail: int | None) -> str | None:
    """The pod's log from the file its annotation names, when that file is readable here."""
    annotations = pod.metadata.annotations or {}
    path_text = annotations.get(LOG_PATH_ANNOTATION)
    if not path_text:
        return None
    path = Path(path_text)
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    return tail_lines(text, tail)


def tail_lines(text: str, tail: int | None) -> str:
    """The last `tail` lines of `text` (all of it when `tail` is None)."""
    if tail is None:
        return text
    lines = text.splitlines(keepends=True)
    return "".join(lines[-tail:]) if tail > 0 else ""


def _training_pod(client: KubeClient, step: ReinforcementStep) -> Any:
    """The newest training pod of `step`; RftError when there is none."""
    namespace, name = step.metadata.namespace, step.metadata.name
    job = step.status.job_name
    if not job:
        phase = step.status.phase or "JOB_STATE_CREATING"
        raise RftError(f"reinforcement step {name!r} has no training Job yet (state {phase})")
    try:
        pods = client.core.list_namespaced_pod(
            namespace, label_selector=f"{JOB_NAME_LABEL}={job}", _request_timeout=client.request_timeout
        ).items
    except ApiException as error:
        raise translate_api_error(error, f"list pods of Job {job!r}") from error
    if not pods:
        raise RftError(f"Job {job!r} of reinforcement step {name!r} has no pods (yet, or any more)")
    return newest_pod(pods)


def step_log(client: KubeClient, step: ReinforcementStep, tail: int | None = None) -> str:
    """The log of the newest training pod of `step`."""
    namespace = step.metadata.namespace
    pod = _training_pod(client, step)
    from_file = read_log_file(pod, tail)
    if from_file is not None:
        return from_file
    try:
        text = client.core.read_namespaced_pod_log(
            pod.metadata.name, namespace, tail_lines=tail, _request_timeout=client.request_timeout
        )
    except ApiException as error:
        raise translate_api_error(error, f"read the log of pod {pod.metadata.name!r}") from error
    return str(text)


def follow_step_log(
    client: KubeClient,
    step: ReinforcementStep,
    refresh: Callable[[], ReinforcementStep],
    write: Callable[[str], None],
    tail: int | None = None,
    interval: float = 1.0,
) -> ReinforcementStep:
    """Print the newest training pod's log and keep printing what it appends until the step ends
    (or, through the pods/log API, until the container exits). Returns the step as last seen."""
    while not step.status.job_name and step.status.phase not in TERMINAL_PHASES:
        time.sleep(interval)  # no Job yet: the step is being validated or is queued
        step = refresh()
    pod = _training_pod(client, step)
    path_text = (pod.metadata.annotations or {}).get(LOG_PATH_ANNOTATION)
    if path_text and Path(path_text).is_file():
        return _follow_file(Path(path_text), step, refresh, write, tail, interval)
    try:
        response: Any = client.core.read_namespaced_pod_log(
            pod.metadata.name,
            step.metadata.namespace,
            follow=True,
            tail_lines=tail,
            _preload_content=False,
        )
    except ApiException as error:
        raise translate_api_error(error, f"follow the log of pod {pod.metadata.name!r}") from error
    try:
        for chunk in response.stream(decode_content=True):
            write(chunk.decode("utf-8", errors="replace"))
    finally:
        response.release_conn()
    return refresh()


def _follow_file(
    path: Path,
    step: ReinforcementStep,
    refresh: Callable[[], ReinforcementStep],
    write: Callable[[str], None],
    tail: int | None,
    interval: float,
) -> ReinforcementStep:
    text = path.read_text(encoding="utf-8", errors="replace")
    write(tail_lines(text, tail))
    offset = len(text.encode())
    while True:
        ended = step.status.phase in TERMINAL_PHASES
        with path.open("rb") as source:
            source.seek(offset)
            new = source.read()
        if new:
            offset += len(new)
            write(new.decode("utf-8", errors="replace"))
        if ended:
            return step  # read once more after the end was seen: nothing written before it is lost
        time.sleep(interval)
        step = refresh()
