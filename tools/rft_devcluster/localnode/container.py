"""One container as a host process group (in its pod's network namespace, if it has one): start,
watch, stop, and read its termination message."""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from rft_devcluster.localnode.netns import nsenter_prefix
from rft_devcluster.localnode.poddns import PodIdentity
from rft_devcluster.processes import ProcessRecord, parent_death_prefix

MAX_TERMINATION_MESSAGE_BYTES = 4096
# FallbackToLogsOnError uses the log's tail: at most 80 lines and 2048 bytes, like the kubelet.
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048


def now_rfc3339() -> str:
    """The current UTC time the way the API writes timestamps."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def exit_code_of(returncode: int) -> int:
    """A container runtime's exit code: killed by signal N means 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


@dataclass(frozen=True)
class ContainerLaunch:
    """Everything needed to start a container's process."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: Path
    log_path: Path
    termination_path: Path
    termination_policy: str = "File"
    # The pod's network namespace (/run/netns/<name>) to run in; None: the host's.
    netns: Path | None = None
    # The pod's hostname, /etc/hosts and /etc/resolv.conf (poddns.py); None: the host's.
    identity: PodIdentity | None = None

    def prefix(self) -> list[str]:
        """What goes before ``argv``: enter the pod's network namespace, then make its mount and
        UTS namespaces (``nsenter`` and ``unshare`` exec in place: the pid stays the container's)."""
        net = nsenter_prefix(self.netns) if self.netns is not None else []
        return [*net, *(self.identity.prefix() if self.identity is not None else [])]


@dataclass
class RunState:
    """A container's state as the pod status reports it."""

    name: str
    image: str
    restart_count: int = 0
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    running_since: str = ""
    terminated: dict[str, Any] | None = None
    last_terminated: dict[str, Any] | None = None
    ready: bool = False
    started: bool = False
    pid: int = 0

    def status(self) -> dict[str, Any]:
        """The containerStatuses entry."""
        state: dict[str, Any]
        if self.terminated is not None:
            state = {"terminated": self.terminated}
        elif self.running_since:
            state = {"running": {"startedAt": self.running_since}}
        else:
            waiting = {"reason": self.waiting_reason}
            if self.waiting_message:
                waiting["message"] = self.waiting_message
            state = {"waiting": waiting}
        entry: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.started,
            "state": state,
            "lastState": {"terminated": self.last_terminated} if self.last_terminated else {},
        }
        if self.pid:
            entry["containerID"] = f"localnode://{self.pid}"
        return entry


@dataclass
class ContainerProcess:
    """A running (or finished) container process, leader of its own process group."""

    launch: ContainerLaunch
    popen: subprocess.Popen[bytes]
    record: ProcessRecord
    started_at: str
    _term_sent_at: float | None = field(default=None)

    @classmethod
    def start(cls, launch: ContainerLaunch) -> ContainerProcess:
        """Start the container; its output is appended to its log file."""
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        launch.termination_path.parent.mkdir(parents=True, exist_ok=True)
        launch.termination_path.write_bytes(b"")
        launch.cwd.mkdir(parents=True, exist_ok=True)
        with launch.log_path.open("ab") as log:
            popen = subprocess.Popen(
                [*parent_death_prefix(), *launch.prefix(), *launch.argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(launch.env),
                cwd=launch.cwd,
                start_new_session=True,
            )
        create_time = 0.0
        with contextlib.suppress(psutil.Error):
            create_time = psutil.Process(popen.pid).create_time()
        record = ProcessRecord(name=launch.name, pid=popen.pid, create_time=create_time)
        return cls(launch=launch, popen=popen, record=record, started_at=now_rfc3339())

    def poll(self) -> int | None:
        """The exit code once the process has exited, else None."""
        code = self.popen.poll()
        return None if code is None else exit_code_of(code)

    def signal_group(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the container's whole process group."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def terminate(self) -> None:
        """Send SIGTERM (once); :meth:`kill_if_overdue` follows up with SIGKILL."""
        if self._term_sent_at is None:
            self._term_sent_at = time.monotonic()
            self.signal_group(signal.SIGTERM)

    def kill_if_overdue(self, grace_seconds: float) -> None:
        """SIGKILL the group if SIGTERM was sent more than ``grace_seconds`` ago."""
        if self._term_sent_at is not None and time.monotonic() - self._term_sent_at >= grace_seconds:
            self.signal_group(signal.SIGKILL)

    def stop(self, grace_seconds: float) -> int:
        """SIGTERM, wait up to the grace period, SIGKILL; return the exit code."""
        self.terminate()
        try:
            self.popen.wait(timeout=max(grace_seconds, 0.0))
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            self.popen.wait()
        # Children that outlived the leader still belong to its group.
        self.signal_group(signal.SIGKILL)
        code = self.poll()
        return 137 if code is None else code

    def termination_message(self, exit_code: int) -> str:
        """The message file's content (at most 4096 bytes), or the log's tail per the policy."""
        try:
            with self.launch.termination_path.open("rb") as fh:
                data = fh.read(MAX_TERMINATION_MESSAGE_BYTES)
        except FileNotFoundError:
            data = b""
        if not data and exit_code != 0 and self.launch.termination_policy == "FallbackToLogsOnError":
            data = _log_tail(self.launch.log_path)
        return data.decode(errors="replace")


def _log_tail(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read()
    except FileNotFoundError:
        return b""
    lines = data.splitlines(keepends=True)[-FALLBACK_LOG_LINES:]
    return b"".join(lines)[-FALLBACK_LOG_BYTES:]
