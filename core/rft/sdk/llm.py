"""`LLM`: a model plus the Deployment that serves it, with inference and reinforcement steps."""

from __future__ import annotations

import threading
import weakref
from asyncio import AbstractEventLoop, get_running_loop
from typing import Any, get_args

import openai

from rft.api.common import ACCELERATOR_TYPES
from rft.api.dataset import Dataset as DatasetResource
from rft.api.deployment import Accelerator, DeploymentSpec, DeploymentType, Engine
from rft.api.deployment import Deployment as DeploymentResource
from rft.api.model import Model
from rft.api.reinforcement_step import ReinforcementStep as StepResource
from rft.api.reinforcement_step import TrainingParameters
from rft.api.rules import adapter_on_base_problems
from rft.sdk.dataset import Dataset
from rft.sdk.endpoints import resolve_base_url
from rft.sdk.errors import (
    DeploymentFailedError,
    ResourceExistsError,
    ResourceNotFoundError,
    RftError,
)
from rft.sdk.inference import Chat, Completions
from rft.sdk.kube import KubeClient
from rft.sdk.manifests import (
    continuation_mismatches,
    deployment_body,
    deployment_patch,
    deployment_spec,
    reinforcement_step_body,
)
from rft.sdk.names import ResourceName, check_object_name, derived_name, resolve_name
from rft.sdk.session import Session
from rft.sdk.step import ReinforcementStep
from rft.sdk.step_arguments import step_spec_fields
from rft.sdk.validation import (
    check_bool,
    check_choice,
    check_optional_field_int,
    check_positive_number,
)
from rft.sdk.waiting import poll_until

DEPLOYMENT_TYPES: tuple[str, ...] = ("serverless", "on-demand", "on-demand-lora", "auto")
ENGINES: tuple[str, ...] = get_args(Engine)
DEFAULT_APPLY_TIMEOUT = 1800.0
DEFAULT_POLL_INTERVAL = 2.0
NO_API_KEY = "unused"  # the in-cluster servers need no key, but the openai client wants one


