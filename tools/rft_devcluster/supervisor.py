"""The background process behind ``python -m rft_devcluster up``.

It owns the control plane (its children die with it), reports progress on stdout (which
``up`` tails from the log), and stops everything on SIGTERM, SIGINT or SIGHUP.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from types import FrameType

import psutil

from rft_devcluster.controlplane import ClusterOptions, ControlPlane
from rft_devcluster.processes import ProcessRecord

_HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class _TerminatedError(BaseException):
    """Raised by the signal handler while the cluster is still starting, to abort the start."""


def _say(message: str) -> None:
    print(message, flush=True)


def run_supervisor(state_dir: Path, bin_dir: Path, options: ClusterOptions) -> int:
    """Start the cluster, keep it running until a termination signal, then stop it.

    Returns the process exit code: 0 after a clean stop, 1 if the start failed.
    """
    me = psutil.Process(os.getpid())
    record = ProcessRecord(name="supervisor", pid=me.pid, create_time=me.create_time())
    stop_requested = threading.Event()
    starting = True

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop_requested.set()
        if starting:
            raise _TerminatedError(signal.Signals(signum).name)

    for sig in _HANDLED_SIGNALS:
        signal.signal(sig, on_signal)

    control_plane = ControlPlane(state_dir, bin_dir, options, progress=_say, supervisor=record)
    try:
        control_plane.start()
    except _TerminatedError as exc:
        _say(f"start aborted by {exc}")
        return 1
    except Exception as exc:
        _say(f"start failed: {exc}")
        return 1
    starting = False
    _say("supervising; stop with: python -m rft_devcluster down")

    reported: set[str] = set()
    while not stop_requested.wait(timeout=2.0):
        for name in control_plane.dead_components():
            if name not in reported:
                reported.add(name)
                _say(f"warning: {name} exited; see {control_plane.paths.log(name)}")
    _say("stopping")
    control_plane.stop()
    _say("stopped")
    return 0
