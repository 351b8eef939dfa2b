"""Which local program stands in for a container image.

The local node has no container runtime: a container's command runs as a host process, and
the image only decides which interpreter and entry points that command finds.

| image repository (registry and tag ignored) | runs as                                         |
|---------------------------------------------|-------------------------------------------------|
| ``*rft-trainer``                            | the project's ``.venv`` (default ``python -m rft_trainer``) |
| ``*rft-serving-helpers``                    | the project's ``.venv`` (default ``python -m rft.pods.adapter_sidecar``): server pods' ``rft.pods.fetch`` and sidecar |
| ``*rft-fake-vllm``                          | the project's ``.venv``: ``vllm serve ARGS`` runs the tests' fake vLLM, ``python -m rft_devcluster.fake_vllm ARGS`` |
| ``*rft-operator``                           | the project's ``.venv`` (default ``python -m rft_operator``) |
| ``vllm-openai``, ``vllm-openai-cpu``, ``vllm-cpu-release-repo`` | the vLLM environment (``rft_devcluster.vllm_env``; default ``vllm serve``) |
| ``python`` (e.g. ``python:3.11-slim``)      | the agent's own interpreter (the ``.venv``)     |
| ``busybox``, ``alpine``, ``bash``, ``debian``, ``ubuntu`` | the host's ``/bin/sh`` and tools on its PATH |

In a project or vLLM image, ``python``/``python3`` (bare or as ``/usr/bin/...``,
``/usr/local/bin/...``) means that environment's interpreter, and other commands are looked
up in its ``bin`` first (``torchrun``, ``kopf``, ``rft``; ``vllm``), also when named by a
standard directory (``/usr/local/bin/vllm``), where the image would have installed them.

Finding the stand-in is this node's image pull. It fails (:class:`ImagePullError`) for any
other image, and for a vLLM image when its environment cannot be installed; the pod worker
then keeps the container waiting with ``ErrImagePull``/``ImagePullBackOff`` and retries, as
the kubelet does (see imagepull.py). The vLLM environment (about 6 GB) is only looked for
when a vLLM pod runs, and remembered once found.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rft.contracts import entrypoints

from rft_devcluster.binaries import REPO_ROOT
from rft_devcluster.vllm_env import VllmUnavailableError, ensure_vllm_env

VENV_BIN = REPO_ROOT / ".venv" / "bin"
_PYTHON_NAME = re.compile(r"python(3(\.\d+)?)?")
_STANDARD_DIRS = {"/usr/bin", "/usr/local/bin", "/bin"}
_HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ImagePullError(Exception):
    """The image cannot be had on this node (the kubelet's ``ErrImagePull``); worth retrying."""


class UnsupportedImageError(ImagePullError, ValueError):
    """The image has no local stand-in."""


class StandInUnavailableError(ImagePullError):
    """The image has a stand-in, but it cannot be provided now (e.g. vLLM failed to install)."""


class MissingCommandError(ValueError):
    """The container gives no command and its image has no default one."""


@dataclass(frozen=True)
class ImageRuntime:
    """How to run containers of one kind of image on the host."""

    kind: str
    python: str
    path: str
    default_command: tuple[str, ...] = ()
    # The environment's own programs (a venv's bin): standard-directory commands map here.
    bin_dir: Path | None = None
    # Environment variables the image sets (a Dockerfile's ENV); the pod's own values win.
    image_env: tuple[tuple[str, str], ...] = ()
    # The entry point this image fakes (``vllm serve``): a command starting with it runs the
    # default command with the rest of the arguments.
    fakes: tuple[str, ...] = ()

    def resolve_command(self, command: Sequence[str], args: Sequence[str]) -> list[str]:
        """The host argv for a container's ``command`` and ``args`` (image default if no command)."""
        argv = [*(command or self.default_command), *args]
        if not argv:
            raise MissingCommandError(f"a {self.kind} container needs a command")
        if self.fakes and [argv[0].rpartition("/")[2], *argv[1 : len(self.fakes)]] == list(self.fakes):
            argv = [*self.default_command, *argv[len(self.fakes) :]]
        head = argv[0]
        directory, _, name = head.rpartition("/")
        if _PYTHON_NAME.fullmatch(name) and (directory == "" or directory in _STANDARD_DIRS):
            return [self.python, *argv[1:]]
        if "/" not in head:
            found = shutil.which(head, path=self.path)
            if found:
                return [found, *argv[1:]]
        elif self.bin_dir is not None and directory in _STANDARD_DIRS:
            own = self.bin_dir / name
            if os.access(own, os.X_OK):
                return [str(own), *argv[1:]]
        return argv


def repository_name(image: str) -> str:
    """The last path element of an image reference, without tag or digest."""
    without_digest = image.split("@", 1)[0]
    last = without_digest.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


# The tests' fake of vLLM's server (rft_devcluster.fake_vllm): it runs vLLM's container command.
FAKE_VLLM_IMAGE = "rft.local/rft-fake-vllm:dev"
# Project images: repository suffix -> (default command, the entry point it fakes).
_PROJECT_DEFAULTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "rft-trainer": (("python", "-m", entrypoints.TRAINER), ()),
    # The server pods' model fetch (init container) and adapter sidecar; the image's CMD is the sidecar.
    "rft-serving-helpers": (("python", "-m", entrypoints.ADAPTER_SIDECAR), ()),
    "rft-operator": (("python", "-m", "rft_operator"), ()),
    "rft-fake-vllm": (("python", "-m", "rft_devcluster.fake_vllm"), ("vllm", "serve")),
}
# vLLM's GPU image (vllm/vllm-openai) and CPU images; all have ENTRYPOINT ["vllm", "serve"].
_VLLM_IMAGES = {"vllm-openai", "vllm-openai-cpu", "vllm-cpu-release-repo"}
_VLLM_DEFAULT = ("vllm", "serve")
# This node's GPUs are its CPU: a GPU pod's vLLM runs on vLLM's CPU backend, which sizes its KV
# cache from VLLM_CPU_KVCACHE_SPACE (GiB) or else reserves --gpu-memory-utilization (92%) of the
# host's memory and refuses to start when that much is not free. 1 GiB plays the GPU's memory
# for the tiny models this node serves; a pod that sets the variable (CPU Deployments) wins.
# Its threads are not pinned either: "auto" pins every vLLM on the host to the same first core
# (measured: a second vLLM pod's engine never started beside a busy first one).
_VLLM_IMAGE_ENV = (("VLLM_CPU_KVCACHE_SPACE", "1"), ("VLLM_CPU_OMP_THREADS_BIND", "nobind"))
_SHELL_IMAGES = {"busybox", "alpine", "bash", "debian", "ubuntu"}

