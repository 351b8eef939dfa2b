"""One trainer core, two front ends: one optimizer step through the training session (driven by the
official Tinker client) equals one optimizer step of the ReinforcementStep's trainer on the same
data: the same loss and the same adapter update.

The step's importance-sampling loss is token-mean (sum of -rho*A over completion tokens divided by
their count); Tinker's importance_sampling is the plain sum, so the client passes A / tokens. The
session's AdamW takes the step's hyperparameters (betas 0.9/0.999, eps 1e-8, no weight decay, no
clipping), and the adapter is the same (rank 4, alpha 4, every block linear, seed 0).
Tolerances: the loss to 1e-5 relative, every adapter weight after the step to 2e-3 of the
learning rate.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import tinker
import torch
from peft import get_peft_model_state_dict
from rft.api.model import LoraSettings
from rft.storage.checkpoints import is_committed
from rft_trainer.checkpoint import METADATA_FORMAT
from rft_trainer.data import RawSample, Sample, SampleTokenizer, tokenize_samples
from rft_trainer.loop import OptimSettings, Trainer
from rft_trainer.loss import LossParams
from rft_trainer.model import attach_new_adapter, load_base_model
from rft_trainer.session.core import block_linear_names
from safetensors.torch import load_file
from tinker import types

from tests.trainer.session_testlib import BASE_NAME, client, session_server

CPU = torch.device("cpu")
LR = 1e-3
SAMPLING_LOGPROB = -6.0


def _samples(tokenizer: object) -> list[Sample]:
    completions = [("cat cat cat", 1.0), ("dog", -1.0), ("apple cat red blue", 0.5), ("fish", -0.5)]
    raw = [
        RawSample(
            line=g + 1,
            group=g,
            where=f"samples[{k}]",
            prompt=[{"role": "user", "content": f"question {g}"}],
            completion=text,
            reward=adv,
            advantage=adv,
            sampling_logprobs=None,
        )
        for g in range(2)
        for k, (text, adv) in enumerate(completions)
    ]
    samples = tokenize_samples(raw, SampleTokenizer(tokenizer, 128)).samples
    # sampling logprobs on every completion token: both front ends take the ratio against them
    return [
        dataclasses.replace(
            s, sampling_logprobs=[SAMPLING_LOGPROB - 0.01 * i for i in range(s.completion_len)]
        )
        for s in samples
    ]


def _datum(sample: Sample, tokens_in_step: int) -> types.Datum:
    """The sample as a Tinker Datum: targets are the next tokens, the advantage (scaled to the
    step's token-mean) and the sampling logprob sit on the completion targets."""
    ids = sample.token_ids
    n = len(ids) - 1
    first = sample.prompt_len - 1  # the target at position first is the first completion token
    assert sample.sampling_logprobs is not None
    adv = [0.0] * n
    logprobs = [0.0] * n
    for k in range(sample.completion_len):
        adv[first + k] = sample.advantage / tokens_in_step
        logprobs[first + k] = sample.sampling_logprobs[k]
    return types.Datum(
        model_input=types.ModelInput.from_ints(ids[:-1]),
        loss_fn_inputs={
            "target_tokens": types.TensorData.from_numpy(torch.tensor(ids[1:]).numpy()),
            "advantages": types.TensorData.from_numpy(torch.tensor(adv, dtype=torch.float32).numpy()),
            "logprobs": types.TensorData.from_numpy(torch.tensor(logprobs, dtype=torch.float32).numpy()),
        },
    )


@pytest.mark.slow
def test_one_session_step_equals_one_reinforcement_step(tiny_model_dir: Path, tmp_path: Path) -> None:
    # the ReinforcementStep's trainer, one optimizer step (one packed batch), method reinforce
    model, tokenizer = load_base_model(str(tiny_model_dir), CPU)
    targets = block_linear_names(model, attention=True, mlp=True)
    policy = attach_new_adapter(model, LoraSettings(rank=4, alpha=4, target_modules=targets), seed=0)
    initial = {k: v.clone() for k, v in get_peft_model_state_dict(policy).items()}
    samples = _samples(tokenizer)
    settings = OptimSettings(
        learning_rate=LR,
        weight_decay=0.0,
        max_grad_norm=0.0,
        warmup_steps=0,
        gradient_accumulation_steps=1,
        epochs=1,
        batch_tokens=4096,
        max_context_length=128,
        seed=0,
    )
    params = LossParams(
        method="reinforce",
        clip_low=0.2,
        clip_high=0.2,
        kl_coefficient=0.0,
        advantage="none",
        aggregation="token-mean",
    )
    outcome = Trainer(policy, samples, settings, params, CPU, new_adapter=True).run()
    assert outcome.optimizer_steps == 1
    step_loss = outcome.steps[0].loss
    stepped = get_peft_model_state_dict(policy)

    # the same step through the session
    tokens = sum(s.completion_len for s in samples)
    storage = (tmp_path / "bucket").as_uri()
    with session_server(str(tiny_model_dir), storage, tmp_path / "session.log") as url:
        service = client(url)
        tc = service.create_lora_training_client(BASE_NAME, rank=4, seed=0, train_unembed=False).result()
        fb = tc.forward_backward([_datum(s, tokens) for s in samples], "importance_sampling")
        optim = tc.optim_step(
            types.AdamParams(learning_rate=LR, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0)
        )
        session_loss = fb.result().metrics["loss:sum"]
        optim.result()
        tc.save_state("one-step").result()
        sampler = tc.save_weights_for_sampler("one-step").result()
        # create-only, as every checkpoint in the bucket: the same name again is refused
        with pytest.raises(tinker.RequestFailedError, match="never overwritten"):
            tc.save_weights_for_sampler("one-step").result()
        service.close("success").result()
    state_dir = tmp_path / "bucket" / tc.model_id.replace(":", "-") / "weights" / "one-step"
    session_weights = load_file(str(state_dir / "adapter_model.safetensors"))
    lora = json.loads((state_dir / "adapter_config.json").read_text())

    assert (lora["r"], lora["lora_alpha"]) == (4, 4)
    assert sorted(lora["target_modules"]) == targets
    assert session_loss == pytest.approx(step_loss, rel=1e-5, abs=1e-7)
    assert set(session_weights) == set(stepped)
    moved = 0
    for name, after in stepped.items():
        # Adam's first step moves a weight by about lr * g / (|g| + eps): where |g| is near eps,
        # float rounding of g shows; measured 4.7e-7 at most (the update itself is 1e-3)
        torch.testing.assert_close(session_weights[name], after, rtol=0, atol=LR * 2e-3)
        moved += int(not torch.equal(after, initial[name]))
    assert moved > 0  # the step changed the adapter (the B matrices: they start at zero)

    # the sampler weights: the adapter alone, in the layout a ReinforcementStep publishes
    assert sampler.path == f"tinker://{tc.model_id}/sampler_weights/one-step"
    published = state_dir.parent.parent / "sampler_weights" / "one-step"
    assert sorted(p.name for p in published.iterdir()) == [
        "_COMMITTED",
        "adapter_config.json",
        "adapter_model.safetensors",
        "metadata.json",
    ]
    assert is_committed(published.as_uri())
    metadata = json.loads((published / "metadata.json").read_text())
    assert (metadata["format"], metadata["kind"]) == (METADATA_FORMAT, "lora")
    assert metadata["baseModel"] == {"name": BASE_NAME}
    assert metadata["lora"]["rank"] == 4
    sampler_weights = load_file(str(published / "adapter_model.safetensors"))
    for name, value in session_weights.items():
        assert torch.equal(sampler_weights[name], value)
