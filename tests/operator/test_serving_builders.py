"""Pure builders of served models (no cluster): args, env, probes, resources, security."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from rft.api import Deployment, Model
from rft_operator.accelerators import AcceleratorMap
from rft_operator.builders.serving import (
    ADAPTER_ADMIN_PORT,
    admin_port,
    build_server_deployment,
    build_server_service,
    endpoint,
)
from rft_operator.config import OperatorConfig

CONFIG = OperatorConfig(
    server_image="reg/rft-server:1", vllm_image="vllm/vllm-openai:v0.11.0", trainer_image="reg/rft-trainer:1"
)
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
    manifest = build_server_deployment(dep, MODEL, ACCELERATORS, CONFIG)
    pod = manifest["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["command"] == ["python", "-m", "rft.fetch", "s3://bkt/rft/models/qwen/", "/models/base"]
    server = pod["containers"][0]
    assert server["image"] == "vllm/vllm-openai:v0.11.0"
    cmd = server["command"]
    assert cmd[:3] == ["vllm", "serve", "/models/base"]
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
    assert sidecar["command"] == ["python", "-m", "rft.adapter_sidecar"]
    assert admin_port(dep) == ADAPTER_ADMIN_PORT
    assert pod["serviceAccountName"] == "server-sa"
    assert pod["automountServiceAccountToken"] is False
    assert all(c["securityContext"]["allowPrivilegeEscalation"] is False for c in [*pod["containers"], init])


def test_reference_server_reads_the_bucket_itself_and_binds_the_pod_ip() -> None:
    dep = deployment(engine="reference", accelerator={"type": "CPU", "count": 0})
    manifest = build_server_deployment(dep, MODEL, ACCELERATORS, CONFIG)
    pod = manifest["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    (server,) = pod["containers"]
    cmd = server["command"]
    assert cmd[:4] == ["python", "-m", "rft_trainer.server", "s3://bkt/rft/models/qwen/"]
    assert cmd[cmd.index("--host") + 1] == "$(POD_IP)"
    assert {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in server["env"]
    assert "nvidia.com/gpu" not in server["resources"]["limits"]
    assert admin_port(dep) == 8000
    assert "nodeSelector" not in pod


def test_service_is_cluster_internal_and_selects_the_server_pods() -> None:
    dep = deployment(engine="reference")
    svc = build_server_service(dep)
    manifest = build_server_deployment(dep, MODEL, ACCELERATORS, CONFIG)
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"] == manifest["spec"]["selector"]["matchLabels"]
    assert svc["metadata"]["ownerReferences"][0]["name"] == "qwen-base"
    assert endpoint(dep) == "http://qwen-base-server.ns.svc.cluster.local:8000/v1"


def test_operator_never_imports_torch() -> None:
    code = "import sys, rft_operator.main; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
