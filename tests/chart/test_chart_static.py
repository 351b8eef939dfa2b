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
from rft.api.common import ACCELERATOR_TYPES
from rft_operator.accelerators import DEFAULT_PLACEMENTS, AcceleratorMap
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
def _rbac(variant: str) -> list[dict[str, Any]]:
    docs = render(VARIANTS[variant])
    return [d for d in docs if d["kind"] in ("ClusterRole", "Role")]


ALLOWED_VERBS = {"get", "list", "watch", "create", "patch", "delete", "update"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_rbac_has_no_wildcards_no_secrets_no_escalation(variant: str) -> None:
    for role in _rbac(variant):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), (role["metadata"]["name"], rule)
            assert not rule.get("nonResourceURLs"), rule
            assert set(rule["verbs"]) <= ALLOWED_VERBS, rule
            if "secrets" in rule["resources"]:
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
    cluster_roles = find(docs, "ClusterRole")
    assert [r["metadata"]["name"] for r in cluster_roles] == ["rft-operator-framework"]
    assert cluster_roles[0]["rules"] == [
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "verbs": ["list", "watch"],
        },
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    ]
    default_framework = one(render(), "ClusterRole", "rft-operator-framework")
    assert [r["resources"] for r in default_framework["rules"]] == [["customresourcedefinitions"]]
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
