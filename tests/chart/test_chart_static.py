"""The Helm chart without a cluster: lint, helm-unittest suites, schema, docs, RBAC shape, and the
contract with the operator (every setting rendered, arguments Kopf accepts, a loadable accelerator
map)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kopf.cli import main as kopf_cli
from rft.api import ALL_KINDS, GROUP, Dataset, Deployment, Model, ReinforcementStep, TrainingSession
from rft.api.common import ACCELERATOR_TYPES
from rft_operator import naming
from rft_operator.accelerators import DEFAULT_PLACEMENTS, AcceleratorMap
from rft_operator.builders.jobs import (
    build_model_check_job,
    build_training_job,
    build_validation_job,
    default_output_location,
    trainer_config,
)
from rft_operator.builders.serving import ADAPTER_ADMIN_PORT, SERVER_PORT, build_server_deployment
from rft_operator.builders.session import SESSION_PORT, build_session_deployment
from rft_operator.config import OperatorConfig

from tests.chart.helm import (
    CHART,
    KUBE_VERSION,
    REPO,
    STATIC_MANIFEST,
    find,
    helm,
    one,
    operator_container,
    render,
    run,
    static_manifest,
    template_text,
)

VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())

NAMESPACED: dict[str, Any] = {"watchNamespaces": ["team-a", "team-b"]}
EVERYTHING: dict[str, Any] = {
    "replicaCount": 2,
    "watchNamespaces": ["team-a"],
    "acceleratorMap": {
        "NVIDIA_H100_80GB": {"nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}},
        "AMD_MI300X_192GB": None,
    },
    "metrics": {"serviceMonitor": {"enabled": True}},
    "networkPolicy": {"enabled": True, "apiServer": {"cidrs": ["10.0.0.1/32"]}},
    "workloadNetworkPolicy": {"enabled": True, "namespaces": ["team-a"]},
    "podDisruptionBudget": {"enabled": True},
    "rbac": {"ownerReferencesPermissionEnforcement": True},
    "workloadServiceAccounts": {
        "namespaces": ["team-a"],
        "training": {"eksRoleArn": "arn:aws:iam::111122223333:role/rft-trainer"},
        "serving": {"gkeServiceAccount": "rft-server@my-project.iam.gserviceaccount.com"},
    },
}
VARIANTS = {"default": {}, "namespaced": NAMESPACED, "everything": EVERYTHING}


# --- helm lint and helm-unittest -----------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_lint_strict(variant: str, tmp_path: Path) -> None:
    args = ["lint", "--strict", "--kube-version", KUBE_VERSION, str(CHART)]
    if VARIANTS[variant]:
        (tmp_path / "values.json").write_text(json.dumps(VARIANTS[variant]))
        args += ["-f", str(tmp_path / "values.json")]
    result = helm(*args)
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def _suites() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted((CHART / "tests").glob("*_test.yaml")):
        yield path, yaml.safe_load(path.read_text())


def test_helm_unittest_suites_pass() -> None:
    result = run("helm-unittest", "--color=false", str(CHART), check=False)
    summary = result.stdout + result.stderr
    assert result.returncode == 0, summary
    counts = re.search(r"Tests:\s+(\d+) passed, (\d+) total", summary)
    assert counts is not None, summary
    passed, total = int(counts.group(1)), int(counts.group(2))
    declared = sum(len(suite["tests"]) for _, suite in _suites())
    assert passed == total == declared, summary


def test_helm_unittest_suites_cover_every_template() -> None:
    templates = {p.name for p in (CHART / "templates").iterdir() if not p.name.startswith("_")}
    covered = {name for _, suite in _suites() for name in suite["templates"]}
    assert templates - covered == set(), "templates without a helm-unittest suite"


def _flatten(values: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(values, dict):
        for key, value in values.items():
            path = f"{prefix}{key}"
            yield path
            yield from _flatten(value, path + ".")


def _set_paths() -> set[str]:
    paths: set[str] = set()
    for _, suite in _suites():
        for case in suite["tests"]:
            for key, value in (case.get("set") or {}).items():
                paths.add(key)
                paths.update(_flatten(value, key + "."))
    return paths


def _option_paths(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Every value a user can set, down to the leaves of the chart's own structure."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in FREE_FORM:
            yield from _option_paths(value, path + ".")
        else:
            yield path


# Maps whose keys are the user's (resource names, labels): setting any entry covers them.
FREE_FORM = {"resources.requests", "resources.limits", "acceleratorMap"}


def test_helm_unittest_suites_exercise_every_option() -> None:
    options = set(_option_paths(VALUES))
    # The security contexts and resources are asserted at their defaults (deployment_test.yaml).
    asserted_at_default = {"resources", "podSecurityContext", "securityContext"}
    untested = {
        o for o in options - _set_paths() if o.split(".")[0] not in asserted_at_default and o not in FREE_FORM
    }
    assert untested == set(), "values no helm-unittest test sets"


# --- CRDs ------------------------------------------------------------------------------------------
def test_chart_crds_are_byte_identical_to_crds() -> None:
    source = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert sorted(chart) == sorted(source), "run `make crds` (it writes charts/rft-operator/crds too)"
    for name, data in source.items():
        assert chart[name] == data, (
            f"charts/rft-operator/crds/{name} differs from crds/{name}: run `make crds`"
        )


def test_crds_ship_only_with_include_crds() -> None:
    plain = render()
    assert find(plain, "CustomResourceDefinition") == []
    with_crds = yaml.safe_load_all(template_text(extra=["--include-crds"]).stdout)
    names = sorted(d["metadata"]["name"] for d in with_crds if d and d["kind"] == "CustomResourceDefinition")
    assert names == [
        "datasets.rft-operator.io",
        "deployments.rft-operator.io",
        "models.rft-operator.io",
        "reinforcementsteps.rft-operator.io",
        "trainingsessions.rft-operator.io",
    ]


# --- values.yaml documentation and values.schema.json --------------------------------------------
KEY_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z0-9_.\-/]+):(\s|$)")


def test_every_value_is_documented_by_a_comment_starting_with_its_name() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for number, line in enumerate(lines):
        match = KEY_LINE.match(line)
        if not match:
            continue
        indent, key = match.group("indent"), match.group("key")
        block: list[str] = []
        above = number - 1
        while above >= 0 and lines[above].startswith(indent + "#"):
            block.insert(0, lines[above])
            above -= 1
        if not block or not block[0].startswith(f"{indent}# {key} "):
            undocumented.append(f"values.yaml:{number + 1}: {key}")
    assert undocumented == []


def _schema_objects(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if schema.get("type") == "object" or "object" in (schema.get("type") or []):
        yield path, schema
    for key, sub in (schema.get("properties") or {}).items():
        yield from _schema_objects(sub, f"{path}.{key}" if path else key)
    if isinstance(schema.get("items"), dict):
        yield from _schema_objects(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _schema_objects(schema["additionalProperties"], f"{path}.*")


def test_schema_closes_every_object() -> None:
    """Objects with known fields reject unknown ones; the only open objects are maps of strings
    (labels, annotations) and nested Kubernetes objects whose schema is the API server's."""
    open_objects = []
    for path, obj in _schema_objects(SCHEMA):
        extra = obj.get("additionalProperties")
        if "properties" in obj:
            if extra is not False:
                open_objects.append(path)
        elif isinstance(extra, dict):
            continue  # a map: its values are typed
        elif path != "global" and not obj.get("description", "").startswith("A Kubernetes "):
            open_objects.append(path)
    assert open_objects == []


