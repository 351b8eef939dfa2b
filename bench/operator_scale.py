"""The operator at scale against the raw API server: 1,000 ReinforcementSteps at once.

A local cluster (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok) with `nodes`
fake GPU nodes of 8 GPUs (half A100, half H100; steps alternate between the two types), a READY
Dataset and a base Model. Two phases, in this order, in the same run:

1. **Operator.** `python -m rft_operator` as a subprocess under the admin kubeconfig. The client
   creates `steps` ReinforcementSteps with `concurrency` threads, all submitted at once. Each step's
   pod carries kwok annotations that make it succeed at once with a valid trainer result summary
   (its termination message), so every step goes CREATING -> PENDING -> (RUNNING) -> COMPLETED and
   registers its own output Model.
2. **Raw.** With the operator stopped, the client creates the same number of Jobs directly (the
   operator's own Job manifests, built by its builder, without owner references), with the same
   concurrency, in another namespace, and waits until all have completed.

Times. Kubernetes timestamps have one-second resolution, so every time is the client's own
monotonic clock (CLOCK_MONOTONIC, shared by all processes of the machine): the creating thread
records when each create call returned; a separate watcher process (`watch` below) holds watches
on Jobs and ReinforcementSteps and records when each Job first appeared, when each Job completed,
and when each step was first seen in each phase. "Creation to Job" is (Job first seen by the
watch) - (the step's create call returned): it includes the watch's delivery delay, so it slightly
overstates the operator's latency, never understates it.

Requests. `apiserver_request_total` from the API server's own `GET /metrics` (as admin), before and
after each phase, by verb and resource. The operator phase's counts include the controller-manager,
scheduler and kwok working on the same Jobs and pods, and the benchmark's own client; the raw phase
has the same Jobs and pods without the operator. The operator's share of each (verb, resource) it
sends at all is therefore (operator phase - the benchmark's own requests) - (raw phase - the
benchmark's own requests), per step. Events are the exception: the Job controller's recorder
aggregates and rate-limits its own, so their number moves between phases; the operator's are
counted from the Event objects it reported. The operator's own counts (`rft_api_writes_total`,
`rft_api_reads_total` on its /metrics) are reported beside them as a cross-check.

Run: `python -m bench.operator_scale --steps 1000 --nodes 100` (or `python -m bench operator`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from kubernetes import client, config
from kubernetes.watch.watch import iter_resp_lines
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from rft.api import GROUP, VERSION, Dataset, Model, ReinforcementStep
from rft.api.common import WORKLOAD_SERVICE_ACCOUNT_LABEL
from rft_devcluster.binaries import ensure_binaries
from rft_devcluster.controlplane import ClusterOptions, ControlPlane
from rft_devcluster.fake_trainer import DATASET_DIGEST, fake_pod, success_message
from rft_devcluster.handle import ClusterHandle
from rft_devcluster.operator_process import OperatorProcess
from rft_devcluster.waiting import free_port, wait_for
from rft_operator import naming
from rft_operator.accelerators import AcceleratorMap
from rft_operator.builders.jobs import build_training_job, trainer_config
from rft_operator.config import OperatorConfig

from bench.common import Row, cpu_model, format_table, write_result

NAME = "operator_scale"
REPO = Path(__file__).resolve().parents[1]
OPERATOR_NAMESPACE = "bench-operator"
RAW_NAMESPACE = "bench-raw"
ACCELERATORS = ("NVIDIA_A100_80GB", "NVIDIA_H100_80GB")  # the two kwok node profiles
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"})
COMPONENTS = ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kwok")

# The controller-manager's and scheduler's clients are rate-limited to 20 and 50 requests/s by
# default: with them, the benchmark would measure those limits (a Job costs the Job controller
# about six requests), not the operator. Large clusters raise them the same way.
CONTROLLER_MANAGER_ARGS = ("--kube-api-qps=1000", "--kube-api-burst=2000", "--concurrent-job-syncs=20")
SCHEDULER_ARGS = ("--kube-api-qps=1000", "--kube-api-burst=2000")

TARGET_P99_TO_JOB = 2.0
TARGET_THROUGHPUT_FRACTION = 0.5
TARGET_WRITES_PER_STEP = 6.0

RequestKey = tuple[str, str, str]  # (verb, group, resource[/subresource])
EVENTS_CREATE: RequestKey = ("POST", "", "events")
OPERATOR_COMPONENTS = ("rft-operator", "kopf")  # reportingComponent of the operator's Events


@dataclass
class Options:
    """What one run creates and how."""

    steps: int = 1000
    nodes: int = 100
    concurrency: int = 16
    """Client threads creating steps (and, in the raw phase, Jobs)."""
    workers: int = 32
    """The operator's reconcile workers (RFT_WORKERS; the operator's default too)."""
    operator_env: dict[str, str] = field(default_factory=dict)
    """Further RFT_* settings for the operator."""
    timeout: float = 900.0
    """Longest wait for all steps (or all raw Jobs) to finish."""
    settle_seconds: float = 2.0
    """Quiet time after the last completion before the 'after' snapshot."""
    controller_manager_args: tuple[str, ...] = CONTROLLER_MANAGER_ARGS
    scheduler_args: tuple[str, ...] = SCHEDULER_ARGS
    results_dir: Path | None = None
    work_dir: Path | None = None
    """Cluster state and logs (kept when given; a temporary directory otherwise)."""
    log: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr, flush=True))


# ---------------------------------------------------------------------------------------------
# Small helpers


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def distribution(values: Sequence[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
        "min": min(values) if values else math.nan,
    }


def machine() -> dict[str, Any]:
    """Cores, CPU model and memory, and the versions that matter here (no torch import)."""
    import kopf  # noqa: PLC0415 - only for its version
    import kubernetes  # noqa: PLC0415

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kopf": getattr(kopf, "__version__", None) or _dist_version("kopf"),
        "kubernetes_client": kubernetes.__version__,
        "load_average": list(os.getloadavg()),
    }
    with contextlib.suppress(ValueError, OSError):
        info["memory_gib"] = round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)
    return info


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine_line(info: Mapping[str, Any]) -> str:
    memory = f", {info['memory_gib']} GiB" if "memory_gib" in info else ""
    load = "/".join(f"{x:.1f}" for x in info.get("load_average", []))
    return (
        f"machine: {info['cpu']}, {info['cores']} cores{memory}; Python {info['python']}; "
        f"kopf {info['kopf']}; load average at start {load}"
    )


def api_client(kubeconfig: Path, pool: int) -> client.ApiClient:
    """An admin client whose connection pool holds `pool` connections."""
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = max(pool, 4)
    return client.ApiClient(configuration)


def _data(response: Any) -> Any:
    return json.loads(response.data)


def _drain(response: Any) -> None:
    """Read a raw response: unread, it keeps its connection from the pool (a new TLS handshake)."""
    _ = response.data
    response.release_conn()


# ---------------------------------------------------------------------------------------------
# The API server's request counters


def apiserver_requests(api: client.ApiClient) -> Counter[RequestKey]:
    """`apiserver_request_total` summed over codes, scopes and versions, by (verb, group, resource)."""
    url = f"{api.configuration.host}/metrics"
    response = api.rest_client.pool_manager.request("GET", url, preload_content=True)
    if response.status != 200:
        raise RuntimeError(f"GET /metrics: HTTP {response.status}")
    return parse_request_counts(response.data.decode())


def parse_request_counts(text: str) -> Counter[RequestKey]:
    counts: Counter[RequestKey] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != "apiserver_request_total":
                continue
            labels = sample.labels
            resource = labels.get("resource", "")
            if labels.get("subresource"):
                resource = f"{resource}/{labels['subresource']}"
            key = (labels.get("verb", ""), labels.get("group", ""), resource)
            counts[key] += int(sample.value)
    return counts


def counter_delta(after: Counter[RequestKey], before: Counter[RequestKey]) -> Counter[RequestKey]:
    out: Counter[RequestKey] = Counter()
    for key in set(after) | set(before):
        diff = after.get(key, 0) - before.get(key, 0)
        if diff:
            out[key] = diff
    return out


def operator_samples(port: int) -> list[Sample]:
    """Every sample of the operator's /metrics, in one scrape (none when it cannot be read)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return []
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def operator_requests(samples: Sequence[Sample]) -> dict[str, int]:
    """The operator's own count of its API requests (`rft_api_writes_total`, `rft_api_reads_total`),
    by "verb resource" (the watch caches' hits are not requests)."""
    return {
        f"{sample.labels.get('verb')} {sample.labels.get('resource')}": int(sample.value)
        for sample in samples
        if sample.name in ("rft_api_writes_total", "rft_api_reads_total")
    }


