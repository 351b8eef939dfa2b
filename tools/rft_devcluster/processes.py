"""Starting and stopping the control plane's processes so that none outlives the cluster.

Every process starts in its own session (so its process group holds any children it forks)
and, where util-linux ``setpriv`` exists, with a parent-death signal: if the process that
started it dies, even by SIGKILL, the kernel kills it too. Stopping sends SIGTERM to the
whole group, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil

_SETPRIV = shutil.which("setpriv")


@dataclass(frozen=True)
class ProcessRecord:
    """What another process needs to find and stop a process safely: its pid and start time.

    The start time guards against killing an unrelated process that reused the pid.
    """

    name: str
    pid: int
    create_time: float

    def to_json(self) -> dict[str, Any]:
        """Serialise for the state file."""
        return {"name": self.name, "pid": self.pid, "create_time": self.create_time}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessRecord:
        """Read back what :meth:`to_json` wrote."""
        return cls(name=str(data["name"]), pid=int(data["pid"]), create_time=float(data["create_time"]))

    def is_alive(self) -> bool:
        """True if this very process (same pid, same start time) still runs and is not a zombie."""
        try:
            proc = psutil.Process(self.pid)
            same_process = abs(proc.create_time() - self.create_time) < 0.05
            return same_process and bool(proc.status() != psutil.STATUS_ZOMBIE)
        except psutil.Error:
            return False


def parent_death_prefix() -> list[str]:
    """The argv prefix that makes a child die with the thread that started it (empty if unsupported)."""
    return [_SETPRIV, "--pdeathsig", "KILL", "--"] if _SETPRIV else []


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    die_with_parent: bool = True,
) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
    """Start ``argv`` in a new session with stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    prefix = parent_death_prefix() if die_with_parent else []
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [*prefix, *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    try:
        create_time = psutil.Process(proc.pid).create_time()
    except psutil.Error:  # it already exited; the record is only used to stop it
        create_time = 0.0
    return proc, ProcessRecord(name=name, pid=proc.pid, create_time=create_time)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter(["pid"]):
        # os.getpgid raises ProcessLookupError (not a psutil.Error) for a process that exits mid-scan.
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
    return members


def stop_group(
    record: ProcessRecord, *, grace_seconds: float = 10.0, popen: subprocess.Popen[bytes] | None = None
) -> None:
    """Stop the process group led by ``record`` (SIGTERM, then SIGKILL after the grace period).

    Works from any process. When ``popen`` (our own child) is given it is also reaped.
    """
    if popen is None and not record.is_alive():
        # The leader is gone; its group may still hold children it forked.
        for member in _group_members(record.pid):
            with contextlib.suppress(psutil.Error):
                member.kill()
        return
    _signal_group(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if popen is not None:
            if popen.poll() is not None and not _group_members(record.pid):
                return
        elif not record.is_alive() and not _group_members(record.pid):
            return
        time.sleep(0.05)
    _signal_group(record.pid, signal.SIGKILL)
    if popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=5)


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file ('' if it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            data = fh.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def open_log(path: Path) -> IO[str]:
    """Open a log file for appending text, creating its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("a", encoding="utf-8")