class LLM:
    """A model served by a Deployment in your cluster, in the managed service's shape.

    `deployment_type` is one of serverless, on-demand, on-demand-lora, auto. on-demand needs `id`
    (the Deployment's name); on-demand-lora needs `base_id` (the base Deployment the adapter is
    loaded onto) and takes no `id` (its Deployment is named after the LoRA model). serverless and
    auto are served as on-demand on a Deployment named `id` or `<model>-<type>`.

    Names may be short (`qwen3-0-6b`) or full (`accounts/<namespace>/models/qwen3-0-6b`); the
    namespace of a full model name is honoured. Bad arguments raise ValueError or TypeError here,
    naming the argument; nothing talks to the cluster until `apply()`, an inference call or
    `reinforcement_step()`.
    """

    def __init__(
        self,
        model: str,
        deployment_type: DeploymentType,
        *,
        id: str | None = None,  # noqa: A002 - the managed service's argument name
        base_id: str | None = None,
        accelerator_type: str | None = None,
        accelerator_count: int | None = None,
        min_replica_count: int | None = None,
        max_replica_count: int | None = None,
        engine: str | None = None,
        max_context_length: int | None = None,
        enable_addons: bool | None = None,
        max_loras: int | None = None,
        max_lora_rank: int | None = None,
        image: str | None = None,
        service_account: str | None = None,
        namespace: str | None = None,
        bucket: str | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        api_key: str | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        session: Session | None = None,
    ) -> None:
        check_choice(deployment_type, "deployment_type", DEPLOYMENT_TYPES)
        self._session = session or Session.create(
            namespace=namespace,
            bucket=bucket,
            service_account=service_account,
            kubeconfig=kubeconfig,
            context=context,
        )
        self._model = resolve_name(model, "models", self._session.namespace, "model")
        self._deployment_type: str = deployment_type
        self._accelerator_type = _check_accelerator(accelerator_type, accelerator_count)
        self._api_key = api_key
        self._poll_interval = check_positive_number(poll_interval, "poll_interval")
        self._base: ResourceName | None = None

        replica_and_server = {
            "min_replica_count": min_replica_count,
            "max_replica_count": max_replica_count,
            "engine": engine,
            "max_context_length": max_context_length,
            "enable_addons": enable_addons,
            "max_loras": max_loras,
            "max_lora_rank": max_lora_rank,
            "image": image,
        }
        if deployment_type == "on-demand-lora":
            if id is not None:
                raise ValueError(
                    "id: not accepted for deployment_type 'on-demand-lora' (its Deployment is named after "
                    "the LoRA model); pass the base deployment as base_id"
                )
            if base_id is None:
                raise ValueError(
                    "base_id: required for deployment_type 'on-demand-lora' (the base deployment)"
                )
            given = [key for key, value in replica_and_server.items() if value is not None]
            if accelerator_count is not None:
                given.insert(0, "accelerator_count")
            if given:
                raise ValueError(
                    f"{given[0]}: not used by deployment_type 'on-demand-lora'; the adapter is served by the "
                    f"base deployment {base_id!r}, configure {', '.join(given)} there"
                )
            self._base = self._same_namespace_arg(
                resolve_name(base_id, "deployments", self.namespace, "base_id"), "base_id"
            )
            self._deployment = ResourceName(self.namespace, "deployments", self._model.name)
            self._spec = deployment_spec(
                {
                    "model": self._model.name,
                    "deployment_type": deployment_type,
                    "base_deployment": self._base.name,
                    "service_account_name": service_account,
                }
            )
        else:
            if base_id is not None:
                raise ValueError(
                    f"base_id: only used with deployment_type 'on-demand-lora', not {deployment_type!r}"
                )
            if id is None and deployment_type == "on-demand":
                raise ValueError("id: required for deployment_type 'on-demand' (the deployment's name)")
            if id is not None:
                self._deployment = self._same_namespace_arg(
                    resolve_name(id, "deployments", self.namespace, "id"), "id"
                )
            else:
                self._deployment = ResourceName(
                    self.namespace, "deployments", derived_name(self._model.name, deployment_type)
                )
            self._spec = deployment_spec(
                _server_fields(
                    self._model.name,
                    deployment_type,
                    self._accelerator_type,
                    accelerator_count,
                    replica_and_server,
                    self._session.config.service_account,
                )
            )

        self._lock = threading.Lock()
        self._resolve_lock = threading.Lock()
        self._applied = False
        self._target: tuple[str, str] | None = None
        self._sync_client: openai.OpenAI | None = None
        self._async_clients: weakref.WeakKeyDictionary[AbstractEventLoop, openai.AsyncOpenAI] = (
            weakref.WeakKeyDictionary()
        )
        self.chat = Chat(self)
        self.completions = Completions(self)

    # Names -----------------------------------------------------------------------------------

    @property
    def namespace(self) -> str:
        """The namespace (account) of the model and its deployment."""
        return self._model.namespace

    @property
    def model(self) -> str:
        """The model's full name, `accounts/<namespace>/models/<name>`."""
        return self._model.full

    @property
    def deployment_type(self) -> str:
        """serverless, on-demand, on-demand-lora or auto."""
        return self._deployment_type

    @property
    def deployment_id(self) -> str:
        """The Deployment's object name."""
        return self._deployment.name

    @property
    def deployment_name(self) -> str:
        """The Deployment's full name, `accounts/<namespace>/deployments/<name>`."""
        return self._deployment.full

    @property
    def base_deployment_name(self) -> str | None:
        """For on-demand-lora: the base Deployment's full name."""
        return None if self._base is None else self._base.full

    @property
    def desired_spec(self) -> dict[str, Any]:
        """The Deployment spec fields this LLM sets (wire format); others keep the server's values."""
        return dict(self._spec)

    @property
    def _client(self) -> KubeClient:
        return self._session.client

    # Deployment lifecycle ----------------------------------------------------------------------

    def get_deployment(self) -> DeploymentResource | None:
        """The Deployment object as the cluster has it, or None."""
        return self._client.get(DeploymentResource, self.namespace, self.deployment_id)

    def apply(self, wait: bool = True, timeout: float | None = DEFAULT_APPLY_TIMEOUT) -> LLM:
        """Create or update the Deployment declaratively, then wait until READY (unless `wait=False`).

        Fields this LLM sets are patched when they differ; an accelerator type change is refused
        (ImmutableFieldError); a FAILED deployment is deleted and created again. For on-demand-lora
        the LoRA model and the base deployment must exist, and LoRA serving is enabled on the base.
        Raises DeploymentFailedError when the operator reports FAILED, WaitTimeoutError on timeout.
        """
        check_bool(wait, "wait")
        if timeout is not None:
            check_positive_number(timeout, "timeout")
        client = self._client
        model = client.require(
            Model, self.namespace, self._model.name, hint="register the checkpoint as a Model first"
        )
        if self._base is not None:
            self._prepare_base(client, model)
        existing = client.get(DeploymentResource, self.namespace, self.deployment_id)
        if existing is not None and (
            existing.metadata.deletion_timestamp or existing.status.phase == "FAILED"
        ):
            client.delete(DeploymentResource, self.namespace, self.deployment_id)
            self._wait_deleted(timeout)
            existing = None
        if existing is None:
            try:
                client.create(
                    DeploymentResource, deployment_body(self.namespace, self.deployment_id, self._spec)
                )
            except ResourceExistsError:
                existing = client.require(DeploymentResource, self.namespace, self.deployment_id)
        if existing is not None:
            patch = deployment_patch(existing, self._spec)
            if patch is not None:
                client.patch(DeploymentResource, self.namespace, self.deployment_id, patch)
        with self._lock:
            self._applied = True
            self._target = None
        if wait:
            self.wait_ready(timeout)
        return self

    def _prepare_base(self, client: KubeClient, model: Model) -> None:
        assert self._base is not None
        if model.spec.kind != "lora":
            raise ValueError(
                f"model: {self.model} is a base model; deployment_type 'on-demand-lora' serves LoRA "
                "checkpoints (use 'on-demand' for a base model)"
            )
        base = client.require(
            DeploymentResource,
            self.namespace,
            self._base.name,
            hint=f"create it first, e.g. LLM(<base model>, 'on-demand', id={self._base.name!r}).apply()",
        )
        # The rule is rft.api.rules.adapter_on_base_problems; LoRA disabled on the base is the one
        # problem the SDK fixes (apply() ensures the base serves adapters), the others it raises.
        problems = adapter_on_base_problems(base, model)
        if "base-is-adapter-deployment" in problems:
            raise ValueError(f"base_id: {self._base.full} is itself an on-demand-lora deployment")
        if "other-base-model" in problems:
            raise ValueError(
                f"base_id: {self._base.full} serves model {base.spec.model!r}, but LoRA checkpoint "
                f"{self._model.name!r} adapts {model.spec.base_model!r}"
            )
        if "rank-too-high" in problems:
            rank = model.spec.lora.rank if model.spec.lora is not None else 0
            raise ValueError(
                f"base_id: {self._base.full} serves adapters up to rank {base.spec.max_lora_rank}, but "
                f"{self._model.name!r} has rank {rank}; raise max_lora_rank on the base deployment"
            )
        if "lora-disabled" in problems:
            client.patch(DeploymentResource, self.namespace, self._base.name, {"spec": {"enableLora": True}})

    def wait_ready(self, timeout: float | None = DEFAULT_APPLY_TIMEOUT) -> DeploymentResource:
        """Poll until the Deployment is READY for its current generation; return it."""

        def fetch() -> DeploymentResource:
            found = self.get_deployment()
            if found is None:
                raise ResourceNotFoundError(
                    f"deployment {self.deployment_name} does not exist (was it deleted?)"
                )
            return found

        def done(deployment: DeploymentResource) -> bool:
            status = deployment.status
            if (
                status.observed_generation is not None
                and status.observed_generation < deployment.metadata.generation
            ):
                return False
            if status.phase == "FAILED":
                raise DeploymentFailedError(
                    f"deployment {self.deployment_name} FAILED: {status.message or 'no message'}"
                )
            return status.phase == "READY"

        return poll_until(
            fetch,
            done,
            timeout=timeout,
            interval=self._poll_interval,
            what=f"deployment {self.deployment_name} to be READY",
            describe=lambda d: (
                f"phase {d.status.phase or 'not reported yet'}"
                + (f" ({d.status.message})" if d.status.message else "")
            ),
        )

    def _wait_deleted(self, timeout: float | None) -> None:
        poll_until(
            self.get_deployment,
            lambda found: found is None,
            timeout=timeout,
            interval=self._poll_interval,
            what=f"deployment {self.deployment_name} to be deleted",
            describe=lambda found: f"phase {found.status.phase if found else 'gone'}",
        )

    def delete_deployment(
        self, ignore_checks: bool = False, wait: bool = False, timeout: float | None = 300.0
    ) -> bool:
        """Delete the Deployment; False when it did not exist.

        A base deployment that on-demand-lora deployments ride on is kept unless `ignore_checks`.
        """
        check_bool(ignore_checks, "ignore_checks")
        client = self._client
        if not ignore_checks:
            riders = [
                d.metadata.name
                for d in client.list(DeploymentResource, self.namespace)
                if d.spec.base_deployment == self.deployment_id and not d.metadata.deletion_timestamp
            ]
            if riders:
                raise RftError(
                    f"deployment {self.deployment_name} serves on-demand-lora deployments "
                    f"{', '.join(riders)}; delete those first or pass ignore_checks=True"
                )
        deleted = client.delete(DeploymentResource, self.namespace, self.deployment_id)
        with self._lock:
            self._applied = False
            self._target = None
        if deleted and wait:
            self._wait_deleted(timeout)
        return deleted

    # Inference -------------------------------------------------------------------------------

    def _cached_target(self) -> tuple[str, str] | None:
        with self._lock:
            return self._target

    def _resolve_target(self) -> tuple[str, str]:
        cached = self._cached_target()
        if cached is not None:
            return cached
        # Concurrent first calls (a gather of acreate) apply and resolve once; the rest wait here.
        with self._resolve_lock:
            cached = self._cached_target()
            if cached is not None:
                return cached
            with self._lock:
                applied = self._applied
            return self._apply_and_resolve(applied)

    def _apply_and_resolve(self, applied: bool) -> tuple[str, str]:
        if not applied:
            self.apply(wait=True)
        deployment = self.wait_ready()
        endpoint, served = deployment.status.endpoint, deployment.status.served_model_name
        if not endpoint or not served:
            raise RftError(
                f"deployment {self.deployment_name} is READY but its status has no endpoint or "
                "servedModelName; is the operator up to date?"
            )
        target = (resolve_base_url(endpoint, self._client), served)
        with self._lock:
            # A new endpoint (after apply or delete): clients pointed at the old one go.
            self._sync_client = None
            self._async_clients = weakref.WeakKeyDictionary()
            self._target = target
        return target

    def served_model_name(self) -> str:
        """The model name the deployment's server expects (applies the deployment on first use)."""
        return self._resolve_target()[1]

    def base_url(self) -> str:
        """The OpenAI-compatible base URL requests go to (applies the deployment on first use)."""
        return self._resolve_target()[0]

    def is_resolved(self) -> bool:
        """True once the endpoint is known (no more cluster calls before a request)."""
        return self._cached_target() is not None

    def sync_client(self) -> openai.OpenAI:
        """The official OpenAI client pointed at the deployment."""
        base_url = self.base_url()
        with self._lock:
            if self._sync_client is None:
                self._sync_client = openai.OpenAI(base_url=base_url, api_key=self._api_key or NO_API_KEY)
            return self._sync_client

    def async_client(self) -> openai.AsyncOpenAI:
        """The official async OpenAI client, one per event loop (connections belong to a loop)."""
        base_url = self.base_url()
        loop = get_running_loop()
        with self._lock:
            found = self._async_clients.get(loop)
            if found is None:
                found = openai.AsyncOpenAI(base_url=base_url, api_key=self._api_key or NO_API_KEY)
                self._async_clients[loop] = found
            return found

    # Training --------------------------------------------------------------------------------

    def reinforcement_step(
        self,
        dataset: Dataset | str,
        output_model: str,
        lora_rank: int | None = None,
        learning_rate: float | str | None = None,
        max_context_length: int | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        accelerator_count: int | None = None,
        accelerator_type: str | None = None,
        loss_method: str | None = None,
        kl_coefficient: float | str | None = None,
        reward_weights: dict[str, float | str] | list[str] | None = None,
        *,
        lora_alpha: int | None = None,
        step_id: str | None = None,
        output_location: str | None = None,
        service_account: str | None = None,
        trainer_image: str | None = None,
        active_deadline_seconds: int | None = None,
        backoff_limit: int | None = None,
        checkpoint_every_steps: int | None = None,
        queue_name: str | None = None,
        priority_class: str | None = None,
    ) -> ReinforcementStep:
        """Create a ReinforcementStep training `output_model` from this LLM's model; returns at once.

        It neither waits nor syncs the dataset (call `dataset.sync()` first). `batch_size` is a
        token budget per packed batch. A training argument left as None takes the API's default
        (`TrainingParameters`, `LossSettings`, `Accelerator` in `rft.api`; docs/sdk.md lists them). Raises before creating anything when `output_model`
        already exists, when the dataset or the model is missing, or, if the model is a LoRA
        checkpoint (the step then warm-starts from it), when lora_rank, learning_rate,
        max_context_length or batch_size differ from the checkpoint's (all mismatches listed).
        The step is named `step_id`, by default after the output model.

        `checkpoint_every_steps`: an in-step checkpoint every this many optimizer steps (and at
        SIGTERM), from which a retried, resumed or preempted pod continues (0: only at SIGTERM).
        `queue_name`: a Kueue LocalQueue of the namespace; the step waits for Kueue's admission.
        `priority_class`: a Kueue WorkloadPriorityClass (needs `queue_name`); the step fails if
        the class does not exist.
        """
        dataset_name = self._dataset_name(dataset)
        output = self._same_namespace_arg(
            resolve_name(output_model, "models", self.namespace, "output_model"), "output_model"
        )
        step_name = check_object_name(step_id, "step_id") if step_id is not None else output.name
        config = self._session.config
        location = output_location
        if location is None and config.bucket is not None:
            location = f"{config.bucket}/models/{output.name}/"
        fields = step_spec_fields(
            dataset=dataset_name,
            model=self._model.name,
            output_model=output.name,
            lora_rank=lora_rank,
            learning_rate=learning_rate,
            max_context_length=max_context_length,
            epochs=epochs,
            batch_size=batch_size,
            accelerator_count=accelerator_count,
            accelerator_type=accelerator_type or self._accelerator_type,
            loss_method=loss_method,
            kl_coefficient=kl_coefficient,
            reward_weights=reward_weights,
            service_account=service_account or config.service_account,
            lora_alpha=lora_alpha,
            output_location=location,
            trainer_image=trainer_image,
            active_deadline_seconds=active_deadline_seconds,
            backoff_limit=backoff_limit,
            checkpoint_every_steps=checkpoint_every_steps,
            queue_name=queue_name,
            priority_class=priority_class,
        )
        body = reinforcement_step_body(self.namespace, step_name, fields)

        client = self._client
        if client.get(Model, self.namespace, output.name) is not None:
            raise ResourceExistsError(
                f"output_model: {output.full} already exists; choose a new name for the checkpoint"
            )
        source = client.require(
            Model, self.namespace, self._model.name, hint="model: register it as a Model first"
        )
        if source.spec.kind == "lora":
            mismatches = continuation_mismatches(
                source, TrainingParameters.model_validate(fields["training"])
            )
            if mismatches:
                raise ValueError(
                    f"continuing from LoRA checkpoint {self.model} requires its training parameters: "
                    + "; ".join(mismatches)
                )
        client.require(
            DatasetResource,
            self.namespace,
            dataset_name,
            hint="dataset: call dataset.sync() before reinforcement_step()",
        )
        try:
            created = client.create(StepResource, body)
        except ResourceExistsError as error:
            raise ResourceExistsError(
                f"step_id: a ReinforcementStep named {step_name!r} already exists in namespace "
                f"{self.namespace!r}; pass another step_id or output_model"
            ) from error
        return ReinforcementStep(created, self._session)

    def _dataset_name(self, dataset: Dataset | str) -> str:
        if isinstance(dataset, Dataset):
            if dataset.namespace != self.namespace:
                raise ValueError(
                    f"dataset: {dataset.name} is in namespace {dataset.namespace!r}, but the model is in "
                    f"{self.namespace!r}"
                )
            return dataset.id
        return self._same_namespace_arg(
            resolve_name(dataset, "datasets", self.namespace, "dataset"), "dataset"
        ).name

    def _same_namespace_arg(self, name: ResourceName, argument: str) -> ResourceName:
        if name.namespace != self.namespace:
            raise ValueError(
                f"{argument}: {name.full} is in namespace {name.namespace!r}, but the model is in "
                f"{self.namespace!r}"
            )
        return name

    def __repr__(self) -> str:
        return (
            f"LLM(model={self.model!r}, deployment_type={self._deployment_type!r}, "
            f"deployment={self.deployment_name!r})"
        )


