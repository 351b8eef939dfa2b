"""Kopf registration only: watches enqueue keys; the work queue runs the reconcilers.

    kopf run -m rft_operator.main --all-namespaces     (or: python -m rft_operator)

Handlers are `on.event` watchers and nothing else: Kopf then stores no progress or diff-base
annotations and adds no finalizers, so the operator's only writes are the ones the reconcilers
decide to make (a Job, a status, a Model, an Event). Children are cleaned up by owner references.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes import client, config
from prometheus_client import start_http_server
from rft.api import GROUP, VERSION

from rft_operator import naming
from rft_operator.accelerators import AcceleratorMap
from rft_operator.admintoken import AdminTokens
from rft_operator.cache import Cache, trim
from rft_operator.config import OperatorConfig
from rft_operator.kube import Kube
from rft_operator.leader import LeaderElector
from rft_operator.metrics import STATE
from rft_operator.reconcilers.dataset import DatasetReconciler
from rft_operator.reconcilers.deployment import DeploymentReconciler
from rft_operator.reconcilers.model import ModelReconciler
from rft_operator.reconcilers.session import TrainingSessionReconciler
from rft_operator.reconcilers.step import StepReconciler, needs_job
from rft_operator.waiting import WaitingSteps
from rft_operator.workqueue import HIGH, NORMAL, WorkQueue

log = logging.getLogger("rft_operator")

MANAGED = {naming.LABEL_MANAGED_BY: naming.MANAGER}
KIND_OF_PLURAL = {
    "reinforcementsteps": "step",
    "datasets": "dataset",
    "models": "model",
    "deployments": "deployment",
    "trainingsessions": "session",
}
CHILD_BATCH_SECONDS = 0.2
EVENT_FLUSH_SECONDS = 2.0
CHILD_RESOURCES = (("", "v1", "pods"), ("batch", "v1", "jobs"), ("apps", "v1", "deployments"))
CACHED = {  # plural -> the Kopf index (below) that caches it
    "reinforcementsteps": "step_objects",
    "datasets": "dataset_objects",
    "models": "model_objects",
    "jobs": "job_objects",
}


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff-base: Kopf builds one (a deep copy of the body) on every event for its on.create /
    on.update handlers; with on.event handlers only, nothing reads it."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def _api_client(workers: int) -> client.ApiClient:
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = max(8, workers * 2)
    return client.ApiClient(configuration)


@kopf.on.startup()
def start(settings: kopf.OperatorSettings, memo: Any, **kwargs: Any) -> None:
    cfg = OperatorConfig.from_env()
    settings.posting.level = logging.WARNING
    # Handlers only enqueue: Kopf's per-event "Handler ... succeeded" lines would drown the log.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.persistence.diffbase_storage = NoDiffBase()
    # Children are watched through server-side label selectors: the API server sends only the
    # pods, Jobs and apps/v1 Deployments the operator made, not every pod of the cluster.
    for resource in CHILD_RESOURCES:
        settings.watching.label_selectors[resource] = f"{naming.LABEL_MANAGED_BY}={naming.MANAGER}"
    # Reconcilers read through the watches' caches (Kopf fills the indices below from the initial
    # listing before any event handler runs); a miss is confirmed with the API.
    cache = Cache({plural: kwargs[index] for plural, index in CACHED.items()}, kwargs["pods_by_job"])
    kube = Kube(_api_client(cfg.workers), cache=cache)
    accelerators = AcceleratorMap.load(cfg.accelerator_map_file)
    own_namespace = os.environ.get("POD_NAMESPACE") or "default"
    tokens = AdminTokens.load_or_create(client.CoreV1Api(kube.api_client), own_namespace, cfg.admin_key_secret)
    reconcilers = {
        "step": StepReconciler(kube, cfg, accelerators).sync,
        "dataset": DatasetReconciler(kube, cfg).sync,
        "model": ModelReconciler(kube, cfg).sync,
        "deployment": DeploymentReconciler(kube, cfg, accelerators, tokens).sync,
        "session": TrainingSessionReconciler(kube, cfg, accelerators, tokens).sync,
    }
    elector = None
    if cfg.leader_election:
        elector = LeaderElector(kube.api_client, cfg.leader_election_namespace or own_namespace)
        elector.start()
    queue = WorkQueue(reconcilers, workers=cfg.workers, active=elector.leading if elector else None)
    queue.start()
    memo.elector = elector
    memo.queue = queue
    memo.waiting = WaitingSteps()
    memo.kube = kube
    memo.config = cfg
    memo.stop_resync = threading.Event()
    threading.Thread(target=_resync_loop, args=(kube, queue, cfg, memo.stop_resync), daemon=True).start()
    STATE.bind(
        queue_depth=lambda: len(queue),
        leading=lambda: elector is None or elector.leading.is_set(),
        step_phases=lambda: cache.count_by_phase("reinforcementsteps"),
    )
    if cfg.metrics_port:
        start_http_server(cfg.metrics_port)
    log.info(
        "rft-operator started: %d workers, accelerators %s", cfg.workers, ", ".join(accelerators.known())
    )


@kopf.on.cleanup()
def stop(memo: Any, **_: Any) -> None:
    memo.stop_resync.set()
    memo.queue.stop()
    memo.kube.events.stop(timeout=EVENT_FLUSH_SECONDS)  # after the reconciles that queue them
    if memo.elector is not None:
        memo.elector.stop()


def _resync_loop(kube: Kube, queue: WorkQueue, cfg: OperatorConfig, stop: threading.Event) -> None:
    """Every object is looked at now and then even without events (repairs missed events)."""
    while not stop.wait(cfg.resync_seconds):
        for plural, kind in KIND_OF_PLURAL.items():
            namespaces = cfg.namespaces()
            scopes: list[str | None] = [*namespaces] if namespaces else [None]
            for namespace in scopes:
                try:
                    for obj in kube.list_objects(plural, namespace):
                        queue.add((kind, obj["metadata"]["namespace"], obj["metadata"]["name"]))
                except Exception:  # the next round tries again
                    log.exception("resync of %s failed", plural)


@kopf.on.probe(id="queue")
def queue_depth(memo: Any, **_: Any) -> int:
    return len(memo.queue)


# --- the watch caches (read by the reconcilers through Kube.get / get_job / job_pods) -------------
@kopf.index(GROUP, VERSION, "reinforcementsteps")
async def step_objects(name: str, namespace: str | None, body: kopf.Body, **_: Any) -> Any:
    return {(namespace or "", name): trim(body)}


@kopf.index(GROUP, VERSION, "datasets")
async def dataset_objects(name: str, namespace: str | None, body: kopf.Body, **_: Any) -> Any:
    return {(namespace or "", name): trim(body)}


@kopf.index(GROUP, VERSION, "models")
async def model_objects(name: str, namespace: str | None, body: kopf.Body, **_: Any) -> Any:
    return {(namespace or "", name): trim(body)}


@kopf.index("batch", "v1", "jobs", labels=MANAGED)
async def job_objects(name: str, namespace: str | None, body: kopf.Body, **_: Any) -> Any:
    return {(namespace or "", name): trim(body)}


@kopf.index("", "v1", "pods", labels=MANAGED)
async def pods_by_job(namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any) -> Any:
    job = labels.get("batch.kubernetes.io/job-name")
    return {(namespace or "", job): trim(body)} if job else {}


# --- events: enqueue keys ------------------------------------------------------------------------
def _enqueue_own(kind: str) -> Any:
    # Handlers that only enqueue are coroutines: Kopf then runs them on its event loop instead of
    # handing each event to a thread pool.
    async def handler(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
        memo.queue.add((kind, namespace or "", name))

    return handler


def _enqueue_owner(labels: Mapping[str, str], namespace: str | None, memo: Any) -> None:
    """The owner of a changed child looks again after CHILD_BATCH_SECONDS: a Job and its pods
    change several times within moments (created, scheduled, running, done), and one look at
    the end replaces several (the Job controller batches pod updates the same way)."""
    if step := labels.get(naming.LABEL_STEP):
        memo.queue.add(("step", namespace or "", step), CHILD_BATCH_SECONDS)
    elif dataset := labels.get(naming.LABEL_DATASET):
        memo.queue.add(("dataset", namespace or "", dataset), CHILD_BATCH_SECONDS)
    elif model := labels.get(naming.LABEL_MODEL):
        memo.queue.add(("model", namespace or "", model), CHILD_BATCH_SECONDS)
    elif deployment := labels.get(naming.LABEL_DEPLOYMENT):
        memo.queue.add(("deployment", namespace or "", deployment), CHILD_BATCH_SECONDS)
    elif session := labels.get(naming.LABEL_SESSION):
        memo.queue.add(("session", namespace or "", session), CHILD_BATCH_SECONDS)


for _plural, _kind in KIND_OF_PLURAL.items():
    if _kind != "step":
        kopf.on.event(GROUP, VERSION, _plural, id=f"watch-{_plural}")(_enqueue_own(_kind))


@kopf.on.event(GROUP, VERSION, "reinforcementsteps", id="watch-reinforcementsteps")
async def step_changed(
    name: str, namespace: str | None, event: Mapping[str, Any], body: Mapping[str, Any], memo: Any, **_: Any
) -> None:
    deleted = event.get("type") == "DELETED"
    memo.waiting.update(namespace or "", name, None if deleted else body)
    # Job creation first: a step without a Job yet goes ahead of other due work.
    priority = HIGH if not deleted and needs_job(body) else NORMAL
    memo.queue.add(("step", namespace or "", name), priority=priority)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
async def job_changed(labels: Mapping[str, str], namespace: str | None, memo: Any, **_: Any) -> None:
    _enqueue_owner(labels, namespace, memo)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def server_changed(labels: Mapping[str, str], namespace: str | None, memo: Any, **_: Any) -> None:
    _enqueue_owner(labels, namespace, memo)


@kopf.on.event(GROUP, VERSION, "deployments", id="wake-lora-deployments")
def base_deployment_changed(
    name: str, namespace: str | None, spec: Mapping[str, Any], memo: Any, **_: Any
) -> None:
    """Adapters riding on this Deployment follow its changes (new replicas, readiness); a base
    follows its adapters' (it opens a new replica's readiness gate once they are loaded there)."""
    if spec.get("deploymentType") == "on-demand-lora":
        if base := spec.get("baseDeployment"):
            memo.queue.add(("deployment", namespace or "", base))
        return
    for obj in memo.kube.list_objects("deployments", namespace):
        if obj["spec"].get("baseDeployment") == name:
            memo.queue.add(("deployment", obj["metadata"]["namespace"], obj["metadata"]["name"]))


@kopf.on.event("", "v1", "pods", labels=MANAGED)
async def pod_changed(labels: Mapping[str, str], namespace: str | None, memo: Any, **_: Any) -> None:
    _enqueue_owner(labels, namespace, memo)


@kopf.on.event(GROUP, VERSION, "datasets", id="wake-steps-of-dataset")
async def dataset_changed(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    """Steps waiting for this Dataset look again (at high priority: they may create their Job)."""
    for step in memo.waiting.waking(namespace or "", "datasets", name):
        memo.queue.add(("step", namespace or "", step), priority=HIGH)


@kopf.on.event(GROUP, VERSION, "models", id="wake-steps-of-model")
def model_changed(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    """Steps waiting for this Model look again (at high priority: they may create their Job), and
    so do the Deployments serving it (a base model is served once its check pinned it) and the
    TrainingSessions training on it."""
    for step in memo.waiting.waking(namespace or "", "models", name):
        memo.queue.add(("step", namespace or "", step), priority=HIGH)
    for obj in memo.kube.list_objects("deployments", namespace):
        if obj["spec"].get("model") == name and obj["spec"].get("deploymentType") != "on-demand-lora":
            memo.queue.add(("deployment", obj["metadata"]["namespace"], obj["metadata"]["name"]))
    for obj in memo.kube.list_objects("trainingsessions", namespace):
        if obj["spec"].get("baseModel") == name:
            memo.queue.add(("session", obj["metadata"]["namespace"], obj["metadata"]["name"]))
