"""``python -m rft_devcluster up|down|status``: the local cluster as a background service."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
from pathlib import Path

from rft_devcluster.binaries import REPO_ROOT, BinariesUnavailableError, ensure_binaries
from rft_devcluster.controlplane import ClusterOptions, LocalNodeOptions
from rft_devcluster.processes import spawn, stop_group, tail
from rft_devcluster.state import ClusterState, Status, read_state, write_state
from rft_devcluster.supervisor import run_supervisor

DEFAULT_STATE_DIR = REPO_ROOT / ".cluster"
SUPERVISOR_LOG = "logs/supervisor.log"
UP_TIMEOUT_SECONDS = 300.0
DOWN_TIMEOUT_SECONDS = 60.0


def _say(message: str) -> None:
    print(message, flush=True)


def _is_running(state: ClusterState | None) -> bool:
    return bool(state and state.supervisor and state.supervisor.is_alive())


def _options(args: argparse.Namespace) -> ClusterOptions:
    local_node = LocalNodeOptions(gpus=args.local_node_gpus) if args.local_node else None
    return ClusterOptions(gpu_nodes=args.gpu_nodes, local_node=local_node)


def _option_args(args: argparse.Namespace) -> list[str]:
    return [
        f"--gpu-nodes={args.gpu_nodes}",
        "--local-node" if args.local_node else "--no-local-node",
        f"--local-node-gpus={args.local_node_gpus}",
    ]


def cmd_up(args: argparse.Namespace) -> int:
    """Start the cluster in a background supervisor; the last line printed is ``export KUBECONFIG=...``."""
    state_dir: Path = args.state_dir.resolve()
    state = read_state(state_dir)
    if _is_running(state):
        assert state is not None
        if state.status != Status.READY:
            _say(f"a cluster in {state_dir} is {state.status}; run down first")
            return 1
        _say(f"already running: {state.server}")
        _say(f"export KUBECONFIG={state.kubeconfig}")
        return 0
    _say("locating the control plane binaries (a cold build takes several minutes)")
    try:
        bin_dir = ensure_binaries()
    except BinariesUnavailableError as exc:
        _say(str(exc))
        return 1
    log_path = state_dir / SUPERVISOR_LOG
    log_path.unlink(missing_ok=True)
    write_state(state_dir, ClusterState(status=Status.STARTING))
    popen, _ = spawn(
        "supervisor",
        [
            sys.executable,
            "-m",
            "rft_devcluster",
            "supervise",
            f"--state-dir={state_dir}",
            f"--bin-dir={bin_dir}",
            *_option_args(args),
        ],
        log_path=log_path,
        cwd=REPO_ROOT,
        die_with_parent=False,
    )
    shown = 0
    deadline = time.monotonic() + UP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        lines = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
        for line in lines[shown:]:
            _say(f"  {line}")
        shown = len(lines)
        state = read_state(state_dir)
        if state is not None and state.status == Status.READY:
            _say(f"export KUBECONFIG={state.kubeconfig}")
            return 0
        if popen.poll() is not None:
            _say(f"the cluster failed to start; see {log_path} and {state_dir / 'logs'}")
            return 1
        time.sleep(0.2)
    _say(f"timed out after {UP_TIMEOUT_SECONDS:.0f}s; stopping. Logs: {state_dir / 'logs'}")
    cmd_down(args)
    return 1


def cmd_down(args: argparse.Namespace) -> int:
    """Stop the cluster recorded in the state directory, whoever started it."""
    state_dir: Path = args.state_dir.resolve()
    state = read_state(state_dir)
    if state is None:
        _say(f"no cluster in {state_dir}")
        return 0
    if state.supervisor is not None and state.supervisor.is_alive():
        stop_group(state.supervisor, grace_seconds=DOWN_TIMEOUT_SECONDS)
    # Whatever the supervisor could not stop (it was killed, or timed out) is stopped here.
    state = read_state(state_dir) or state
    for record in state.processes:
        stop_group(record, grace_seconds=5)
    if state.etcd_data_dir:
        shutil.rmtree(state.etcd_data_dir, ignore_errors=True)
    if state.status != Status.STOPPED or state.processes:
        state.status, state.processes = Status.STOPPED, []
        write_state(state_dir, state)
    _say("stopped")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print the cluster's status; exit 0 only if it is ready and all its processes run."""
    state_dir: Path = args.state_dir.resolve()
    state = read_state(state_dir)
    if state is None:
        _say(f"no cluster in {state_dir}")
        return 3
    running = _is_running(state)
    _say(f"status: {state.status}{'' if running or state.status == Status.STOPPED else ' (supervisor gone)'}")
    if state.server:
        _say(f"server: {state.server}")
        _say(f"kubeconfig: {state.kubeconfig}")
    dead = []
    for record in state.processes:
        alive = record.is_alive()
        dead += [] if alive else [record.name]
        _say(f"  {record.name:<24} pid {record.pid:<8} {'running' if alive else 'EXITED'}")
    if state.error:
        _say(f"error: {state.error}")
    healthy = running and state.status == Status.READY and not dead
    return 0 if healthy else 3


def cmd_supervise(args: argparse.Namespace) -> int:
    """Internal: run the supervisor in the foreground (``up`` starts this in the background)."""
    return run_supervisor(args.state_dir.resolve(), args.bin_dir, _options(args))


def cmd_logs(args: argparse.Namespace) -> int:
    """Print the last lines of a component's log."""
    _say(tail(args.state_dir.resolve() / "logs" / f"{args.component}.log", lines=args.lines))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m rft_devcluster``."""
    parser = argparse.ArgumentParser(prog="python -m rft_devcluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: object, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="default: <repo>/.cluster")
        p.set_defaults(handler=handler)
        return p

    for name, handler, help_text in (
        ("up", cmd_up, "start the cluster in the background"),
        ("supervise", cmd_supervise, argparse.SUPPRESS),
    ):
        p = add(name, handler, help_text)
        p.add_argument("--gpu-nodes", type=int, default=2, help="fake GPU nodes managed by kwok")
        p.add_argument(
            "--local-node",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="also run the local node agent that runs pods as processes",
        )
        p.add_argument("--local-node-gpus", type=int, default=0, help="fake nvidia.com/gpu on the local node")
        if name == "supervise":
            p.add_argument("--bin-dir", type=Path, required=True)
    add("down", cmd_down, "stop the cluster and everything it started")
    add("status", cmd_status, "show whether the cluster runs")
    logs = add("logs", cmd_logs, "show a component's log")
    logs.add_argument("component", help="e.g. kube-apiserver, kwok, local-node, supervisor")
    logs.add_argument("--lines", type=int, default=50)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m rft_devcluster``."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `status | head` ends quietly
    args = build_parser().parse_args(argv)
    return int(args.handler(args))