def operator_metric(samples: Sequence[Sample], name: str) -> float:
    """The sum of the samples of one of the operator's counters (0 when it has none)."""
    return sum(sample.value for sample in samples if sample.name == name)


def operator_histogram(samples: Sequence[Sample], name: str) -> dict[float, float]:
    """A histogram of the operator's /metrics as {upper bound: cumulative count}."""
    return {float(sample.labels["le"]): sample.value for sample in samples if sample.name == f"{name}_bucket"}


def histogram_quantiles(after: Mapping[float, float], before: Mapping[float, float]) -> dict[str, Any]:
    """Bucket upper bounds holding the 50th, 95th and 99th percentiles of what was observed between
    two scrapes (a histogram only knows its buckets)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    out: dict[str, Any] = {"count": total}
    for q in (50, 95, 99):
        out[f"p{q}_at_most"] = next(
            (b for b, c in zip(bounds, counts, strict=True) if c >= total * q / 100), None
        )
    return out


def timeline(times: Mapping[str, float], start: float) -> list[int]:
    """How many of `times` fell in each second after `start`."""
    bins: list[int] = []
    for t in times.values():
        i = max(0, int(t - start))
        bins.extend([0] * (i + 1 - len(bins)))
        bins[i] += 1
    return bins


# ---------------------------------------------------------------------------------------------
# Processes: the operator, the watcher, the control plane's components


def _vm_hwm_kib(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


class Operator(OperatorProcess):
    """The operator as a child process (admin kubeconfig), its log in a file, its CPU and memory."""

    def __init__(self, kubeconfig: Path, log_path: Path, env: Mapping[str, str]) -> None:
        super().__init__(log_path, env={**os.environ, **env, "KUBECONFIG": str(kubeconfig)}, stop_timeout=20)
        self.process: psutil.Process | None = None

    def start(self, timeout: float = 60) -> None:
        super().start(timeout)
        assert self.proc is not None
        self.process = psutil.Process(self.proc.pid)

    def cpu_seconds(self) -> float:
        assert self.process is not None
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def rss_kib(self) -> int:
        assert self.process is not None
        return int(self.process.memory_info().rss // 1024)

    def peak_rss_kib(self) -> int:
        assert self.proc is not None
        return _vm_hwm_kib(self.proc.pid) or self.rss_kib()


class WatchProcess:
    """The watcher (`python -m bench.operator_scale watch`) as a child; what it saw, with times."""

    def __init__(self, kubeconfig: Path, namespace: str, kinds: Sequence[str]) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.operator_scale",
                "watch",
                "--kubeconfig",
                str(kubeconfig),
                "--namespace",
                namespace,
                "--kinds",
                ",".join(kinds),
            ],
            stdout=subprocess.PIPE,
            cwd=REPO,
            start_new_session=True,
        )
        self.seen: dict[tuple[str, str], dict[str, float]] = {}  # (kind, what) -> name -> time
        self.requests: Counter[RequestKey] = Counter()
        self.lags: dict[str, dict[str, float]] = {}  # kind -> name -> seconds after creationTimestamp
        self.created: dict[str, dict[str, float]] = {}  # kind -> name -> creationTimestamp (epoch)
        self._ready: set[str] = set()
        self._kinds = set(kinds)
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            event = json.loads(raw)
            with self._cond:
                if "ready" in event:
                    self._ready.add(event["ready"])
                elif "request" in event:
                    verb, group, resource = event["request"]
                    self.requests[(verb, group, resource)] += 1
                else:
                    self.seen.setdefault((event["kind"], event["what"]), {}).setdefault(
                        event["name"], event["t"]
                    )
                    if "lag" in event:
                        self.lags.setdefault(event["kind"], {})[event["name"]] = event["lag"]
                        self.created.setdefault(event["kind"], {})[event["name"]] = event["created"]
                self._cond.notify_all()

    def wait_ready(self, timeout: float = 60) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._ready >= self._kinds, timeout):
                raise RuntimeError(f"watcher not ready after {timeout}s (ready: {sorted(self._ready)})")

    def count(self, kind: str, what: str) -> int:
        with self._cond:
            return len(self.seen.get((kind, what), {}))

    def times(self, kind: str, what: str) -> dict[str, float]:
        with self._cond:
            return dict(self.seen.get((kind, what), {}))

    def wait_count(
        self, kind: str, whats: Sequence[str], n: int, timeout: float, alive: Callable[[], bool]
    ) -> bool:
        """Wait until `n` objects of `kind` were seen in one of `whats`; False on timeout."""
        deadline = time.monotonic() + timeout

        def done() -> bool:
            names: set[str] = set()
            for what in whats:
                names |= set(self.seen.get((kind, what), {}))
            return len(names) >= n

        with self._cond:
            while not done():
                left = deadline - time.monotonic()
                if left <= 0 or not alive() or self.proc.poll() is not None:
                    return False
                self._cond.wait(min(left, 1.0))
        return True

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        self._reader.join(5)


def component_cpu() -> dict[str, float]:
    """CPU seconds so far of the control plane's processes (this process's children), by name."""
    out: dict[str, float] = {}
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            name = Path(child.cmdline()[0]).name if child.cmdline() else child.name()
            if name in COMPONENTS:
                times = child.cpu_times()
                out[name] = out.get(name, 0.0) + times.user + times.system
    return out


# ---------------------------------------------------------------------------------------------
# The watcher (runs in its own process so that the creating threads do not delay its clock)


def watch_main(kubeconfig: Path, namespace: str, kinds: Sequence[str]) -> None:
    lock = threading.Lock()

    def emit(payload: dict[str, Any]) -> None:
        line = json.dumps(payload)
        with lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    api = api_client(kubeconfig, 4)
    batch = client.BatchV1Api(api)
    custom = client.CustomObjectsApi(api)
    threads = []
    if "jobs" in kinds:
        threads.append(
            threading.Thread(
                target=_watch_forever,
                args=(
                    "jobs",
                    ("LIST", "batch", "jobs"),
                    lambda **kw: batch.list_namespaced_job(namespace, **kw),
                    _job_events,
                    emit,
                ),
                daemon=True,
            )
        )
    if "steps" in kinds:
        threads.append(
            threading.Thread(
                target=_watch_forever,
                args=(
                    "steps",
                    ("LIST", GROUP, "reinforcementsteps"),
                    lambda **kw: custom.list_namespaced_custom_object(
                        GROUP, VERSION, namespace, "reinforcementsteps", **kw
                    ),
                    _step_events,
                    emit,
                ),
                daemon=True,
            )
        )
    for thread in threads:
        thread.start()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    for thread in threads:
        thread.join()


def _timestamp(value: str | None) -> float:
    if not value:
        return math.nan
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _job_events(job: dict[str, Any]) -> Iterator[str]:
    yield "added"
    for cond in job.get("status", {}).get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed"):
            yield cond["type"].lower()


def _step_events(step: dict[str, Any]) -> Iterator[str]:
    yield "added"
    phase = step.get("status", {}).get("phase")
    if phase:
        yield phase


def _watch_forever(
    kind: str,
    list_key: RequestKey,
    list_fn: Callable[..., Any],
    events: Callable[[dict[str, Any]], Iterator[str]],
    emit: Callable[[dict[str, Any]], None],
) -> None:
    emitted: set[tuple[str, str]] = set()

    def handle(obj: dict[str, Any]) -> None:
        now, wall = time.monotonic(), time.time()
        name = obj["metadata"]["name"]
        for what in events(obj):
            if (name, what) not in emitted:
                emitted.add((name, what))
                event = {"t": now, "kind": kind, "name": name, "what": what}
                if what == "added":  # when the API server made it (1 s steps), how late the watch was
                    event["created"] = _timestamp(obj["metadata"].get("creationTimestamp"))
                    event["lag"] = wall - event["created"]
                emit(event)

    resource_version: str | None = None
    announced = False
    while True:
        try:
            if resource_version is None:
                emit({"request": list(list_key)})
                listing = _data(list_fn(_preload_content=False))
                for item in listing["items"]:
                    handle(item)
                resource_version = listing["metadata"]["resourceVersion"]
            emit({"request": ["WATCH", list_key[1], list_key[2]]})
            response = list_fn(
                watch=True,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=3600,
                _preload_content=False,
            )
            if not announced:
                emit({"ready": kind})
                announced = True
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                event = json.loads(line)
                if event["type"] == "ERROR":
                    resource_version = None  # expired: list again
                    break
                obj = event["object"]
                resource_version = obj["metadata"]["resourceVersion"]
                if event["type"] in ("ADDED", "MODIFIED"):
                    handle(obj)
        except Exception:  # a broken stream is re-opened
            time.sleep(0.2)


# ---------------------------------------------------------------------------------------------
# The objects


def step_name(i: int) -> str:
    return f"s{i:05d}"


def step_body(i: int) -> dict[str, Any]:
    name = step_name(i)
    output = f"s3://bench/rft/models/{name}-out/"
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ReinforcementStep",
        "metadata": {"name": name},
        "spec": {
            "dataset": "ds",
            "model": "base",
            "outputModel": f"{name}-out",
            "accelerator": {"type": ACCELERATORS[i % len(ACCELERATORS)], "count": 1},
            "podMetadata": {"annotations": fake_pod(0, success_message(output))},
        },
    }


def base_model_body() -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Model",
        "metadata": {"name": "base"},
        "spec": {"kind": "base", "location": "s3://bench/rft/models/base/"},
    }


def dataset_body() -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Dataset",
        "metadata": {"name": "ds"},
        "spec": {"source": "s3://bench/rft/datasets/ds.jsonl"},
    }


DATASET_STATUS = {"phase": "READY", "rows": 1000, "format": "samples", "digest": DATASET_DIGEST}
# The base Model as its check Job leaves it (pinned), which the bench does not run: kwok nodes have
# no bucket behind them, and the check is once per Model, not per step.
BASE_MODEL_STATUS = {"phase": "READY", "observedGeneration": 1, "filesDigest": DATASET_DIGEST}


def raw_job(i: int, cfg: OperatorConfig, accelerators: AcceleratorMap) -> dict[str, Any]:
    """Step i's training Job exactly as the operator builds it, minus the owner reference."""
    body = step_body(i)
    body["metadata"] = {"name": f"r{i:05d}", "namespace": RAW_NAMESPACE, "uid": f"raw-{i}", "generation": 1}
    step = ReinforcementStep.model_validate(body)
    dataset = Dataset.model_validate(
        {**dataset_body(), "metadata": {"name": "ds", "namespace": RAW_NAMESPACE}, "status": DATASET_STATUS}
    )
    base = Model.model_validate(
        {
            **base_model_body(),
            "metadata": {"name": "base", "namespace": RAW_NAMESPACE, "generation": 1},
            "status": BASE_MODEL_STATUS,
        }
    )
    output = f"s3://bench/rft/models/{step.spec.output_model}/"
    manifest = build_training_job(
        step, trainer_config(step, dataset, base, base, output, cfg), accelerators, cfg
    )
    del manifest["metadata"]["ownerReferences"]
    return manifest


