"""Pure builders: the Jobs a step and a dataset turn into, checked without a cluster."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rft.api import Dataset, Model, ReinforcementStep
from rft.contracts.trainer_config import CONFIG_ENV_VAR, TrainerConfig
from rft_operator import naming
from rft_operator.accelerators import AcceleratorMap, UnknownAcceleratorError
from rft_operator.builders.jobs import (
    KUEUE_PRIORITY_CLASS_LABEL,
    KUEUE_QUEUE_LABEL,
    RENDEZVOUS_PORT,
    TRAINER_GRACE_SECONDS,
    build_rendezvous_service,
    build_training_job,
    build_validation_job,
    default_output_location,
    trainer_config,
)
from rft_operator.config import OperatorConfig

CONFIG = OperatorConfig(trainer_image="registry.example/rft-trainer:1.2.3")
ACCELERATORS = AcceleratorMap.load(None)
DIGEST = "sha256:" + "ab" * 32


def make_step(**spec: Any) -> ReinforcementStep:
    return ReinforcementStep.model_validate(
        {
            "metadata": {"name": "step-1", "namespace": "team-a", "uid": "uid-1", "generation": 1},
            "spec": {
                "dataset": "ds",
                "model": "base",
                "outputModel": "ckpt-1",
                "serviceAccountName": "trainer-sa",
                **spec,
            },
        }
    )


def make_dataset() -> Dataset:
    return Dataset.model_validate(
        {
            "metadata": {"name": "ds", "namespace": "team-a", "uid": "uid-ds", "generation": 3},
            "spec": {"source": "s3://bkt/rft/datasets/ds.jsonl", "serviceAccountName": "reader"},
            "status": {
                "phase": "READY",
                "digest": DIGEST,
                "resolvedSource": "s3://bkt/rft/datasets/ds.jsonl",
            },
        }
    )


BASE = Model.model_validate(
    {
        "metadata": {"name": "base", "namespace": "team-a"},
        "spec": {"kind": "base", "location": "s3://bkt/rft/models/base/"},
    }
)
PARENT = Model.model_validate(
    {
        "metadata": {"name": "ckpt-0", "namespace": "team-a"},
        "spec": {
            "kind": "lora",
            "location": "s3://bkt/rft/models/ckpt-0/",
            "baseModel": "base",
            "lora": {"rank": 16, "alpha": 32, "targetModules": ["q_proj"]},
        },
    }
)


def training_job(step: ReinforcementStep, source: Model = BASE) -> tuple[dict[str, Any], TrainerConfig]:
    out = default_output_location(source, step.spec.output_model)
    cfg = trainer_config(step, make_dataset(), source, BASE, out, CONFIG)
    return build_training_job(step, cfg, ACCELERATORS, CONFIG), cfg


def test_training_job_is_named_owned_and_labelled_deterministically() -> None:
    job, _ = training_job(make_step())
    assert job["metadata"]["name"] == "step-1-train"
    assert job["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "rft-operator.io/v1alpha1",
            "kind": "ReinforcementStep",
            "name": "step-1",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert job["metadata"]["labels"][naming.LABEL_STEP] == "step-1"
    assert job["spec"]["template"]["metadata"]["labels"][naming.LABEL_MANAGED_BY] == "rft-operator"
    assert training_job(make_step())[0] == job


def test_training_job_places_on_the_accelerator_and_requests_gpus() -> None:
    job, _ = training_job(make_step(accelerator={"type": "NVIDIA_H100_80GB", "count": 1}))
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["command"] == ["python", "-m", "rft_trainer"]


def test_several_gpus_run_torchrun_with_one_process_per_gpu() -> None:
    job, _ = training_job(make_step(accelerator={"type": "NVIDIA_A100_80GB", "count": 4}))
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:3] == ["torchrun", "--standalone", "--nproc-per-node=4"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert container["resources"]["requests"]["cpu"] == "32"


def test_training_pod_has_time_to_save_its_in_step_checkpoint_at_sigterm() -> None:
    job, cfg = training_job(make_step())
    assert job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == TRAINER_GRACE_SECONDS > 30
    assert cfg.training.checkpoint_every_steps == 10  # the default saves every 10 optimizer steps
    # suspend is passed through: the Job's pods are stopped (SIGTERM) and resumed later
    assert training_job(make_step(suspend=True))[0]["spec"]["suspend"] is True


def test_training_pod_is_restricted_and_has_no_api_token() -> None:
    job, _ = training_job(make_step())
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "trainer-sa"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = pod["containers"][0]["securityContext"]
    assert sc == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert "/tmp/rft" in mounts


def test_job_carries_deadline_retries_suspend_and_fails_fast_on_bad_input() -> None:
    job, _ = training_job(make_step(activeDeadlineSeconds=600, backoffLimit=3, suspend=True))
    spec = job["spec"]
    assert spec["activeDeadlineSeconds"] == 600
    assert spec["backoffLimit"] == 3
    assert spec["suspend"] is True
    assert spec["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [1]
    assert spec["template"]["spec"]["containers"][0]["terminationMessagePath"] == "/dev/termination-log"


def test_trainer_gets_exactly_its_config_and_no_credentials() -> None:
    job, cfg = training_job(make_step(rewardWeights={"score": "1", "format": "0.2"}))
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert TrainerConfig.from_json(env[CONFIG_ENV_VAR]) == cfg
    assert cfg.dataset_digest == DIGEST
    assert cfg.output_url == "s3://bkt/rft/models/ckpt-1/"
    assert cfg.reward_weights == {"score": "1", "format": "0.2"}
    assert cfg.parent_adapter_url is None
    assert not any("KEY" in name or "SECRET" in name for name in env)
    assert env["HF_HUB_OFFLINE"] == "1"


def test_warm_start_passes_the_parent_adapter() -> None:
    step = make_step(model="ckpt-0")
    _, cfg = training_job(step, source=PARENT)
    assert cfg.parent_adapter_url == "s3://bkt/rft/models/ckpt-0/"
    assert cfg.parent_model_name == "ckpt-0"
    assert cfg.base_model_url == "s3://bkt/rft/models/base/"


def test_output_location_can_be_given() -> None:
    assert default_output_location(BASE, "x") == "s3://bkt/rft/models/x/"


def test_unknown_accelerator_is_a_clear_error() -> None:
    amap = AcceleratorMap({})
    with pytest.raises(
        UnknownAcceleratorError, match="NVIDIA_H100_80GB is not in the operator's accelerator map"
    ):
        amap.placement("NVIDIA_H100_80GB")


def test_accelerator_map_file_overrides_entries(tmp_path: Any) -> None:
    path = tmp_path / "map.yaml"
    path.write_text("NVIDIA_H100_80GB:\n  nodeSelector: {pool: h100}\n  tolerations: []\n")
    amap = AcceleratorMap.load(path)
    assert amap.placement("NVIDIA_H100_80GB").node_selector == {"pool": "h100"}
    assert amap.placement("NVIDIA_A100_80GB").node_selector == {
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"
    }
    path.write_text("TPU: {}\n")
    with pytest.raises(ValueError, match="unknown accelerator type 'TPU'"):
        AcceleratorMap.load(path)


def test_validation_job_streams_the_source_under_the_dataset_service_account() -> None:
    job = build_validation_job(make_dataset(), CONFIG)
    assert job["metadata"]["name"] == "ds-validate-g3"
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "reader"
    assert pod["automountServiceAccountToken"] is False
    container = pod["containers"][0]
    assert container["command"] == ["python", "-m", "rft.pods.validate"]
    args = container["args"]
    assert args[args.index("--source") + 1] == "s3://bkt/rft/datasets/ds.jsonl"
    assert args[args.index("--min-rows") + 1] == "3"
    assert job["spec"]["ttlSecondsAfterFinished"] == CONFIG.validation_job_ttl_seconds


def test_long_names_are_shortened_stably() -> None:
    name = naming.training_job_name("s" * 63)
    assert len(name) <= 63
    assert name.endswith("-train")
    assert name == naming.training_job_name("s" * 63)
    assert name != naming.training_job_name("s" * 62 + "t")


def test_trainer_config_json_is_compact_enough_for_an_env_var() -> None:
    _, cfg = training_job(make_step())
    assert len(json.dumps(cfg.to_wire())) < 4096


def test_training_and_reader_pods_request_and_limit_ephemeral_storage() -> None:
    """The trainer writes the base model, its copies and checkpoints into scratch: the request
    follows the model's size (here unknown per file: a default), the limit is scratch's size."""
    job, _ = training_job(make_step())
    pod = job["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["limits"]["ephemeral-storage"] == "201Gi"  # scratch_size 200Gi + the log
    assert resources["requests"]["ephemeral-storage"] == "21Gi"
    scratch = next(v for v in pod["volumes"] if v["name"] == "scratch")
    assert scratch["emptyDir"]["sizeLimit"] == CONFIG.scratch_size
    # A smaller scratch caps the request too.
    small = CONFIG.model_copy(update={"scratch_size": "5Gi"})
    cfg = trainer_config(make_step(), make_dataset(), BASE, BASE, "s3://bkt/out/", small)
    capped = build_training_job(make_step(), cfg, ACCELERATORS, small)["spec"]["template"]["spec"]
    assert capped["containers"][0]["resources"]["requests"]["ephemeral-storage"] == "6Gi"
    for reader in (build_validation_job(make_dataset(), CONFIG),):
        container = reader["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"]["requests"]["ephemeral-storage"] == "512Mi"
        assert container["resources"]["limits"]["ephemeral-storage"] == "2Gi"


def _mlflow_job(step: ReinforcementStep, config: OperatorConfig) -> tuple[dict[str, Any], TrainerConfig]:
    out = default_output_location(BASE, step.spec.output_model)
    cfg = trainer_config(step, make_dataset(), BASE, BASE, out, config)
    job = build_training_job(step, cfg, ACCELERATORS, config)
    return job["spec"]["template"]["spec"]["containers"][0], cfg


def test_mlflow_tracking_comes_from_the_step_or_the_operator_and_credentials_only_to_the_admins_server() -> (
    None
):
    admin = CONFIG.model_copy(
        update={
            "mlflow_tracking_uri": "https://mlflow.internal",
            "mlflow_experiment": "team-runs",
            "mlflow_credentials_secret": "mlflow-token",
        }
    )
    # No tracking anywhere: nothing.
    container, cfg = _mlflow_job(make_step(), CONFIG)
    assert cfg.mlflow is None
    assert cfg.step_uid == "uid-1"  # the run's key: a retried pod continues the same run
    # The operator's default server, with the admin's Secret (each key optional).
    container, cfg = _mlflow_job(make_step(), admin)
    assert cfg.mlflow is not None
    assert (cfg.mlflow.tracking_uri, cfg.mlflow.experiment) == ("https://mlflow.internal", "team-runs")
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert set(refs) == {"MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
    assert all(r["name"] == "mlflow-token" and r["optional"] is True for r in refs.values())
    # A step naming its own server gets no Secret: it could send it anywhere.
    own = make_step(tracking={"mlflow": {"trackingUri": "http://mlflow.team-a:5000", "experiment": "mine"}})
    container, cfg = _mlflow_job(own, admin)
    assert cfg.mlflow is not None
    assert cfg.mlflow.tracking_uri == "http://mlflow.team-a:5000"
    assert not any("valueFrom" in e for e in container["env"])
    # A step that says tracking: {} opts out of the operator's default.
    container, cfg = _mlflow_job(make_step(tracking={}), admin)
    assert cfg.mlflow is None
    assert not any("valueFrom" in e for e in container["env"])


def test_a_step_larger_than_one_node_is_an_indexed_job_behind_a_headless_service() -> None:
    step = make_step(accelerator={"type": "NVIDIA_H100_80GB", "count": 16})
    job, _ = training_job(step)
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == "step-1-train"
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"  # per node, not the step's 16
    command = container["command"]
    assert command[:4] == ["torchrun", "--nnodes=2", "--nproc-per-node=8", "--node-rank=$(RFT_NODE_RANK)"]
    assert "--rdzv-backend=c10d" in command
    assert f"--rdzv-endpoint=step-1-train-0.step-1-train:{RENDEZVOUS_PORT}" in command
    assert "--rdzv-id=uid-1" in command  # the step's uid: a new step never joins an old rendezvous
    assert any(a.startswith("--rdzv-conf=join_timeout=") and "read_timeout=" in a for a in command)
    assert "--standalone" not in command
    env = {e["name"]: e for e in container["env"]}
    assert env["RFT_NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )
    service = build_rendezvous_service(step)
    assert service["metadata"]["name"] == pod["subdomain"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    assert service["metadata"]["ownerReferences"] == job["metadata"]["ownerReferences"]


def test_a_step_that_fits_one_node_stays_one_pod() -> None:
    job, _ = training_job(make_step(accelerator={"type": "NVIDIA_H100_80GB", "count": 8}))
    assert "completionMode" not in job["spec"]
    assert "subdomain" not in job["spec"]["template"]["spec"]
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][:3] == [
        "torchrun",
        "--standalone",
        "--nproc-per-node=8",
    ]


def test_gpus_per_node_comes_from_the_accelerator_map(tmp_path: Any) -> None:
    path = tmp_path / "map.yaml"
    path.write_text("NVIDIA_L4_24GB:\n  nodeSelector: {gpu: l4}\n  gpusPerNode: 4\n")
    accelerators = AcceleratorMap.load(path)
    assert accelerators.nodes("NVIDIA_L4_24GB", 4) == (1, 4)
    assert accelerators.nodes("NVIDIA_L4_24GB", 12) == (3, 4)
    assert accelerators.nodes("NVIDIA_H100_80GB", 16) == (2, 8)  # the default: 8 per node
    assert accelerators.nodes("CPU", 16) == (1, 16)  # CPU steps are one pod
    assert accelerators.nodes("NVIDIA_L4_24GB", 6) == (2, 3)
    with pytest.raises(UnknownAcceleratorError, match="do not split evenly"):
        accelerators.nodes("NVIDIA_L4_24GB", 7)


def test_a_queued_step_is_a_suspended_job_in_its_kueue_local_queue() -> None:
    job, _ = training_job(make_step(queueName="team-a-gpus"))
    assert job["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "team-a-gpus"
    assert job["spec"]["suspend"] is True  # Kueue unsuspends it on admission
    plain, _ = training_job(make_step())
    assert KUEUE_QUEUE_LABEL not in plain["metadata"]["labels"]
    assert plain["spec"]["suspend"] is False


def test_a_step_with_a_priority_class_carries_kueues_priority_label() -> None:
    job, _ = training_job(make_step(queueName="team-a-gpus", priorityClass="urgent"))
    assert job["metadata"]["labels"][KUEUE_PRIORITY_CLASS_LABEL] == "urgent"
    assert job["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "team-a-gpus"
    plain, _ = training_job(make_step(queueName="team-a-gpus"))
    assert KUEUE_PRIORITY_CLASS_LABEL not in plain["metadata"]["labels"]
