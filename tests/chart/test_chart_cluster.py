"""The chart in the local cluster: the API server accepts what it renders, `helm install` and
`helm upgrade` work, and the operator, running with only the chart's ServiceAccount token, takes
ReinforcementSteps through their whole life; the same token can do nothing more than it needs."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from rft_devcluster.fake_trainer import fake_pod, success_message
from rft_devcluster.handle import ClusterHandle
from rft_devcluster.localnode.network import OPERATOR_POLL_SCOPE
from rft_devcluster.waiting import wait_for

from tests.argocd.sandbox import health
from tests.chart.cluster import (
    ChartOperator,
    Release,
    can,
    installed,
    token_client,
)
from tests.chart.helm import CHART, STATIC_MANIFEST, STATIC_NAMESPACE, one, parse, template_text
from tests.operator.conftest import Objects

pytestmark = pytest.mark.cluster

# Chart values the tests install with: a fast poll, and contacting only the local node's pods
# (kwok's pods have made-up addresses).
TEST_VALUES: dict[str, Any] = {"operator": {"pollSeconds": 1, "progressPoll": OPERATOR_POLL_SCOPE}}
EKS_ROLE = "arn:aws:iam::111122223333:role/rft-trainer"


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in obj["status"].get("conditions", [])}


# --- the API server accepts the rendered manifests -------------------------------------------------
def _kubectl_name(obj: dict[str, Any]) -> str:
    """What `kubectl -o name` prints for an object: <resource>[.<group>]/<name>."""
    group = obj["apiVersion"].rpartition("/")[0]
    return f"{obj['kind'].lower()}{'.' + group if group else ''}/{obj['metadata']['name']}"


def _server_dry_run(cluster: ClusterHandle, text: str) -> list[str]:
    result = cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "-f", "-", "-o", "name", input=text
    )
    return sorted(result.stdout.split())


@pytest.mark.parametrize("variant", ["default", "namespaced", "everything"])
def test_rendered_manifests_are_accepted_by_the_api_server(
    cluster: ClusterHandle, crds: None, namespace: str, variant: str
) -> None:
    watched = [cluster.create_namespace("watched"), cluster.create_namespace("watched")]
    try:
        variants: dict[str, dict[str, Any]] = {
            "default": {},
            "namespaced": {"watchNamespaces": watched},
            "everything": {
                "replicaCount": 2,
                "watchNamespaces": watched,
                "acceleratorMap": {
                    "NVIDIA_H100_80GB": {"nodeSelector": {"pool": "h100"}},
                    "AMD_MI300X_192GB": None,
                },
                "networkPolicy": {
                    "enabled": True,
                    "apiServer": {"cidrs": ["10.0.0.1/32"]},
                    "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
                },
                # In the watched namespaces (workloadNetworkPolicy.namespaces is empty).
                "workloadNetworkPolicy": {
                    "enabled": True,
                    "inferenceFrom": [{"namespaceSelector": {"matchLabels": {"name": "ingress"}}}],
                    "bucket": {"ports": [443, 9000], "to": [{"ipBlock": {"cidr": "10.96.0.0/12"}}]},
                    "extraEgress": [
                        {"to": [{"ipBlock": {"cidr": "169.254.169.252/32"}}], "ports": [{"port": 988}]}
                    ],
                },
                "podDisruptionBudget": {"enabled": True},
                "rbac": {"ownerReferencesPermissionEnforcement": True},
                "workloadServiceAccounts": {"namespaces": watched, "training": {"eksRoleArn": EKS_ROLE}},
                "tolerations": [
                    {"key": "dedicated", "operator": "Equal", "value": "system", "effect": "NoSchedule"}
                ],
                "topologySpreadConstraints": [
                    {
                        "maxSkew": 1,
                        "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "ScheduleAnyway",
                    }
                ],
            },
        }
        values = variants[variant]
        text = template_text(values, release="rft", namespace=namespace).stdout
        docs = parse(text)
        accepted = _server_dry_run(cluster, text)
        assert accepted == sorted(_kubectl_name(d) for d in docs)
        if variant != "default":
            roles = [a for a in accepted if a.startswith("role.rbac.authorization.k8s.io/")]
            # one per watched namespace, leader election and the adapter admin key
            assert len(roles) == 4
        # The users' roles, aggregated to edit, admin and view.
        assert {
            "clusterrole.rbac.authorization.k8s.io/rft-rft-operator-edit",
            "clusterrole.rbac.authorization.k8s.io/rft-rft-operator-view",
        } <= set(accepted)
        # Four per watched namespace (checks, server, trainer, training session), and the operator's own.
        policies = [a for a in accepted if a.startswith("networkpolicy.networking.k8s.io/")]
        assert len(policies) == {"default": 0, "namespaced": 0, "everything": 9}[variant]
    finally:
        for name in watched:
            cluster.delete_namespace(name)


def test_static_manifest_is_accepted_by_the_api_server(cluster: ClusterHandle, crds: None) -> None:
    with cluster.api_client() as api:
        core = client.CoreV1Api(api)
        try:
            core.read_namespace(STATIC_NAMESPACE)
            created = False
        except ApiException as exc:
            if exc.status != 404:
                raise
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=STATIC_NAMESPACE)))
            created = True
        try:
            accepted = _server_dry_run(cluster, STATIC_MANIFEST.read_text())
            assert "deployment.apps/rft-operator" in accepted
            assert "clusterrole.rbac.authorization.k8s.io/rft-operator" in accepted
            assert len(accepted) == len(parse(STATIC_MANIFEST.read_text()))
        finally:
            if created:
                core.delete_namespace(STATIC_NAMESPACE)


# --- helm install / upgrade / uninstall --------------------------------------------------------------
def test_helm_install_upgrade_uninstall(
    cluster: ClusterHandle, crds: None, namespace: str, tmp_path: Path
) -> None:
    with installed(cluster, namespace, {}, tmp_path) as release:
        status = json.loads(release.helm("status", release.name, "-o", "json").stdout)
        assert status["info"]["status"] == "deployed"
        assert "kubectl get rft" in status["info"]["notes"]
        before = cluster.kubectl(
            "get", "deployment", "-n", namespace, release.name + "-rft-operator", "-o", "json"
        )
        checksum = json.loads(before.stdout)["spec"]["template"]["metadata"]["annotations"][
            "checksum/accelerators"
        ]

        release.helm(
            "upgrade",
            release.name,
            str(CHART),
            "--reuse-values",
            "--set",
            "replicaCount=2",
            "--set-string",
            "acceleratorMap.CPU.cpuPerAccelerator=4",
        )
        after = json.loads(
            cluster.kubectl(
                "get", "deployment", "-n", namespace, release.name + "-rft-operator", "-o", "json"
            ).stdout
        )
        assert after["spec"]["replicas"] == 2
        assert after["spec"]["template"]["metadata"]["annotations"]["checksum/accelerators"] != checksum
        configmap = json.loads(
            cluster.kubectl(
                "get", "configmap", "-n", namespace, release.name + "-rft-operator-accelerators", "-o", "json"
            ).stdout
        )
        assert yaml.safe_load(configmap["data"]["accelerators.yaml"]) == {"CPU": {"cpuPerAccelerator": "4"}}
        cluster_role = f"clusterrole/{release.name}-rft-operator"
        assert cluster.kubectl("get", cluster_role).returncode == 0
    # Uninstalled: the cluster-scoped objects are gone too.
    assert cluster.kubectl("get", cluster_role, check=False).returncode != 0
    assert cluster.kubectl("get", f"{cluster_role}-framework", check=False).returncode != 0


# --- the operator under the chart's RBAC (all namespaces) -------------------------------------------
@dataclass
class Running:
    release: Release
    operator: ChartOperator
    workloads: str  # a namespace the operator serves
    token: Path


@pytest.fixture(scope="module")
def all_namespaces(
    cluster: ClusterHandle, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    release_ns = cluster.create_namespace("rft-system")
    workloads = cluster.create_namespace("team")
    tmp = tmp_path_factory.mktemp("chart-all-namespaces")
    values = {
        **TEST_VALUES,
        "workloadServiceAccounts": {"namespaces": [workloads], "training": {"eksRoleArn": EKS_ROLE}},
    }
    try:
        with installed(cluster, release_ns, values, tmp) as release:
            operator = ChartOperator(release, tmp)
            operator.start()
            try:
                yield Running(release, operator, workloads, release.token_kubeconfig(tmp))
            finally:
                operator.stop()
    finally:
        cluster.delete_namespace(workloads)
        cluster.delete_namespace(release_ns)


@pytest.fixture
def team(cluster: ClusterHandle, all_namespaces: Running) -> Iterator[Objects]:
    objs = Objects(cluster, all_namespaces.workloads)
    yield objs
    objs.api.close()  # type: ignore[no-untyped-call]


def test_chart_creates_the_workload_identity(all_namespaces: Running, cluster: ClusterHandle) -> None:
    sa = json.loads(
        cluster.kubectl(
            "get", "serviceaccount", "rft-trainer", "-n", all_namespaces.workloads, "-o", "json"
        ).stdout
    )
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == EKS_ROLE
    assert sa["automountServiceAccountToken"] is False


def test_step_completes_under_the_charts_token(all_namespaces: Running, team: Objects) -> None:
    team.base_model("base")
    team.ready_dataset("ds")
    team.step(
        "s",
        pod=fake_pod(0, success_message("s3://bucket-a/rft/models/s-out/"), delay="1s"),
        serviceAccountName="rft-trainer",
    )
    done = team.wait_phase("s", "JOB_STATE_COMPLETED", timeout=90)
    assert conditions(done)["Succeeded"]["status"] == "True"
    assert done["status"]["outputModel"] == f"accounts/{team.namespace}/models/s-out"
    model = team.get("models", "s-out")
    assert model is not None
    assert model["spec"]["serviceAccountName"] == "rft-trainer"
    assert model["status"]["phase"] == "READY"  # models/status patched
    base = team.get("models", "base")
    assert base is not None
    assert base["status"]["phase"] == "READY"
    jobs = team.jobs("rft-operator.io/step=s")
    assert [j.spec.template.spec.service_account_name for j in jobs] == ["rft-trainer"]
    wanted = {"Normal/Pending", "Normal/Running", "Normal/Completed"}  # events created
    team.wait_events("s", lambda seen: wanted <= {e.split(":")[0] for e in seen}, what=str(wanted))
    # Argo CD's health checks read what the operator really wrote.
    assert health(done) == {"status": "Healthy", "message": done["status"]["message"]}
    assert health(model)["status"] == "Healthy"
    assert health(base)["status"] == "Healthy"


def test_suspend_and_cancel_under_the_charts_token(all_namespaces: Running, team: Objects) -> None:
    """Patching and deleting Jobs: suspend a running step, then cancel it."""
    team.base_model("base2")
    team.ready_dataset("ds2")
    team.step("c", pod=fake_pod(0, success_message(), delay="300s"), model="base2", dataset="ds2")
    running = team.wait_phase("c", "JOB_STATE_RUNNING", timeout=90)
    assert health(running)["status"] == "Progressing"
    team.patch("reinforcementsteps", "c", {"suspend": True})
    suspended = team.wait_step(
        "c", lambda o: conditions(o).get("Suspended", {}).get("status") == "True", what="Suspended"
    )
    assert suspended["status"]["phase"] == "JOB_STATE_PENDING"
    assert health(suspended)["status"] == "Suspended"
    team.wait_step(
        "c", lambda _: bool(team.jobs("rft-operator.io/step=c")[0].spec.suspend), what="Job suspended"
    )
    team.patch("reinforcementsteps", "c", {"cancel": True})
    cancelled = team.wait_phase("c", "JOB_STATE_CANCELLED")
    assert conditions(cancelled)["Succeeded"]["reason"] == "Cancelled"
    assert health(cancelled) == {"status": "Suspended", "message": "cancelled by the user (spec.cancel)"}
    team.wait_step("c", lambda _: not team.jobs("rft-operator.io/step=c"), what="Job deleted")


def test_finished_step_is_deleted_after_its_ttl(all_namespaces: Running, team: Objects) -> None:
    team.base_model("base3")
    team.ready_dataset("ds3")
    team.step(
        "t",
        pod=fake_pod(0, success_message("s3://bucket-a/rft/models/t-out/")),
        model="base3",
        dataset="ds3",
        ttlSecondsAfterFinished=1,
    )
    # The step may already be gone by the time its COMPLETED status could be read: wait for the
    # output Model (registered just before COMPLETED), then for the step to disappear.
    wait_for(lambda: team.get("models", "t-out"), timeout=90, what="Model t-out registered")
    wait_for(
        lambda: team.get("reinforcementsteps", "t") is None, timeout=60, what="step t deleted after its TTL"
    )
    assert team.get("models", "t-out") is not None  # the output Model outlives the step


def _wait(team: Objects, plural: str, name: str, until: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = team.get(plural, name)
        return obj if obj is not None and until(obj) else None

    last = lambda: json.dumps(team.get(plural, name), indent=1)  # noqa: E731
    return wait_for(probe, timeout=90, interval=0.25, what=f"{plural}/{name}", on_timeout=last)


def test_serving_under_the_charts_token(
    all_namespaces: Running, team: Objects, cluster: ClusterHandle
) -> None:
    """An on-demand Deployment gets its apps/v1 Deployment and Service by server-side apply; an
    on-demand-lora one gets and loses the unload-adapter finalizer (patches of the rft
    Deployment). Adapter loading itself is not exercised: kwok's pods have no server behind them."""
    team.base_model("serve-base")
    team.create(
        "deployments",
        "Deployment",
        "srv",
        {
            "model": "serve-base",
            "deploymentType": "on-demand",
            "engine": "vllm",
            "accelerator": {"type": "NVIDIA_H100_80GB", "count": 1},
            "minReplicaCount": 1,
            "maxReplicaCount": 1,
        },
    )
    ready = _wait(team, "deployments", "srv", lambda o: o.get("status", {}).get("phase") == "READY")
    assert health(ready)["status"] == "Healthy"
    apps = json.loads(
        cluster.kubectl(
            "get",
            "deployment.apps",
            "srv-server",
            "-n",
            team.namespace,
            "-o",
            "json",
            "--show-managed-fields",
        ).stdout
    )
    service = json.loads(
        cluster.kubectl(
            "get", "service", "srv-server", "-n", team.namespace, "-o", "json", "--show-managed-fields"
        ).stdout
    )
    for child in (apps, service):
        managers = {f["manager"] for f in child["metadata"]["managedFields"] if f["operation"] == "Apply"}
        assert managers == {"rft-operator"}, child["metadata"]["managedFields"]

    team.create(
        "models",
        "Model",
        "serve-lora",
        {
            "kind": "lora",
            "location": "s3://bucket-a/rft/models/serve-lora/",
            "baseModel": "serve-base",
            "lora": {"rank": 16, "alpha": 32, "targetModules": ["q_proj", "v_proj"]},
        },
    )
    team.create(
        "deployments",
        "Deployment",
        "srv-lora",
        {
            "model": "serve-lora",
            "deploymentType": "on-demand-lora",
            "baseDeployment": "srv",
            "accelerator": {"type": "NVIDIA_H100_80GB", "count": 1},
        },
    )
    lora = _wait(
        team,
        "deployments",
        "srv-lora",
        lambda o: (
            "rft-operator.io/unload-adapter" in o["metadata"].get("finalizers", [])
            and "may not contact pod" in o.get("status", {}).get("message", "")
        ),
    )
    assert lora["status"]["phase"] == "CREATING"
    team.custom.delete_namespaced_custom_object(
        "rft-operator.io", "v1alpha1", team.namespace, "deployments", "srv-lora"
    )
    wait_for(lambda: team.get("deployments", "srv-lora") is None, timeout=60, what="srv-lora finalized")