# ---------------------------------------------------------------------------------------------
# The run


def create_all(call: Callable[[int], object], n: int, concurrency: int) -> list[tuple[float, float]]:
    """Call `call(i)` for i < n from `concurrency` threads, all submitted at once; (sent, returned)."""
    times: list[tuple[float, float]] = [(math.nan, math.nan)] * n

    def one(i: int) -> None:
        sent = time.monotonic()
        call(i)
        times[i] = (sent, time.monotonic())

    with ThreadPoolExecutor(concurrency, thread_name_prefix="create") as pool:
        list(pool.map(one, range(n)))
    return times


def _settle(
    api: client.ApiClient, keys: Callable[[RequestKey], bool], quiet: float, limit: float = 30
) -> None:
    """Wait until the request counters selected by `keys` stop moving for `quiet` seconds."""
    deadline = time.monotonic() + limit
    last = {k: v for k, v in apiserver_requests(api).items() if keys(k)}
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = {k: v for k, v in apiserver_requests(api).items() if keys(k)}
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            return


def _operator_keys(key: RequestKey) -> bool:
    verb, group, resource = key
    # Events too: the operator posts them in the background, after the writes they report on
    return verb in WRITE_VERBS and (
        group == GROUP or (group == "batch" and verb == "POST") or (group == "" and resource == "events")
    )


