#!/usr/bin/env bash
# Build the local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, kwok, helm, helm-unittest) and kube-score (`make lint`'s manifest linter) from the Go
# module proxy into a cache outside the work tree.
#
#   tools/build-control-plane.sh          build what is missing, print the bin directory
#   tools/build-control-plane.sh --relock regenerate tools/go/*/go.{mod,sum} (after a bump in versions.env)
#
# The wrapper modules' go.mod and go.sum are committed under tools/go/<name>/ and builds run with
# -mod=readonly: no module version is chosen at build time. kwok and helm are `go install mod@version`,
# which builds from that module's own go.mod (checked against go.sum's database) and so is fixed too.
#
# RFT_BIN_DIR=<dir> skips the build: that directory must already hold the binaries.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=/dev/null
source "$here/versions.env"

binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok helm helm-unittest kube-score)

if [[ -n "${RFT_BIN_DIR:-}" ]]; then
  for b in "${binaries[@]}"; do
    [[ -x "$RFT_BIN_DIR/$b" ]] || { echo "RFT_BIN_DIR=$RFT_BIN_DIR lacks $b" >&2; exit 1; }
  done
  echo "$RFT_BIN_DIR"
  exit 0
fi

relock=false
[[ "${1:-}" == "--relock" ]] && relock=true
cache="${RFT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rft-operator}"
mkdir -p "$cache"

missing() { [[ ! -x "$out/$1" ]]; }
log() { echo "[build-control-plane] $*" >&2; }
all_present() { for b in "${binaries[@]}"; do missing "$b" && return 1; done; return 0; }

export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -trimpath"