def _schema_keys(schema: dict[str, Any]) -> set[str]:
    return set(schema.get("properties") or {})


def _compare_keys(values: Any, schema: dict[str, Any], path: str, out: list[str]) -> None:
    """Chart-own objects: the same keys in both; Kubernetes-typed ones (security contexts,
    resources, affinity) may offer more fields in the schema than values.yaml sets."""
    if not isinstance(values, dict) or "properties" not in schema or path in FREE_FORM:
        return
    kubernetes_typed = "Kubernetes" in schema.get("description", "")
    known = _schema_keys(schema) - {"global"}
    differing = set(values) - known if kubernetes_typed else set(values) ^ known
    for key in differing:
        out.append(f"{path}.{key}" if path else key)
    for key, value in values.items():
        if key in schema["properties"]:
            _compare_keys(value, schema["properties"][key], f"{path}.{key}" if path else key, out)


def test_schema_and_values_have_the_same_keys() -> None:
    mismatched: list[str] = []
    _compare_keys(VALUES, SCHEMA, "", mismatched)
    assert mismatched == []


def _closed_paths(schema: dict[str, Any], path: str = "") -> Iterator[str]:
    """Paths settable with --set whose object rejects unknown keys."""
    if "properties" in schema and schema.get("additionalProperties") is False:
        yield path
        for key, sub in schema["properties"].items():
            if key != "global":
                yield from _closed_paths(sub, f"{path}.{key}" if path else key)


