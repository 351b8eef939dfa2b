"""The chart's namespaced variant in the local cluster: with `watchNamespaces` the operator,
running under the chart's ServiceAccount token, serves the listed namespace through Roles and
cannot reach any other. Its own module, so that no all-namespaces operator runs meanwhile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rft_devcluster.fake_trainer import fake_pod, success_message
from rft_devcluster.handle import ClusterHandle
from rft_devcluster.localnode.network import OPERATOR_POLL_SCOPE

from tests.chart.cluster import (
    ChartOperator,
    can,
    installed,
    token_client,
)
from tests.operator.conftest import Objects

pytestmark = pytest.mark.cluster

TEST_VALUES: dict[str, Any] = {"operator": {"pollSeconds": 1, "progressPoll": OPERATOR_POLL_SCOPE}}


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in obj["status"].get("conditions", [])}


def test_namespaced_rbac_serves_the_listed_namespace_only(
    cluster: ClusterHandle, crds: None, namespace: str, tmp_path: Path
) -> None:
    watched = cluster.create_namespace("watched")
    other = cluster.create_namespace("other")
    try:
        values = {
            **TEST_VALUES,
            "watchNamespaces": [watched],
            "workloadServiceAccounts": {"namespaces": [watched]},
        }
        with installed(cluster, namespace, values, tmp_path) as release:
            assert "--namespace=" + watched in release.container["args"]
            assert "--all-namespaces" not in release.container["args"]
            operator = ChartOperator(release, tmp_path)
            operator.start()
            try:
                mine, theirs = Objects(cluster, watched), Objects(cluster, other)
                for objs in (mine, theirs):
                    objs.base_model("base")
                    objs.ready_dataset("ds")
                    objs.step(
                        "s", pod=fake_pod(0, success_message("s3://bucket-a/rft/models/s-out/"), delay="1s")
                    )
                done = mine.wait_phase("s", "JOB_STATE_COMPLETED", timeout=90)
                assert conditions(done)["Succeeded"]["status"] == "True"
                assert mine.get("models", "s-out") is not None
                # The other namespace is not the operator's business: untouched.
                untouched = theirs.get("reinforcementsteps", "s")
                assert untouched is not None
                assert "status" not in untouched or not untouched["status"]
                assert theirs.jobs("rft-operator.io/step=s") == []
                with token_client(release.token_kubeconfig(tmp_path)) as api:
                    assert can(api, "create", "jobs", group="batch", namespace=watched)
                    assert not can(api, "create", "jobs", group="batch", namespace=other)
                    assert not can(api, "list", "reinforcementsteps", group="rft-operator.io")
                    assert not can(
                        api, "list", "reinforcementsteps", group="rft-operator.io", namespace=other
                    )
                    assert not can(api, "list", "pods")
                    assert not can(api, "get", "secrets", namespace=watched)
                    # The workload policy reads ServiceAccounts of the watched namespace only.
                    assert can(api, "get", "serviceaccounts", namespace=watched, name="default")
                    assert not can(api, "get", "serviceaccounts", namespace=other, name="default")
                    assert can(api, "watch", "namespaces")  # Kopf matches --namespace against them
                    assert can(api, "watch", "customresourcedefinitions", group="apiextensions.k8s.io")
                for objs in (mine, theirs):
                    objs.api.close()  # type: ignore[no-untyped-call]
            finally:
                operator.stop()
            log = operator.log()
            assert "rft-operator started" in log
            assert f"became the leader ({namespace}/rft-operator" in log
            assert "Forbidden" not in log
            assert "Not enough permissions" not in log
    finally:
        cluster.delete_namespace(watched)
        cluster.delete_namespace(other)
