"""Sampling for a training session: the Tinker sampling calls, answered by the session's vLLM
`Deployment` (the TrainingSession's `spec.samplingDeployment`).

The session pod holds no Kubernetes credentials, so it does not find vLLM itself. The operator
does, level-based, at each look at a READY session:

1. it reads the sampler weights this pod saved (`GET /api/v1/rft/sampler_weights`: bucket
   location, LoRA settings, canary, lineage);
2. registers each as a `Model` and loads it onto the sampling Deployment through an
   `on-demand-lora` Deployment (adapters on every replica, each replica verified by the canary);
3. tells this pod where each one is served (`POST /api/v1/rft/sampling_targets`: per tinker path,
   the served model name and the vLLM base URLs of the replicas that serve it, verified).

Both routes take the operator's token for this session (`Authorization: Bearer`, the pod holds only
its SHA-256), never the clients' API key. A sample is then a `POST /v1/completions` to one of those
replicas with the prompt's token ids, the adapter's served name as `model`, `logprobs: 0` and
`return_token_ids`; vLLM's sampled tokens and their logprobs become Tinker's protobuf
`SampleResponse`. A sample on weights not yet served waits for them (`load_timeout`), then fails
with a message saying what is missing.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import logging
import math
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rft_trainer.session.core import SessionError
from rft_trainer.session.wire import encode_sample_response

log = logging.getLogger("rft_trainer.session.sampling")

DEFAULT_LOAD_TIMEOUT = 300.0  # how long a sample waits for its weights to be served
VLLM_TIMEOUT = 600.0
SAMPLE_WORKERS = 8
_TOKEN_PREFIX = "token_id:"  # noqa: S105 - vLLM's return_tokens_as_token_ids form, not a secret
# The `stop_reason` numbers of the client's proto
STOP_REASON_STOP = 0
STOP_REASON_LENGTH = 1
_STOP_REASONS = {"stop": STOP_REASON_STOP, "length": STOP_REASON_LENGTH}


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class EncodedTextChunkBody(_Body):
    type: str = "encoded_text"
    tokens: list[int] = Field(default_factory=list)


class ModelInputBody(_Body):
    chunks: list[EncodedTextChunkBody]

    def token_ids(self) -> list[int]:
        ids: list[int] = []
        for chunk in self.chunks:
            if chunk.type != "encoded_text":
                raise SessionError(f"prompt chunks of type {chunk.type!r} are not supported (text only)")
            ids.extend(chunk.tokens)
        return ids


class SamplingParamsBody(_Body):
    max_tokens: int | None = None
    seed: int | None = None
    stop: str | list[str] | list[int] | None = None
    temperature: float = 1.0
    top_k: int = -1
    top_p: float = 1.0


class CreateSamplingSessionBody(_Body):
    session_id: str
    sampling_session_seq_id: int
    base_model: str | None = None
    model_path: str | None = None


class SampleBody(_Body):
    sampling_session_id: str | None = None
    seq_id: int | None = None
    base_model: str | None = None
    model_path: str | None = None
    num_samples: int = 1
    prompt: ModelInputBody
    sampling_params: SamplingParamsBody
    prompt_logprobs: bool | None = None
    topk_prompt_logprobs: int = 0
    topk_sample_logprobs: int = 0
    target_prompt_logprobs: dict[str, Any] | None = None
    prompt_alt_tokens_k: int = 0
    prompt_logprobs_last_n: int | None = None


class TargetBody(_Body):
    model: str = Field(min_length=1, max_length=253)
    urls: list[str] = Field(default_factory=list, max_length=1000)


class SamplingTargetsBody(_Body):
    """What the operator pushes: where the base model and each saved adapter are served."""

    deployment: str | None = None
    base: TargetBody | None = None
    adapters: dict[str, TargetBody] = Field(default_factory=dict, max_length=1000)
    # tinker path -> why it is not served (yet): shown to a sample that waits in vain
    pending: dict[str, str] = Field(default_factory=dict, max_length=1000)
    # the sampling Deployment cannot serve (e.g. spec.samplingDeployment names none): samples fail
    # at once with this message
    problem: str | None = Field(default=None, max_length=2000)


@dataclass(frozen=True)
class SavedSampler:
    """Sampler weights this pod published: what the operator needs to register a Model."""

    path: str  # tinker://<run>/sampler_weights/<name>
    location: str  # the bucket prefix
    record: dict[str, Any]  # lora, canary, files, lineage (JSON)


@dataclass
class _Sampler:
    sampler_id: str
    path: str | None  # None: the base model


@dataclass
class _Targets:
    deployment: str | None = None
    base: TargetBody | None = None
    adapters: dict[str, TargetBody] = field(default_factory=dict)
    pending: dict[str, str] = field(default_factory=dict)
    problem: str | None = None


class SamplingBackend:
    """Sampling sessions, the saved sampler weights and where vLLM serves them."""

    def __init__(
        self,
        base_model_name: str,
        *,
        deployment: str | None,
        load_timeout: float = DEFAULT_LOAD_TIMEOUT,
        vllm_timeout: float = VLLM_TIMEOUT,
    ) -> None:
        self.base_model_name = base_model_name
        self.deployment = deployment
        self.load_timeout = load_timeout
        self.vllm_timeout = vllm_timeout
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=SAMPLE_WORKERS, thread_name_prefix="rft-sample"
        )
        self._lock = threading.Condition()
        self._saved: dict[str, SavedSampler] = {}
        self._samplers: dict[str, _Sampler] = {}
        self._targets = _Targets(deployment=deployment)
        self._round_robin = itertools.count()
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    # -- saved weights (the operator reads them) -------------------------------------------------

    def add_saved(self, saved: SavedSampler) -> None:
        with self._lock:
            self._saved[saved.path] = saved

    def saved(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"path": s.path, "location": s.location, **s.record} for s in self._saved.values()]

    # -- targets (the operator pushes them) ------------------------------------------------------

    def set_targets(self, body: SamplingTargetsBody) -> None:
        with self._lock:
            self._targets = _Targets(
                deployment=body.deployment or self.deployment,
                base=body.base,
                adapters=dict(body.adapters),
                pending=dict(body.pending),
                problem=body.problem,
            )
            self._lock.notify_all()

    # -- sampling sessions -----------------------------------------------------------------------

    def create_sampler(
        self, session_id: str, seq_id: int, *, path: str | None, base_model: str | None
    ) -> str:
        if path is None:
            if base_model is not None and base_model != self.base_model_name:
                raise SessionError(
                    f"base_model {base_model!r} is not served here; this session serves {self.base_model_name!r}"
                )
        elif "/sampler_weights/" not in path:
            raise SessionError(
                f"{path!r} is not a sampler weights path (tinker://<run>/sampler_weights/<name>): save "
                "with save_weights_for_sampler to sample"
            )
        sampler_id = f"{session_id}:sample:{seq_id}"
        with self._lock:
            self._samplers[sampler_id] = _Sampler(sampler_id, path)
        return sampler_id

    def sampler(self, sampler_id: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._samplers.get(sampler_id)
        if found is None:
            return None
        return {"sampler_id": sampler_id, "base_model": self.base_model_name, "model_path": found.path}

    def resolve_path(self, body: SampleBody) -> str | None:
        """The tinker path a sample request samples from (None: the base model)."""
        if body.sampling_session_id is not None:
            with self._lock:
                found = self._samplers.get(body.sampling_session_id)
            if found is None:
                raise SessionError(f"unknown sampling session {body.sampling_session_id!r}")
            return found.path
        if body.model_path is not None:
            return body.model_path
        if body.base_model is not None and body.base_model != self.base_model_name:
            raise SessionError(f"base_model {body.base_model!r} is not served here")
        return None

    def _target(self, path: str | None) -> TargetBody:
        """Where `path` is served, waiting up to load_timeout for the operator to load it."""
        deadline = time.monotonic() + self.load_timeout
        with self._lock:
            while True:
                targets = self._targets
                if targets.problem:
                    raise SessionError(f"sampling is not available: {targets.problem}")
                target = targets.base if path is None else targets.adapters.get(path)
                if target is not None and target.urls:
                    return target
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(timeout=min(remaining, 1.0))
        where = f"Deployment {targets.deployment}" if targets.deployment else "no sampling Deployment"
        if not targets.deployment:
            raise SessionError(
                "this session has no sampling Deployment: set the TrainingSession's spec.samplingDeployment "
                "to a vLLM Deployment of its base model"
            )
        what = "the base model" if path is None else f"sampler weights {path}"
        why = targets.pending.get(path or "", "")
        raise SessionError(
            f"{what} not served by {where} after {self.load_timeout:.0f}s"
            + (f": {why}" if why else ": the operator has not loaded it on a ready replica yet")
            + " (see the TrainingSession's Sampling condition)"
        )

    # -- a sample ---------------------------------------------------------------------------------

    def sample(self, body: SampleBody) -> bytes:
        """One sample request, answered by vLLM: the protobuf SampleResponse."""
        _refuse_unsupported(body)
        prompt = body.prompt.token_ids()
        if not prompt:
            raise SessionError("the prompt is empty")
        path = self.resolve_path(body)
        target = self._target(path)
        request = completion_request(target.model, prompt, body)
        answer = self._post(target, request)
        return encode_sample_response(*parse_completion(answer, prompt, body))

    def _post(self, target: TargetBody, request: dict[str, Any]) -> dict[str, Any]:
        urls = list(target.urls)
        start = next(self._round_robin)
        errors = []
        for i in range(len(urls)):  # another replica when one cannot be reached
            url = urls[(start + i) % len(urls)].rstrip("/") + "/v1/completions"
            req = urllib.request.Request(  # noqa: S310 - http to a vLLM replica the operator named
                url, data=json.dumps(request).encode(), headers={"Content-Type": "application/json"}
            )
            try:
                with self._opener.open(req, timeout=self.vllm_timeout) as resp:
                    answer = json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                detail = exc.read(2000).decode(errors="replace")
                raise SessionError(f"vLLM refused the sample ({url}: HTTP {exc.code}): {detail}") from None
            except (OSError, ValueError) as exc:
                errors.append(f"{url}: {exc}")
                continue
            if not isinstance(answer, dict):
                raise SessionError(f"vLLM answered {url} with no JSON object", user=False)
            return answer
        raise SessionError(f"no vLLM replica answered: {'; '.join(errors)}", user=False)


def _refuse_unsupported(body: SampleBody) -> None:
    unsupported = [
        name
        for name, value in (
            ("topk_prompt_logprobs", body.topk_prompt_logprobs),
            ("topk_sample_logprobs", body.topk_sample_logprobs),
            ("target_prompt_logprobs", body.target_prompt_logprobs),
            ("prompt_alt_tokens_k", body.prompt_alt_tokens_k),
        )
        if value
    ]
    if unsupported:
        raise SessionError(f"{', '.join(unsupported)} are not supported by this session's sampler")
    if not 1 <= body.num_samples <= 128:
        raise SessionError(f"num_samples {body.num_samples} is out of range [1, 128]")
    p = body.sampling_params
    if p.max_tokens is not None and p.max_tokens < 1:
        raise SessionError(f"max_tokens must be at least 1, got {p.max_tokens}")
    if not (math.isfinite(p.temperature) and p.temperature >= 0):
        raise SessionError(f"temperature must be a finite number >= 0, got {p.temperature}")
    if not 0 < p.top_p <= 1:
        raise SessionError(f"top_p must lie in (0, 1], got {p.top_p}")


def completion_request(served_name: str, prompt: list[int], body: SampleBody) -> dict[str, Any]:
    """vLLM's `POST /v1/completions` body for a Tinker sample request."""
    p = body.sampling_params
    request: dict[str, Any] = {
        "model": served_name,
        "prompt": prompt,
        "n": body.num_samples,
        "temperature": p.temperature,
        "top_p": p.top_p,
        "logprobs": 0,  # the sampled token's own logprob
        "return_token_ids": True,
        "return_tokens_as_token_ids": True,
        "skip_special_tokens": False,
    }
    if p.top_k > 0:  # Tinker's -1 (and 0): no top-k, vLLM's default
        request["top_k"] = p.top_k
    if p.max_tokens is not None:
        request["max_tokens"] = p.max_tokens
    if p.seed is not None:
        request["seed"] = p.seed
    stop = p.stop
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not stop:
            request["ignore_eos"] = True  # Tinker: [] disables every stop, EOS included
        elif all(isinstance(s, int) for s in stop):
            request["stop_token_ids"] = list(stop)
        else:
            request["stop"] = list(stop)
            request["include_stop_str_in_output"] = True
    if body.prompt_logprobs:
        request["prompt_logprobs"] = 0
    return request