@pytest.mark.parametrize("path", sorted(_closed_paths(SCHEMA)))
def test_unknown_keys_are_rejected_at_every_level(path: str) -> None:
    key = f"{path}.bogusSetting" if path else "bogusSetting"
    result = template_text(extra=["--set", f"{key}=1"], check=False)
    assert result.returncode != 0
    assert "additional properties 'bogusSetting' not allowed" in result.stderr


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("replicaCount=two", "/replicaCount"),
        ("operator.workers=0", "/operator/workers"),
        ("operator.workers=257", "/operator/workers"),
        ("operator.pollSeconds=0", "/operator/pollSeconds"),
        ("operator.progressPoll=sometimes", "/operator/progressPoll"),
        ("operator.scratchSize=lots", "/operator/scratchSize"),
        ("metrics.port=70000", "/metrics/port"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("image.digest=sha256:abc", "/image/digest"),
        ("watchNamespaces[0]=Team_A", "/watchNamespaces/0"),
        (
            "workloadServiceAccounts.training.eksRoleArn=my-role",
            "/workloadServiceAccounts/training/eksRoleArn",
        ),
        (
            "workloadServiceAccounts.serving.gkeServiceAccount=me@example.com",
            "/workloadServiceAccounts/serving/gkeServiceAccount",
        ),
        (
            "acceleratorMap.NVIDIA_H100_80GB.cpuPerAccelerator=many",
            "/acceleratorMap/NVIDIA_H100_80GB/cpuPerAccelerator",
        ),
        ("networkPolicy.apiServer.cidrs[0]=10.0.0.1", "/networkPolicy/apiServer/cidrs/0"),
        ("leaderElection.enabled=maybe", "/leaderElection/enabled"),
        ("rbac.aggregateToUserRoles=yes", "/rbac/aggregateToUserRoles"),
        ("workloadNetworkPolicy.namespaces[0]=Team_A", "/workloadNetworkPolicy/namespaces/0"),
        ("workloadNetworkPolicy.bucket.ports[0]=0", "/workloadNetworkPolicy/bucket/ports/0"),
    ],
)
def test_wrong_values_are_rejected(setting: str, message: str) -> None:
    result = template_text(extra=["--set", setting], check=False)
    assert result.returncode != 0
    assert f"at '{message}'" in result.stderr


def test_schema_knows_every_accelerator_type() -> None:
    assert sorted(SCHEMA["properties"]["acceleratorMap"]["properties"]) == sorted(ACCELERATOR_TYPES)


# --- the contract with the operator -----------------------------------------------------------
def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_operator_setting_is_rendered_and_parses(variant: str) -> None:
    env = _env(operator_container(render(VARIANTS[variant])))
    settings = {f"RFT_{name.upper()}" for name in OperatorConfig.model_fields}
    assert settings - set(env) == set(), "operator settings the chart does not render"
    config = OperatorConfig.from_env(env)
    assert config.accelerator_map_file == "/etc/rft-operator/accelerators.yaml"
    assert config.progress_poll == "all"


