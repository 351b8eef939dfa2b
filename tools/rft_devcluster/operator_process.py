"""`python -m rft_operator` as a child process, its log in a file: the one runner the operator
tests, the chart tests, the benchmark and the demo share.

It runs in a session of its own (so a stop reaches everything it started), is started when its
log says `rft-operator started` (lines written after this start, so a restart waits for its own),
and is stopped with SIGTERM, then SIGKILL if it does not exit in time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

STARTED: Final = "rft-operator started"
"""What the operator logs once its handlers run (rft_operator.main)."""

ALL_NAMESPACES: Final = ("--all-namespaces", "--standalone")
"""The arguments of a single local operator watching every namespace."""


def operator_command(*args: str) -> list[str]:
    """`python -m rft_operator <args>` with this interpreter."""
    return [sys.executable, "-m", "rft_operator", *args]


class OperatorProcess:
    """The operator as a child process. `command()` and `environment()` give what it runs with
    (by default the constructor's): subclasses that derive them from a cluster override them."""

    def __init__(
        self,
        log_path: Path,
        *,
        command: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        stop_timeout: float = 15,
    ) -> None:
        self.log_path = log_path
        self._command = list(command) or operator_command(*ALL_NAMESPACES)
        self._env = dict(os.environ if env is None else env)
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return self._command

    def environment(self) -> dict[str, str]:
        return self._env

    def start(self, timeout: float = 60) -> None:
        """Start it and wait until it says it started; RuntimeError with its log's tail if it
        exits or stays silent for `timeout` seconds."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.tail()}")
            if STARTED in self.log_path.read_text(errors="replace")[offset:]:
                return
            time.sleep(0.2)
        raise RuntimeError(f"operator did not start:\n{self.tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal its session (`sig`, SIGTERM by default), then SIGKILL after `stop_timeout`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, chars: int = 3000) -> str:
        return self.log()[-chars:]