def test_liveness_and_metrics_endpoints_answer(all_namespaces: Running) -> None:
    operator = all_namespaces.operator
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.health_port}/healthz", timeout=10) as resp:
        assert resp.status == 200
        probes = json.loads(resp.read())
    assert "queue" in probes  # the operator's own probe handler ran
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    assert "rft_reconciles_total" in metrics


# --- the chart's token can do no more than it needs --------------------------------------------------
def test_charts_token_is_allowed_what_the_operator_does(all_namespaces: Running) -> None:
    ns, release_ns = all_namespaces.workloads, all_namespaces.release.namespace
    g = "rft-operator.io"
    with token_client(all_namespaces.token) as api:
        assert can(api, "list", "reinforcementsteps", group=g)
        assert can(api, "watch", "deployments", group=g)
        assert can(api, "patch", "reinforcementsteps", group=g, namespace=ns, subresource="status")
        assert can(api, "create", "models", group=g, namespace=ns)
        assert can(api, "delete", "reinforcementsteps", group=g, namespace=ns)
        assert can(api, "create", "jobs", group="batch", namespace=ns)
        assert can(api, "patch", "jobs", group="batch", namespace=ns)
        assert can(api, "list", "pods", namespace=ns)
        assert can(api, "get", "serviceaccounts", namespace=ns, name="rft-trainer")  # the workload policy
        assert can(api, "create", "events", namespace=ns)
        assert can(api, "create", "deployments", group="apps", namespace=ns)
        assert can(api, "patch", "services", namespace=ns)
        assert can(api, "patch", "deployments", group=g, namespace=ns)  # the unload-adapter finalizer
        assert can(api, "watch", "customresourcedefinitions", group="apiextensions.k8s.io")
        assert can(api, "create", "leases", group="coordination.k8s.io", namespace=release_ns)
        assert can(
            api, "update", "leases", group="coordination.k8s.io", namespace=release_ns, name="rft-operator"
        )
        # The adapter admin key: made on the first start, read by name after.
        assert can(api, "create", "secrets", namespace=release_ns)
        key = f"{all_namespaces.release.name}-rft-operator-admin-key"
        assert can(api, "get", "secrets", namespace=release_ns, name=key)
        # A TrainingSession's API key: created in its namespace, never read back (the
        # "get"/"list" cases below stay denied). No more than creating its pod already grants.
        assert can(api, "create", "secrets", namespace=ns)
        # A TrainingSession with spec.authentication.kubernetesTokens: may its ServiceAccount
        # create TokenReviews? A question (SubjectAccessReview); the operator grants nothing.
        assert can(api, "create", "subjectaccessreviews", group="authorization.k8s.io")
        # A TrainingSession's saved sampler weights: a Model and an on-demand-lora Deployment on
        # the session's samplingDeployment, created (never deleted) by the operator.
        assert can(api, "create", "deployments", group=g, namespace=ns)