def test_settings_reach_the_operator_with_their_types() -> None:
    values = {
        "operator": {
            "workers": 3,
            "pollSeconds": 0.5,
            "resyncSeconds": 45,
            "progressPoll": "off",
            "progressPort": 9999,
            "validationJobTtlSeconds": 60,
            "scratchSize": "50Gi",
        },
        "workloadImages": {
            "trainer": {"tag": "9.9.9"},
            "servingHelpers": {"tag": "9.9.8"},
            "vllm": {"tag": "v1.0.0"},
            "pullPolicy": "Always",
        },
        "metrics": {"port": 9100},
    }
    config = OperatorConfig.from_env(_env(operator_container(render(values))))
    assert config.workers == 3
    assert config.poll_seconds == 0.5
    assert config.resync_seconds == 45
    assert config.progress_poll == "off"
    assert config.progress_port == 9999
    assert config.validation_job_ttl_seconds == 60
    assert config.scratch_size == "50Gi"
    assert config.trainer_image == "ghcr.io/rft-operator/rft-trainer:9.9.9"
    assert config.serving_helpers_image == "ghcr.io/rft-operator/rft-serving-helpers:9.9.8"
    assert config.vllm_image == "vllm/vllm-openai:v1.0.0"
    assert config.image_pull_policy == "Always"
    assert config.metrics_port == 9100
    policy = OperatorConfig.from_env(
        _env(
            operator_container(
                render(
                    {
                        "workloadPolicy": {
                            "allowedImages": [
                                "registry.example.com/team/",
                                "ghcr.io/org/trainer@sha256:" + "a" * 64,
                            ],
                            "serviceAccounts": {
                                "requireLabel": False,
                                "label": "example.com/id",
                                "waitSeconds": 2.5,
                            },
                        }
                    }
                )
            )
        )
    )
    assert policy.allowed_images == "registry.example.com/team/,ghcr.io/org/trainer@sha256:" + "a" * 64
    assert policy.service_account_check is False
    assert policy.service_account_label == "example.com/id"
    assert policy.service_account_wait_seconds == 2.5
    default = OperatorConfig.from_env(_env(operator_container(render({}))))
    assert (default.allowed_images, default.service_account_check) == ("", True)
    assert default.service_account_label == "rft-operator.io/workload"
    off = OperatorConfig.from_env(_env(operator_container(render({"metrics": {"enabled": False}}))))
    assert off.metrics_port == 0


@pytest.mark.parametrize(
    ("variant", "clusterwide", "namespaces"),
    [
        ("default", True, ()),
        ("namespaced", False, ("team-a", "team-b")),
    ],
)
def test_kopf_accepts_the_rendered_arguments(
    variant: str, clusterwide: bool, namespaces: tuple[str, ...]
) -> None:
    container = operator_container(render(VARIANTS[variant]))
    assert container["command"] == ["python", "-m", "rft_operator"]
    # rft_operator.__main__ runs `kopf run -m rft_operator.main <args>`: parse them as Kopf does.
    run_command = kopf_cli.commands["run"]
    ctx = run_command.make_context("run", [*container["args"], "-m", "rft_operator.main"])
    assert ctx.params["standalone"] is True
    assert ctx.params["clusterwide"] is clusterwide
    assert ctx.params["namespaces"] == namespaces
    assert ctx.params["liveness_endpoint"] == "http://0.0.0.0:8081/healthz"
    assert ctx.params["log_format"].name == "FULL"


def _accelerator_map(values: dict[str, Any], tmp_path: Path) -> AcceleratorMap:
    configmap = one(render(values), "ConfigMap")
    path = tmp_path / "accelerators.yaml"
    path.write_text(configmap["data"]["accelerators.yaml"])
    return AcceleratorMap.load(path)


def test_default_accelerator_map_keeps_the_operators_placements(tmp_path: Path) -> None:
    loaded = _accelerator_map({}, tmp_path)
    assert loaded.known() == sorted(DEFAULT_PLACEMENTS)
    assert loaded.placement("NVIDIA_H100_80GB") == DEFAULT_PLACEMENTS["NVIDIA_H100_80GB"]


