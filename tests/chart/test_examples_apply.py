"""examples/manifests/ apply as they are: file by file in order, with client-side and with
server-side apply, and again without conflicts (what GitOps tools do on every sync)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from rft_devcluster.handle import ClusterHandle

from tests.chart.helm import REPO

pytestmark = pytest.mark.cluster

EXAMPLES = sorted((REPO / "examples" / "manifests").glob("*.yaml"))


def _expected(files: list[Path]) -> list[tuple[str, str]]:
    return sorted(
        (doc["kind"], doc["metadata"]["name"])
        for path in files
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    )


def _present(cluster: ClusterHandle, namespace: str) -> list[tuple[str, str]]:
    out = []
    for path in EXAMPLES:
        listed = json.loads(cluster.kubectl("get", "-f", str(path), "-n", namespace, "-o", "json").stdout)
        items = listed["items"] if listed.get("kind") == "List" else [listed]
        out += [(item["kind"], item["metadata"]["name"]) for item in items]
    return sorted(out)


def test_examples_are_numbered_in_apply_order() -> None:
    assert [p.name[:2] for p in EXAMPLES] == sorted(p.name[:2] for p in EXAMPLES)
    kinds = [yaml.safe_load(p.read_text())["kind"] for p in EXAMPLES]
    # The identity first, the ReinforcementStep after what it references.
    assert kinds[0] == "ServiceAccount"
    assert kinds.index("Model") < kinds.index("ReinforcementStep")
    assert kinds.index("Dataset") < kinds.index("ReinforcementStep")


@pytest.mark.parametrize("mode", ["client-side", "server-side"])
def test_examples_apply_in_order(cluster: ClusterHandle, crds: None, mode: str) -> None:
    namespace = cluster.create_namespace("examples")
    flags = ["--server-side"] if mode == "server-side" else []
    try:
        for path in EXAMPLES:
            result = cluster.kubectl("apply", *flags, "-n", namespace, "-f", str(path))
            assert "created" in result.stdout or "serverside-applied" in result.stdout, result.stdout
        assert _present(cluster, namespace) == _expected(EXAMPLES)
        # A second apply of the whole folder changes nothing and conflicts with nothing.
        again = cluster.kubectl("apply", *flags, "-n", namespace, "-f", str(EXAMPLES[0].parent))
        for line in again.stdout.splitlines():
            assert line.endswith(("unchanged", "serverside-applied")), again.stdout
        listed = cluster.kubectl("get", "rft", "-n", namespace, "-o", "name").stdout.split()
        assert len(listed) == len(EXAMPLES) - 1  # everything but the ServiceAccount is in `rft`
    finally:
        cluster.delete_namespace(namespace)
