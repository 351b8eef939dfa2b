"""`LLM(...)` checks its arguments in the constructor and knows the Deployment it wants, offline."""

from __future__ import annotations

from typing import Any

import pytest
from rft import LLM
from rft.api import Deployment, Model


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"deployment_type": "on-demand"}, ValueError, "id: required for deployment_type 'on-demand'"),
        (
            {"deployment_type": "dedicated"},
            ValueError,
            "deployment_type: must be one of serverless, on-demand",
        ),
        (
            {"deployment_type": "on-demand-lora"},
            ValueError,
            "base_id: required for deployment_type 'on-demand-lora'",
        ),
        (
            {"deployment_type": "on-demand-lora", "base_id": "base", "id": "mine"},
            ValueError,
            "id: not accepted for deployment_type 'on-demand-lora'",
        ),
        (
            {"deployment_type": "on-demand", "id": "d", "base_id": "base"},
            ValueError,
            "base_id: only used with deployment_type 'on-demand-lora'",
        ),
        (
            {"deployment_type": "serverless", "base_id": "base"},
            ValueError,
            "base_id: only used with deployment_type 'on-demand-lora'",
        ),
        (
            {"deployment_type": "on-demand-lora", "base_id": "base", "min_replica_count": 2},
            ValueError,
            "min_replica_count: not used by deployment_type 'on-demand-lora'",
        ),
        (
            {"deployment_type": "on-demand-lora", "base_id": "base", "accelerator_count": 2},
            ValueError,
            "accelerator_count: not used by deployment_type 'on-demand-lora'",
        ),
        ({"deployment_type": "on-demand", "id": "Bad_Id"}, ValueError, "id: 'Bad_Id' is not a valid name"),
        (
            {"deployment_type": "on-demand", "id": "accounts/other/deployments/d"},
            ValueError,
            "id: accounts/other/deployments/d is in namespace 'other', but the model is in 'default'",
        ),
        (
            {"deployment_type": "on-demand-lora", "base_id": "accounts/other/deployments/b"},
            ValueError,
            "base_id: accounts/other/deployments/b is in namespace 'other'",
        ),
        (
            {"deployment_type": "on-demand", "id": "accounts/default/models/d"},
            ValueError,
            "id: 'accounts/default/models/d' names models, expected accounts/<namespace>/deployments/<name>",
        ),
        (
            {"deployment_type": "on-demand", "id": "d", "accelerator_type": "TPU_V5"},
            ValueError,
            "accelerator_type: must be one of NVIDIA_A100_80GB",
        ),
        (
            {
                "deployment_type": "on-demand",
                "id": "d",
                "accelerator_type": "NVIDIA_H100_80GB",
                "accelerator_count": 0,
            },
            ValueError,
            "accelerator_count: 0 is only allowed with accelerator_type='CPU'",
        ),
        (
            {"deployment_type": "on-demand", "id": "d", "accelerator_count": 17},
            ValueError,
            "accelerator_count: must be between 0 and 16",
        ),
        (
            {"deployment_type": "on-demand", "id": "d", "accelerator_count": 1.5},
            TypeError,
            "accelerator_count: expected an integer",
        ),
        (
            {"deployment_type": "on-demand", "id": "d", "min_replica_count": -1},
            ValueError,
            "min_replica_count: must be between 0 and 1000",
        ),
        (
            {"deployment_type": "on-demand", "id": "d", "max_replica_count": 0},
            ValueError,
            "max_replica_count: must be between 1 and 1000",
        ),
        (
            {"deployment_type": "on-demand", "id": "d", "min_replica_count": 3, "max_replica_count": 2},
            ValueError,
            "min_replica_count: 3 exceeds max_replica_count 2",
        ),
        (
            {"deployment_type": "on-demand", "id": "d", "engine": "tgi"},
            ValueError,
            "engine: must be one of vllm",
        ),
        (
            {"deployment_type": "on-demand", "id": "d", "max_context_length": 8},
            ValueError,
            "max_context_length: must be between 16",
        ),
        (
            {"deployment_type": "on-demand", "id": "d", "enable_addons": "yes"},
            TypeError,
            "enable_addons: expected True or False",
        ),
        (
            {"deployment_type": "on-demand", "id": "d", "max_lora_rank": 1024},
            ValueError,
            "max_lora_rank: must be between 1 and 512",
        ),
        (
            {"deployment_type": "on-demand", "id": "d", "poll_interval": 0},
            ValueError,
            "poll_interval: must be greater than 0",
        ),
        (
            {"deployment_type": "on-demand", "id": "d", "namespace": "Bad NS"},
            ValueError,
            "namespace: 'Bad NS' is not a valid name",
        ),
        (
            {"deployment_type": "on-demand", "id": "d", "bucket": "bucket-without-scheme"},
            ValueError,
            "bucket: 'bucket-without-scheme'",
        ),
    ],
)
def test_bad_arguments_fail_in_the_constructor(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised:
        LLM("qwen3-0-6b", **kwargs)
    assert message in str(raised.value)


def test_bad_model_name_names_the_model_argument() -> None:
    with pytest.raises(ValueError, match=r"model: 'accounts/x/deployments/y' names deployments"):
        LLM("accounts/x/deployments/y", "serverless")


def test_unknown_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"accelerator"):
        LLM("m", "on-demand", id="d", accelerator="CPU")  # type: ignore[call-arg]