@pytest.mark.parametrize(
    ("verb", "resource", "group", "where", "subresource", "name"),
    [
        ("get", "secrets", "", "workloads", None, None),
        ("list", "secrets", "", "workloads", None, None),
        ("watch", "secrets", "", "release", None, None),
        ("get", "secrets", "", "release", None, "sh.helm.release.v1.rft-operator.v1"),
        ("list", "secrets", "", "release", None, None),
        ("update", "secrets", "", "release", None, None),
        ("list", "secrets", "", "kube-system", None, None),
        ("create", "pods", "", "workloads", None, None),
        ("delete", "pods", "", "workloads", None, None),
        ("create", "pods", "", "workloads", "exec", None),
        ("get", "pods", "", "workloads", "log", None),
        ("delete", "nodes", "", None, None, None),
        ("list", "nodes", "", None, None, None),
        ("update", "jobs", "batch", "workloads", None, None),
        ("create", "serviceaccounts", "", "workloads", "token", "rft-trainer"),
        ("list", "serviceaccounts", "", "workloads", None, None),
        ("patch", "serviceaccounts", "", "workloads", None, "rft-trainer"),
        ("impersonate", "serviceaccounts", "", "workloads", None, None),
        ("create", "rolebindings", "rbac.authorization.k8s.io", "workloads", None, None),
        ("bind", "clusterroles", "rbac.authorization.k8s.io", None, None, None),
        ("escalate", "clusterroles", "rbac.authorization.k8s.io", None, None, None),
        ("create", "customresourcedefinitions", "apiextensions.k8s.io", None, None, None),
        ("get", "customresourcedefinitions", "apiextensions.k8s.io", None, None, None),
        ("delete", "customresourcedefinitions", "apiextensions.k8s.io", None, None, None),
        ("patch", "reinforcementsteps", "rft-operator.io", "workloads", None, None),
        ("create", "reinforcementsteps", "rft-operator.io", "workloads", None, None),
        ("delete", "models", "rft-operator.io", "workloads", None, None),
        ("delete", "datasets", "rft-operator.io", "workloads", None, None),
        ("delete", "deployments", "rft-operator.io", "workloads", None, None),
        ("delete", "deployments", "apps", "workloads", None, None),
        ("delete", "services", "", "workloads", None, None),
        ("list", "services", "", "workloads", None, None),
        ("update", "deployments", "apps", "workloads", None, None),
        ("get", "configmaps", "", "workloads", None, None),
        ("patch", "namespaces", "", None, None, None),
        ("list", "namespaces", "", None, None, None),
        ("update", "leases", "coordination.k8s.io", "release", None, "kube-controller-manager"),
        ("update", "leases", "coordination.k8s.io", "workloads", None, "rft-operator"),
        ("patch", "events", "", "workloads", None, None),
        ("create", "tokenreviews", "authentication.k8s.io", None, None, None),
        ("create", "clusterrolebindings", "rbac.authorization.k8s.io", None, None, None),
    ],
)
def test_charts_token_is_denied_everything_else(
    all_namespaces: Running,
    verb: str,
    resource: str,
    group: str,
    where: str | None,
    subresource: str | None,
    name: str | None,
) -> None:
    namespace = {"workloads": all_namespaces.workloads, "release": all_namespaces.release.namespace}.get(
        where or "", where
    )
    with token_client(all_namespaces.token) as api:
        assert not can(
            api, verb, resource, group=group, namespace=namespace, subresource=subresource, name=name
        ), f"{verb} {resource}/{subresource or ''} in {namespace} should be denied"