_vllm_lock = threading.Lock()
_vllm_envs: dict[str | None, Path] = {}


def vllm_environment() -> Path:
    """The vLLM environment's directory, installed on first use; remembered per ``RFT_VLLM_ENV``.

    Failures are not remembered: the next pull tries again (an install may succeed later).
    Pods share one lock, so one install runs at a time and the others then find it.
    """
    key = os.environ.get("RFT_VLLM_ENV")
    with _vllm_lock:
        if key not in _vllm_envs:
            try:
                _vllm_envs[key] = ensure_vllm_env()
            except VllmUnavailableError as exc:
                raise StandInUnavailableError(
                    f"the local node's vLLM environment is unavailable: {exc}"
                ) from exc
        return _vllm_envs[key]


def _vllm_runtime() -> ImageRuntime:
    bin_dir = vllm_environment() / "bin"
    return ImageRuntime(
        kind="vllm",
        python=str(bin_dir / "python"),
        path=f"{bin_dir}{os.pathsep}{_HOST_PATH}",
        default_command=_VLLM_DEFAULT,
        bin_dir=bin_dir,
        image_env=_VLLM_IMAGE_ENV,
    )


def runtime_for(image: str) -> ImageRuntime:
    """The stand-in for ``image``; raise :class:`ImagePullError` if there is none (now).

    Fast for every image but a vLLM image seen for the first time, which may install vLLM.
    """
    name = repository_name(image)
    venv_python = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
    for suffix, (default, fakes) in _PROJECT_DEFAULTS.items():
        if name.endswith(suffix):
            return ImageRuntime(
                kind=suffix,
                python=venv_python,
                path=f"{VENV_BIN}{os.pathsep}{_HOST_PATH}",
                default_command=default,
                bin_dir=VENV_BIN,
                fakes=fakes,
            )
    if name in _VLLM_IMAGES:
        return _vllm_runtime()
    if name == "python":
        return ImageRuntime(
            kind="python", python=sys.executable, path=f"{Path(sys.executable).parent}:{_HOST_PATH}"
        )
    if name in _SHELL_IMAGES:
        return ImageRuntime(
            kind="shell", python=sys.executable, path=_HOST_PATH, default_command=("/bin/sh",)
        )
    raise UnsupportedImageError(
        f"image {image!r} has no local stand-in on this node; it runs *rft-trainer, "
        "*rft-serving-helpers, *rft-operator, "
        f"*rft-fake-vllm, {', '.join(sorted(_VLLM_IMAGES))}, python and "
        f"{', '.join(sorted(_SHELL_IMAGES))} images (see docs/local-cluster.md)"
    )
