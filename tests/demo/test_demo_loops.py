"""`make demo LOOP=...`: a user's loop script on the demo's local cluster.

The managed service's loop as its users paste it (examples/managed_service_loop.py: only the
import line and account names changed) runs unchanged: its A100 Deployment and steps schedule
on the local node, which stands in for A100 nodes, and really run there on CPU (vLLM serves,
the trainer trains). Another script sees the demo's environment and its exit code is the demo's.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.cluster, pytest.mark.localnode, pytest.mark.slow, pytest.mark.vllm]


def run_demo(loop: Path, state_dir: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rft_devcluster.demo", "--loop", str(loop), "--state-dir", str(state_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


@pytest.mark.timeout(1500)
def test_the_managed_service_loop_runs_unchanged(tmp_path: Path) -> None:
    result = run_demo(REPO / "examples" / "managed_service_loop.py", tmp_path / "demo", timeout=1400)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    for step in (0, 1):
        assert (
            f"step {step}: JOB_STATE_COMPLETED, new checkpoint accounts/demo/models/rft-step-{step}" in output
        )
    assert "final checkpoint accounts/demo/models/rft-step-1 says:" in output
    # The steps trained for real on the local node (no kwok node to play them) and vLLM served.
    pods = tmp_path / "demo" / "cluster" / "local-node" / "pods"
    assert sorted(p.name.split("_")[1].rsplit("-", 1)[0] for p in pods.glob("demo_rft-step-*-train-*")) == [
        "rft-step-0-train",
        "rft-step-1-train",
    ]
    (server,) = pods.glob("demo_rft-base-server-*")
    assert "vLLM" in (server / "logs" / "server.log").read_text(errors="replace")
    # The demo says where the base replica's time to Ready went (its Deployment's lastColdStart).
    assert "cold start of rft-base: ready " in output
    assert "model fetched" in output.split("cold start of rft-base:")[1].splitlines()[0]


@pytest.mark.timeout(600)
def test_a_loop_script_gets_the_demo_environment_and_its_exit_code_is_the_demos(tmp_path: Path) -> None:
    loop = tmp_path / "my_loop.py"
    loop.write_text(
        "import os, sys\n"
        "from rft import Dataset\n"
        "names = ['KUBECONFIG', 'RFT_NAMESPACE', 'RFT_BUCKET', 'RFT_SERVICE_ACCOUNT', 'RFT_BASE_MODEL']\n"
        "print(' '.join(f'{n}={os.environ[n]}' for n in names[1:]))\n"
        "sample = {'messages': [{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'yes'}],\n"
        "          'evals': {'score': 1.0}}\n"
        "Dataset.from_list([{'samples': [sample, sample]}] * 3).sync()  # the user's bucket, the user's keys\n"
        "sys.exit(3)\n"
    )
    result = run_demo(loop, tmp_path / "demo", timeout=540)
    output = result.stdout + result.stderr
    assert result.returncode == 3, output[-4000:]
    assert (
        "RFT_NAMESPACE=demo RFT_BUCKET=s3://rft-demo/rft RFT_SERVICE_ACCOUNT=rft-trainer RFT_BASE_MODEL=tiny-chat"
        in output
    )
