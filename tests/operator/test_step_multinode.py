"""A step of 2 nodes x 2 ranks on the local cluster: real trainer pods that meet by DNS name.

`4 x NVIDIA_L4_24GB` with L4 nodes of 2 GPUs (tests/operator/conftest.py's accelerator map) is an
Indexed Job of 2 pods with the headless Service `<job>`; each pod runs the operator's torchrun
command with 2 ranks (CPU, gloo), and the agents rendezvous at `<job>-0.<job>:29400`, a name
CoreDNS answers from the Service's EndpointSlice (rft_devcluster.clusterdns), resolved through the
resolv.conf the local node gives each pod (search `<ns>.svc.cluster.local ...`). Both pods run on
one extra local node advertising 4 fake L4 GPUs (rft_devcluster.extra_node): pods of two local
nodes could not reach each other (the host does not forward between their bridges).

The published adapter must match one process training the same config with 4 times the gradient
accumulation (the multi-node run does 4 ranks x 1 packed batch per optimizer step), within
atol 1e-5 as in tests/trainer/test_trainer_multinode.py: another summation order (the all-reduce)
may change the last bits. Only rank 0 reports: its progress reaches the step's status while it runs
(the operator polls the pod of completion index 0, which torchrun's rendezvous makes rank 0).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from rft import Dataset
from rft.contracts.trainer_config import (
    CONFIG_ENV_VAR,
    TrainerConfig,
    TrainerResult,
    parse_termination_message,
)
from rft.sdk.session import Session
from rft.storage.checkpoints import fetch_checkpoint, upload_tree
from rft_devcluster.controlplane import LocalNodeOptions
from rft_devcluster.emulators import DEFAULT_REGION, Emulator
from rft_devcluster.extra_node import ExtraLocalNode
from rft_devcluster.handle import ClusterHandle, LocalNodeInfo, as_dict
from rft_devcluster.pytest_fixtures_storage import S3Bucket
from rft_devcluster.tiny import build_tiny_model
from rft_operator.builders.jobs import RENDEZVOUS_PORT
from safetensors.torch import load_file

from tests.host_capability import require_host
from tests.operator.conftest import MULTINODE_GPU_PRODUCT, MULTINODE_TAINT, WORKLOAD, Objects, OperatorProcess
from tests.trainer.test_trainer_multinode import ROWS

pytestmark = [pytest.mark.cluster, pytest.mark.localnode, pytest.mark.slow]

ROLE = "arn:aws:iam::123456789012:role/rft-multinode"
NODE = "local-l4"
RANKS = 4
STEP_TIMEOUT_SECONDS = 900


@pytest.fixture(scope="module")
def l4_node(
    cluster: ClusterHandle, moto_server: Emulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalNodeInfo]:
    """A second local node with 4 fake L4 GPUs (2 pods of 2), tainted for these steps only."""
    options = LocalNodeOptions(
        name=NODE,
        gpus=4,
        gpu_product=MULTINODE_GPU_PRODUCT,
        cpu="8",
        memory="32Gi",
        taints=(("nvidia.com/gpu", "present", "NoSchedule"), MULTINODE_TAINT),
        workload_identity_env=(
            ("AWS_ENDPOINT_URL", moto_server.endpoint),
            ("AWS_DEFAULT_REGION", DEFAULT_REGION),
            ("AWS_REGION", DEFAULT_REGION),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ),
    )
    with ExtraLocalNode(cluster, options, tmp_path_factory.mktemp("l4-node")) as info:
        yield info


def _pod_dirs(node: LocalNodeInfo, namespace: str, job: str) -> dict[str, Path]:
    return {d.name.split("_")[1]: d for d in (node.root_dir / "pods").glob(f"{namespace}_{job}-*")}


def test_two_nodes_of_two_ranks_meet_by_dns_and_match_one_process(
    operator: OperatorProcess,
    objects: Objects,
    cluster: ClusterHandle,
    s3_bucket: S3Bucket,
    l4_node: LocalNodeInfo,
    tmp_path: Path,
) -> None:
    require_host(None if os.geteuid() == 0 else "cluster DNS needs root: port 53 and a mount and UTS namespace per pod")
    # Root can: a cluster without DNS is a failure, not a skip.
    assert l4_node.cluster_dns, f"the local cluster has no DNS: {l4_node.no_cluster_dns}"
    assert l4_node.pod_network_mode == "netns", "the trainer pods need network namespaces of their own"
    ns = objects.namespace
    objects.core.create_namespaced_service_account(
        ns,
        {
            "metadata": {
                "name": "rft-trainer",
                "labels": WORKLOAD,
                "annotations": {"eks.amazonaws.com/role-arn": ROLE},
            }
        },
    )
    base_location = f"s3://{s3_bucket.name}/rft/models/tiny/"
    upload_tree(build_tiny_model(tmp_path / "tiny"), base_location)
    objects.create(
        "models",
        "Model",
        "tiny",
        {"kind": "base", "location": base_location, "serviceAccountName": "rft-trainer"},
    )
    session = Session.create(
        namespace=ns,
        bucket=f"s3://{s3_bucket.name}/rft",
        service_account="rft-trainer",
        kubeconfig=str(cluster.kubeconfig),
    )
    dataset = Dataset.from_list(ROWS, session=session)
    dataset.sync(timeout=180)
    output = f"s3://{s3_bucket.name}/rft/models/multinode/"
    objects.create(
        "reinforcementsteps",
        "ReinforcementStep",
        "multinode",
        {
            "dataset": dataset.id,
            "model": "tiny",
            "outputModel": "multinode",
            "outputLocation": output,
            "serviceAccountName": "rft-trainer",
            "accelerator": {"type": "NVIDIA_L4_24GB", "count": RANKS},
            "training": {
                "loraRank": 4,
                "learningRate": "1e-3",
                "maxContextLength": 64,
                "epochs": 2,
                "batchSize": 128,
                "gradientAccumulationSteps": 1,
            },
            "loss": {"klCoefficient": "0"},
        },
    )

    # While it runs: the Job, its Service and pods as the operator built them.
    job_manifest: dict[str, Any] | None = None
    pods_seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + STEP_TIMEOUT_SECONDS
    step: dict[str, Any] | None = None
    while True:
        step = objects.get("reinforcementsteps", "multinode")
        status = (step or {}).get("status", {})
        if status.get("phase") in ("JOB_STATE_COMPLETED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"):
            break
        job_name = status.get("jobName")
        if job_name and job_manifest is None:
            job_manifest = as_dict(objects.batch.read_namespaced_job(job_name, ns))
        if job_name:
            for pod in objects.core.list_namespaced_pod(
                ns, label_selector=f"batch.kubernetes.io/job-name={job_name}"
            ).items:
                pods_seen[pod.metadata.name] = as_dict(pod)
        assert time.monotonic() < deadline, f"step stuck: {json.dumps(status, indent=1)}"
        time.sleep(1.0)
    assert step is not None
    assert job_manifest is not None, "the step finished before its Job was seen"
    job = job_manifest["metadata"]["name"]
    logs = {name: (d / "logs" / "trainer.log").read_text() for name, d in _pod_dirs(l4_node, ns, job).items()}
    assert step["status"]["phase"] == "JOB_STATE_COMPLETED", (
        json.dumps(step["status"], indent=1)
        + "\n"
        + "\n".join(f"--- {n}\n{t[-3000:]}" for n, t in logs.items())
    )

    # The operator's multi-node shape: an Indexed Job of 2 pods, hostnames <job>-<index> under the
    # headless Service <job>, rendezvous by that name.
    spec = job_manifest["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    command = spec["template"]["spec"]["containers"][0]["command"]
    assert f"--rdzv-endpoint={job}-0.{job}:{RENDEZVOUS_PORT}" in command
    assert "--nproc-per-node=2" in command
    service = as_dict(objects.core.read_namespaced_service(job, ns))
    assert service["spec"]["clusterIP"] == "None"
    pods = sorted(pods_seen.values(), key=lambda p: p["spec"]["hostname"])
    assert [p["spec"]["hostname"] for p in pods] == [f"{job}-0", f"{job}-1"]
    assert {p["spec"]["subdomain"] for p in pods} == {job}
    assert {p["spec"]["nodeName"] for p in pods} == {NODE}
    ips = [p["status"]["podIP"] for p in pods]
    assert len(set(ips)) == 2, ips

    # What each pod saw: its kubelet-made resolv.conf and hosts file, and the name resolved by CoreDNS.
    for pod, ip in zip(pods, ips, strict=True):
        pod_dir = _pod_dirs(l4_node, ns, job)[pod["metadata"]["name"]]
        resolv = (pod_dir / "etc" / "resolv.conf").read_text()
        assert f"nameserver {l4_node.cluster_dns}" in resolv
        assert f"search {ns}.svc.cluster.local svc.cluster.local cluster.local" in resolv
        hosts = (pod_dir / "etc" / "hosts").read_text()
        hostname = pod["spec"]["hostname"]
        assert f"{ip}\t{hostname}.{job}.{ns}.svc.cluster.local\t{hostname}" in hosts
    all_logs = "\n".join(logs.values())
    assert "sharded over 4 ranks" in all_logs, all_logs[-3000:]

    # Only rank 0 reports: the rendezvous ranks the agents by FQDN, so it runs in the pod of index 0
    # (the other pod's log has no progress lines), and the operator polled that pod's /progress
    # while it ran (the pod of index 1 serves none; the final status write adds only loss and
    # mean reward, so a `step` there came from a live report).
    by_index = {p["spec"]["hostname"]: logs[p["metadata"]["name"]] for p in pods}
    assert '"event": "progress"' in by_index[f"{job}-0"]
    assert '"event": "progress"' not in by_index[f"{job}-1"]
    progress = step["status"].get("progress") or {}
    assert "step" in progress, f"no live progress reached the step: {progress}"

    # The reference: one process, the pods' own config, 4 batches accumulated per optimizer step.
    pod_config = TrainerConfig.model_validate_json(
        next(
            e["value"]
            for e in spec["template"]["spec"]["containers"][0]["env"]
            if e["name"] == CONFIG_ENV_VAR
        )
    )
    reference = pod_config.model_copy(
        update={
            "output_url": str(tmp_path / "reference"),
            "termination_log": str(tmp_path / "termination-reference"),
            "scratch_dir": str(tmp_path / "scratch-reference"),
            "progress_port": None,
            "device": "cpu",
            "training": pod_config.training.model_copy(update={"gradient_accumulation_steps": RANKS}),
        }
    )
    config_path = tmp_path / "config-reference.json"  # not under the output prefix
    config_path.write_text(reference.to_json())
    env = {**s3_bucket.pod_env(), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, "-m", "rft_trainer", "--config", str(config_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    want_result = parse_termination_message((tmp_path / "termination-reference").read_text())
    assert isinstance(want_result, TrainerResult)
    metrics = step["status"]["metrics"]
    assert int(float(metrics["optimizer_steps"])) == int(want_result.metrics["optimizer_steps"])
    assert float(metrics["loss"]) == pytest.approx(float(want_result.metrics["loss"]), abs=1e-5)

    fetch_checkpoint(output, tmp_path / "published")
    want = load_file(tmp_path / "reference" / "adapter_model.safetensors")
    got = load_file(tmp_path / "published" / "adapter_model.safetensors")
    assert want.keys() == got.keys()
    assert any(t.abs().sum() > 0 for n, t in want.items() if "lora_B" in n)
    for name, tensor in want.items():
        assert torch.allclose(tensor, got[name], atol=1e-5), (name, (tensor - got[name]).abs().max())
