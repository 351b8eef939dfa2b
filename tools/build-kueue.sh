#!/usr/bin/env bash
# Build Kueue's manager from the Go module proxy into a cache outside the work tree, keyed by
# KUEUE_VERSION (tools/versions.env), and copy its CRDs and webhook manifests beside it.
#
#   tools/build-kueue.sh        build when missing, print the directory (kueue, crds/*.yaml,
#                               webhook/manifests.yaml)
#
# Kueue is built apart from tools/build-control-plane.sh so that pinning or bumping it does not
# change the control plane's cache key (which would rebuild Kubernetes). `go install mod@version`
# builds from Kueue's own go.mod, checked against the checksum database: no version is chosen here.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=/dev/null
source "$here/versions.env"
cache="${RFT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rft-operator}"
out="$cache/bin/kueue-$KUEUE_VERSION"
if [[ -x "$out/kueue" && -d "$out/crds" && -f "$out/webhook/manifests.yaml" ]]; then echo "$out"; exit 0; fi
mkdir -p "$out"
exec 9>"$cache/build-kueue.lock"
flock 9
if [[ ! -x "$out/kueue" ]]; then
  echo "[build-kueue] installing sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION" >&2
  gobin="$cache/src/gobin-kueue"
  mkdir -p "$gobin"
  CGO_ENABLED=0 GOFLAGS="-buildvcs=false -trimpath" GOBIN="$gobin" \
    go install -ldflags "-s -w" "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION"
  mv "$gobin/kueue" "$out/kueue"
fi
config="$(go env GOMODCACHE)/sigs.k8s.io/kueue@$KUEUE_VERSION/config/components"
if [[ ! -d "$config" ]]; then  # the binary was cached but the module cache was cleaned
  (cd / && go mod download "sigs.k8s.io/kueue@$KUEUE_VERSION")
fi
src="$config/crd/bases"
[[ -d "$src" ]] || { echo "[build-kueue] no CRDs at $src" >&2; exit 1; }
rm -rf "$out/crds.tmp" && mkdir -p "$out/crds.tmp"
cp "$src"/*.yaml "$out/crds.tmp/"
chmod u+w "$out/crds.tmp"/*.yaml
rm -rf "$out/crds" && mv "$out/crds.tmp" "$out/crds"
# The admission webhooks (their service references are rewritten to the local process's URL by
# tools/rft_devcluster/kueue.py).
mkdir -p "$out/webhook"
cp "$config/webhook/manifests.yaml" "$out/webhook/manifests.yaml.tmp"
chmod u+w "$out/webhook/manifests.yaml.tmp"
mv "$out/webhook/manifests.yaml.tmp" "$out/webhook/manifests.yaml"
echo "$out"
