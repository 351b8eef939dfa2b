"""Pure builders of a served model: an apps/v1 Deployment and a ClusterIP Service.

vLLM serves (`rft.contracts.vllm_args`, the pod contract, renders its command line): its GPU image on GPU nodes,
its CPU image for `accelerator.type: CPU`. vLLM reads the base model from local disk, so an init
container fetches it from the bucket under the pod's workload identity, and a sidecar offers
bucket-aware adapter loading on ADAPTER_ADMIN_PORT. Both run the small serving-helpers image
(`config.serving_helpers_image`: the storage layer, no torch), which every new replica's node
pulls before vLLM can start.
"""

from __future__ import annotations

import math

from kubernetes.utils.quantity import parse_quantity
from rft.api import Deployment, Model
from rft.contracts import entrypoints
from rft.contracts.model_check import FILES_DIGEST_ENV, PINNED_FILES_ENV, pinned_files_json
from rft.contracts.vllm_args import server_args, server_command, server_env, training_dtype
from rft.pods.admin_guard import MIDDLEWARE, TOKEN_HASH_ENV

from rft_operator import naming
from rft_operator.accelerators import AcceleratorMap
from rft_operator.builders.pods import (
    GIB,
    SCRATCH,
    TERMINATION_LOG,
    Manifest,
    container_security_context,
    model_bytes,
    offline_env,
    owner_reference,
    pod_security_context,
    quantity_bytes,
    scratch_volumes,
    storage_quantity,
    with_storage,
)
from rft_operator.config import OperatorConfig

SERVER_PORT = 8000
ADAPTER_ADMIN_PORT = 8001
SERVER_CONTAINER = "server"
FETCH_CONTAINER = "fetch-model"
GUARD_CONTAINER = "admin-guard"
PLUGINS_DIR = "/rft-plugins"
LOCAL_MODEL_DIR = "/models/base"
# Servers listen on every address of the pod: the sidecar reaches vLLM on loopback, probes and the
# Service on the pod IP, `kubectl port-forward` on the pod's loopback.
SERVER_HOST = "0.0.0.0"  # noqa: S104 - inside the pod's own network namespace
UPSTREAM = f"http://127.0.0.1:{SERVER_PORT}"
TMP_DIR = "/tmp"  # noqa: S108 - an emptyDir mounted there (the root filesystem is read-only)
# A server pod with LoRA enabled is Ready only once this condition is True: the operator sets it
# when the pod serves every adapter served on its Deployment (a new replica joins the Service
# with its adapters, not 404s for them).
ADAPTERS_GATE = "rft-operator.io/AdaptersLoaded"
# vLLM's Prometheus metrics are on its main port.
METRICS_PATH = "/metrics"


TMP_SIZE = "1Gi"
PLUGINS_SIZE = "16Mi"
# The server's caches (compiled kernels, torch inductor) as it starts: what its scratch holds.
SERVER_CACHE_EXPECTED = 2 * GIB
# Adapters the sidecar keeps on disk in the usual case (a few LoRA adapters of some 100 MiB).
ADAPTERS_EXPECTED = 2 * GIB
# What the model volume is expected to hold when the base model's size is unknown (unchecked).
MODEL_EXPECTED_UNKNOWN = 20 * GIB


def model_volume_bytes(model: Model, config: OperatorConfig) -> tuple[int, int]:
    """The model volume's expected contents and size limit: a checked model's size (plus 5% and
    1Gi), else config.model_volume_size."""
    size = model_bytes(model)
    if size is None:
        limit = quantity_bytes(config.model_volume_size)
        return min(MODEL_EXPECTED_UNKNOWN, limit), limit
    return size, size + size // 20 + GIB


def fetch_resources(model_expected: int = 0, model_limit: int = 0) -> Manifest:
    """The model fetch (init container): 8 files streamed at a time (rft.storage.checkpoints),
    I/O-bound; hashing and TLS take some CPU, each stream buffers a chunk (GCS: 8 MiB). It fills
    the model volume (its ephemeral storage while it runs alone)."""
    return with_storage(
        {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        model_expected,
        model_limit,
    )


def guard_install_resources() -> Manifest:
    """Copies one small file into the plugins volume."""
    return with_storage(
        {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}},
        0,
        quantity_bytes(PLUGINS_SIZE),
    )


