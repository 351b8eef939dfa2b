"""The manifest lint (`make lint`: rft_devcluster.kube_score) fails on findings it does not decline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from rft_devcluster.binaries import REPO_ROOT, ensure_binaries
from rft_devcluster.kube_score import DECLINED_FILE, load_config

NO_RESOURCES = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": "bare", "namespace": "team-a"},
    "spec": {
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
                "containers": [
                    {
                        "name": "work",
                        "image": "reg/work:1",
                        "securityContext": {"readOnlyRootFilesystem": True, "runAsUser": 1000, "runAsGroup": 1000},
                    }
                ],
            }
        }
    },
}


def _lint(*args: str) -> subprocess.CompletedProcess[str]:
    ensure_binaries()  # kube-score built (or found) before the timed run
    return subprocess.run(
        [sys.executable, "-m", "rft_devcluster.kube_score", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
        timeout=300,
    )


def test_a_container_without_resources_fails_the_lint(tmp_path: Path) -> None:
    path = tmp_path / "bare.yaml"
    path.write_text(yaml.safe_dump(NO_RESOURCES))
    result = _lint(str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "container-ephemeral-storage-request-and-limit" in result.stderr
    assert "container-resources" in result.stderr
    # Declined checks (pull policy, uid below 10000) are not reported; the file's own target is not
    # among the builders' or chart's that pod-networkpolicy is declined for.
    assert "container-image-pull-policy" not in result.stderr
    assert "pod-networkpolicy" in result.stderr


def test_every_declined_check_has_a_reason_and_a_target() -> None:
    config = load_config(DECLINED_FILE)
    assert config.declined
    for declined in config.declined:
        assert declined.reason.strip(), declined.check
        assert declined.targets, declined.check
    assert "--ignore-container-cpu-limit" in config.flags


def test_the_builders_and_the_chart_pass() -> None:
    result = _lint()
    assert result.returncode == 0, result.stderr
