"""The control plane's Go builds are locked: each wrapper module's go.mod and go.sum are committed
(tools/go/<name>/) and require exactly the versions in tools/versions.env, so
tools/build-control-plane.sh (go build -mod=readonly) chooses no version at build time."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"
VERSIONS = dict(re.findall(r"^([A-Z_]+)=(\S+)$", (TOOLS / "versions.env").read_text(), flags=re.MULTILINE))
REQUIRES = {
    "k8s": ("k8s.io/kubernetes", "KUBERNETES_VERSION"),
    "etcd": ("go.etcd.io/etcd/server/v3", "ETCD_VERSION"),
    "helm-unittest": ("github.com/helm-unittest/helm-unittest", "HELM_UNITTEST_VERSION"),
}


@pytest.mark.parametrize("name", sorted(REQUIRES))
def test_wrapper_module_is_committed_at_the_pinned_version(name: str) -> None:
    module, variable = REQUIRES[name]
    go_mod = (TOOLS / "go" / name / "go.mod").read_text()
    go_sum = (TOOLS / "go" / name / "go.sum").read_text()
    assert re.search(
        rf"^require {re.escape(module)} {re.escape(VERSIONS[variable])}$", go_mod, re.MULTILINE
    ), (
        f"tools/go/{name}/go.mod does not require {module} {VERSIONS[variable]}: "
        "run tools/build-control-plane.sh --relock"
    )
    # go.sum holds the module itself (and its go.mod) with their hashes.
    assert f"{module} {VERSIONS[variable]} h1:" in go_sum
    assert f"{module} {VERSIONS[variable]}/go.mod h1:" in go_sum


def test_kubernetes_staging_modules_are_replaced_at_the_pinned_version() -> None:
    go_mod = (TOOLS / "go" / "k8s" / "go.mod").read_text()
    lines = (TOOLS / "go" / "k8s" / "staging-modules.txt").read_text().splitlines()
    staging = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert staging
    for module in staging:
        assert f"k8s.io/{module} => k8s.io/{module} {VERSIONS['KUBERNETES_STAGING_VERSION']}" in go_mod
