"""Sampling through a training session, with the official Tinker client: the session forwards
samples to vLLM's OpenAI API where the operator says the weights are served.

vLLM here is the suite's fake vLLM (dev tooling: the same routes and the same transformers
forward pass), in a thread on loopback; the test plays the operator's part with its two routes
(read the saved sampler weights, load the adapter onto vLLM, push where it is served). The real
operator and real vLLM: tests/operator/test_training_session.py.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tinker
from rft.pods.admin_guard import TOKEN_HASH_ENV, token_sha256
from rft.storage.checkpoints import is_committed
from rft_devcluster.fake_vllm.config import ServerConfig
from rft_devcluster.fake_vllm.engine import Engine
from rft_devcluster.fake_vllm.testing import running_server
from tinker import types

from tests.trainer.session_testlib import BASE_NAME, client, is_datum, session_server

OPERATOR_TOKEN = "operator-token-for-this-session"
ADAM = types.AdamParams(learning_rate=5e-2)
PROMPT = [11, 40, 41, 42, 43, 12]
# The fake vLLM and the trainer compute in float32 on CPU: the same numbers up to summation order.
LOGPROB_TOLERANCE = 1e-4


def _operator(url: str, path: str, body: dict[str, Any] | None = None, token: str = OPERATOR_TOKEN) -> Any:
    request = urllib.request.Request(  # noqa: S310 - loopback
        url + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


def _vllm(url: str, path: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(  # noqa: S310 - loopback
        url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - loopback
        response.read()


@pytest.mark.slow
def test_sample_saved_weights_through_vllm(tiny_model_dir: Path, tmp_path: Path) -> None:
    storage = tmp_path / "bucket"
    engine = Engine.from_config(
        ServerConfig(
            model=str(tiny_model_dir),
            served_model_names=(BASE_NAME,),
            enable_lora=True,
            max_loras=2,
            max_lora_rank=8,
            allow_runtime_lora_updating=True,
            device="cpu",
            dtype="float32",
        )
    )
    env_args = ["--sampling-deployment", "tiny-vllm", "--sampler-load-timeout", "3"]
    env = {**os.environ, TOKEN_HASH_ENV: token_sha256(OPERATOR_TOKEN)}
    with (
        running_server(engine) as vllm,
        session_server(str(tiny_model_dir), str(storage), tmp_path / "session.log", env, env_args) as url,
    ):
        service = client(url)
        tc = service.create_lora_training_client(BASE_NAME, rank=4, seed=0, train_unembed=False).result()
        data = [is_datum([*PROMPT, 50, 51, 52, 53], 6, 1.0, -6.2)]
        tc.forward_backward(data, "importance_sampling").result()
        tc.optim_step(ADAM).result()
        saved = tc.save_weights_for_sampler("after-1").result()
        assert saved.path == f"tinker://{tc.model_id}/sampler_weights/after-1"
        location = f"{storage}/{tc.model_id.replace(':', '-')}/sampler_weights/after-1"
        assert is_committed(location)
        with pytest.raises(tinker.RequestFailedError, match="already"):
            tc.save_weights_for_sampler("after-1").result()  # create-only

        # The operator's routes take its token, not the client's key.
        with pytest.raises(urllib.error.HTTPError, match="401"):
            _operator(url, "/api/v1/rft/sampler_weights", token="not-the-token")
        listed = _operator(url, "/api/v1/rft/sampler_weights")["samplerWeights"]
        assert [(w["path"], w["location"]) for w in listed] == [(saved.path, location)]
        record = listed[0]
        assert record["lora"]["rank"] == 4
        assert record["baseModel"] == BASE_NAME
        assert record["canary"] is not None
        assert float(record["canary"]["startDistance"]) > 0
        assert {f["path"] for f in record["files"]} >= {"adapter_model.safetensors", "adapter_config.json"}

        sampler = service.create_sampling_client(model_path=saved.path).result()
        params = types.SamplingParams(max_tokens=6, temperature=1.0, seed=7, stop=[])
        # Not served yet: the sample waits its bound, then says what is missing.
        with pytest.raises(tinker.RequestFailedError, match="not served by Deployment tiny-vllm after 3s"):
            sampler.sample(types.ModelInput.from_ints(PROMPT), 2, params).result()

        # The operator's part: load the adapter onto vLLM, push where it is served.
        _vllm(vllm.base_url, "/v1/load_lora_adapter", {"lora_name": "warm-after-1", "lora_path": location})
        _operator(
            url,
            "/api/v1/rft/sampling_targets",
            {
                "deployment": "tiny-vllm",
                "base": {"model": BASE_NAME, "urls": [vllm.base_url]},
                "adapters": {saved.path: {"model": "warm-after-1", "urls": [vllm.base_url]}},
            },
        )
        result = sampler.sample(types.ModelInput.from_ints(PROMPT), 2, params).result()
        assert len(result.sequences) == 2
        for seq in result.sequences:
            assert len(seq.tokens) == 6
            assert seq.stop_reason == "length"  # stop=[]: no EOS stop
            assert seq.logprobs is not None
            assert len(seq.logprobs) == 6
            # vLLM's logprobs of its sampled tokens equal the trainer's under the saved adapter
            datum = is_datum([*PROMPT, *seq.tokens], len(PROMPT), 0.0, 0.0)
            trainer = tc.forward([datum], "importance_sampling").result()
            mine = trainer.loss_fn_outputs[0]["logprobs"].to_numpy()[len(PROMPT) - 1 :]
            np.testing.assert_allclose(seq.logprobs, mine, rtol=0, atol=LOGPROB_TOLERANCE)

        # compute_logprobs: the prompt's logprobs under the same weights
        scored = sampler.compute_logprobs(types.ModelInput.from_ints([*PROMPT, 50, 51])).result()
        assert scored[0] is None
        assert len(scored) == len(PROMPT) + 2
        datum = is_datum([*PROMPT, 50, 51], 1, 0.0, 0.0)
        mine = tc.forward([datum], "importance_sampling").result().loss_fn_outputs[0]["logprobs"].to_numpy()
        np.testing.assert_allclose(
            np.array(scored[1:], dtype=np.float32), mine, rtol=0, atol=LOGPROB_TOLERANCE
        )

        # The base model, and save_weights_and_get_sampling_client (its made-up name is listed too)
        base = service.create_sampling_client(base_model=BASE_NAME).result()
        base_result = base.sample(types.ModelInput.from_ints(PROMPT), 1, params).result()
        assert len(base_result.sequences[0].tokens) == 6
        ephemeral = tc.save_weights_and_get_sampling_client().result()
        assert ephemeral.get_base_model() == BASE_NAME
        listed = _operator(url, "/api/v1/rft/sampler_weights")["samplerWeights"]
        assert len(listed) == 2
        assert "/sampler_weights/ephemeral-" in listed[1]["path"]
        # The operator says the sampling Deployment cannot serve: samples fail at once, saying why.
        problem = "spec.samplingDeployment: Deployment gone does not exist in namespace team-a"
        _operator(url, "/api/v1/rft/sampling_targets", {"deployment": "gone", "problem": problem})
        with pytest.raises(tinker.RequestFailedError, match="Deployment gone does not exist"):
            base.sample(types.ModelInput.from_ints(PROMPT), 1, params).result()
        service.close("success").result()
