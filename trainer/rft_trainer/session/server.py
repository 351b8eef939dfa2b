"""The Tinker API over HTTP for one warm training session (FastAPI).

What the official client (`tinker` 0.38) sends, and what this server answers:

- Bootstrap: `POST /api/v1/client/config` (feature flags: API-key auth, httpx or pyqwest, fwd/bwd
  chunking), `POST /api/v1/client/dynamic_config`, `POST /api/v1/create_session`,
  `POST /api/v1/session_heartbeat` every 10 s, `POST /api/v1/telemetry` (accepted, dropped),
  `GET /api/v1/healthz`, `GET /api/v1/get_server_capabilities`.
- `POST /api/v1/sessions/{id}/finish` (`ServiceClient.close`, or leaving its `with` block): the
  adapter that client session made is released (queued behind its calls), so that the next
  client may create or load one; until then a second one is refused (one adapter at a time).
- `GET /api/v1/training_runs/{id}` (the REST client; the cookbook reads a run's user_metadata):
  the runs this process has held, with their user_metadata and last checkpoints.
- Training calls return a future at once (`{"request_id", "model_id"}`) and run in submission
  order on one worker thread: `create_model`, `forward_backward` (protobuf body),
  `optim_step`, `save_weights` (save_state), `load_weights` (load_state, or creating a training
  client from a state), `save_weights_for_sampler`. `get_info` answers directly. Refused with the
  reason, never ignored: `train_unembed=True` (the client's default: an adapter on the output head
  cannot be served by vLLM) and a checkpoint `ttl_seconds` (the bucket keeps checkpoints until
  they are deleted); a save's `user_metadata` is kept in the checkpoint's metadata.json.
- `POST /api/v1/retrieve_future` long-polls a future: `{"type": "try_again", ...}` while it runs,
  then its result (protobuf for forward_backward, JSON otherwise) or
  `{"error", "category": "user"|"server"}`.

Sampling (`create_sampling_session`, `asample`, `samplers/{id}` and the operator's two routes) is
in `sampling_routes.py` and `sampling.py`: vLLM answers, where the operator says it serves.

Every call but healthz needs the session's API key in `X-API-Key` (the client sends its
`api_key`, which must start with `tml-`), or a Kubernetes ServiceAccount token of the session's
namespace where the server was given a TokenReviewer (`session/auth.py`). healthz reports
`idle_seconds`: the time since the last client call other than heartbeats and telemetry (0 while
a future runs), which the operator reads for a TrainingSession's idle timeout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from rft.storage.errors import StorageError

from rft_trainer.session.auth import Authenticator, AuthError, TokenReviewer
from rft_trainer.session.core import AdamStep, SessionError, TrainingSession
from rft_trainer.session.sampling import SamplingBackend, SavedSampler
from rft_trainer.session.sampling_routes import install_sampling_routes
from rft_trainer.session.wire import (
    PROTO_CONTENT_TYPE,
    WireError,
    decode_forward_backward,
    encode_forward_backward_output,
)

log = logging.getLogger("rft_trainer.session")

LONG_POLL_SECONDS = 20.0  # the client waits 45 s for a retrieve_future answer
KEPT_FUTURES = 4096
CHECKPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:_-]{0,127}$")


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class LoraConfigBody(_Request):
    rank: int
    seed: int | None = None
    train_unembed: bool = True
    train_mlp: bool = True
    train_attn: bool = True


class OptimizerConfigBody(_Request):
    model_config = ConfigDict(extra="allow")
    type: str = "adamw"


class CreateModelBody(_Request):
    session_id: str
    model_seq_id: int
    base_model: str
    user_metadata: dict[str, Any] | None = None
    lora_config: LoraConfigBody | None = None
    optimizer_config: OptimizerConfigBody = Field(default_factory=OptimizerConfigBody)


class ModelBody(_Request):
    model_id: str


class AdamParamsBody(_Request):
    learning_rate: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-12
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0


class OptimStepBody(_Request):
    model_id: str
    seq_id: int | None = None
    adam_params: AdamParamsBody | None = None
    optimizer_params: dict[str, Any] | None = None


class SaveWeightsBody(_Request):
    model_id: str
    path: str | None = None
    seq_id: int | None = None
    overwrite: bool = False
    ttl_seconds: int | None = None
    user_metadata: dict[str, str] | None = None
    sampling_session_seq_id: int | None = None


class LoadWeightsBody(_Request):
    model_id: str | None = None
    seq_id: int | None = None
    session_id: str | None = None
    model_seq_id: int | None = None
    base_model: str | None = None
    user_metadata: dict[str, Any] | None = None
    path: str
    optimizer: bool
    optimizer_config: OptimizerConfigBody | None = None


class RetrieveBody(_Request):
    request_id: str


class SessionBody(_Request):
    session_id: str


# Calls a client makes on its own while nobody uses it: they do not count as activity.
PASSIVE_CALLS = ("/session_heartbeat", "/telemetry", "/client/dynamic_config")


@dataclass(frozen=True)
class ServerSettings:
    """What the server is started with."""

    base_model_name: str
    storage_url: str  # the bucket prefix states and sampler weights are written under
    api_key: str
    max_lora_rank: int | None = None  # larger ranks are refused (None: no bound)
    token_reviewer: TokenReviewer | None = None  # also accept Kubernetes tokens (auth.py)
    # SHA-256 of the operator's token for this session (its sampling routes); None: no such routes
    operator_token_sha256: str | None = None


@dataclass(frozen=True)
class _Proto:
    body: bytes


@dataclass
class TrainingRun:
    """A training run (a model id) this server process has held: what `GET training_runs/{id}`
    answers (the cookbook reads a run's user_metadata, e.g. its renderer name)."""

    run_id: str
    base_model: str
    lora_rank: int
    user_metadata: dict[str, str]
    last_request_time: datetime
    checkpoints: dict[str, dict[str, Any]]  # kind ("training" | "sampler") -> the last one


class SessionService:
    """The session plus the Tinker futures around it: one worker thread, results kept by id."""

    def __init__(
        self, session: TrainingSession, settings: ServerSettings, sampling: SamplingBackend | None = None
    ) -> None:
        self.session = session
        self.settings = settings
        self.sampling = sampling
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="rft-session"
        )
        self._lock = threading.Lock()
        self._futures: OrderedDict[str, concurrent.futures.Future[Any]] = OrderedDict()
        self._by_seq: dict[tuple[str, int], str] = {}
        self._sessions: set[str] = set()
        self.model_id: str | None = None
        self._model_session: str | None = None  # the client session that made the adapter
        self._runs: dict[str, TrainingRun] = {}
        self._last_activity = time.monotonic()

    # -- activity (the operator's idle timeout) ---------------------------------------------------

    def touch(self) -> None:
        self._last_activity = time.monotonic()

    def idle_seconds(self) -> float:
        """Seconds since the last client call; 0 while any future is queued or running."""
        with self._lock:
            busy = any(not f.done() for f in self._futures.values())
        return 0.0 if busy else max(0.0, time.monotonic() - self._last_activity)

    # -- sessions and models ------------------------------------------------------------------

    def new_session(self) -> str:
        session_id = str(uuid.uuid4())
        with self._lock:
            self._sessions.add(session_id)
        return session_id

    def known_session(self, session_id: str) -> bool:
        with self._lock:
            return session_id in self._sessions

    def require_model(self, model_id: str) -> None:
        if self.model_id is None or model_id != self.model_id:
            raise HTTPException(404, f"unknown model_id {model_id!r}")

    def training_run(self, run_id: str) -> dict[str, Any] | None:
        """The client's TrainingRun for a run this process has held, else None."""
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return None
            return {
                "training_run_id": run.run_id,
                "base_model": run.base_model,
                "model_owner": "training-session",
                "is_lora": True,
                "corrupted": False,
                "lora_rank": run.lora_rank,
                "last_request_time": run.last_request_time.isoformat(),
                "last_checkpoint": run.checkpoints.get("training"),
                "last_sampler_checkpoint": run.checkpoints.get("sampler"),
                "user_metadata": run.user_metadata or None,
            }

    def _adopt_run(self, model_id: str, session_id: str, user_metadata: dict[str, Any] | None) -> None:
        spec = self.session.spec
        assert spec is not None
        with self._lock:
            self.model_id = model_id
            self._model_session = session_id
            self._runs[model_id] = TrainingRun(
                run_id=model_id,
                base_model=self.settings.base_model_name,
                lora_rank=spec.rank,
                user_metadata={str(k): str(v) for k, v in (user_metadata or {}).items()},
                last_request_time=datetime.now(UTC),
                checkpoints={},
            )

    def _record_checkpoint(self, kind: str, path: str, user_metadata: dict[str, str] | None) -> None:
        with self._lock:
            run = self._runs.get(self.model_id or "")
            if run is None:
                return
            now = datetime.now(UTC)
            run.last_request_time = now
            run.checkpoints[kind] = {
                "checkpoint_id": path.split("/", 3)[-1],
                "checkpoint_type": kind,
                "time": now.isoformat(),
                "tinker_path": path,
                "user_metadata": user_metadata,
            }

    def finish_session(self, session_id: str) -> dict[str, Any]:
        """A client session ended (ServiceClient.close): the adapter it made is released, so
        that the next client may create or load one (runs on the worker, after its calls)."""
        with self._lock:
            owned = self.model_id is not None and self._model_session == session_id
            if owned:
                self.model_id = None
                self._model_session = None
        if owned:
            self.session.release()
        return {}

    def run_url(self, run_id: str) -> str:
        return f"{self.settings.storage_url.rstrip('/')}/{run_id.replace(':', '-')}"

    def checkpoint(self, name: str | None, kind: str) -> tuple[str, str]:
        """(tinker path, bucket URL) of a named checkpoint of this session's model."""
        if name is None or not CHECKPOINT_NAME.match(name):
            raise SessionError(f"checkpoint name {name!r} must match {CHECKPOINT_NAME.pattern}")
        assert self.model_id is not None
        return f"tinker://{self.model_id}/{kind}/{name}", f"{self.run_url(self.model_id)}/{kind}/{name}"

    def resolve(self, path: str) -> str:
        """The bucket URL of a `tinker://<run>/weights/<name>` path."""
        parts = path.removeprefix("tinker://").split("/") if path.startswith("tinker://") else []
        if (
            len(parts) != 3
            or parts[1] != "weights"
            or not RUN_ID.match(parts[0])
            or not CHECKPOINT_NAME.match(parts[2])
        ):
            raise SessionError(f"{path!r} is not a training-state path (tinker://<run>/weights/<name>)")
        return f"{self.run_url(parts[0])}/weights/{parts[2]}"

    # -- futures ----------------------------------------------------------------------------

    def submit(
        self,
        fn: Callable[[], Any],
        *,
        model_id: str | None,
        seq_id: int | None,
        executor: concurrent.futures.Executor | None = None,
    ) -> dict[str, Any]:
        """Queue `fn` behind every earlier request (on the training worker, unless `executor`
        says otherwise: samples run beside training); a resent (model_id, seq_id) gets its first
        future."""
        with self._lock:
            if model_id is not None and seq_id is not None and (model_id, seq_id) in self._by_seq:
                return {"request_id": self._by_seq[(model_id, seq_id)], "model_id": model_id}
            request_id = str(uuid.uuid4())
            self._futures[request_id] = (executor or self._executor).submit(fn)
            if model_id is not None and seq_id is not None:
                self._by_seq[(model_id, seq_id)] = request_id
            while len(self._futures) > KEPT_FUTURES:
                self._futures.popitem(last=False)
        return {"request_id": request_id, "model_id": model_id}

    def future(self, request_id: str) -> concurrent.futures.Future[Any] | None:
        with self._lock:
            return self._futures.get(request_id)

    def shutdown(self) -> None:
        if self.sampling is not None:
            self.sampling.shutdown()
        self._executor.shutdown(wait=True, cancel_futures=True)

    # -- the work (runs on the worker thread) ----------------------------------------------------

    def create_model(self, body: CreateModelBody, model_id: str) -> dict[str, Any]:
        if body.base_model != self.settings.base_model_name:
            raise SessionError(
                f"base_model {body.base_model!r} is not served here; this session serves {self.settings.base_model_name!r}"
            )
        if body.optimizer_config.type != "adamw":
            raise SessionError(f"optimizer {body.optimizer_config.type!r} is not supported (adamw only)")
        if body.lora_config is None:
            raise SessionError("full fine-tuning is not supported: pass a LoRA config")
        lora = body.lora_config
        bound = self.settings.max_lora_rank
        if bound is not None and lora.rank > bound:
            raise SessionError(f"rank {lora.rank} exceeds this session's maxLoraRank {bound}")
        spec = self.session.resolve_spec(
            rank=lora.rank,
            seed=lora.seed,
            train_attn=lora.train_attn,
            train_mlp=lora.train_mlp,
            train_unembed=lora.train_unembed,
        )
        self.session.create(spec)
        self._adopt_run(model_id, body.session_id, body.user_metadata)
        return {"model_id": model_id, "type": "create_model"}

    def optim_step(self, body: OptimStepBody) -> dict[str, Any]:
        if body.optimizer_params is not None or body.adam_params is None:
            raise SessionError("only Adam parameters are supported (the model's optimizer is adamw)")
        p = body.adam_params
        metrics = self.session.optim_step(
            AdamStep(
                learning_rate=p.learning_rate,
                beta1=p.beta1,
                beta2=p.beta2,
                eps=p.eps,
                weight_decay=p.weight_decay,
                grad_clip_norm=p.grad_clip_norm,
            )
        )
        return {"metrics": metrics}

    def save_state(self, body: SaveWeightsBody) -> dict[str, Any]:
        if body.overwrite:
            raise SessionError("overwrite=True is not supported: states in the bucket are never overwritten")
        _refuse_ttl(body.ttl_seconds)
        path, url = self.checkpoint(body.path, "weights")
        self.session.save_state(url, self._lineage(body.user_metadata))
        self._record_checkpoint("training", path, body.user_metadata)
        return {"path": path, "type": "save_weights"}

    def save_for_sampler(self, body: SaveWeightsBody) -> dict[str, Any]:
        """Publish the adapter create-only under sampler_weights/<name> and list it for the
        operator (which registers a Model and loads it onto the sampling Deployment). Without a
        name (save_weights_and_get_sampling_client) the name is made up and a sampling session on
        it is the answer."""
        if body.overwrite:
            raise SessionError("overwrite=True is not supported: sampler weights are never overwritten")
        _refuse_ttl(body.ttl_seconds)
        name = body.path
        if name is None:
            if self.sampling is None or body.sampling_session_seq_id is None:
                raise SessionError("save_weights_for_sampler needs a name (this session has no sampling)")
            name = f"ephemeral-{uuid.uuid4().hex[:12]}"
        path, url = self.checkpoint(name, "sampler_weights")
        record = self.session.save_sampler_weights(url, self._lineage(body.user_metadata))
        self._record_checkpoint("sampler", path, body.user_metadata)
        if self.sampling is not None:
            self.sampling.add_saved(SavedSampler(path=path, location=url, record=record))
        if body.path is None:
            assert self.sampling is not None
            assert self.model_id is not None
            assert body.sampling_session_seq_id is not None
            client_session = self.model_id.split(":", 1)[0]
            sampler_id = self.sampling.create_sampler(
                client_session, body.sampling_session_seq_id, path=path, base_model=None
            )
            return {"sampling_session_id": sampler_id, "path": path, "type": "save_weights_for_sampler"}
        return {"path": path, "type": "save_weights_for_sampler"}

    def load_state(self, body: LoadWeightsBody, model_id: str, *, create: bool) -> dict[str, Any]:
        url = self.resolve(body.path)
        if create and body.base_model is not None and body.base_model != self.settings.base_model_name:
            raise SessionError(f"base_model {body.base_model!r} is not served here")
        self.session.load_state(url, with_optimizer=body.optimizer, create=create)
        if create:
            assert body.session_id is not None
            self._adopt_run(model_id, body.session_id, body.user_metadata)
        return {"path": body.path, "model_id": model_id, "type": "load_weights"}

    def _lineage(self, user_metadata: dict[str, str] | None = None) -> dict[str, Any]:
        lineage: dict[str, Any] = {
            "createdAt": datetime.now(UTC).isoformat(timespec="seconds"),
            "session": {"modelId": self.model_id, "optimizerSteps": self.session.steps},
        }
        if user_metadata:
            lineage["userMetadata"] = dict(user_metadata)
        return lineage