def test_accelerator_map_values_reach_the_operator(tmp_path: Path) -> None:
    loaded = _accelerator_map(
        {
            "acceleratorMap": {
                "NVIDIA_H100_80GB": {
                    "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "cpuPerAccelerator": "24",
                    "memoryPerAccelerator": "200Gi",
                },
                "CPU": {"resource": None, "cpuPerAccelerator": "4", "memoryPerAccelerator": "16Gi"},
                "AMD_MI300X_192GB": None,
            }
        },
        tmp_path,
    )
    assert "AMD_MI300X_192GB" not in loaded.known()
    h100 = loaded.placement("NVIDIA_H100_80GB")
    assert h100.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert loaded.pod_resources("NVIDIA_H100_80GB", 2)["requests"] == {
        "cpu": "48",
        "memory": "400Gi",
        "nvidia.com/gpu": "2",
    }
    assert loaded.pod_resources("CPU", 0)["requests"] == {"cpu": "4", "memory": "16Gi"}


# --- RBAC shape --------------------------------------------------------------------------------------
def _operators(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The operator's own objects (not the users' aggregated roles)."""
    return [d for d in docs if d["metadata"]["labels"].get("app.kubernetes.io/component") == "operator"]


def _rbac(variant: str) -> list[dict[str, Any]]:
    docs = render(VARIANTS[variant])
    return [d for d in _operators(docs) if d["kind"] in ("ClusterRole", "Role")]


ALLOWED_VERBS = {"get", "list", "watch", "create", "patch", "delete", "update"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_rbac_has_no_wildcards_no_secrets_no_escalation(variant: str) -> None:
    for role in _rbac(variant):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), (role["metadata"]["name"], rule)
            assert not rule.get("nonResourceURLs"), rule
            assert set(rule["verbs"]) <= ALLOWED_VERBS, rule
            if "secrets" in rule["resources"] and not role["metadata"]["name"].endswith("-admin-key"):
                # A TrainingSession's API key: created once in the session's namespace, never read,
                # listed or changed (clients read it with their own RBAC).
                assert rule == {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}, rule
            elif "secrets" in rule["resources"]:
                # The adapter admin key: made once and read by name, in the release namespace only.
                assert role["kind"] == "Role", role
                assert role["metadata"]["name"].endswith("-admin-key"), role
                assert rule in (
                    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
                    {
                        "apiGroups": [""],
                        "resources": ["secrets"],
                        "resourceNames": [role["metadata"]["name"]],
                        "verbs": ["get"],
                    },
                ), rule
            assert not {"configmaps", "nodes"} & set(rule["resources"]), rule
            if "serviceaccounts" in rule["resources"]:
                # Reading the workload policy's label of one named ServiceAccount, nothing more.
                assert rule == {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get"]}
            if "namespaces" in rule["resources"]:
                assert rule == {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}
                assert role["kind"] == "ClusterRole"
                assert role["metadata"]["name"].endswith("-framework")
            assert not any(
                r in rule["resources"] for r in ("pods/exec", "pods/attach", "serviceaccounts/token")
            )
            if "update" in rule["verbs"]:
                # Only the Lease renewal (by name) and finalizers (owner references) are updated.
                assert (rule["resources"] == ["leases"] and rule["resourceNames"] == ["rft-operator"]) or all(
                    r.endswith("/finalizers") for r in rule["resources"]
                ), rule
            if "pods" in rule["resources"]:
                assert set(rule["verbs"]) == {"get", "list", "watch"}
            if "pods/status" in rule["resources"]:
                # The serving pods' readiness gate, nothing else of a pod.
                assert rule == {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch"]}


def test_namespaced_variant_grants_nothing_cluster_wide_but_observation() -> None:
    docs = render(NAMESPACED)
    cluster_roles = _operators(find(docs, "ClusterRole"))
    assert [r["metadata"]["name"] for r in cluster_roles] == ["rft-operator-framework"]
    priority_classes = {
        "apiGroups": ["kueue.x-k8s.io"],
        "resources": ["workloadpriorityclasses"],
        "verbs": ["get"],
    }
    assert cluster_roles[0]["rules"] == [
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "verbs": ["list", "watch"],
        },
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
        priority_classes,
        # A question (may this ServiceAccount create TokenReviews?), which reads and grants nothing.
        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
    ]
    default_framework = one(render(), "ClusterRole", "rft-operator-framework")
    assert [r["resources"] for r in default_framework["rules"]] == [
        ["customresourcedefinitions"],
        ["workloadpriorityclasses"],
        ["subjectaccessreviews"],
    ]
    roles = find(docs, "Role", "rft-operator")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    bindings = find(docs, "RoleBinding", "rft-operator")
    assert all(
        b["subjects"] == [{"kind": "ServiceAccount", "name": "rft-operator", "namespace": "rft-system"}]
        for b in bindings
    )
    assert find(docs, "ClusterRoleBinding", "rft-operator") == []


def test_every_rbac_rule_is_commented() -> None:
    """Each rule in the rendered RBAC is preceded by a comment saying why it is there (a rule
    directly following another of the same purpose shares that comment: apps deployments and
    services)."""
    text = template_text(EVERYTHING).stdout
    for doc in text.split("\n---\n"):
        if "\nkind: ClusterRole\n" not in doc and "\nkind: Role\n" not in doc:
            continue
        rules = doc.split("\nrules:\n", 1)[1].splitlines()
        uncommented = [
            line
            for i, line in enumerate(rules)
            if line.startswith("- apiGroups:")
            and not rules[i - 1].startswith("#")
            and "resources: [services]" not in rules[i + 1]
        ]
        assert uncommented == [], doc
    assert "# --- Framework (Kopf)" in text
    assert "# --- Application" in text


# --- the users' roles, aggregated to edit, admin and view ---------------------------------------------
PLURALS = sorted(kind.plural() for kind in ALL_KINDS)
AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"


def _user_roles(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    roles = [d for d in find(docs, "ClusterRole") if d not in _operators(docs)]
    return {r["metadata"]["name"].removeprefix("rft-operator-"): r for r in roles}


def test_user_roles_grant_the_four_kinds_to_edit_and_view() -> None:
    roles = _user_roles(render())
    assert sorted(roles) == ["edit", "view"]
    aggregated = {
        name: sorted(k.removeprefix(AGGREGATE) for k in r["metadata"]["labels"] if k.startswith(AGGREGATE))
        for name, r in roles.items()
    }
    assert aggregated == {"edit": ["admin", "edit"], "view": ["view"]}
    for role in roles.values():
        for rule in role["rules"]:
            assert rule["apiGroups"] == [GROUP]
            assert sorted(r.split("/")[0] for r in rule["resources"]) == PLURALS
    edit = {
        (res, verb) for rule in roles["edit"]["rules"] for res in rule["resources"] for verb in rule["verbs"]
    }
    view = {
        (res, verb) for rule in roles["view"]["rules"] for res in rule["resources"] for verb in rule["verbs"]
    }
    writes = {"create", "update", "patch", "delete", "deletecollection"}
    assert edit == {(p, v) for p in PLURALS for v in {"get", "list", "watch"} | writes}
    # Status is the operator's: readable by view (and so by edit and admin), written by no user.
    assert view == {(p, v) for p in PLURALS for v in ("get", "list", "watch")} | {
        (f"{p}/status", "get") for p in PLURALS
    }


def test_user_roles_follow_their_switches() -> None:
    assert _user_roles(render({"rbac": {"aggregateToUserRoles": False}})) == {}
    assert _user_roles(render({"rbac": {"create": False}})) == {}
    assert sorted(_user_roles(render(NAMESPACED))) == ["edit", "view"]


# --- NetworkPolicies of the operator and of its workload pods -----------------------------------------
def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Does a LabelSelector match these labels (the API server's semantics)?"""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not matched:
            return False
    return True


