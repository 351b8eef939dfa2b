"""One warm LoRA training session: a base model in memory, one adapter, its AdamW optimizer.

The same trainer core as a ReinforcementStep: the base model is loaded by `model.load_base_model`,
the adapter attached by `model.attach_new_adapter` / `model.attach_parent_adapter`, log-probs come
from `logprobs.CompletionLogprobs` (packed rows, chunked head, fused LoRA and rotary installed as
the step's `Trainer` does) and the importance-sampling loss is `loss.reinforce_loss`. Only the
front end differs: the caller (the Tinker API) chooses the data, the loss and when to step.

Semantics follow the Tinker API: `forward_backward` adds gradients (summed losses, no
normalisation), `optim_step` applies them with the Adam hyperparameters of the call (identical to
torch's AdamW), then clears them. `save_state` publishes the adapter, the optimizer state and the
step count create-only to the bucket; `load_state` restores them, so a session survives its pod.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import set_peft_model_state_dict
from rft.api.model import LoraSettings
from rft.storage.checkpoints import fetch_checkpoint, publish_checkpoint
from safetensors.torch import load_file

from rft_trainer import fused_lora, rotary
from rft_trainer.canary import canary_logprobs, canary_tokens, record_canary
from rft_trainer.checkpoint import METADATA_FORMAT, save_adapter
from rft_trainer.errors import BadInputError
from rft_trainer.logprobs import CompletionLogprobs, hf_model, row_tokens_for
from rft_trainer.loss import clipped_surrogate, importance_ratio, reinforce_loss
from rft_trainer.model import attach_new_adapter, attach_parent_adapter, trainable_parameter_count
from rft_trainer.session.wire import WireDatum

STATE_FORMAT = "rft-operator/training-session-state/v1"
OPTIMIZER_FILE = "optimizer.pt"
SESSION_FILE = "session.json"
LOSS_FUNCTIONS = ("cross_entropy", "importance_sampling", "ppo", "cispo")
# Tinker's documented default for ppo: epsilon 0.2 on both sides, i.e. ratio thresholds 0.8 and
# 1.2 (loss_fn_config clip_low_threshold / clip_high_threshold); cispo takes the same keys.
DEFAULT_CLIP_THRESHOLDS = (0.8, 1.2)
_ATTENTION_HINTS = ("attn", "attention")
_MLP_HINTS = ("mlp", "feed_forward", "ffn")


class SessionError(Exception):
    """A request the session refuses; `user` says whether the caller is at fault."""

    def __init__(self, message: str, *, user: bool = True) -> None:
        super().__init__(message)
        self.user = user


@dataclass(frozen=True)
class AdapterSpec:
    """The adapter as the Tinker client asks for it, resolved to LoRA settings."""

    rank: int
    alpha: int
    target_modules: list[str]
    seed: int
    train_attn: bool
    train_mlp: bool

    def lora(self) -> LoraSettings:
        return LoraSettings(rank=self.rank, alpha=self.alpha, target_modules=self.target_modules)


@dataclass(frozen=True)
class AdamStep:
    """One optim_step's hyperparameters (the client's AdamParams)."""

    learning_rate: float
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-12
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0


@dataclass
class ForwardBackwardResult:
    """Per-datum outputs (1-D float32 arrays by name) and summed metrics."""

    outputs: list[dict[str, np.ndarray]]
    metrics: dict[str, float]


def block_linear_names(model: Any, *, attention: bool, mlp: bool) -> list[str]:
    """Leaf names of the transformer blocks' Linear layers in the attention and/or MLP part
    (never embeddings or the output head, which vLLM cannot serve adapters on)."""
    excluded = {id(model.get_input_embeddings()), id(model.get_output_embeddings())}
    names: set[str] = set()
    for path, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or id(module) in excluded:
            continue
        parts = path.lower().split(".")[:-1]
        is_attention = any(h in p for p in parts for h in _ATTENTION_HINTS)
        is_mlp = any(h in p for p in parts for h in _MLP_HINTS)
        if (attention and is_attention) or (mlp and is_mlp and not is_attention):
            names.add(path.rsplit(".", 1)[-1])
    return sorted(names)


def _clip_thresholds(config: dict[str, float | str]) -> tuple[float, float]:
    unknown = sorted(set(config) - {"clip_low_threshold", "clip_high_threshold"})
    if unknown:
        raise SessionError(f"loss_fn_config keys {unknown} are not supported")
    values = []
    for key, default in zip(
        ("clip_low_threshold", "clip_high_threshold"), DEFAULT_CLIP_THRESHOLDS, strict=True
    ):
        value = config.get(key, default)
        if isinstance(value, str) or not math.isfinite(value):
            raise SessionError(f"loss_fn_config {key} must be a finite number, got {value!r}")
        values.append(float(value))
    low, high = values
    if not 0 <= low <= 1 <= high:
        raise SessionError(f"clip thresholds must satisfy 0 <= low <= 1 <= high, got {low}, {high}")
    return low, high


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    # as the ReinforcementStep's loop: bf16 autocast on CUDA, full precision on CPU
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _one_dim(datum: WireDatum, index: int, name: str, dtype: Any) -> np.ndarray:
    value = datum.inputs.get(name)
    if value is None:
        raise SessionError(f"data[{index}]: loss_fn_inputs has no {name!r}")
    if value.ndim != 1 or value.shape[0] != datum.tokens.shape[0]:
        raise SessionError(
            f"data[{index}]: loss_fn_inputs[{name!r}] has shape {list(value.shape)}; expected "
            f"[{datum.tokens.shape[0]}] (one per model_input token)"
        )
    return np.asarray(value, dtype=dtype)


class TrainingSession:
    """The base model and (once created) its one trainable LoRA adapter and optimizer."""

    def __init__(
        self,
        base_model: Any,
        base_model_name: str,
        device: torch.device,
        *,
        max_context_length: int,
        lora_alpha: int | None = None,
        tokenizer: Any = None,
    ) -> None:
        self.base = base_model
        self.base_model_name = base_model_name
        self.device = device
        self.max_context_length = max_context_length
        self.lora_alpha = lora_alpha
        self.policy: Any = None
        self.spec: AdapterSpec | None = None
        self.scorer: CompletionLogprobs | None = None
        self.optimizer: torch.optim.AdamW | None = None
        self.params: list[torch.nn.Parameter] = []
        self.steps = 0
        # The adapter canary (rft.canary): its tokens, and their logprobs where training started
        # (the new adapter, or the loaded state); sampler weights record it, and the serving
        # replicas are checked against it. None without a tokenizer.
        self.tokenizer = tokenizer
        self._canary: tuple[list[int], list[float]] | None = None

    # -- the adapter ------------------------------------------------------------------------

    def resolve_spec(
        self, *, rank: int, seed: int | None, train_attn: bool, train_mlp: bool, train_unembed: bool
    ) -> AdapterSpec:
        """The LoRA settings for a Tinker LoraConfig."""
        if train_unembed:
            raise SessionError(
                "train_unembed=True is not supported: an adapter on the output head cannot be served "
                "by vLLM; create the training client with train_unembed=False"
            )
        if not 1 <= rank <= 512:
            raise SessionError(f"LoRA rank {rank} is out of range [1, 512]")
        targets = block_linear_names(self.base, attention=train_attn, mlp=train_mlp)
        if not targets:
            raise SessionError(
                "the LoRA config selects no Linear layer of the base model (train_attn/train_mlp)"
            )
        return AdapterSpec(
            rank=rank,
            alpha=self.lora_alpha if self.lora_alpha is not None else rank,
            target_modules=targets,
            seed=seed if seed is not None else int(torch.seed() % (2**31)),
            train_attn=train_attn,
            train_mlp=train_mlp,
        )

    def create(self, spec: AdapterSpec) -> None:
        """Attach a fresh adapter (A random from the seed, B zero) and a new optimizer."""
        self._refuse_second_adapter()
        try:
            policy = attach_new_adapter(self.base, spec.lora(), seed=spec.seed)
        except BadInputError as exc:
            raise SessionError(exc.message) from None
        self._adopt(policy, spec)
        self._mark_canary_start()

    def _mark_canary_start(self) -> None:
        if self.tokenizer is None or self.policy is None:
            return
        tokens = canary_tokens(self.policy, self.tokenizer)
        self._canary = (tokens, canary_logprobs(self.policy, tokens))

    def _refuse_second_adapter(self) -> None:
        if self.policy is not None:
            raise SessionError(
                "this session already holds its LoRA adapter (one adapter per session, until the client "
                "session that made it is closed)"
            )

    def _adopt(self, policy: Any, spec: AdapterSpec) -> None:
        # the same fast paths as the ReinforcementStep's Trainer (same numbers, fewer passes)
        fused_lora.install(policy)
        rotary.install(hf_model(policy))
        policy.train()
        self.policy = policy
        self.spec = spec
        self.scorer = CompletionLogprobs(policy, row_tokens=row_tokens_for(policy, self.max_context_length))
        self.params = [p for p in policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=0.0, weight_decay=0.0)
        self.optimizer.zero_grad(set_to_none=True)
        self.steps = 0

    def release(self) -> bool:
        """Drop the adapter and its optimizer (the client session that made it has ended): the
        LoRA layers are taken out of the base model, which is the loaded base model again, and
        the next client may create or load its own adapter. Returns whether one was held."""
        if self.policy is None:
            return False
        self.policy.unload()  # PEFT: the LoRA layers removed, the base weights untouched (no merge)
        self.policy = None
        self.spec = None
        self.scorer = None
        self.optimizer = None
        self.params = []
        self.steps = 0
        return True

    def _require(self) -> tuple[CompletionLogprobs, torch.optim.AdamW]:
        if self.scorer is None or self.optimizer is None:
            raise SessionError("no LoRA adapter yet: create the training client first")
        return self.scorer, self.optimizer

    # -- forward / backward -----------------------------------------------------------------

    def forward_backward(
        self,
        data: list[WireDatum],
        loss_fn: str,
        *,
        forward_only: bool = False,
        config: dict[str, float | str] | None = None,
    ) -> ForwardBackwardResult:
        """Target-token log-probs of every datum and, unless `forward_only`, the gradient of the
        summed loss added to the adapter's gradients."""
        scorer, _ = self._require()
        low, high = _clip_thresholds(config or {})
        if loss_fn not in LOSS_FUNCTIONS:
            raise SessionError(
                f"loss_fn {loss_fn!r} is not supported; supported: {', '.join(LOSS_FUNCTIONS)}"
            )
        if not data:
            raise SessionError("no data")
        input_ids: list[int] = []
        position_ids: list[int] = []
        targets: list[np.ndarray] = []
        weights: list[np.ndarray] = []
        ref: list[np.ndarray] = []
        lengths = []
        for i, datum in enumerate(data):
            n = int(datum.tokens.shape[0])
            if n == 0:
                raise SessionError(f"data[{i}]: empty model_input")
            if n > self.max_context_length:
                raise SessionError(
                    f"data[{i}]: {n} tokens exceed the session's max context length {self.max_context_length}"
                )
            target = _one_dim(datum, i, "target_tokens", np.int64)
            if loss_fn == "cross_entropy":
                weight = (
                    _one_dim(datum, i, "weights", np.float32)
                    if "weights" in datum.inputs
                    else np.ones(n, dtype=np.float32)
                )
                ref.append(np.zeros(n, dtype=np.float32))
            else:
                weight = _one_dim(datum, i, "advantages", np.float32)
                ref.append(_one_dim(datum, i, "logprobs", np.float32))
            input_ids.extend(datum.tokens.tolist())
            position_ids.extend(range(n))
            targets.append(target)
            weights.append(weight)
            lengths.append(n)
        vocab = hf_model(scorer.causal_lm).get_output_embeddings().weight.shape[0]
        all_targets = np.concatenate(targets)
        if (
            all_targets.min() < 0
            or all_targets.max() >= vocab
            or min(input_ids) < 0
            or max(input_ids) >= vocab
        ):
            raise SessionError(f"token ids must lie in [0, {vocab})")
        ids = torch.tensor([input_ids], dtype=torch.long, device=self.device)
        pos = torch.tensor([position_ids], dtype=torch.long, device=self.device)
        tgt = torch.from_numpy(all_targets).to(self.device)
        w = torch.from_numpy(np.concatenate(weights)).to(self.device)
        grad = torch.enable_grad() if not forward_only else torch.no_grad()
        with grad, _autocast(self.device):
            logp = scorer.target_logprobs(scorer.hidden_states(ids, pos), tgt).float()
        if loss_fn == "cross_entropy":
            token_loss = -w * logp
        else:
            sampling = torch.from_numpy(np.concatenate(ref)).to(self.device)
            if loss_fn == "importance_sampling":
                token_loss, _ = reinforce_loss(logp, sampling, w)  # -exp(logp - sampling) * advantage
            elif loss_fn == "ppo":  # -min(rho A, clip(rho, low, high) A): the step's surrogate
                ratio = importance_ratio(logp, sampling)
                token_loss, _ = clipped_surrogate(ratio, w, 1.0 - low, high - 1.0)
            else:  # cispo: -sg(clip(rho, low, high)) * A * logp
                clipped = torch.clamp(importance_ratio(logp, sampling).detach(), low, high)
                token_loss = -clipped * w * logp
        loss = token_loss.sum()
        if not math.isfinite(float(loss.detach())):
            raise SessionError(
                f"the loss is not finite ({float(loss.detach())}): check logprobs and advantages"
            )
        if not forward_only:
            torch.autograd.backward(loss)
        per_datum = logp.detach().cpu().numpy().astype(np.float32)
        per_loss = token_loss.detach().cpu().numpy().astype(np.float32)
        outputs = []
        start = 0
        for n in lengths:
            outputs.append(
                {"logprobs": per_datum[start : start + n], "elementwise_loss": per_loss[start : start + n]}
            )
            start += n
        return ForwardBackwardResult(outputs=outputs, metrics={"loss:sum": float(loss.detach())})

    def optim_step(self, adam: AdamStep) -> dict[str, float]:
        """Apply the accumulated gradients with AdamW(adam), then clear them."""
        _, optimizer = self._require()
        if not (adam.learning_rate >= 0 and 0 <= adam.beta1 < 1 and 0 <= adam.beta2 < 1 and adam.eps > 0):
            raise SessionError(f"invalid Adam parameters: {asdict(adam)}")
        for group in optimizer.param_groups:
            group["lr"] = adam.learning_rate
            group["betas"] = (adam.beta1, adam.beta2)
            group["eps"] = adam.eps
            group["weight_decay"] = adam.weight_decay
        max_norm = adam.grad_clip_norm if adam.grad_clip_norm > 0 else math.inf
        grads = [p for p in self.params if p.grad is not None]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(grads, max_norm)) if grads else 0.0
        if not math.isfinite(grad_norm):
            optimizer.zero_grad(set_to_none=True)
            raise SessionError(f"the gradient norm is not finite ({grad_norm}); the step was skipped")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        return {"grad_norm:mean": grad_norm, "step:max": float(self.steps)}

    # -- state in the bucket ----------------------------------------------------------------

    def save_state(self, url: str, lineage: dict[str, Any]) -> None:
        """Publish the adapter, the optimizer state and the step count create-only at `url`."""
        _, optimizer = self._require()
        assert self.spec is not None
        with tempfile.TemporaryDirectory(prefix="rft-session-state-") as tmp:
            out = Path(tmp)
            save_adapter(self.policy, out, self.base_model_name)
            torch.save(optimizer.state_dict(), out / OPTIMIZER_FILE)
            session = {"steps": self.steps, "spec": asdict(self.spec)}
            (out / SESSION_FILE).write_text(json.dumps(session, sort_keys=True) + "\n", encoding="utf-8")
            metadata = {
                "format": STATE_FORMAT,
                "kind": "lora",
                "baseModel": {"name": self.base_model_name},
                "lora": self.spec.lora().to_wire(),
                "steps": self.steps,
                **lineage,
            }
            publish_checkpoint(out, url, metadata)

    def save_sampler_weights(self, url: str, lineage: dict[str, Any]) -> dict[str, Any]:
        """Publish the adapter alone create-only at `url`, as a ReinforcementStep publishes its
        output (adapter_model.safetensors, adapter_config.json, metadata.json, _COMMITTED).
        Returns what a Model of it records (JSON, wire names): lora, canary, files, lineage."""
        self._require()
        assert self.spec is not None
        canary = None
        if self._canary is not None:
            tokens, start = self._canary
            canary = record_canary(self.policy, tokens, start).to_wire()
        with tempfile.TemporaryDirectory(prefix="rft-session-sampler-") as tmp:
            out = save_adapter(self.policy, Path(tmp), self.base_model_name)
            metadata = {
                "format": METADATA_FORMAT,
                "kind": "lora",
                "baseModel": {"name": self.base_model_name},
                "lora": self.spec.lora().to_wire(),
                **lineage,
            }
            files = publish_checkpoint(out, url, metadata)
        return {
            "baseModel": self.base_model_name,
            "lora": self.spec.lora().to_wire(),
            "canary": canary,
            "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in files],
            "steps": self.steps,
            **lineage,
        }

    def load_state(self, url: str, *, with_optimizer: bool, create: bool) -> None:
        """Restore a saved state: `create` makes the session's adapter from it (a session without
        one), else it is loaded onto this session's adapter (same shape required)."""
        if create:
            self._refuse_second_adapter()
        elif self.policy is None:
            raise SessionError("no LoRA adapter to load the state onto: create the training client first")
        with tempfile.TemporaryDirectory(prefix="rft-session-load-") as tmp:
            local = Path(tmp)
            metadata = fetch_checkpoint(url, local)
            if metadata.get("format") != STATE_FORMAT:
                raise SessionError(
                    f"{url} is not a training-session state (format {metadata.get('format')!r})"
                )
            base = (metadata.get("baseModel") or {}).get("name")
            if base != self.base_model_name:
                raise SessionError(
                    f"{url} was trained on base model {base!r}; this session serves {self.base_model_name!r}"
                )
            session = json.loads((local / SESSION_FILE).read_text(encoding="utf-8"))
            spec = AdapterSpec(**session["spec"])
            if self.policy is None:
                try:
                    policy = attach_parent_adapter(self.base, local, url)
                except BadInputError as exc:
                    raise SessionError(exc.message) from None
                self._adopt(policy, spec)
            else:
                if self.spec is None or self.spec.lora() != spec.lora():
                    raise SessionError(f"{url} holds an adapter of another shape than this session's")
                weights = load_file(str(local / "adapter_model.safetensors"), device=str(self.device))
                result: Any = set_peft_model_state_dict(self.policy, weights)
                unexpected = list(getattr(result, "unexpected_keys", []) or [])
                if unexpected:
                    raise SessionError(f"{url}: unexpected adapter tensors {unexpected[:3]}")
                assert self.optimizer is not None
                self.optimizer.zero_grad(set_to_none=True)
            if trainable_parameter_count(self.policy) == 0:
                raise SessionError(f"{url} loaded with no trainable parameters", user=False)
            if with_optimizer:
                assert self.optimizer is not None
                state = torch.load(local / OPTIMIZER_FILE, map_location=self.device, weights_only=True)
                self.optimizer.load_state_dict(state)
                self.steps = int(session.get("steps", 0))
        self._mark_canary_start()
