"""The chart's roles for the people who use the project, in the local cluster: ServiceAccounts bound
in one namespace (a RoleBinding) to Kubernetes' built-in `edit` and `view` ClusterRoles reach the
four kinds there through the chart's aggregated ClusterRoles (the aggregation controller of
kube-controller-manager copies their rules), and nowhere else. And the workload NetworkPolicies
are objects the API server takes and keeps as rendered (the local cluster's CNI does not enforce
NetworkPolicy: no traffic is tested here)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from rft.api import ALL_KINDS, GROUP, VERSION
from rft_devcluster.handle import ClusterHandle
from rft_devcluster.waiting import wait_for

from tests.chart.cluster import Release, can, installed, token_client
from tests.chart.helm import find

pytestmark = pytest.mark.cluster

PLURALS = sorted(kind.plural() for kind in ALL_KINDS)
STEP = "reinforcementsteps"
WRITES = ("create", "update", "patch", "delete", "deletecollection")


@dataclass
class Users:
    release: Release
    mine: str  # where the users are bound
    other: str  # where they are not
    users: dict[str, client.ApiClient]  # the ClusterRole each is bound to -> its client


def _rules(role: client.V1ClusterRole) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role.rules or []
        for group in rule.api_groups or []
        for resource in rule.resources or []
        for verb in rule.verbs
    }


def _chart_rules(release: Release, suffix: str) -> set[tuple[str, str, str]]:
    (role,) = [r for r in find(release.objects, "ClusterRole") if r["metadata"]["name"].endswith(suffix)]
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _aggregated(rbac: client.RbacAuthorizationV1Api, release: Release) -> bool:
    """Have the chart's rules reached the built-in roles (edit and view into edit and admin, view
    into view)?"""
    edit, view = _chart_rules(release, "-edit"), _chart_rules(release, "-view")
    wanted = {"view": view, "edit": edit | view, "admin": edit | view}
    return all(rules <= _rules(rbac.read_cluster_role(name)) for name, rules in wanted.items())


@pytest.fixture(scope="module")
def users(cluster: ClusterHandle, crds: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Users]:
    release_ns = cluster.create_namespace("rft-system")
    mine = cluster.create_namespace("team")
    other = cluster.create_namespace("other")
    tmp = tmp_path_factory.mktemp("chart-user-roles")
    values = {"workloadNetworkPolicy": {"enabled": True, "namespaces": [mine]}}
    # edit and view are Kubernetes' own; the chart's -edit ClusterRole bound directly (with view)
    # is the user who may use the four kinds but not create pods.
    bindings = {"edit": ["edit"], "view": ["view"], "kinds-only": ["{release}-rft-operator-edit", "view"]}
    clients: dict[str, client.ApiClient] = {}
    try:
        with installed(cluster, release_ns, values, tmp) as release:
            with cluster.api_client() as admin:
                core, rbac = client.CoreV1Api(admin), client.RbacAuthorizationV1Api(admin)
                for user, roles in bindings.items():
                    core.create_namespaced_service_account(mine, {"metadata": {"name": user}})
                    for role in roles:
                        name = role.format(release=release.name)
                        rbac.create_namespaced_role_binding(
                            mine,
                            {
                                "metadata": {"name": f"{user}-{name}"},
                                "roleRef": {
                                    "apiGroup": "rbac.authorization.k8s.io",
                                    "kind": "ClusterRole",
                                    "name": name,
                                },
                                "subjects": [{"kind": "ServiceAccount", "name": user, "namespace": mine}],
                            },
                        )
                # The aggregation controller works asynchronously: wait, bounded.
                wait_for(
                    lambda: _aggregated(rbac, release),
                    timeout=60,
                    interval=0.5,
                    what="the chart's rules aggregated into edit, admin and view",
                )
            for user in bindings:
                clients[user] = token_client(
                    cluster.sa_kubeconfig(mine, user, path=tmp / f"{user}.kubeconfig")
                )
            yield Users(release, mine, other, clients)
    finally:
        for api in clients.values():
            api.close()  # type: ignore[no-untyped-call]
        for name in (mine, other, release_ns):
            cluster.delete_namespace(name)


def _step(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ReinforcementStep",
        "metadata": {"name": name},
        "spec": {
            "dataset": "ds",
            "model": "base",
            "outputModel": f"{name}-out",
            "accelerator": {"type": "NVIDIA_H100_80GB", "count": 1},
        },
    }


def _forbidden(call: Callable[[], object]) -> None:
    with pytest.raises(ApiException) as refused:
        call()
    assert refused.value.status == 403, refused.value.body


def _admin_sets_status(cluster: ClusterHandle, namespace: str, name: str) -> None:
    """What the operator would write (no operator runs in this module)."""
    with cluster.api_client() as admin:
        client.CustomObjectsApi(admin).patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            STEP,
            name,
            {"status": {"phase": "JOB_STATE_PENDING", "message": "queued"}},
        )


def test_view_adds_reading_and_edit_adds_writing_the_four_kinds(cluster: ClusterHandle, users: Users) -> None:
    with cluster.api_client() as admin:
        rbac = client.RbacAuthorizationV1Api(admin)
        view = _rules(rbac.read_cluster_role("view"))
        edit = _rules(rbac.read_cluster_role("edit"))
        admin_rules = _rules(rbac.read_cluster_role("admin"))
    for plural in PLURALS:
        assert {(GROUP, plural, v) for v in ("get", "list", "watch")} <= view
        assert (GROUP, f"{plural}/status", "get") in view
        assert not {(GROUP, plural, v) for v in WRITES} & view
        assert {(GROUP, plural, v) for v in WRITES} <= edit & admin_rules
        # Nobody but the operator writes status.
        assert not {(GROUP, f"{plural}/status", v) for v in WRITES} & (view | edit | admin_rules)


def test_edit_creates_patches_and_deletes_a_step_and_reads_its_status(
    cluster: ClusterHandle, users: Users
) -> None:
    ns = users.mine
    custom = client.CustomObjectsApi(users.users["edit"])
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, STEP, _step("e"))
    _admin_sets_status(cluster, ns, "e")
    status = custom.get_namespaced_custom_object_status(GROUP, VERSION, ns, STEP, "e")
    assert status["status"]["phase"] == "JOB_STATE_PENDING"
    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, STEP, "e", {"spec": {"suspend": True}}
    )
    assert patched["spec"]["suspend"] is True
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, ns, STEP)
    assert [item["metadata"]["name"] for item in listed["items"]] == ["e"]
    # Status is the operator's: the user can neither write it nor forge it through the object.
    _forbidden(
        lambda: custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, ns, STEP, "e", {"status": {"phase": "JOB_STATE_COMPLETED"}}
        )
    )
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, STEP, "e", {"status": {"phase": "JOB_STATE_COMPLETED"}}
    )
    assert (
        custom.get_namespaced_custom_object(GROUP, VERSION, ns, STEP, "e")["status"]["phase"]
        == "JOB_STATE_PENDING"
    )
    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, STEP, "e")
    wait_for(
        lambda: not custom.list_namespaced_custom_object(GROUP, VERSION, ns, STEP)["items"],
        timeout=30,
        what="step e deleted",
    )
    # Another namespace is out of reach.
    _forbidden(lambda: custom.create_namespaced_custom_object(GROUP, VERSION, users.other, STEP, _step("e")))
    _forbidden(lambda: custom.list_namespaced_custom_object(GROUP, VERSION, users.other, STEP))


def test_view_reads_steps_and_their_status_and_changes_nothing(cluster: ClusterHandle, users: Users) -> None:
    ns = users.mine
    with cluster.api_client() as admin:
        client.CustomObjectsApi(admin).create_namespaced_custom_object(GROUP, VERSION, ns, STEP, _step("v"))
    _admin_sets_status(cluster, ns, "v")
    custom = client.CustomObjectsApi(users.users["view"])
    assert (
        custom.get_namespaced_custom_object(GROUP, VERSION, ns, STEP, "v")["spec"]["outputModel"] == "v-out"
    )
    assert "v" in [
        i["metadata"]["name"] for i in custom.list_namespaced_custom_object(GROUP, VERSION, ns, STEP)["items"]
    ]
    assert (
        custom.get_namespaced_custom_object_status(GROUP, VERSION, ns, STEP, "v")["status"]["message"]
        == "queued"
    )
    _forbidden(lambda: custom.create_namespaced_custom_object(GROUP, VERSION, ns, STEP, _step("v2")))
    _forbidden(
        lambda: custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, STEP, "v", {"spec": {"suspend": True}}
        )
    )
    _forbidden(lambda: custom.delete_namespaced_custom_object(GROUP, VERSION, ns, STEP, "v"))
    _forbidden(lambda: custom.list_namespaced_custom_object(GROUP, VERSION, users.other, STEP))
    with cluster.api_client() as admin:
        client.CustomObjectsApi(admin).delete_namespaced_custom_object(GROUP, VERSION, ns, STEP, "v")


# What the SDK and CLI call besides the four kinds (rft.sdk.endpoints, rft.cli.logs): a
# Deployment's Service, its EndpointSlices and pods (to reach a server from outside the cluster),
# and a training pod's log.
SDK_CALLS = [
    ("get", "services", "", None),
    ("list", "endpointslices", "discovery.k8s.io", None),
    ("list", "pods", "", None),
    ("get", "pods", "", "log"),
]


@pytest.mark.parametrize("user", ["edit", "view", "kinds-only"])
@pytest.mark.parametrize(("verb", "resource", "group", "subresource"), SDK_CALLS)
def test_the_builtin_roles_already_give_what_the_sdk_reads(
    users: Users, user: str, verb: str, resource: str, group: str, subresource: str | None
) -> None:
    api = users.users[user]
    assert can(api, verb, resource, group=group, namespace=users.mine, subresource=subresource)
    assert not can(api, verb, resource, group=group, namespace=users.other, subresource=subresource)


@pytest.mark.parametrize("user", ["edit", "view", "kinds-only"])
def test_each_user_reaches_the_kinds_in_its_namespace_only(users: Users, user: str) -> None:
    api = users.users[user]
    writes = user != "view"
    for plural in PLURALS:
        assert can(api, "watch", plural, group=GROUP, namespace=users.mine)
        assert can(api, "get", plural, group=GROUP, namespace=users.mine, subresource="status")
        assert not can(api, "patch", plural, group=GROUP, namespace=users.mine, subresource="status")
        for verb in WRITES:
            assert can(api, verb, plural, group=GROUP, namespace=users.mine) is writes, (plural, verb)
        assert not can(api, "get", plural, group=GROUP, namespace=users.other)
        assert not can(api, "list", plural, group=GROUP)  # cluster-wide


def test_edit_may_create_pods_the_kinds_only_user_may_not(users: Users) -> None:
    """Kubernetes' `edit` lets its holders create pods (and so run any ServiceAccount of the
    namespace) without the operator; the chart's -edit role with `view` is the four kinds only."""
    assert can(users.users["edit"], "create", "pods", namespace=users.mine)
    assert not can(users.users["kinds-only"], "create", "pods", namespace=users.mine)
    assert not can(users.users["kinds-only"], "create", "jobs", group="batch", namespace=users.mine)
    assert not can(users.users["view"], "get", "secrets", namespace=users.mine)
    assert not can(users.users["kinds-only"], "get", "secrets", namespace=users.mine)


def test_workload_network_policies_are_kept_as_rendered(cluster: ClusterHandle, users: Users) -> None:
    rendered = {p["metadata"]["name"]: p["spec"] for p in find(users.release.objects, "NetworkPolicy")}
    stored = json.loads(cluster.kubectl("get", "networkpolicies", "-n", users.mine, "-o", "json").stdout)[
        "items"
    ]
    kept = {p["metadata"]["name"]: p["spec"] for p in stored}
    prefix = f"{users.release.name}-rft-operator-"
    assert sorted(kept) == sorted(rendered) == [prefix + n for n in ("checks", "server", "trainer", "training-session")]
    for name, spec in rendered.items():
        # An empty list of rules reads back as absent: still "admit nothing" (policyTypes says so).
        assert kept[name] == {k: v for k, v in spec.items() if v != []}, name