def _ensure_namespace(core: client.CoreV1Api, name: str) -> None:
    core.create_namespace({"metadata": {"name": name}})  # type: ignore[arg-type]
    wait_for(
        lambda: core.read_namespaced_service_account("default", name),
        timeout=60,
        what=f"ServiceAccount {name}/default",
    )
    # The steps run as `default`: the operator's workload policy wants the admin's label on it.
    core.patch_namespaced_service_account(
        "default", name, {"metadata": {"labels": {WORKLOAD_SERVICE_ACCOUNT_LABEL: "true"}}}
    )


def events_by_component(core: client.CoreV1Api, namespace: str) -> Counter[Any]:
    """Event objects in the namespace by the component that reported them."""
    items = _data(core.list_namespaced_event(namespace, _preload_content=False))["items"]
    return Counter(
        e.get("reportingComponent") or (e.get("source") or {}).get("component") or "?" for e in items
    )


def _phase(custom: client.CustomObjectsApi, namespace: str, plural: str, name: str) -> str | None:
    obj = _data(
        custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name, _preload_content=False)
    )
    phase: str | None = obj.get("status", {}).get("phase")
    return phase


def _install_crds(cluster: ClusterHandle) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(REPO / "crds"))


def run_operator_phase(cluster: ClusterHandle, options: Options, work_dir: Path) -> dict[str, Any]:
    log = options.log
    n = options.steps
    api = api_client(cluster.kubeconfig, options.concurrency + 2)
    custom = client.CustomObjectsApi(api)
    core = client.CoreV1Api(api)
    _ensure_namespace(core, OPERATOR_NAMESPACE)
    custom.create_namespaced_custom_object(GROUP, VERSION, OPERATOR_NAMESPACE, "models", base_model_body())
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, OPERATOR_NAMESPACE, "models", "base", {"status": BASE_MODEL_STATUS}
    )
    custom.create_namespaced_custom_object(GROUP, VERSION, OPERATOR_NAMESPACE, "datasets", dataset_body())
    custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        OPERATOR_NAMESPACE,
        "datasets",
        "ds",
        {"status": {**DATASET_STATUS, "observedGeneration": 1}},
    )
    metrics_port = free_port()
    env = {
        "RFT_WORKERS": str(options.workers),
        "RFT_METRICS_PORT": str(metrics_port),
        "RFT_TRAINER_IMAGE": "ghcr.io/rft-operator/rft-trainer:bench",
        **options.operator_env,
    }
    operator = Operator(cluster.kubeconfig, work_dir / "operator.log", env)
    watcher = WatchProcess(cluster.kubeconfig, OPERATOR_NAMESPACE, ["jobs", "steps"])
    try:
        operator.start()
        wait_for(
            lambda: _phase(custom, OPERATOR_NAMESPACE, "models", "base") == "READY",
            timeout=60,
            what="the base Model READY (the operator is working)",
        )
        watcher.wait_ready()
        time.sleep(1.0)  # let the start-up settle
        log(f"[{NAME}] operator up (pid {operator.proc.pid if operator.proc else '?'}); creating {n} steps")
        events_before = events_by_component(core, OPERATOR_NAMESPACE)
        before = apiserver_requests(api)
        scrape = operator_samples(metrics_port)
        before_writes = operator_requests(scrape)
        dropped_before = operator_metric(scrape, "rft_events_dropped_total")
        before_to_job = operator_histogram(scrape, "rft_step_time_to_job_seconds")
        before_cpu = operator.cpu_seconds()
        before_components = component_cpu()
        rss_before = operator.rss_kib()
        started = time.monotonic()
        created = create_all(
            lambda i: _drain(
                custom.create_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    OPERATOR_NAMESPACE,
                    "reinforcementsteps",
                    step_body(i),
                    _preload_content=False,
                )
            ),
            n,
            options.concurrency,
        )
        created_done = time.monotonic()
        log(f"[{NAME}] {n} steps created in {created_done - started:.1f}s; waiting for them to finish")
        finished = watcher.wait_count(
            "steps", ("JOB_STATE_COMPLETED", "JOB_STATE_FAILED"), n, options.timeout, operator.alive
        )
        ended = time.monotonic()
        if not finished:
            log(
                f"[{NAME}] only {watcher.count('steps', 'JOB_STATE_COMPLETED')} of {n} steps completed "
                f"in {options.timeout:.0f}s; operator log tail:\n{operator.tail()}"
            )
        _settle(api, _operator_keys, options.settle_seconds, limit=120)
        after = apiserver_requests(api)
        scrape = operator_samples(metrics_port)
        after_writes = operator_requests(scrape)
        events_dropped = operator_metric(scrape, "rft_events_dropped_total") - dropped_before
        after_to_job = operator_histogram(scrape, "rft_step_time_to_job_seconds")
        events = counter_delta(events_by_component(core, OPERATOR_NAMESPACE), events_before)
        cpu = operator.cpu_seconds() - before_cpu
        after_components = component_cpu()
        peak = operator.peak_rss_kib()
        rss_after = operator.rss_kib()
        log(f"[{NAME}] operator phase: {ended - started:.1f}s, operator CPU {cpu:.1f}s")
    finally:
        watcher.stop()
        operator.stop()
        api.close()  # type: ignore[no-untyped-call]
    failed = watcher.times("steps", "JOB_STATE_FAILED")
    own = Counter({("POST", GROUP, "reinforcementsteps"): n}) + watcher.requests
    return {
        "steps": n,
        "created": {step_name(i): t for i, t in enumerate(created)},
        "jobs_added": watcher.times("jobs", "added"),
        "jobs_complete": watcher.times("jobs", "complete"),
        "phases": {
            phase: watcher.times("steps", phase)
            for phase in ("JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_COMPLETED", "JOB_STATE_FAILED")
        },
        "failed": sorted(failed),
        "finished": finished,
        "seconds": ended - started,
        "create_seconds": created_done - started,
        "requests": counter_delta(after, before),
        "own_requests": own,
        "events_by_component": dict(events),
        "events_dropped": events_dropped,
        "watch_lag": {kind: dict(lags) for kind, lags in watcher.lags.items()},
        "created_at": {kind: dict(created) for kind, created in watcher.created.items()},
        "operator_time_to_job": histogram_quantiles(after_to_job, before_to_job),
        "operator_requests": {
            k: v - before_writes.get(k, 0) for k, v in after_writes.items() if v - before_writes.get(k, 0)
        },
        "operator_cpu_seconds": cpu,
        "operator_rss_kib": {"before": rss_before, "after": rss_after, "peak": peak},
        "component_cpu_seconds": {
            k: after_components.get(k, 0.0) - before_components.get(k, 0.0) for k in after_components
        },
    }