def adapter_loader_resources(adapter_limit: int = 0) -> Manifest:
    """The adapter sidecar: idle but for an adapter's fetch and the calls it passes on to vLLM. It
    fills the adapter volume."""
    return with_storage(
        {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        min(ADAPTERS_EXPECTED, adapter_limit),
        adapter_limit,
    )


def server_resources(
    deployment: Deployment, model: Model, accelerators: AcceleratorMap, config: OperatorConfig
) -> Manifest:
    """CPU, memory and accelerators from the accelerator map. Ephemeral storage: the model volume
    (the fetch writes it, vLLM reads it for as long as it runs), the scratch caches, /tmp and the
    plugins volume."""
    acc = deployment.spec.accelerator
    expected, limit = model_volume_bytes(model, config)
    small = quantity_bytes(TMP_SIZE) + quantity_bytes(PLUGINS_SIZE)
    return with_storage(
        accelerators.pod_resources(acc.type, acc.count),
        expected + SERVER_CACHE_EXPECTED,
        limit + quantity_bytes(config.server_scratch_size) + small,
    )


def vllm_writable_env() -> dict[str, str]:
    """Where vLLM, torch, Triton and Hugging Face write, each set explicitly to a writable volume.

    The root filesystem is read-only and the image's user (uid 1000) has no home or passwd entry:
    left alone, they write to ~/.cache, ~/.config, /tmp and the inductor cache, and torch asks
    getpass for a user name. Everything goes under the scratch emptyDir (caches, config) or the
    /tmp emptyDir (vLLM's IPC sockets, Python's temp files). vLLM's usage statistics, which are
    also sent over the network, are off.
    """
    return {
        "HOME": f"{SCRATCH}/home",
        "USER": "rft",
        "LOGNAME": "rft",
        "TMPDIR": TMP_DIR,
        "XDG_CACHE_HOME": f"{SCRATCH}/cache",
        "XDG_CONFIG_HOME": f"{SCRATCH}/config",
        "HF_HOME": f"{SCRATCH}/hf",
        "VLLM_CACHE_ROOT": f"{SCRATCH}/cache/vllm",
        "VLLM_CONFIG_ROOT": f"{SCRATCH}/config/vllm",
        "VLLM_RPC_BASE_PATH": TMP_DIR,
        "TORCHINDUCTOR_CACHE_DIR": f"{SCRATCH}/cache/torchinductor",
        "TRITON_CACHE_DIR": f"{SCRATCH}/cache/triton",
        "OUTLINES_CACHE_DIR": f"{SCRATCH}/cache/outlines",
        "NUMBA_CACHE_DIR": f"{SCRATCH}/cache/numba",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }


def pinned_files_env(model: Model) -> list[Manifest]:
    """The base model's pins for rft.pods.fetch (the check's digest of all files, and the per-file list
    when the check could report it)."""
    env: list[Manifest] = []
    if model.status.files_digest:
        env.append({"name": FILES_DIGEST_ENV, "value": model.status.files_digest})
    if model.status.files:
        env.append({"name": PINNED_FILES_ENV, "value": pinned_files_json(model.status.files)})
    return env


def cpu_kv_cache_gib(resources: Manifest) -> int:
    """vLLM's KV cache on CPU (VLLM_CPU_KVCACHE_SPACE, GiB): a quarter of the pod's memory, the
    rest for weights, activations and the engine's processes (vLLM's default is a fixed 4 GiB)."""
    memory_bytes = parse_quantity(resources["requests"]["memory"])  # type: ignore[no-untyped-call]
    return max(1, int(memory_bytes / 4 / 2**30))


def server_image(deployment: Deployment, config: OperatorConfig) -> str:
    """The image of the server container: the spec's, else vLLM's (its CPU image on CPU)."""
    spec = deployment.spec
    if spec.image:
        return spec.image
    return config.vllm_cpu_image if spec.accelerator.type == "CPU" else config.vllm_image


def server_name(deployment: str) -> str:
    """The apps/v1 Deployment and the Service of a served model share this name."""
    return naming.child_name(deployment, "server")


def selector_labels(deployment: str) -> dict[str, str]:
    return {naming.LABEL_DEPLOYMENT: deployment, naming.LABEL_COMPONENT: "server"}


def endpoint(deployment: Deployment) -> str:
    name = server_name(deployment.metadata.name)
    return f"http://{name}.{deployment.metadata.namespace}.svc.cluster.local:{SERVER_PORT}/v1"


def _probe(path: str | None, port: str, period: int, failures: int) -> Manifest:
    """An httpGet probe of `path`, or with path None a TCP connect to `port`."""
    handler: Manifest = {"httpGet": {"path": path, "port": port}} if path else {"tcpSocket": {"port": port}}
    return {**handler, "periodSeconds": period, "timeoutSeconds": 5, "failureThreshold": failures}


STARTUP_PERIOD = 10


def server_probes(config: OperatorConfig) -> Manifest:
    """vLLM's probes. Its HTTP server listens only once the weights are loaded, so the startup
    probe (/health) allows config.server_startup_seconds for that and holds the others off.
    Readiness, "can it serve now": /health, which fails when the engine is dead or stuck (and,
    with LoRA, the pod's adapters readiness gate: not Ready before its adapters are loaded).
    Liveness, "is the process alive": /version, which the API server answers without the engine,
    with two minutes of tolerance: a busy or a dead engine takes the replica out of the Service
    first; restarting it would reload the whole model."""
    return {
        "startupProbe": _probe(
            "/health", "http", STARTUP_PERIOD, math.ceil(config.server_startup_seconds / STARTUP_PERIOD)
        ),
        "readinessProbe": _probe("/health", "http", 5, 3),
        "livenessProbe": _probe("/version", "http", 20, 6),
    }


def adapter_loader_probes() -> Manifest:
    """The sidecar's probes. Readiness: its /health, which asks vLLM's (it can pass loads on now).
    Liveness: its port accepts connections (the process runs; vLLM's state does not restart it)."""
    return {
        "readinessProbe": _probe("/health", "adapter-admin", 10, 3),
        "livenessProbe": _probe(None, "adapter-admin", 20, 3),
    }


def server_affinity(deployment: str) -> Manifest:
    """Replicas prefer distinct nodes: a node's loss takes out as few of them as it can."""
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": selector_labels(deployment)},
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }
            ]
        }
    }


