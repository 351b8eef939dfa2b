#!/usr/bin/env bash
# Export the image lock files (hash-pinned requirements) from uv.lock, the project's one lock:
# the images install exactly the versions the test suite ran. Nothing is resolved here.
#
#   deploy/image/lock.sh          (from the repository root; `make lock` runs it after `uv lock`)
#
# operator.lock   `.[operator]` (no torch, no bucket access) for the `operator` target of the Dockerfile
# trainer.lock    `.[trainer]` (torch, peft, transformers, the server, storage) for the `trainer` target
# serving-helpers.lock  `.[storage]` (boto3, google-cloud-storage; no torch) for the `serving-helpers`
#                 target: the serving pods' model fetch and adapter sidecar
# build.lock      the build backend (the `build` dependency group: setuptools) for the project's wheel
# All are universal (linux/amd64 and linux/arm64 images install from the same file).
set -euo pipefail
cd "$(dirname "$0")/../.."
uv="${UV:-.venv/bin/uv}"

export_lock() {
  local out="$1"; shift
  {
    echo "# Exported from uv.lock by deploy/image/lock.sh (uv export $*): do not edit."
    "$uv" export --quiet --frozen --no-emit-project --no-header --format requirements.txt "$@"
  } >"$out.tmp"
  mv "$out.tmp" "$out"
}

export_lock deploy/image/operator.lock --extra operator
export_lock deploy/image/trainer.lock --extra trainer
export_lock deploy/image/serving-helpers.lock --extra storage
export_lock deploy/image/build.lock --only-group build