def _workload_pods(config: OperatorConfig) -> dict[str, dict[str, Any]]:
    """The pod templates the operator's builders make, by component, built with the chart's own
    settings: whatever labels and ports the builders use, the policies are checked against them."""
    meta = {"namespace": "team-a", "uid": "u1", "generation": 1}
    base = Model.model_validate(
        {
            "metadata": {"name": "base", **meta},
            "spec": {"kind": "base", "location": "s3://bkt/rft/models/base/"},
        }
    )
    dataset = Dataset.model_validate(
        {
            "metadata": {"name": "ds", **meta},
            "spec": {"source": "s3://bkt/rft/datasets/ds.jsonl"},
            "status": {
                "phase": "READY",
                "digest": "sha256:" + "ab" * 32,
                "resolvedSource": "s3://bkt/rft/datasets/ds.jsonl",
            },
        }
    )
    step = ReinforcementStep.model_validate(
        {"metadata": {"name": "s", **meta}, "spec": {"dataset": "ds", "model": "base", "outputModel": "out"}}
    )
    served = Deployment.model_validate(
        {"metadata": {"name": "srv", **meta}, "spec": {"model": "base", "deploymentType": "on-demand"}}
    )
    accelerators = AcceleratorMap.load(None)
    out = default_output_location(base, "out")
    trainer = trainer_config(step, dataset, base, base, out, config)
    templates = {
        "server": build_server_deployment(
            served, base, accelerators, config, replicas=1, admin_token_sha256="0" * 64
        ),
        "trainer": build_training_job(step, trainer, accelerators, config),
        "dataset-validation": build_validation_job(dataset, config),
        "model-check": build_model_check_job(base, config),
        "training-session": build_session_deployment(
            TrainingSession.model_validate(
                {
                    "metadata": {"name": "warm", **meta},
                    "spec": {"baseModel": "base", "stateLocation": "s3://bkt/s/"},
                }
            ),
            base,
            accelerators,
            config,
            replicas=1,
        ),
    }
    pods = {component: manifest["spec"]["template"] for component, manifest in templates.items()}
    for component, pod in pods.items():
        labels = pod["metadata"]["labels"]
        assert (labels[naming.LABEL_MANAGED_BY], labels[naming.LABEL_COMPONENT]) == (
            naming.MANAGER,
            component,
        )
    return pods


