"""The training session driven by the official Tinker client (`tinker` on PyPI), unchanged.

The session runs as its pod runs it (`python -m rft_trainer.session`, loopback HTTP) and reaches
the bucket through the S3 API (moto, IRSA web identity, no static keys). A LoRA training client
trains with importance_sampling, saves its state, the process is killed, a new process restores
the state and continues: the continuation gives exactly what the uninterrupted run gave.
"""

from __future__ import annotations

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