def run_raw_phase(cluster: ClusterHandle, options: Options) -> dict[str, Any]:
    log = options.log
    n = options.steps
    api = api_client(cluster.kubeconfig, options.concurrency + 2)
    batch = client.BatchV1Api(api)
    _ensure_namespace(client.CoreV1Api(api), RAW_NAMESPACE)
    cfg = OperatorConfig(trainer_image="ghcr.io/rft-operator/rft-trainer:bench")
    accelerators = AcceleratorMap.load(None)
    manifests = [raw_job(i, cfg, accelerators) for i in range(n)]
    watcher = WatchProcess(cluster.kubeconfig, RAW_NAMESPACE, ["jobs"])
    try:
        watcher.wait_ready()
        before = apiserver_requests(api)
        before_components = component_cpu()
        log(f"[{NAME}] creating {n} Jobs directly")
        started = time.monotonic()
        created = create_all(
            lambda i: _drain(
                batch.create_namespaced_job(RAW_NAMESPACE, manifests[i], _preload_content=False)  # type: ignore[arg-type]
            ),
            n,
            options.concurrency,
        )
        created_done = time.monotonic()
        finished = watcher.wait_count("jobs", ("complete", "failed"), n, options.timeout, lambda: True)
        ended = time.monotonic()
        _settle(
            api, lambda k: k[0] in WRITE_VERBS and k[2].startswith(("jobs", "pods")), options.settle_seconds
        )
        after = apiserver_requests(api)
        after_components = component_cpu()
        log(
            f"[{NAME}] raw phase: {n} Jobs created in {created_done - started:.1f}s, "
            f"all complete after {ended - started:.1f}s"
        )
    finally:
        watcher.stop()
        api.close()  # type: ignore[no-untyped-call]
    own = Counter({("POST", "batch", "jobs"): n}) + watcher.requests
    return {
        "jobs": n,
        "created": {manifests[i]["metadata"]["name"]: t for i, t in enumerate(created)},
        "jobs_complete": watcher.times("jobs", "complete"),
        "watch_lag": {kind: dict(lags) for kind, lags in watcher.lags.items()},
        "finished": finished,
        "seconds": ended - started,
        "create_seconds": created_done - started,
        "requests": counter_delta(after, before),
        "own_requests": own,
        "component_cpu_seconds": {
            k: after_components.get(k, 0.0) - before_components.get(k, 0.0) for k in after_components
        },
    }