def _token_ids(choice: dict[str, Any]) -> list[int]:
    ids = choice.get("token_ids")
    if isinstance(ids, list) and all(isinstance(i, int) for i in ids):
        return list(ids)
    tokens = (choice.get("logprobs") or {}).get("tokens")
    if isinstance(tokens, list) and all(isinstance(t, str) and t.startswith(_TOKEN_PREFIX) for t in tokens):
        return [int(t[len(_TOKEN_PREFIX) :]) for t in tokens]
    raise SessionError("vLLM's answer has no token ids (token_ids or token_id:N tokens)", user=False)


def _prompt_logprobs(choice: dict[str, Any], prompt: list[int], last_n: int | None) -> np.ndarray:
    entries = choice.get("prompt_logprobs")
    if not isinstance(entries, list) or len(entries) != len(prompt):
        raise SessionError("vLLM's answer has no prompt_logprobs for every prompt token", user=False)
    out = np.full(len(prompt), np.nan, dtype=np.float32)
    first = 1 if last_n is None else max(1, len(prompt) - last_n)
    for position in range(first, len(prompt)):
        entry = entries[position]
        value = entry.get(str(prompt[position])) if isinstance(entry, dict) else None
        logprob = value.get("logprob") if isinstance(value, dict) else value
        if not isinstance(logprob, int | float):
            raise SessionError(f"vLLM's prompt_logprobs[{position}] lacks the prompt's token", user=False)
        out[position] = float(logprob)
    return out