def test_charts_token_really_fails_to_read_secrets_or_make_pods(all_namespaces: Running) -> None:
    ns = all_namespaces.workloads
    with token_client(all_namespaces.token) as api:
        core = client.CoreV1Api(api)
        with pytest.raises(ApiException) as secrets:
            core.list_namespaced_secret(ns)
        assert secrets.value.status == 403
        pod = client.V1Pod(
            metadata=client.V1ObjectMeta(name="x"),
            spec=client.V1PodSpec(containers=[client.V1Container(name="x", image="busybox")]),
        )
        with pytest.raises(ApiException) as pods:
            core.create_namespaced_pod(ns, pod)
        assert pods.value.status == 403
        with pytest.raises(ApiException) as nodes:
            core.delete_node("kwok-gpu-0")
        assert nodes.value.status == 403


def test_operator_log_shows_no_denied_call(all_namespaces: Running) -> None:
    """Everything the operator did in this module ran without a single refusal (Kopf logs a 403
    on a watch or scan, the reconcilers' errors name Forbidden)."""
    log = all_namespaces.operator.log()
    assert "rft-operator started" in log
    # RFT_LEADER_ELECTION=true: it took the Lease in the release namespace with the chart's Role.
    assert f"became the leader ({all_namespaces.release.namespace}/rft-operator" in log
    assert "Forbidden" not in log
    assert "403" not in log
    assert "Not enough permissions" not in log


def test_release_objects_render_one_deployment(all_namespaces: Running) -> None:
    deployment = one(all_namespaces.release.objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RFT_PROGRESS_POLL"] == OPERATOR_POLL_SCOPE
    assert env["RFT_POLL_SECONDS"] == "1"