def run(options: Options) -> tuple[list[Row], dict[str, Any]]:
    """Start the cluster, run both phases, summarize; the table rows and the JSON payload."""
    info = machine()
    log = options.log
    with contextlib.ExitStack() as stack:
        if options.work_dir is None:
            work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-operator-")))
        else:
            work_dir = options.work_dir
            shutil.rmtree(work_dir / "cluster", ignore_errors=True)
            work_dir.mkdir(parents=True, exist_ok=True)
        bin_dir = ensure_binaries()
        log(f"[{NAME}] starting a cluster with {options.nodes} kwok GPU nodes in {work_dir}")
        cluster_options = ClusterOptions(
            gpu_nodes=options.nodes,
            local_node=None,
            startup_timeout=300,
            controller_manager_args=options.controller_manager_args,
            scheduler_args=options.scheduler_args,
        )
        cluster = stack.enter_context(ControlPlane(work_dir / "cluster", bin_dir, cluster_options))
        _install_crds(cluster)
        operator_phase = run_operator_phase(cluster, options, work_dir)
        raw_phase = run_raw_phase(cluster, options)
    return summarize(options, info, operator_phase, raw_phase)


# ---------------------------------------------------------------------------------------------
# Figures


def _rate(n: int, start: float, end: float) -> float:
    return n / (end - start) if end > start else math.nan


def _label(key: RequestKey) -> str:
    verb, group, resource = key
    return f"{verb} {group + '/' if group else ''}{resource}"


def _per_item(counts: Mapping[RequestKey, float], n: int) -> dict[str, float]:
    return {_label(key): round(v / n, 3) for key, v in sorted(counts.items())}


def operator_may_send(key: RequestKey) -> bool:
    """Requests the operator makes for steps (others send some of them too: see `attribute`)."""
    verb, group, resource = key
    if group == GROUP:
        return True
    if (group, resource) == ("batch", "jobs"):
        return verb in ("GET", "LIST", "POST", "PATCH", "DELETE")
    if (group, resource) == ("", "pods"):
        return verb in ("GET", "LIST")
    if (group, resource) == ("", "events"):
        return verb == "POST"  # the operator never updates an Event
    return False


def attribute(
    operator_phase: Mapping[str, Any], raw_phase: Mapping[str, Any]
) -> tuple[dict[RequestKey, float], dict[RequestKey, float]]:
    """Per step: all requests of the operator phase, and the operator's share of them.

    The share counts only requests the operator makes at all (`operator_may_send`); of those,
    what the raw phase's Jobs caused per Job (the Job controller's Events, say) is subtracted.
    The rest (pod status, Job status, bindings) is the same Jobs' work in both phases, noisy
    because its count depends on timing (how many status updates get merged).
    """
    n_op, n_raw = operator_phase["steps"], raw_phase["jobs"]
    op = counter_delta(operator_phase["requests"], operator_phase["own_requests"])
    raw = counter_delta(raw_phase["requests"], raw_phase["own_requests"])
    total = {k: v / n_op for k, v in operator_phase["requests"].items()}
    share: dict[RequestKey, float] = {}
    for key in set(op) | set(raw):
        if not operator_may_send(key):
            continue
        value = op.get(key, 0) / n_op - raw.get(key, 0) / n_raw
        if abs(value) >= 0.005:
            share[key] = value
    if "events_by_component" in operator_phase:
        # The Job controller's Events vary with timing (its recorder aggregates and rate-limits),
        # so the operator's are counted from the Event objects it reported.
        events = operator_phase["events_by_component"]
        share[EVENTS_CREATE] = sum(events.get(c, 0) for c in OPERATOR_COMPONENTS) / n_op
    return total, share


