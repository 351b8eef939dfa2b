"""The training session driven by the official Tinker client (`tinker` on PyPI), unchanged.

The session runs as its pod runs it (`python -m rft_trainer.session`, loopback HTTP) and reaches
the bucket through the S3 API (moto, IRSA web identity, no static keys). A LoRA training client
trains with importance_sampling, saves its state, the process is killed, a new process restores
the state and continues: the continuation gives exactly what the uninterrupted run gave.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tinker
from rft.storage.checkpoints import is_committed
from rft_devcluster.pytest_fixtures_storage import S3Bucket
from tinker import types

from tests.trainer.session_testlib import API_KEY, BASE_NAME, client, is_datum, session_server

ADAM = types.AdamParams(learning_rate=1e-2, beta1=0.9, beta2=0.999, eps=1e-8)


def _data() -> list[types.Datum]:
    # token ids of the tiny model's vocabulary; prompts of 6 tokens, completions of 4 to 7
    rows = [
        ([11, 40, 41, 42, 43, 12, 50, 51, 52, 53], 1.0),
        ([11, 40, 41, 42, 43, 12, 60, 61, 62, 63, 64], -1.0),
        ([11, 44, 45, 46, 47, 12, 70, 71, 72, 73, 74, 75, 76], 0.5),
    ]
    return [is_datum(tokens, 6, adv, -6.2) for tokens, adv in rows]


def _step(tc: tinker.TrainingClient, data: list[types.Datum]) -> types.ForwardBackwardOutput:
    fb = tc.forward_backward(data, "importance_sampling")
    optim = tc.optim_step(ADAM)
    out = fb.result()
    optim.result()
    return out


def _logprobs(out: types.ForwardBackwardOutput) -> list[np.ndarray]:
    return [o["logprobs"].to_numpy() for o in out.loss_fn_outputs]


@pytest.mark.slow
def test_state_survives_the_process(tiny_model_dir: Path, s3_bucket: S3Bucket, tmp_path: Path) -> None:
    data = _data()
    env = s3_bucket.pod_env()
    storage = f"{s3_bucket.url}/sessions"
    log = tmp_path / "session.log"

    with session_server(str(tiny_model_dir), storage, log, env) as url:
        service = client(url)
        tc = service.create_lora_training_client(BASE_NAME, rank=4, seed=0, train_unembed=False).result()
        first = _step(tc, data)
        saved = tc.save_state("after-step-1").result()
        second = _step(tc, data)
        after = tc.forward(data, "importance_sampling").result()  # forward only: the weights after step 2
        service.close("success").result()

    assert saved.path == f"tinker://{tc.model_id}/weights/after-step-1"
    assert is_committed(f"{storage}/{tc.model_id.replace(':', '-')}/weights/after-step-1")
    # the logprobs moved between steps: the adapter trained
    assert not np.allclose(np.concatenate(_logprobs(first)), np.concatenate(_logprobs(after)))
    assert first.metrics["loss:sum"] != second.metrics["loss:sum"]

    with session_server(str(tiny_model_dir), storage, log, env) as url:
        service = client(url)
        with pytest.raises(tinker.AuthenticationError):
            tinker.ServiceClient(
                base_url=url, api_key="tml-not-the-session-key-000"
            ).create_lora_training_client(BASE_NAME, rank=4, train_unembed=False).result()
        capabilities = tinker.RestClient(base_url=url, api_key=API_KEY).get_server_capabilities().result()
        assert [m.model_name for m in capabilities.supported_models] == [BASE_NAME]
        resumed_tc = service.create_training_client_from_state_with_optimizer(saved.path).result()
        resumed = _step(resumed_tc, data)
        resumed_after = resumed_tc.forward(data, "importance_sampling").result()
        # one adapter per session: a second training client is refused, with the reason
        with pytest.raises(tinker.RequestFailedError, match="one adapter per session"):
            service.create_lora_training_client(BASE_NAME, rank=4, train_unembed=False).result()
        service.close("success").result()

    assert resumed.metrics["loss:sum"] == pytest.approx(second.metrics["loss:sum"], rel=1e-6, abs=1e-7)
    for got, want in zip(_logprobs(resumed), _logprobs(second), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    for got, want in zip(_logprobs(resumed_after), _logprobs(after), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_the_calls_a_cookbook_recipe_makes(tiny_model_dir: Path, tmp_path: Path) -> None:
    """What tinker-cookbook's RL loop asks of a session besides training and sampling: the LoRA
    defaults it sends (train_unembed refused, with the way out), a run's user_metadata read back
    through the REST client, TTLs refused rather than ignored, and the adapter released when the
    client session that made it closes, so that the next client (the recipe) may load its own."""
    storage = (tmp_path / "bucket").as_uri()
    data = _data()
    with session_server(str(tiny_model_dir), storage, tmp_path / "session.log") as url:
        service = client(url)
        # the client's default LoRA config trains the unembedding: refused, saying what to pass
        with pytest.raises(tinker.RequestFailedError, match="train_unembed=False"):
            service.create_lora_training_client(BASE_NAME, rank=4).result()
        tc = service.create_lora_training_client(
            BASE_NAME, rank=4, seed=0, train_unembed=False, user_metadata={"renderer_name": "qwen3_instruct"}
        ).result()
        with pytest.raises(tinker.RequestFailedError, match="ttl_seconds=604800 is not supported"):
            tc.save_state("with-ttl", ttl_seconds=604800).result()
        start = tc.save_state("start", user_metadata={"purpose": "starting state"}).result()
        rest = service.create_rest_client()
        run = rest.get_training_run_by_tinker_path(start.path).result()
        assert (run.training_run_id, run.base_model, run.lora_rank) == (tc.model_id, BASE_NAME, 4)
        assert run.user_metadata == {"renderer_name": "qwen3_instruct"}
        assert run.last_checkpoint is not None
        assert run.last_checkpoint.tinker_path == start.path
        with pytest.raises(tinker.NotFoundError):
            rest.get_training_run("no-such-run").result()
        at_start = tc.forward(data, "importance_sampling").result()
        # while the client that made the adapter is open, nobody else gets one
        other = client(url)
        with pytest.raises(tinker.RequestFailedError, match="one adapter per session"):
            other.create_training_client_from_state(start.path).result()
        other.close("success").result()
        service.close("success").result()

        # closed: the adapter is released, and a new client (as the recipe does) loads the state
        with client(url) as recipe:
            loaded = recipe.create_training_client_from_state(
                start.path, user_metadata={"renderer_name": "qwen3_instruct"}
            ).result()
            assert loaded.model_id != tc.model_id
            again = loaded.forward(data, "importance_sampling").result()
            _step(loaded, data)
            trained = loaded.forward(data, "importance_sampling").result()
            run = recipe.create_rest_client().get_training_run(loaded.model_id).result()
            assert run.user_metadata == {"renderer_name": "qwen3_instruct"}
        for got, want in zip(_logprobs(again), _logprobs(at_start), strict=True):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        assert not np.allclose(np.concatenate(_logprobs(trained)), np.concatenate(_logprobs(again)))

    metadata = tmp_path / "bucket" / tc.model_id.replace(":", "-") / "weights" / "start" / "metadata.json"
    assert json.loads(metadata.read_text())["userMetadata"] == {"purpose": "starting state"}