def build_server_deployment(
    deployment: Deployment,
    model: Model,
    accelerators: AcceleratorMap,
    config: OperatorConfig,
    *,
    replicas: int,
    admin_token_sha256: str,
) -> Manifest:
    """`replicas` pods that serve `model` (a base model) for `deployment` (the operator decides
    how many, `rft_operator.autoscale`). Only requests with the admin token whose SHA-256 is
    `admin_token_sha256` may change what they serve (`rft.pods.admin_guard`)."""
    name = server_name(deployment.metadata.name)
    spec = deployment.spec
    placement = accelerators.placement(spec.accelerator.type)
    labels = {**naming.labels("server"), **selector_labels(deployment.metadata.name)}
    resources = accelerators.pod_resources(spec.accelerator.type, spec.accelerator.count)
    # torch otherwise starts a thread per core of the node, not of the pod.
    cpu_threads = int(resources["requests"]["cpu"]) if spec.accelerator.type == "CPU" else None
    args = server_args(
        LOCAL_MODEL_DIR,
        deployment.status.served_model_name or model.metadata.name,
        host=SERVER_HOST,
        port=SERVER_PORT,
        max_loras=spec.max_loras,
        max_lora_rank=spec.max_lora_rank,
        max_model_len=spec.max_model_len,
        enable_lora=spec.enable_lora,
        dtype=training_dtype(spec.accelerator.type),
        middleware=[MIDDLEWARE],
    )
    if spec.accelerator.type != "CPU" and spec.accelerator.count > 1:
        # One replica spans its GPUs: vLLM shards the model across them.
        args += ["--tensor-parallel-size", str(spec.accelerator.count)]
    env: list[Manifest] = [
        *(
            {"name": k, "value": v}
            for k, v in server_env(enable_lora=spec.enable_lora, cpu_threads=cpu_threads).items()
        ),
        *offline_env(),
    ]
    volumes, mounts = scratch_volumes(
        config.server_scratch_size, shm_size="16Gi" if spec.accelerator.type != "CPU" else None
    )
    model_expected, model_limit = model_volume_bytes(model, config)
    adapter_limit = quantity_bytes(config.adapter_volume_size)
    # These replace offline_env's HOME and HF_HOME (each variable once).
    overridden = vllm_writable_env()
    env = [e for e in env if e["name"] not in overridden]
    env += [{"name": k, "value": v} for k, v in overridden.items()]
    admin_env = {"name": TOKEN_HASH_ENV, "value": admin_token_sha256}
    # The admin guard, copied here by its init container; vLLM's image does not contain rft.
    env += [admin_env, {"name": "PYTHONPATH", "value": PLUGINS_DIR}]
    volumes.append({"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE}})
    mounts.append({"name": "tmp", "mountPath": TMP_DIR})
    if spec.accelerator.type == "CPU":
        env.append({"name": "VLLM_CPU_KVCACHE_SPACE", "value": str(cpu_kv_cache_gib(resources))})
        # vLLM's default ("auto") pins its threads to the first cores it sees. A pod sees all of
        # its node's cores (no cpuset without the kubelet's static CPU manager), so every vLLM
        # pod on a node would pin to the same cores and starve the others: leave placement to the
        # kernel, and the thread count to OMP_NUM_THREADS (the pod's CPU request).
        env.append({"name": "VLLM_CPU_OMP_THREADS_BIND", "value": "nobind"})
    volumes += [
        {"name": "models", "emptyDir": {"sizeLimit": storage_quantity(model_limit)}},
        {"name": "adapters", "emptyDir": {"sizeLimit": config.adapter_volume_size}},
    ]
    mounts += [{"name": "models", "mountPath": "/models"}, {"name": "adapters", "mountPath": "/adapters"}]
    volumes.append({"name": "plugins", "emptyDir": {"sizeLimit": PLUGINS_SIZE}})
    plugins_mount = {"name": "plugins", "mountPath": PLUGINS_DIR}
    containers: list[Manifest] = [
        {
            "name": SERVER_CONTAINER,
            "image": server_image(deployment, config),
            "imagePullPolicy": config.image_pull_policy,
            "command": server_command(args),
            "env": env,
            "ports": [{"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"}],
            "resources": server_resources(deployment, model, accelerators, config),
            "securityContext": container_security_context(),
            "volumeMounts": [*mounts, {**plugins_mount, "readOnly": True}],
            **server_probes(config),
        }
    ]
    init: list[Manifest] = [
        {
            "name": FETCH_CONTAINER,
            "image": config.serving_helpers_image,
            "imagePullPolicy": config.image_pull_policy,
            "command": entrypoints.python_command(
                entrypoints.MODEL_FETCH,
                model.spec.location,
                LOCAL_MODEL_DIR,
                "--termination-log",
                TERMINATION_LOG,
            ),
            # The digests the model's check pinned: files that differ are refused.
            "env": [*offline_env(), *pinned_files_env(model)],
            "resources": fetch_resources(model_expected, model_limit),
            # A refused file's reason reaches the pod's status (and the Deployment's condition).
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": container_security_context(),
            "volumeMounts": mounts,
        },
        {
            "name": GUARD_CONTAINER,
            "image": config.serving_helpers_image,
            "imagePullPolicy": config.image_pull_policy,
            "command": entrypoints.python_command(entrypoints.ADMIN_GUARD, "install", PLUGINS_DIR),
            "resources": guard_install_resources(),
            "securityContext": container_security_context(),
            "volumeMounts": [plugins_mount],
        },
    ]
    containers.append(
        {
            "name": "adapter-loader",
            "image": config.serving_helpers_image,
            "imagePullPolicy": config.image_pull_policy,
            "command": entrypoints.python_command(entrypoints.ADAPTER_SIDECAR),
            "args": [
                "--upstream",
                UPSTREAM,
                "--host",
                SERVER_HOST,
                "--port",
                str(ADAPTER_ADMIN_PORT),
            ],
            "env": [*offline_env(), admin_env],
            "ports": [{"name": "adapter-admin", "containerPort": ADAPTER_ADMIN_PORT, "protocol": "TCP"}],
            "resources": adapter_loader_resources(adapter_limit),
            "securityContext": container_security_context(),
            "volumeMounts": mounts,
            **adapter_loader_probes(),
        }
    )
    pod_spec: Manifest = {
        "serviceAccountName": spec.service_account_name,
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "initContainers": init,
        "containers": containers,
        "volumes": volumes,
        "terminationGracePeriodSeconds": 30,
        "affinity": server_affinity(deployment.metadata.name),
    }
    if spec.enable_lora:
        pod_spec["readinessGates"] = [{"conditionType": ADAPTERS_GATE}]
    if placement.node_selector:
        pod_spec["nodeSelector"] = dict(placement.node_selector)
    if placement.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in placement.tolerations]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": deployment.metadata.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(deployment)],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector_labels(deployment.metadata.name)},
            "progressDeadlineSeconds": 3600,
            "template": {
                "metadata": {
                    "labels": labels,
                    # The conventional scrape annotations: vLLM's metrics are on the server port.
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(SERVER_PORT),
                        "prometheus.io/path": METRICS_PATH,
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def build_server_service(deployment: Deployment) -> Manifest:
    """A ClusterIP Service: the endpoint stays inside the cluster."""
    name = server_name(deployment.metadata.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": deployment.metadata.namespace,
            "labels": {**naming.labels("server"), **selector_labels(deployment.metadata.name)},
            "ownerReferences": [owner_reference(deployment)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(deployment.metadata.name),
            "ports": [{"name": "http", "port": SERVER_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