def summarize(
    options: Options, info: dict[str, Any], operator_phase: dict[str, Any], raw_phase: dict[str, Any]
) -> tuple[list[Row], dict[str, Any]]:
    n = operator_phase["steps"]
    created = operator_phase["created"]
    jobs_added = operator_phase["jobs_added"]
    completed = operator_phase["phases"]["JOB_STATE_COMPLETED"]
    to_job = [
        jobs_added[naming.training_job_name(name)] - returned
        for name, (_, returned) in created.items()
        if naming.training_job_name(name) in jobs_added
    ]
    to_completed = [
        completed[name] - returned for name, (_, returned) in created.items() if name in completed
    ]
    create_latency = [returned - sent for sent, returned in created.values()]
    first_sent = min(sent for sent, _ in created.values())
    last_created = max(returned for _, returned in created.values())
    step_create_rate = _rate(n, first_sent, last_created)
    op_job_rate = _rate(len(jobs_added), first_sent, max(jobs_added.values(), default=first_sent))
    op_complete_rate = _rate(len(completed), first_sent, max(completed.values(), default=first_sent))

    raw_created = raw_phase["created"]
    raw_first = min(sent for sent, _ in raw_created.values())
    raw_create_rate = _rate(raw_phase["jobs"], raw_first, max(r for _, r in raw_created.values()))
    raw_complete = raw_phase["jobs_complete"]
    raw_complete_rate = _rate(len(raw_complete), raw_first, max(raw_complete.values(), default=raw_first))
    raw_to_complete = [
        raw_complete[name] - returned for name, (_, returned) in raw_created.items() if name in raw_complete
    ]

    total, share = attribute(operator_phase, raw_phase)
    share_writes = {k: v for k, v in share.items() if k[0] in WRITE_VERBS}
    writes_per_step = sum(share_writes.values())
    events_per_step = share_writes.get(EVENTS_CREATE, 0.0)
    object_writes_per_step = writes_per_step - events_per_step
    requests_per_step = sum(share.values())
    own = operator_phase["operator_requests"]
    own_writes = {k: v for k, v in own.items() if k.split()[0] in ("create", "patch", "delete", "apply")}
    own_reads = {k: v for k, v in own.items() if k not in own_writes}
    own_writes_per_step = sum(own_writes.values()) / n if own else math.nan
    own_requests_per_step = sum(own.values()) / n if own else math.nan
    cpu = operator_phase["operator_cpu_seconds"]
    peak_mib = operator_phase["operator_rss_kib"]["peak"] / 1024

    dist_job, dist_done = distribution(to_job), distribution(to_completed)
    own_to_job = operator_phase.get("operator_time_to_job", {})
    stamps = operator_phase.get("created_at", {})
    step_stamps, job_stamps = stamps.get("steps", {}), stamps.get("jobs", {})
    server_to_job = distribution(
        [
            job_stamps[naming.training_job_name(name)] - stamp
            for name, stamp in step_stamps.items()
            if naming.training_job_name(name) in job_stamps
        ]
    )
    job_lag = distribution(list(operator_phase["watch_lag"].get("jobs", {}).values()))
    raw_lag = distribution(list(raw_phase["watch_lag"].get("jobs", {}).values()))
    fraction = op_complete_rate / raw_create_rate
    rows = [
        Row(
            NAME,
            "creation -> Job, s (p50/p95/p99)",
            f"{dist_job['p50']:.2f} / {dist_job['p95']:.2f} / {dist_job['p99']:.2f}",
            target=f"p99 < {TARGET_P99_TO_JOB:g}",
            met=dist_job["p99"] < TARGET_P99_TO_JOB and len(to_job) == n,
            note=f"{len(to_job)}/{n} Jobs; max {dist_job['max']:.2f}",
        ),
        Row(
            NAME,
            "  operator's own view of it, s",
            (
                f"<= {own_to_job['p50_at_most']:g} / {own_to_job['p95_at_most']:g} / {own_to_job['p99_at_most']:g}"
                if own_to_job.get("p50_at_most") is not None
                else ""
            ),
            note="creationTimestamp (1 s steps) to its create call: rft_step_time_to_job_seconds buckets",
        ),
        Row(
            NAME,
            "  by the API server's timestamps, s",
            f"{server_to_job['p50']:.0f} / {server_to_job['p95']:.0f} / {server_to_job['p99']:.0f}",
            note="Job creationTimestamp - step creationTimestamp (whole seconds, +-1)",
        ),
        Row(
            NAME,
            "  watch delivery lag of Jobs, s (p50/p99)",
            f"{job_lag['p50']:.2f} / {job_lag['p99']:.2f}",
            note=f"seen - creationTimestamp (1 s steps); raw phase {raw_lag['p50']:.2f} / {raw_lag['p99']:.2f}",
        ),
        Row(
            NAME,
            "creation -> COMPLETED, s (p50/p95/p99)",
            f"{dist_done['p50']:.2f} / {dist_done['p95']:.2f} / {dist_done['p99']:.2f}",
            note=f"{len(to_completed)}/{n} COMPLETED; max {dist_done['max']:.2f}",
        ),
        Row(
            NAME,
            "steps COMPLETED/s vs Jobs created/s",
            f"{op_complete_rate:.1f}",
            f"{raw_create_rate:.1f}",
            f"{fraction:.2f}x",
            f">= {TARGET_THROUGHPUT_FRACTION:g}x",
            fraction >= TARGET_THROUGHPUT_FRACTION,
            f"{n} of each, concurrency {options.concurrency}",
        ),
        Row(
            NAME,
            "steps COMPLETED/s vs Jobs completed/s",
            f"{op_complete_rate:.1f}",
            f"{raw_complete_rate:.1f}",
            f"{op_complete_rate / raw_complete_rate:.2f}x",
            note="raw: same Jobs through controller-manager, scheduler, kwok",
        ),
        Row(
            NAME,
            "Jobs created/s: operator vs client",
            f"{op_job_rate:.1f}",
            f"{raw_create_rate:.1f}",
            f"{op_job_rate / raw_create_rate:.2f}x",
            note=f"steps were created at {step_create_rate:.0f}/s",
        ),
        Row(
            NAME,
            "API writes per step (operator)",
            f"{writes_per_step:.2f}",
            f"{own_writes_per_step:.2f}" if own_writes else "",
            target=f"<= {TARGET_WRITES_PER_STEP:g}",
            met=writes_per_step <= TARGET_WRITES_PER_STEP + 0.005,
            note=f"{object_writes_per_step:.2f} to objects + {events_per_step:.2f} Events "
            f"({operator_phase.get('events_dropped', 0):.0f} Events dropped); peer: operator's count",
        ),
        Row(
            NAME,
            "API writes per step, Events apart",
            f"{object_writes_per_step:.2f}",
            target=f"<= {TARGET_WRITES_PER_STEP:g}",
            met=object_writes_per_step <= TARGET_WRITES_PER_STEP + 0.005,
            note="Job, Model, Model status, one step status per phase",
        ),
        Row(
            NAME,
            "API requests per step (operator)",
            f"{requests_per_step:.1f}",
            f"{own_requests_per_step:.1f}" if own else "",
            note=f"all clients: {sum(total.values()):.1f} per step",
        ),
        Row(
            NAME,
            "operator CPU seconds",
            f"{cpu:.1f}",
            note=f"{cpu / n * 1000:.1f} ms per step",
        ),
        Row(
            NAME,
            "operator peak RSS, MiB",
            f"{peak_mib:.0f}",
            note=f"{operator_phase['operator_rss_kib']['before'] / 1024:.0f} MiB before the burst",
        ),
    ]
    payload = {
        "benchmark": NAME,
        "machine": info,
        "options": {
            "steps": options.steps,
            "nodes": options.nodes,
            "gpus": options.nodes * 8,
            "concurrency": options.concurrency,
            "workers": options.workers,
            "operator_env": options.operator_env,
            "controller_manager_args": list(options.controller_manager_args),
            "scheduler_args": list(options.scheduler_args),
        },
        "method": {
            "clock": "client monotonic clock; create-call return to first sight on a watch",
            "requests": "apiserver_request_total deltas; operator share = (operator phase - own) "
            "- (raw phase - own), per item; leases/nodes excluded",
        },
        "operator": {
            "seconds": operator_phase["seconds"],
            "create_seconds": operator_phase["create_seconds"],
            "finished": operator_phase["finished"],
            "failed_steps": operator_phase["failed"],
            "creation_to_job_seconds": dist_job,
            "creation_to_completed_seconds": dist_done,
            "step_create_call_seconds": distribution(create_latency),
            "step_create_rate": step_create_rate,
            "job_create_rate": op_job_rate,
            "completed_rate": op_complete_rate,
            "phases_seen": {k: len(v) for k, v in operator_phase["phases"].items()},
            "operator_time_to_job": own_to_job,
            "server_timestamps_to_job_seconds": server_to_job,
            "job_watch_lag_seconds": job_lag,
            "step_watch_lag_seconds": distribution(
                list(operator_phase["watch_lag"].get("steps", {}).values())
            ),
            "timeline_per_second": {
                "steps_created": timeline({k: r for k, (_, r) in created.items()}, first_sent),
                "jobs_seen": timeline(jobs_added, first_sent),
                "running_seen": timeline(operator_phase["phases"]["JOB_STATE_RUNNING"], first_sent),
                "completed_seen": timeline(completed, first_sent),
            },
            "cpu_seconds": cpu,
            "cpu_ms_per_step": cpu / n * 1000,
            "rss_kib": operator_phase["operator_rss_kib"],
            "writes_per_step": writes_per_step,
            "object_writes_per_step": object_writes_per_step,
            "events_per_step": events_per_step,
            "writes_per_step_by_resource": _per_item(share_writes, 1),
            "requests_per_step": requests_per_step,
            "requests_per_step_by_resource": _per_item(share, 1),
            "own_writes": own_writes,
            "own_writes_per_step": own_writes_per_step,
            "own_reads": own_reads,
            "own_requests_per_step": own_requests_per_step,
            "all_requests_per_step": _per_item(operator_phase["requests"], n),
            "component_cpu_seconds": operator_phase["component_cpu_seconds"],
        },
        "raw": {
            "seconds": raw_phase["seconds"],
            "create_seconds": raw_phase["create_seconds"],
            "finished": raw_phase["finished"],
            "job_create_rate": raw_create_rate,
            "completed_rate": raw_complete_rate,
            "creation_to_complete_seconds": distribution(raw_to_complete),
            "job_watch_lag_seconds": raw_lag,
            "timeline_per_second": {
                "jobs_created": timeline({k: r for k, (_, r) in raw_created.items()}, raw_first),
                "jobs_complete": timeline(raw_complete, raw_first),
            },
            "all_requests_per_job": _per_item(raw_phase["requests"], raw_phase["jobs"]),
            "component_cpu_seconds": raw_phase["component_cpu_seconds"],
        },
        "ratios": {
            "completed_vs_raw_create": fraction,
            "completed_vs_raw_completed": op_complete_rate / raw_complete_rate,
            "jobs_vs_raw_create": op_job_rate / raw_create_rate,
        },
        "load_average_end": list(os.getloadavg()),
    }
    write_result(NAME, payload, options.results_dir)
    return rows, payload


