#!/usr/bin/env bash
# Build CoreDNS, the local cluster's cluster DNS, from the Go module proxy into a cache outside the
# work tree, keyed by COREDNS_VERSION (tools/versions.env).
#
#   tools/build-coredns.sh      build when missing, print the directory (coredns)
#
# Built apart from tools/build-control-plane.sh, like Kueue, so that pinning or bumping it does not
# change the control plane's cache key. `go install mod@version` builds from CoreDNS's own go.mod
# (its full plugin set, as released), checked against the checksum database: no version is chosen
# here.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=/dev/null
source "$here/versions.env"
cache="${RFT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rft-operator}"
out="$cache/bin/coredns-$COREDNS_VERSION"
if [[ -x "$out/coredns" ]]; then echo "$out"; exit 0; fi
mkdir -p "$out"
exec 9>"$cache/build-coredns.lock"
flock 9
if [[ ! -x "$out/coredns" ]]; then
  echo "[build-coredns] installing github.com/coredns/coredns@$COREDNS_VERSION" >&2
  gobin="$cache/src/gobin-coredns"
  mkdir -p "$gobin"
  CGO_ENABLED=0 GOFLAGS="-buildvcs=false -trimpath" GOBIN="$gobin" \
    go install -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
  mv "$gobin/coredns" "$out/coredns"
fi
echo "$out"
