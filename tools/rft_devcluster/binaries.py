"""Locating (and if needed building) the control plane's binaries through the build script."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "tools" / "build-control-plane.sh"
REQUIRED_BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
    "helm-unittest",
    "kube-score",
)


class BinariesUnavailableError(RuntimeError):
    """The build script could not provide the binaries; the message carries its output."""


def script_output_dir(script: Path, error: type[RuntimeError]) -> Path:
    """Run one of tools/' install scripts and return the directory it prints last; raise `error`
    with the script's output when it fails or prints nothing."""
    result = subprocess.run(
        ["bash", str(script)],
        capture_output=True,
        text=True,
        check=False,
        env=os.environ.copy(),
    )
    if result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip())[-4000:]
        raise error(f"{script.relative_to(REPO_ROOT)} failed (exit {result.returncode}):\n{output}")
    lines = result.stdout.strip().splitlines()
    if not lines:
        raise error(f"{script} printed no directory")
    return Path(lines[-1])


def ensure_binaries() -> Path:
    """Return the directory holding the control plane's binaries, building what is missing.

    Delegates to ``tools/build-control-plane.sh`` (which honours ``RFT_BIN_DIR``); a cold
    build takes minutes, a warm call well under a second.
    """
    bin_dir = script_output_dir(BUILD_SCRIPT, BinariesUnavailableError)
    missing = [b for b in REQUIRED_BINARIES if not os.access(bin_dir / b, os.X_OK)]
    if missing:
        raise BinariesUnavailableError(f"{bin_dir} lacks {', '.join(missing)}")
    return bin_dir
