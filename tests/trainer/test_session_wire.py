"""The session's protobuf schema reads what the official client writes and writes what it reads:
checked against the client's own converters (tinker.proto), not against a copy of them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rft_trainer.session.sampling import SampleBody, completion_request, parse_completion
from rft_trainer.session.wire import (
    WireError,
    decode_forward_backward,
    encode_forward_backward_output,
    encode_sample_response,
)
from tinker import types
from tinker._compat import model_dump
from tinker.proto.request_conv import forward_backward_request_to_proto
from tinker.proto.response_conv import deserialize_forward_backward_output, deserialize_sample_response


def test_reads_the_clients_forward_backward_request() -> None:
    dense = types.Datum(
        model_input=types.ModelInput.from_ints([1, 2, 3]),
        loss_fn_inputs={
            "target_tokens": [2, 3, 4],
            "advantages": [0.0, 1.0, 0.5],
            "logprobs": [-1.0, -2.0, -3.0],
        },
    )
    sparse_weights = torch.zeros(2, 5)
    sparse_weights[1, 3] = 0.25
    sparse = types.Datum(
        model_input=types.ModelInput.from_ints([7, 8]),
        loss_fn_inputs={"target_tokens": [8, 9], "weights": sparse_weights},  # sent as CSR
    )
    request = types.ForwardBackwardRequest(
        forward_backward_input=types.ForwardBackwardInput(
            data=[dense, sparse], loss_fn="importance_sampling", loss_fn_config={"clip": 0.2, "mode": "x"}
        ),
        model_id="session:train:0",
        seq_id=3,
    )
    proto = forward_backward_request_to_proto(request)
    proto.forward_only = True

    got = decode_forward_backward(proto.SerializeToString())

    assert (got.model_id, got.seq_id, got.loss_fn, got.forward_only) == (
        "session:train:0",
        3,
        "importance_sampling",
        True,
    )
    assert got.loss_fn_config == {"clip": pytest.approx(0.2), "mode": "x"}
    assert got.data[0].tokens.tolist() == [1, 2, 3]
    assert got.data[0].inputs["target_tokens"].tolist() == [2, 3, 4]
    assert got.data[0].inputs["target_tokens"].dtype == np.int64
    np.testing.assert_array_equal(
        got.data[0].inputs["advantages"], np.array([0.0, 1.0, 0.5], dtype=np.float32)
    )
    np.testing.assert_array_equal(got.data[1].inputs["weights"], sparse_weights.numpy())


def test_writes_what_the_client_reads() -> None:
    outputs = [
        {"logprobs": np.array([-1.0, -2.5, -3.0]), "elementwise_loss": np.array([0.0, 1.0, 2.0])},
        {"logprobs": np.array([-4.0, -5.0]), "elementwise_loss": np.array([3.0, 4.0])},
    ]

    got = deserialize_forward_backward_output(encode_forward_backward_output(outputs, {"loss:sum": 1.5}))

    assert got.metrics == {"loss:sum": 1.5}
    assert len(got.loss_fn_outputs) == 2
    for mine, theirs in zip(outputs, got.loss_fn_outputs, strict=True):
        for name, values in mine.items():
            np.testing.assert_array_equal(theirs[name].to_numpy(), values.astype(np.float32))


def test_refuses_what_it_cannot_read() -> None:
    with pytest.raises(WireError, match="not a ForwardBackwardRequest"):
        decode_forward_backward(b"\xff\xff\xff")
    image = types.Datum(
        model_input=types.ModelInput(chunks=[types.ImageChunk(data=b"\x89PNG", format="png")]),
        loss_fn_inputs={"target_tokens": [1]},
    )
    request = types.ForwardBackwardRequest(
        forward_backward_input=types.ForwardBackwardInput(data=[image], loss_fn="cross_entropy"),
        model_id="m",
        seq_id=1,
    )
    with pytest.raises(WireError, match="'image' are not supported"):
        decode_forward_backward(forward_backward_request_to_proto(request).SerializeToString())


def test_sample_response_reads_back_in_the_client() -> None:
    sequences = [
        (1, np.array([5, 6, 7]), np.array([-0.5, -1.0, -2.0])),
        (0, np.array([9]), np.array([-0.25])),
    ]
    prompt = np.array([np.nan, -1.5, -2.0], dtype=np.float32)

    got = deserialize_sample_response(encode_sample_response(sequences, prompt))

    assert [(s.stop_reason, s.tokens, s.logprobs) for s in got.sequences] == [
        ("length", [5, 6, 7], [-0.5, -1.0, -2.0]),
        ("stop", [9], [-0.25]),
    ]
    assert got.prompt_logprobs == [None, -1.5, -2.0]


def _sample_body(params: types.SamplingParams, **extra: object) -> SampleBody:
    request = types.SampleRequest(
        sampling_session_id="s",
        seq_id=0,
        num_samples=2,
        prompt=types.ModelInput.from_ints([1, 2, 3]),
        sampling_params=params,
        **extra,
    )
    return SampleBody.model_validate(model_dump(request, exclude_unset=False, exclude_none=True, mode="json"))


def test_sample_request_becomes_a_vllm_completion() -> None:
    body = _sample_body(
        types.SamplingParams(max_tokens=5, temperature=0.7, top_p=0.9, top_k=4, seed=3, stop=[7])
    )
    request = completion_request("warm-step-1", [1, 2, 3], body)
    assert {
        k: request[k] for k in ("model", "prompt", "n", "max_tokens", "temperature", "top_p", "top_k", "seed")
    } == {
        "model": "warm-step-1",
        "prompt": [1, 2, 3],
        "n": 2,
        "max_tokens": 5,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 4,
        "seed": 3,
    }
    assert (request["logprobs"], request["return_token_ids"], request["stop_token_ids"]) == (0, True, [7])
    assert completion_request("m", [1], _sample_body(types.SamplingParams(stop=[])))["ignore_eos"] is True
    strings = completion_request("m", [1], _sample_body(types.SamplingParams(stop="\n\n")))
    assert (strings["stop"], strings["include_stop_str_in_output"]) == (["\n\n"], True)
    # vLLM's answer: tokens as token_id:N (return_tokens_as_token_ids) when token_ids are absent
    answer = {
        "choices": [
            {
                "index": 1,
                "finish_reason": "stop",
                "logprobs": {"tokens": ["token_id:4"], "token_logprobs": [-0.5]},
            },
            {
                "index": 0,
                "finish_reason": "length",
                "token_ids": [8, 9],
                "logprobs": {"token_logprobs": [-1, -2]},
            },
        ]
    }
    sequences, prompt = parse_completion(answer, [1, 2, 3], body)
    assert prompt is None
    assert [(r, t.tolist(), lp.tolist()) for r, t, lp in sequences] == [
        (1, [8, 9], [-1.0, -2.0]),
        (0, [4], [-0.5]),
    ]