def writes_breakdown(payload: Mapping[str, Any]) -> str:
    """The operator's writes per step by resource, one line."""
    items = payload["operator"]["writes_per_step_by_resource"]
    return ", ".join(f"{k} {v:.2f}" for k, v in items.items())


def benchmark(quick: bool = False, argv: Sequence[str] = ()) -> list[Row]:
    """Entry point for `python -m bench` (quick: 100 steps on 10 nodes); `argv` takes this
    module's options (`--steps 1000 --nodes 100 ...`), for a runner that passes them on."""
    if argv:
        parser = argparse.ArgumentParser(prog="python -m bench operator")
        add_run_arguments(parser)
        options = options_from_args(parser.parse_args(list(argv)))
    else:
        options = Options(steps=100, nodes=10) if quick else Options()
    rows, _ = run(options)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.operator_scale", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command")
    watch = sub.add_parser("watch", help="(internal) watch Jobs and steps, print what was seen when")
    watch.add_argument("--kubeconfig", type=Path, required=True)
    watch.add_argument("--namespace", required=True)
    watch.add_argument("--kinds", default="jobs,steps")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    if args.command == "watch":
        watch_main(args.kubeconfig, args.namespace, args.kinds.split(","))
        return
    rows, payload = run(options_from_args(args))
    print(machine_line(payload["machine"]))
    print(format_table(rows))
    print(f"operator writes per step: {writes_breakdown(payload)}")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Options()
    parser.add_argument("--steps", type=int, default=defaults.steps, help="ReinforcementSteps (and raw Jobs)")
    parser.add_argument("--nodes", type=int, default=defaults.nodes, help="kwok GPU nodes (8 GPUs each)")
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency, help="client threads")
    parser.add_argument(
        "--workers", type=int, default=defaults.workers, help="operator workers (RFT_WORKERS)"
    )
    parser.add_argument(
        "--operator-env", action="append", default=[], metavar="RFT_NAME=VALUE", help="more operator settings"
    )
    parser.add_argument("--timeout", type=float, default=defaults.timeout)
    parser.add_argument(
        "--default-client-limits",
        action="store_true",
        help="keep the controller-manager's and scheduler's default client rate limits",
    )
    parser.add_argument("--work-dir", type=Path, help="keep the cluster's state and logs here")
    parser.add_argument("--results-dir", type=Path)


def options_from_args(args: argparse.Namespace) -> Options:
    env = dict(item.split("=", 1) for item in args.operator_env)
    return Options(
        steps=args.steps,
        nodes=args.nodes,
        concurrency=args.concurrency,
        workers=args.workers,
        operator_env=env,
        timeout=args.timeout,
        controller_manager_args=() if args.default_client_limits else CONTROLLER_MANAGER_ARGS,
        scheduler_args=() if args.default_client_limits else SCHEDULER_ARGS,
        work_dir=args.work_dir,
        results_dir=args.results_dir,
    )


if __name__ == "__main__":
    main()