# go.mod of each wrapper module, from versions.env (written by --relock, then tidied).
gomod_k8s() {
  echo "module rft-operator/tools/k8s"
  echo
  echo "go 1.24"
  echo
  echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
  echo
  echo "replace ("
  while read -r m; do
    [[ -z "$m" || "$m" == \#* ]] && continue
    echo "	k8s.io/$m => k8s.io/$m $KUBERNETES_STAGING_VERSION"
  done <"$here/go/k8s/staging-modules.txt"
  echo ")"
}
gomod_etcd() {
  printf 'module rft-operator/tools/etcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION"
}
# helm-unittest: v1.0.1 (which `go install`s directly) is missing from sum.golang.org, so its
# download cannot be verified; the proxy's newest tag, v1.1.2, has a replace directive in its
# go.mod, which `go install` refuses. So build it from a wrapper module that requires it and
# repeats its replace directives (tools/go/helm-unittest/replace.txt).
gomod_helm-unittest() {
  echo "module rft-operator/tools/helm-unittest"
  echo
  echo "go 1.26"
  echo
  echo "require github.com/helm-unittest/helm-unittest $HELM_UNITTEST_VERSION"
  echo
  while read -r line; do
    [[ -z "$line" || "$line" == \#* ]] && continue
    echo "replace $line"
  done <"$here/go/helm-unittest/replace.txt"
}

gomod_kube-score() {
  printf 'module rft-operator/tools/kube-score\n\ngo 1.26\n\nrequire github.com/zegl/kube-score %s\n' "$KUBE_SCORE_VERSION"
}

relock_module() {  # name: go mod tidy from versions.env, written back to tools/go/<name>/
  local name="$1" work="$cache/src/relock-$1"
  log "relocking $name"
  rm -rf "$work" && mkdir -p "$work"
  cp "$here/go/$name/tools.go" "$work/tools.go"
  "gomod_$name" >"$work/go.mod"
  (cd "$work" && go mod tidy >&2)
  cp "$work/go.mod" "$work/go.sum" "$here/go/$name/"
}

module_dir() {  # name require-line: a work dir holding the committed go.mod, go.sum and tools.go
  local name="$1" require="$2" src="$here/go/$1"
  grep -qF "require $require" "$src/go.mod" || {
    echo "tools/go/$name/go.mod does not require $require (tools/versions.env): run tools/build-control-plane.sh --relock" >&2
    exit 1
  }
  local work="$cache/src/$name-$(cat "$src/go.mod" "$src/go.sum" | sha256sum | cut -c1-12)"
  mkdir -p "$work"
  cp "$src/tools.go" "$src/go.mod" "$src/go.sum" "$work/"
  echo "$work"
}

build_kubernetes() {
  local work
  work="$(module_dir k8s "k8s.io/kubernetes $KUBERNETES_VERSION")"
  local vpkg=k8s.io/component-base/version cpkg=k8s.io/client-go/pkg/version
  local minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
  local ld="-s -w"
  for p in $vpkg $cpkg; do
    ld+=" -X $p.gitVersion=$KUBERNETES_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    if missing "$cmd"; then
      log "building $cmd $KUBERNETES_VERSION"
      (cd "$work" && go build -mod=readonly -ldflags "$ld" -o "$out/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd" && mv "$out/$cmd.tmp" "$out/$cmd")
    fi
  done
}

build_etcd() {
  missing etcd || return 0
  local work
  work="$(module_dir etcd "go.etcd.io/etcd/server/v3 $ETCD_VERSION")"
  log "building etcd $ETCD_VERSION"
  (cd "$work" && go build -mod=readonly -ldflags "-s -w" -o "$out/etcd.tmp" go.etcd.io/etcd/server/v3 && mv "$out/etcd.tmp" "$out/etcd")
}

build_helm_unittest() {
  missing helm-unittest || return 0
  local work
  work="$(module_dir helm-unittest "github.com/helm-unittest/helm-unittest $HELM_UNITTEST_VERSION")"
  log "building helm-unittest $HELM_UNITTEST_VERSION"
  (cd "$work" && go build -mod=readonly -ldflags "-s -w" -o "$out/helm-unittest.tmp" \
    github.com/helm-unittest/helm-unittest/cmd/helm-unittest && mv "$out/helm-unittest.tmp" "$out/helm-unittest")
}

build_kube_score() {
  missing kube-score || return 0
  local work
  work="$(module_dir kube-score "github.com/zegl/kube-score $KUBE_SCORE_VERSION")"
  log "building kube-score $KUBE_SCORE_VERSION"
  (cd "$work" && go build -mod=readonly -ldflags "-s -w -X main.version=$KUBE_SCORE_VERSION" \
    -o "$out/kube-score.tmp" github.com/zegl/kube-score/cmd/kube-score && mv "$out/kube-score.tmp" "$out/kube-score")
}

go_install() {  # name module@version [ldflags]
  missing "$1" || return 0
  log "installing $2"
  local gobin="$cache/src/gobin-$1"
  mkdir -p "$gobin"
  GOBIN="$gobin" go install -ldflags "${3:-} -s -w" "$2"
  mv "$gobin/$(basename "${2%@*}")" "$out/$1"
}

modules=(k8s etcd helm-unittest kube-score)
if $relock; then
  for m in "${modules[@]}"; do relock_module "$m"; done
fi

# The bin directory is keyed by the versions and the committed go.sum files: a bump rebuilds.
sums="$(for m in "${modules[@]}"; do cat "$here/go/$m/go.sum"; done | sha256sum | cut -c1-12)"
key="k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}_hu-${HELM_UNITTEST_VERSION}_ks-${KUBE_SCORE_VERSION}_sum-${sums}"
out="$cache/bin/$key"
if all_present; then echo "$out"; exit 0; fi
mkdir -p "$out"
# One build at a time per cache (test sessions may call this script concurrently).
exec 9>"$cache/build.lock"
flock 9

build_etcd
go_install kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
# Helm assumes Kubernetes v1.20 for .Capabilities.KubeVersion (template, lint) unless told
# otherwise; these are the variables helm's own Makefile sets (pkg/chartutil, pkg/lint/rules).
k8s_minor="${KUBERNETES_VERSION#v1.}"; k8s_minor="${k8s_minor%%.*}"
helm_ld="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  helm_ld+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$k8s_minor"
done
go_install helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "$helm_ld"
build_kubernetes
build_helm_unittest
build_kube_score

for b in "${binaries[@]}"; do missing "$b" && { echo "missing $b after build" >&2; exit 1; }; done
echo "$out"