def _ports(pod: dict[str, Any]) -> set[int]:
    return {p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}


def _rule_ports(rule: dict[str, Any]) -> set[int]:
    assert all(p["protocol"] == "TCP" for p in rule["ports"]), rule
    return {p["port"] for p in rule["ports"]}


def test_workload_network_policies_select_exactly_the_operators_pods() -> None:
    values = {**EVERYTHING, "operator": {"progressPort": 9123}}
    docs = render(values, namespace="rft-system")
    config = OperatorConfig.from_env(_env(operator_container(docs)))
    assert config.progress_port == 9123
    pods = _workload_pods(config)
    operator_pod = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    policies = {
        p["metadata"]["name"].removeprefix("rft-operator-"): p
        for p in find(docs, "NetworkPolicy")
        if p["metadata"]["namespace"] == "team-a"
    }
    assert sorted(policies) == ["checks", "server", "trainer", "training-session"]
    selected = {
        name: sorted(
            c for c, pod in pods.items() if _selects(p["spec"]["podSelector"], pod["metadata"]["labels"])
        )
        for name, p in policies.items()
    }
    # Every kind of pod the operator makes is selected by exactly one policy.
    assert selected == {
        "server": ["server"],
        "trainer": ["trainer"],
        "checks": ["dataset-validation", "model-check"],
        "training-session": ["training-session"],
    }
    assert not any(_selects(p["spec"]["podSelector"], operator_pod) for p in policies.values())
    for policy in policies.values():
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]

    def only_the_operator(rule: dict[str, Any]) -> None:
        (peer,) = rule["from"]
        assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "rft-system"}}
        assert _selects(peer["podSelector"], operator_pod)
        assert not any(_selects(peer["podSelector"], pod["metadata"]["labels"]) for pod in pods.values())

    # Server pods: their ports are the inference port (the namespace) and the adapter sidecar (the
    # operator only).
    inference, admin = policies["server"]["spec"]["ingress"]
    assert _ports(pods["server"]) == {SERVER_PORT, ADAPTER_ADMIN_PORT}
    assert _rule_ports(inference) == {SERVER_PORT}
    assert inference["from"] == [{"podSelector": {}}]
    assert _rule_ports(admin) == {ADAPTER_ADMIN_PORT}
    only_the_operator(admin)
    # Trainer pods: the progress port, the operator only.
    (progress,) = policies["trainer"]["spec"]["ingress"]
    assert _ports(pods["trainer"]) == _rule_ports(progress) == {config.progress_port}
    only_the_operator(progress)
    # Validation and check pods listen on nothing and admit nothing.
    assert _ports(pods["dataset-validation"]) == _ports(pods["model-check"]) == set()
    assert policies["checks"]["spec"]["ingress"] == []
    # Training sessions: the Tinker API, to the namespace's pods and to the operator (healthz).
    (tinker_api,) = policies["training-session"]["spec"]["ingress"]
    assert _ports(pods["training-session"]) == _rule_ports(tinker_api) == {SESSION_PORT}
    namespace_peer, operator_peer = tinker_api["from"]
    assert namespace_peer == {"podSelector": {}}
    only_the_operator({"from": [operator_peer]})
    # Out: DNS and the bucket (TCP 443 anywhere by default), the same for every workload pod.
    for policy in policies.values():
        assert policy["spec"]["egress"] == [
            {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
            {"ports": [{"port": 443, "protocol": "TCP"}]},
        ]

    # The operator's own policy lets it reach exactly those admin ports of those pods.
    own = one(docs, "NetworkPolicy", "rft-operator")
    assert _selects(own["spec"]["podSelector"], operator_pod)
    reach = {}
    for rule in own["spec"]["egress"]:
        for peer in rule.get("to", []):
            if "podSelector" in peer:
                reach[frozenset(_rule_ports(rule))] = sorted(
                    c for c, pod in pods.items() if _selects(peer["podSelector"], pod["metadata"]["labels"])
                )
    assert reach == {
        frozenset({config.progress_port}): ["trainer"],
        frozenset({ADAPTER_ADMIN_PORT}): ["server"],
        frozenset({SESSION_PORT}): ["training-session"],
    }


def test_workload_network_policies_go_to_the_listed_or_watched_namespaces() -> None:
    def namespaces(values: dict[str, Any]) -> list[str]:
        return sorted({p["metadata"]["namespace"] for p in find(render(values), "NetworkPolicy")})

    on = {"enabled": True}
    assert namespaces({"workloadNetworkPolicy": on, "watchNamespaces": ["b", "a"]}) == ["a", "b"]
    assert namespaces({"workloadNetworkPolicy": {**on, "namespaces": ["c"]}, "watchNamespaces": ["a"]}) == [
        "c"
    ]
    assert namespaces({"workloadNetworkPolicy": {**on, "namespaces": ["c"]}}) == ["c"]
    assert namespaces({"workloadNetworkPolicy": {"namespaces": ["c"]}}) == []
    refused = template_text({"workloadNetworkPolicy": on}, check=False)
    assert refused.returncode != 0
    assert "workloadNetworkPolicy.enabled needs the namespaces workloads run in" in refused.stderr


# --- the Deployment's shape ------------------------------------------------------------------------
def test_restricted_pod_security() -> None:
    deployment = one(render(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]
    assert container["resources"]["limits"]["ephemeral-storage"]
    assert container["resources"]["requests"]["ephemeral-storage"]
    # Started and alive: Kopf's /healthz; ready: what its Service serves, /metrics.
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}


def test_several_replicas_need_leader_election() -> None:
    result = template_text({"replicaCount": 2, "leaderElection": {"enabled": False}}, check=False)
    assert result.returncode != 0
    assert "replicaCount above 1 needs leaderElection.enabled" in result.stderr
    env = _env(operator_container(render({"replicaCount": 2})))
    assert env["RFT_LEADER_ELECTION"] == "true"


def test_static_manifest_is_in_sync_with_the_chart() -> None:
    assert STATIC_MANIFEST.read_text() == static_manifest(), "run: python -m tests.chart.helm --write"
