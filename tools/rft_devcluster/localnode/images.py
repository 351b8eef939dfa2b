"""Which local program stands in for a container image.

The local node has no container runtime: a container's command runs as a host process, and
the image only decides which interpreter and entry points that command finds.

| image repository (registry and tag ignored) | runs as                                         |
|---------------------------------------------|-------------------------------------------------|
| ``*rft-trainer``                            | the project's ``.venv`` (default ``python -m rft_trainer``) |
| ``*rft-server``                             | the project's ``.venv`` (default ``python -m rft_trainer.server``) |
| ``*rft-operator``                           | the project's ``.venv`` (default ``python -m rft_operator``) |
| ``python`` (e.g. ``python:3.11-slim``)      | the agent's own interpreter (the ``.venv``)     |
| ``busybox``, ``alpine``, ``bash``, ``debian``, ``ubuntu`` | the host's ``/bin/sh`` and tools on its PATH |

In a project image, ``python``/``python3`` (bare or as ``/usr/bin/...``,
``/usr/local/bin/...``) means the ``.venv`` interpreter and other commands are looked up in
``.venv/bin`` first (``torchrun``, ``kopf``, ``rft``). Any other image is refused: the pod
fails with reason ``UnsupportedImage``.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rft_devcluster.binaries import REPO_ROOT

VENV_BIN = REPO_ROOT / ".venv" / "bin"
_PYTHON_NAMES = {"python", "python3", f"python3.{sys.version_info.minor}"}
_PYTHON_DIRS = {"", "/usr/bin", "/usr/local/bin", "/bin"}
_HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class UnsupportedImageError(ValueError):
    """The image has no local stand-in."""


@dataclass(frozen=True)
class ImageRuntime:
    """How to run containers of one kind of image on the host."""

    kind: str
    python: str
    path: str
    default_command: tuple[str, ...] = ()

    def resolve_command(self, command: Sequence[str], args: Sequence[str]) -> list[str]:
        """The host argv for a container's ``command`` and ``args`` (image default if no command)."""
        argv = [*(command or self.default_command), *args]
        if not argv:
            raise UnsupportedImageError(f"a {self.kind} container needs a command")
        head = argv[0]
        directory, _, name = head.rpartition("/")
        if name in _PYTHON_NAMES and directory in _PYTHON_DIRS:
            return [self.python, *argv[1:]]
        if "/" not in head:
            found = shutil.which(head, path=self.path)
            if found:
                return [found, *argv[1:]]
        return argv


def repository_name(image: str) -> str:
    """The last path element of an image reference, without tag or digest."""
    without_digest = image.split("@", 1)[0]
    last = without_digest.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


_PROJECT_DEFAULTS = {
    "rft-trainer": ("python", "-m", "rft_trainer"),
    "rft-server": ("python", "-m", "rft_trainer.server"),
    "rft-operator": ("python", "-m", "rft_operator"),
}
_SHELL_IMAGES = {"busybox", "alpine", "bash", "debian", "ubuntu"}


def runtime_for(image: str) -> ImageRuntime:
    """The stand-in for ``image``; raise :class:`UnsupportedImageError` if there is none."""
    name = repository_name(image)
    venv_python = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
    for suffix, default in _PROJECT_DEFAULTS.items():
        if name.endswith(suffix):
            return ImageRuntime(
                kind=suffix,
                python=venv_python,
                path=f"{VENV_BIN}{os.pathsep}{_HOST_PATH}",
                default_command=default,
            )
    if name == "python":
        return ImageRuntime(
            kind="python", python=sys.executable, path=f"{Path(sys.executable).parent}:{_HOST_PATH}"
        )
    if name in _SHELL_IMAGES:
        return ImageRuntime(
            kind="shell", python=sys.executable, path=_HOST_PATH, default_command=("/bin/sh",)
        )
    raise UnsupportedImageError(
        f"image {image!r} has no local stand-in; the local node runs *rft-trainer, *rft-server, "
        f"*rft-operator, python and {', '.join(sorted(_SHELL_IMAGES))} images (see docs/local-cluster.md)"
    )