def parse_completion(
    answer: dict[str, Any], prompt: list[int], body: SampleBody
) -> tuple[list[tuple[int, np.ndarray, np.ndarray]], np.ndarray | None]:
    """[(stop reason, int32 tokens, float32 logprobs)] per sample, and the prompt's logprobs."""
    choices = answer.get("choices")
    if not isinstance(choices, list) or len(choices) != body.num_samples:
        raise SessionError(
            f"vLLM answered {len(choices) if isinstance(choices, list) else 'no'} choices for "
            f"num_samples {body.num_samples}",
            user=False,
        )
    sequences = []
    for choice in sorted(choices, key=lambda c: int(c.get("index", 0))):
        tokens = _token_ids(choice)
        values = (choice.get("logprobs") or {}).get("token_logprobs")
        if not isinstance(values, list) or len(values) != len(tokens):
            raise SessionError("vLLM's answer has no logprob for every sampled token", user=False)
        reason = _STOP_REASONS.get(str(choice.get("finish_reason")))
        if reason is None:
            raise SessionError(f"vLLM stopped a sample for {choice.get('finish_reason')!r}", user=False)
        logprobs = np.array([float(v) if v is not None else np.nan for v in values], dtype=np.float32)
        sequences.append((reason, np.array(tokens, dtype=np.int32), logprobs))
    prompt_logprobs = (
        _prompt_logprobs(choices[0], prompt, body.prompt_logprobs_last_n) if body.prompt_logprobs else None
    )
    return sequences, prompt_logprobs


def new_sequence_ids(n: int) -> list[str]:
    """One id per requested sample (the client stamps them on the returned sequences)."""
    return [str(uuid.uuid4()) for _ in range(n)]