def _refuse_ttl(ttl_seconds: int | None) -> None:
    """Checkpoints live in the user's bucket, create-only, until someone deletes them: the
    session deletes nothing, so a TTL it would not keep is refused rather than ignored."""
    if ttl_seconds is not None:
        raise SessionError(
            f"ttl_seconds={ttl_seconds} is not supported: checkpoints are kept in the session's "
            "bucket until deleted (use the bucket's lifecycle rules); pass ttl_seconds=None"
        )


def _guard(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Run `fn`, turning refusals into the client's failed-future answer."""

    def run() -> Any:
        try:
            return fn()
        except SessionError as exc:
            return {"error": str(exc), "category": "user" if exc.user else "server"}
        except WireError as exc:
            return {"error": str(exc), "category": "user"}
        except StorageError as exc:
            return {"error": f"storage: {exc}", "category": "user"}
        except Exception as exc:
            log.exception("request failed")
            return {"error": f"{type(exc).__name__}: {exc}", "category": "server"}

    return run


def create_app(service: SessionService) -> FastAPI:
    """The FastAPI application serving `service`."""
    app = FastAPI(title="rft training session (Tinker API)", docs_url=None, redoc_url=None)

    authenticator = Authenticator(service.settings.api_key, service.settings.token_reviewer)

    def authenticated(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> None:
        try:
            authenticator.authenticate(x_api_key)
        except AuthError as exc:
            raise HTTPException(exc.status, exc.message) from None
        if not request.url.path.endswith(PASSIVE_CALLS):
            service.touch()

    auth = [Depends(authenticated)]

    @app.get("/api/v1/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "idle_seconds": round(service.idle_seconds(), 1)}

    @app.post("/api/v1/client/config", dependencies=auth)
    def client_config() -> dict[str, Any]:
        # API keys only (no JWT exchange); chunks of one forward_backward in order, so that
        # gradients add up in a reproducible order.
        return {"pjwt_auth_enabled": False, "parallel_fwdbwd_chunks": False, "proto_compress_fwdbwd": False}

    @app.post("/api/v1/client/dynamic_config", dependencies=auth)
    def dynamic_config() -> dict[str, Any]:
        return {"refresh_interval_sec": 300, "sample_cancel_enabled": False}

    @app.post("/api/v1/telemetry", dependencies=auth)
    def telemetry() -> dict[str, str]:
        return {"status": "accepted"}  # the client's telemetry is not kept

    @app.get("/api/v1/get_server_capabilities", dependencies=auth)
    def capabilities() -> dict[str, Any]:
        return {
            "supported_models": [
                {
                    "model_name": service.settings.base_model_name,
                    "max_context_length": service.session.max_context_length,
                    "trainable": True,
                    "sampleable": service.sampling is not None,
                }
            ]
        }

    @app.post("/api/v1/create_session", dependencies=auth)
    def create_session() -> dict[str, Any]:
        return {"type": "create_session", "session_id": service.new_session()}

    @app.post("/api/v1/session_heartbeat", dependencies=auth)
    def heartbeat(body: SessionBody) -> dict[str, str]:
        if not service.known_session(body.session_id):
            raise HTTPException(410, f"unknown session {body.session_id!r}")
        return {"type": "session_heartbeat"}

    @app.post("/api/v1/sessions/{session_id}/finish", dependencies=auth)
    def finish(session_id: str) -> dict[str, str]:
        # queued behind the session's own calls; its answer is not waited for
        service.submit(_guard(lambda: service.finish_session(session_id)), model_id=None, seq_id=None)
        return {}

    @app.get("/api/v1/training_runs/{run_id}", dependencies=auth)
    def training_run(run_id: str) -> dict[str, Any]:
        run = service.training_run(run_id)
        if run is None:
            raise HTTPException(404, f"training run {run_id!r} was not held by this session process")
        return run

    @app.post("/api/v1/create_model", dependencies=auth)
    def create_model(body: CreateModelBody) -> dict[str, Any]:
        if not service.known_session(body.session_id):
            raise HTTPException(404, f"unknown session {body.session_id!r}")
        model_id = f"{body.session_id}:train:{body.model_seq_id}"
        return service.submit(
            _guard(lambda: service.create_model(body, model_id)), model_id=model_id, seq_id=0
        )

    @app.post("/api/v1/get_info", dependencies=auth)
    def get_info(body: ModelBody) -> dict[str, Any]:
        service.require_model(body.model_id)
        spec = service.session.spec
        name = service.settings.base_model_name
        arch = getattr(getattr(service.session.base, "config", None), "model_type", None)
        return {
            "type": "get_info",
            "model_id": body.model_id,
            "model_data": {"arch": arch, "model_name": name, "tokenizer_id": name},
            "is_lora": True,
            "lora_rank": spec.rank if spec is not None else None,
            "model_name": name,
        }

    @app.post("/api/v1/forward_backward", dependencies=auth)
    async def forward_backward(request: Request) -> dict[str, Any]:
        if PROTO_CONTENT_TYPE not in request.headers.get("content-type", ""):
            raise HTTPException(415, f"forward_backward takes {PROTO_CONTENT_TYPE}")
        if request.headers.get("content-encoding"):
            raise HTTPException(415, "compressed forward_backward bodies are not supported")
        try:
            fb = decode_forward_backward(await request.body())
        except WireError as exc:
            raise HTTPException(400, str(exc)) from None
        service.require_model(fb.model_id)

        def work() -> Any:
            result = service.session.forward_backward(
                fb.data, fb.loss_fn, forward_only=fb.forward_only, config=fb.loss_fn_config
            )
            return _Proto(encode_forward_backward_output(result.outputs, result.metrics))

        return service.submit(_guard(work), model_id=fb.model_id, seq_id=fb.seq_id)

    @app.post("/api/v1/optim_step", dependencies=auth)
    def optim_step(body: OptimStepBody) -> dict[str, Any]:
        service.require_model(body.model_id)
        return service.submit(
            _guard(lambda: service.optim_step(body)), model_id=body.model_id, seq_id=body.seq_id
        )

    @app.post("/api/v1/save_weights", dependencies=auth)
    def save_weights(body: SaveWeightsBody) -> dict[str, Any]:
        service.require_model(body.model_id)
        return service.submit(
            _guard(lambda: service.save_state(body)), model_id=body.model_id, seq_id=body.seq_id
        )

    @app.post("/api/v1/save_weights_for_sampler", dependencies=auth)
    def save_weights_for_sampler(body: SaveWeightsBody) -> dict[str, Any]:
        service.require_model(body.model_id)
        return service.submit(
            _guard(lambda: service.save_for_sampler(body)), model_id=body.model_id, seq_id=body.seq_id
        )

    @app.post("/api/v1/load_weights", dependencies=auth)
    def load_weights(body: LoadWeightsBody) -> dict[str, Any]:
        if body.session_id is not None:  # create a training client from a saved state
            if not service.known_session(body.session_id) or body.model_seq_id is None:
                raise HTTPException(404, f"unknown session {body.session_id!r}")
            model_id = f"{body.session_id}:train:{body.model_seq_id}"
            create = True
        elif body.model_id is not None:
            service.require_model(body.model_id)
            model_id, create = body.model_id, False
        else:
            raise HTTPException(400, "load_weights needs model_id or session_id")
        return service.submit(
            _guard(lambda: service.load_state(body, model_id, create=create)),
            model_id=model_id,
            seq_id=body.seq_id if body.seq_id is not None else 0,
        )

    @app.post("/api/v1/retrieve_future", dependencies=auth)
    async def retrieve_future(body: RetrieveBody) -> Response:
        future = service.future(body.request_id)
        if future is None:
            raise HTTPException(404, f"unknown request_id {body.request_id!r}")
        try:
            result = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), LONG_POLL_SECONDS)
        except TimeoutError:
            return JSONResponse({"type": "try_again", "request_id": body.request_id, "queue_state": "active"})
        if isinstance(result, _Proto):
            return Response(content=result.body, media_type=PROTO_CONTENT_TYPE)
        return JSONResponse(result)

    if service.sampling is not None and service.settings.operator_token_sha256:
        install_sampling_routes(
            app,
            service,
            service.sampling,
            auth,
            service.settings.operator_token_sha256,
            as_proto_future=lambda fn: _guard(lambda: _Proto(fn())),
        )
    return app