def test_on_demand_names_and_spec() -> None:
    llm = LLM(
        "accounts/team-a/models/qwen3-0-6b",
        "on-demand",
        id="base",
        accelerator_type="NVIDIA_H100_80GB",
        accelerator_count=2,
        min_replica_count=0,
        max_replica_count=3,
        engine="vllm",
        max_context_length=4096,
        enable_addons=True,
        max_loras=4,
        max_lora_rank=32,
    )
    assert llm.namespace == "team-a"
    assert llm.model == "accounts/team-a/models/qwen3-0-6b"
    assert llm.deployment_id == "base"
    assert llm.deployment_name == "accounts/team-a/deployments/base"
    assert llm.base_deployment_name is None
    assert llm.desired_spec == {
        "model": "qwen3-0-6b",
        "deploymentType": "on-demand",
        "engine": "vllm",
        "accelerator": {"type": "NVIDIA_H100_80GB", "count": 2},
        "minReplicaCount": 0,
        "maxReplicaCount": 3,
        "serviceAccountName": "default",
        "enableLora": True,
        "maxLoras": 4,
        "maxLoraRank": 32,
        "maxModelLen": 4096,
    }


def test_unset_options_are_left_to_the_server() -> None:
    llm = LLM("m", "on-demand", id="d", namespace="ns", service_account="reader")
    assert llm.desired_spec == {
        "model": "m",
        "deploymentType": "on-demand",
        "serviceAccountName": "reader",
    }


def test_on_demand_lora_is_named_after_the_model_and_rides_on_the_base() -> None:
    llm = LLM("accounts/team-b/models/step-3", "on-demand-lora", base_id="base")
    assert llm.namespace == "team-b"
    assert llm.deployment_id == "step-3"
    assert llm.base_deployment_name == "accounts/team-b/deployments/base"
    assert llm.desired_spec == {
        "model": "step-3",
        "deploymentType": "on-demand-lora",
        "baseDeployment": "base",
    }


@pytest.mark.parametrize("deployment_type", ["serverless", "auto"])
def test_serverless_and_auto_get_a_derived_name_or_the_id(deployment_type: str) -> None:
    derived = LLM("qwen3-0-6b", deployment_type)  # type: ignore[arg-type]
    assert derived.deployment_id == f"qwen3-0-6b-{deployment_type}"
    assert derived.desired_spec["deploymentType"] == deployment_type
    named = LLM("qwen3-0-6b", deployment_type, id="shared")  # type: ignore[arg-type]
    assert named.deployment_id == "shared"


def test_namespace_setting_applies_to_short_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RFT_NAMESPACE", "from-env")
    assert LLM("m", "on-demand", id="d").deployment_name == "accounts/from-env/deployments/d"
    assert LLM("m", "on-demand", id="d", namespace="arg").deployment_name == "accounts/arg/deployments/d"


class _BaseOnlyClient:
    """Serves one base Deployment to `require` and records patches."""

    def __init__(self, base: Deployment) -> None:
        self.base = base
        self.patches: list[dict[str, Any]] = []

    def require(self, kind: Any, namespace: str, name: str, hint: str) -> Deployment:
        return self.base

    def patch(self, kind: Any, namespace: str, name: str, body: dict[str, Any]) -> None:
        self.patches.append(body)


def _checkpoint(rank: int = 16, base: str = "qwen") -> Model:
    return Model.model_validate(
        {
            "metadata": {"name": "step-3"},
            "spec": {
                "kind": "lora",
                "location": "s3://bkt/models/step-3/",
                "baseModel": base,
                "lora": {"rank": rank, "alpha": 2 * rank, "targetModules": ["q_proj"]},
            },
        }
    )


@pytest.mark.parametrize(
    ("spec", "model", "message"),
    [
        (
            {"deploymentType": "on-demand-lora", "baseDeployment": "x", "enableLora": False},
            _checkpoint(),
            "is itself an on-demand-lora deployment",
        ),
        ({"model": "llama", "maxLoraRank": 8}, _checkpoint(), "serves model 'llama', but LoRA checkpoint"),
        ({"maxLoraRank": 8}, _checkpoint(), "serves adapters up to rank 8, but 'step-3' has rank 16"),
    ],
)
def test_adapter_on_base_problems_raise_before_anything_is_patched(
    spec: dict[str, Any], model: Model, message: str
) -> None:
    """The rule is rft.api.rules.adapter_on_base_problems; the SDK raises all but lora-disabled."""
    base = Deployment.model_validate(
        {"metadata": {"name": "base"}, "spec": {"model": "qwen", "deploymentType": "on-demand", **spec}}
    )
    client = _BaseOnlyClient(base)
    llm = LLM("step-3", "on-demand-lora", base_id="base")
    with pytest.raises(ValueError, match=message):
        llm._prepare_base(client, model)  # type: ignore[arg-type]
    assert client.patches == []


def test_a_base_without_lora_is_patched_to_serve_adapters() -> None:
    base = Deployment.model_validate(
        {"metadata": {"name": "base"}, "spec": {"model": "qwen", "deploymentType": "on-demand", "enableLora": False}}
    )
    client = _BaseOnlyClient(base)
    LLM("step-3", "on-demand-lora", base_id="base")._prepare_base(client, _checkpoint())  # type: ignore[arg-type]
    assert client.patches == [{"spec": {"enableLora": True}}]
