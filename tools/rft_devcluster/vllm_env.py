"""Locating (and if needed installing) the local node's vLLM through its install script."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from rft_devcluster.binaries import REPO_ROOT

INSTALL_SCRIPT = REPO_ROOT / "tools" / "install-vllm-env.sh"
VLLM_PROJECT = REPO_ROOT / "tools" / "vllm-cpu"


class VllmUnavailableError(RuntimeError):
    """The install script could not provide the vLLM environment; the message has its output."""


def ensure_vllm_env() -> Path:
    """Return the directory of the vLLM environment (`bin/vllm`, `bin/python`), installing it
    from tools/vllm-cpu/uv.lock if missing. Honours ``RFT_VLLM_ENV``."""
    result = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, check=False, env=os.environ.copy()
    )
    if result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip())[-4000:]
        raise VllmUnavailableError(
            f"{INSTALL_SCRIPT.relative_to(REPO_ROOT)} failed (exit {result.returncode}):\n{output}"
        )
    lines = result.stdout.strip().splitlines()
    if not lines or not os.access(Path(lines[-1]) / "bin" / "vllm", os.X_OK):
        raise VllmUnavailableError(f"{INSTALL_SCRIPT} printed no environment with bin/vllm")
    return Path(lines[-1])
