"""The one operator runner (rft_devcluster.operator_process) that tests, bench and demo share: what
counts as started, restarts, stops. The real operator runs under it in the operator, chart and
bench tests; here a stand-in program prints its start line, to check the runner's own rules."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
from rft_devcluster.operator_process import STARTED, OperatorProcess, operator_command

# Says it started, then waits to be stopped (SIGTERM ends it).
STANDIN = [sys.executable, "-c", f"import time; print({STARTED!r}, flush=True); time.sleep(60)"]


def test_the_default_command_is_the_operator_module_on_all_namespaces(tmp_path: Path) -> None:
    runner = OperatorProcess(tmp_path / "operator.log")
    assert runner.command() == [sys.executable, "-m", "rft_operator", "--all-namespaces", "--standalone"]
    assert operator_command("--help") == [sys.executable, "-m", "rft_operator", "--help"]


def test_start_stop_and_restart_wait_for_their_own_start_line(tmp_path: Path) -> None:
    runner = OperatorProcess(tmp_path / "operator.log", command=STANDIN)
    runner.start(timeout=30)
    assert runner.alive()
    runner.stop()
    assert not runner.alive()
    runner.start(timeout=30)  # the log already says started: the restart waits for a new line
    assert runner.log().count(STARTED) == 2
    runner.stop(signal.SIGKILL)
    assert runner.proc is not None
    assert runner.proc.returncode == -signal.SIGKILL


def test_a_program_that_exits_fails_the_start_with_its_log(tmp_path: Path) -> None:
    runner = OperatorProcess(
        tmp_path / "operator.log", command=[sys.executable, "-c", "print('bad config'); raise SystemExit(3)"]
    )
    with pytest.raises(RuntimeError, match=r"operator exited with 3:\nbad config"):
        runner.start(timeout=30)