def _check_accelerator(accelerator_type: str | None, accelerator_count: int | None) -> str | None:
    if accelerator_type is not None:
        check_choice(accelerator_type, "accelerator_type", ACCELERATOR_TYPES)
    check_optional_field_int(accelerator_count, "accelerator_count", Accelerator, "count")
    if accelerator_count == 0 and accelerator_type != "CPU":
        raise ValueError("accelerator_count: 0 is only allowed with accelerator_type='CPU'")
    return accelerator_type


def _server_fields(
    model: str,
    deployment_type: str,
    accelerator_type: str | None,
    accelerator_count: int | None,
    options: dict[str, Any],
    service_account: str,
) -> dict[str, Any]:
    """The spec fields of a deployment that runs its own server pods, checked one by one."""
    min_replicas = check_optional_field_int(
        options["min_replica_count"], "min_replica_count", DeploymentSpec, "min_replica_count"
    )
    max_replicas = check_optional_field_int(
        options["max_replica_count"], "max_replica_count", DeploymentSpec, "max_replica_count"
    )
    if min_replicas is not None and max_replicas is not None and min_replicas > max_replicas:
        raise ValueError(f"min_replica_count: {min_replicas} exceeds max_replica_count {max_replicas}")
    if options["engine"] is not None:
        check_choice(options["engine"], "engine", ENGINES)
    if options["enable_addons"] is not None:
        check_bool(options["enable_addons"], "enable_addons")
    return {
        "model": model,
        "deployment_type": deployment_type,
        "engine": options["engine"],
        "accelerator": {"type": accelerator_type, "count": accelerator_count},
        "min_replica_count": min_replicas,
        "max_replica_count": max_replicas,
        "service_account_name": service_account,
        "enable_lora": options["enable_addons"],
        "max_loras": check_optional_field_int(options["max_loras"], "max_loras", DeploymentSpec, "max_loras"),
        "max_lora_rank": check_optional_field_int(
            options["max_lora_rank"], "max_lora_rank", DeploymentSpec, "max_lora_rank"
        ),
        "max_model_len": check_optional_field_int(
            options["max_context_length"], "max_context_length", DeploymentSpec, "max_model_len"
        ),
        "image": options["image"],
    }
