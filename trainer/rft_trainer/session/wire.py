"""The protobuf messages the official Tinker client exchanges for forward_backward.

The client (`tinker` 0.38) posts `/api/v1/forward_backward` as an `application/x-protobuf`
`tinker_public.ForwardBackwardRequest` and asks for the future's `ForwardBackwardOutput` as
protobuf too (it refuses a JSON result for that type), and likewise a sample's `SampleResponse`.
Every other call is JSON.

The schema below is the subset of the client's `tinker_public` proto this server reads and
writes, with the client's field numbers; it is built as a descriptor at import (no protoc, no
generated code) in a pool of its own. Fields the server does not know (images, audio, provenance
spans) are kept as unknown fields and refused where they would matter (a non-text chunk).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PROTO_CONTENT_TYPE = "application/x-protobuf"

# DType enum values of the client's proto
DTYPE_FLOAT32 = 1
DTYPE_INT64 = 2
DTYPE_INT32 = 3
_NUMPY_DTYPES = {DTYPE_FLOAT32: np.float32, DTYPE_INT64: np.int64, DTYPE_INT32: np.int32}

_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "rft_tinker_wire"

# message -> [(number, name, type, label, type_name or None, oneof index or None)]
_OPT, _REP = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_SCHEMA: dict[str, tuple[list[str], list[tuple[int, str, int, int, str | None, int | None]]]] = {
    "SparseCsr": (
        [],
        [
            (1, "values", _F.TYPE_BYTES, _OPT, None, None),
            (2, "crow_indices", _F.TYPE_BYTES, _OPT, None, None),
            (3, "col_indices", _F.TYPE_BYTES, _OPT, None, None),
        ],
    ),
    "Tensor": (
        ["encoding"],
        [
            (1, "dense", _F.TYPE_BYTES, _OPT, None, 0),
            (2, "sparse_csr", _F.TYPE_MESSAGE, _OPT, "SparseCsr", 0),
            (3, "dtype", _F.TYPE_INT32, _OPT, None, None),  # an enum on the wire: same varint
            (4, "shape", _F.TYPE_INT64, _REP, None, None),
        ],
    ),
    "BatchedTensor": (
        [],
        [
            (1, "data", _F.TYPE_BYTES, _OPT, None, None),
            (2, "offsets", _F.TYPE_BYTES, _OPT, None, None),
            (3, "dtype", _F.TYPE_INT32, _OPT, None, None),
            (4, "trailing_shape", _F.TYPE_INT64, _REP, None, None),
        ],
    ),
    "ArrayRecord.FieldsEntry": (
        [],
        [
            (1, "key", _F.TYPE_STRING, _OPT, None, None),
            (2, "value", _F.TYPE_MESSAGE, _OPT, "BatchedTensor", None),
        ],
    ),
    "ArrayRecord": (
        [],
        [
            (1, "type_tag", _F.TYPE_STRING, _OPT, None, None),
            (2, "fields", _F.TYPE_MESSAGE, _REP, "ArrayRecord.FieldsEntry", None),
            (3, "num_datums", _F.TYPE_INT64, _OPT, None, None),
        ],
    ),
    "ForwardBackwardOutput.MetricsEntry": (
        [],
        [(1, "key", _F.TYPE_STRING, _OPT, None, None), (2, "value", _F.TYPE_DOUBLE, _OPT, None, None)],
    ),
    "ForwardBackwardOutput": (
        [],
        [
            (1, "loss_fn_output_type", _F.TYPE_STRING, _OPT, None, None),
            (2, "loss_fn_outputs", _F.TYPE_MESSAGE, _REP, "ArrayRecord", None),
            (3, "metrics", _F.TYPE_MESSAGE, _REP, "ForwardBackwardOutput.MetricsEntry", None),
        ],
    ),
    "LossConfigValue": (
        ["value"],
        [(1, "number", _F.TYPE_DOUBLE, _OPT, None, 0), (2, "text", _F.TYPE_STRING, _OPT, None, 0)],
    ),
    "ForwardBackwardRequest.LossFnConfigEntry": (
        [],
        [(1, "key", _F.TYPE_STRING, _OPT, None, None), (2, "value", _F.TYPE_DOUBLE, _OPT, None, None)],
    ),
    "ForwardBackwardRequest.LossFnConfigV2Entry": (
        [],
        [
            (1, "key", _F.TYPE_STRING, _OPT, None, None),
            (2, "value", _F.TYPE_MESSAGE, _OPT, "LossConfigValue", None),
        ],
    ),
    "ForwardBackwardRequest": (
        [],
        [
            (1, "model_id", _F.TYPE_STRING, _OPT, None, None),
            (2, "seq_id", _F.TYPE_INT32, _OPT, None, None),
            (3, "data", _F.TYPE_MESSAGE, _REP, "Datum", None),
            (4, "loss_fn", _F.TYPE_STRING, _OPT, None, None),
            (5, "loss_fn_config", _F.TYPE_MESSAGE, _REP, "ForwardBackwardRequest.LossFnConfigEntry", None),
            (6, "forward_only", _F.TYPE_BOOL, _OPT, None, None),
            (
                7,
                "loss_fn_config_v2",
                _F.TYPE_MESSAGE,
                _REP,
                "ForwardBackwardRequest.LossFnConfigV2Entry",
                None,
            ),
        ],
    ),
    "Datum.LossFnInputsEntry": (
        [],
        [(1, "key", _F.TYPE_STRING, _OPT, None, None), (2, "value", _F.TYPE_MESSAGE, _OPT, "Tensor", None)],
    ),
    "Datum": (
        [],
        [
            (1, "model_input", _F.TYPE_MESSAGE, _REP, "Chunk", None),
            (2, "loss_fn_inputs", _F.TYPE_MESSAGE, _REP, "Datum.LossFnInputsEntry", None),
        ],
    ),
    "Chunk": (
        ["chunk"],
        [
            (1, "encoded_text", _F.TYPE_MESSAGE, _OPT, "EncodedTextChunk", 0),
            (2, "image", _F.TYPE_BYTES, _OPT, None, 0),  # ImageChunk: refused, never parsed
            (3, "dmel", _F.TYPE_BYTES, _OPT, None, 0),  # DmelChunk: refused, never parsed
        ],
    ),
    "EncodedTextChunk": ([], [(1, "tokens", _F.TYPE_BYTES, _OPT, None, None)]),
    # A sample's answer (the client asks for it as protobuf and refuses JSON)
    "SampledSequence": (
        [],
        [
            (1, "stop_reason", _F.TYPE_INT32, _OPT, None, None),  # an enum on the wire: same varint
            (2, "tokens", _F.TYPE_BYTES, _OPT, None, None),  # int32, little-endian
            (3, "logprobs", _F.TYPE_BYTES, _OPT, None, None),  # float32, little-endian
        ],
    ),
    "SampleResponse": (
        [],
        [
            (1, "sequences", _F.TYPE_MESSAGE, _REP, "SampledSequence", None),
            (2, "prompt_logprobs", _F.TYPE_BYTES, _OPT, None, None),  # float32, NaN where none
            (4, "prompt_cache_hit_tokens", _F.TYPE_INT32, _OPT, None, None),
        ],
    ),
}


def _build() -> dict[str, Any]:
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="rft_tinker_wire.proto", package=_PACKAGE, syntax="proto3"
    )
    messages: dict[str, descriptor_pb2.DescriptorProto] = {}
    # top-level messages first: map entries are nested in them
    for full_name, (oneofs, fields) in sorted(_SCHEMA.items(), key=lambda item: "." in item[0]):
        outer, _, inner = full_name.partition(".")
        if inner:
            msg = messages[outer].nested_type.add(name=inner)
            msg.options.map_entry = True
        else:
            msg = file_proto.message_type.add(name=outer)
            messages[outer] = msg
        for oneof in oneofs:
            msg.oneof_decl.add(name=oneof)
        for number, name, type_, label, type_name, oneof_index in fields:
            f = msg.field.add(name=name, number=number, type=type_, label=label)
            if type_name is not None:
                f.type_name = f".{_PACKAGE}.{type_name}"
            if oneof_index is not None:
                f.oneof_index = oneof_index
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in ("ForwardBackwardRequest", "ForwardBackwardOutput", "SampleResponse")
    }


_CLASSES = _build()


class WireError(ValueError):
    """A request body this server cannot read (the client's mistake: a 400)."""


@dataclass(frozen=True)
class WireDatum:
    """One Datum: its input tokens and its loss_fn_inputs as numpy arrays."""

    tokens: np.ndarray  # int64 [N]
    inputs: dict[str, np.ndarray]


@dataclass(frozen=True)
class ForwardBackwardRequest:
    """What a forward_backward (or forward) call asks for."""

    model_id: str
    seq_id: int
    loss_fn: str
    forward_only: bool
    data: list[WireDatum]
    loss_fn_config: dict[str, float | str] = field(default_factory=dict)


def _tensor(msg: Any, name: str) -> np.ndarray:
    np_dtype = _NUMPY_DTYPES.get(msg.dtype)
    if np_dtype is None:
        raise WireError(f"loss_fn_inputs[{name!r}]: unsupported dtype {msg.dtype}")
    shape = tuple(int(s) for s in msg.shape)
    if msg.WhichOneof("encoding") == "sparse_csr":
        csr = msg.sparse_csr
        if len(shape) != 2:
            raise WireError(f"loss_fn_inputs[{name!r}]: a sparse tensor must be 2-D, got shape {shape}")
        values = np.frombuffer(csr.values, dtype=np_dtype)
        crow = np.frombuffer(csr.crow_indices, dtype=np.int64)
        col = np.frombuffer(csr.col_indices, dtype=np.int64)
        if len(crow) != shape[0] + 1 or len(col) != len(values):
            raise WireError(f"loss_fn_inputs[{name!r}]: inconsistent sparse CSR indices")
        dense = np.zeros(shape, dtype=np_dtype)
        for row in range(shape[0]):
            lo, hi = int(crow[row]), int(crow[row + 1])
            dense[row, col[lo:hi]] = values[lo:hi]
        return dense
    flat = np.frombuffer(msg.dense, dtype=np_dtype)
    if shape and int(np.prod(shape)) != flat.size:
        raise WireError(f"loss_fn_inputs[{name!r}]: {flat.size} values do not fill shape {shape}")
    return flat.reshape(shape) if shape else flat


def decode_forward_backward(body: bytes) -> ForwardBackwardRequest:
    """Parse the client's protobuf ForwardBackwardRequest."""
    msg = _CLASSES["ForwardBackwardRequest"]()
    try:
        msg.ParseFromString(body)
    except Exception as exc:  # protobuf raises its own DecodeError
        raise WireError(f"not a ForwardBackwardRequest: {exc}") from None
    data = []
    for i, datum in enumerate(msg.data):
        parts = []
        for chunk in datum.model_input:
            kind = chunk.WhichOneof("chunk")
            if kind != "encoded_text":
                raise WireError(
                    f"data[{i}]: model_input chunks of kind {kind!r} are not supported (text only)"
                )
            parts.append(np.frombuffer(chunk.encoded_text.tokens, dtype=np.int32).astype(np.int64))
        tokens = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        inputs = {name: _tensor(tensor, name) for name, tensor in datum.loss_fn_inputs.items()}
        data.append(WireDatum(tokens=tokens, inputs=inputs))
    config: dict[str, float | str] = {k: float(v) for k, v in msg.loss_fn_config.items()}
    for key, value in msg.loss_fn_config_v2.items():
        config[key] = value.text if value.WhichOneof("value") == "text" else float(value.number)
    return ForwardBackwardRequest(
        model_id=msg.model_id,
        seq_id=int(msg.seq_id),
        loss_fn=msg.loss_fn,
        forward_only=bool(msg.forward_only),
        data=data,
        loss_fn_config=config,
    )


def encode_forward_backward_output(
    outputs: list[dict[str, np.ndarray]], metrics: dict[str, float], output_type: str = "ArrayRecord"
) -> bytes:
    """The protobuf ForwardBackwardOutput: one ArrayRecord holding every datum's 1-D float32
    fields, batched (concatenated data and byte offsets), plus the metrics."""
    msg = _CLASSES["ForwardBackwardOutput"]()
    msg.loss_fn_output_type = output_type
    for key, value in metrics.items():
        msg.metrics[key] = float(value)
    if outputs:
        record = msg.loss_fn_outputs.add()
        record.num_datums = len(outputs)
        for name in outputs[0]:
            arrays = [np.ascontiguousarray(out[name], dtype=np.float32).reshape(-1) for out in outputs]
            offsets = np.cumsum([0, *(a.nbytes for a in arrays)], dtype=np.int64)
            batched = record.fields[name]
            batched.dtype = DTYPE_FLOAT32
            batched.data = b"".join(a.tobytes() for a in arrays)
            batched.offsets = offsets.tobytes()
    return bytes(msg.SerializeToString())


def encode_sample_response(
    sequences: Sequence[tuple[int, np.ndarray, np.ndarray | None]], prompt_logprobs: np.ndarray | None = None
) -> bytes:
    """The protobuf SampleResponse: per sequence its stop reason (0 stop, 1 length), int32 tokens
    and float32 logprobs; the prompt's float32 logprobs (NaN where not computed) when asked for."""
    msg = _CLASSES["SampleResponse"]()
    for stop_reason, tokens, logprobs in sequences:
        seq = msg.sequences.add()
        seq.stop_reason = int(stop_reason)
        seq.tokens = np.ascontiguousarray(tokens, dtype="<i4").tobytes()
        if logprobs is not None:
            seq.logprobs = np.ascontiguousarray(logprobs, dtype="<f4").tobytes()
    if prompt_logprobs is not None:
        msg.prompt_logprobs = np.ascontiguousarray(prompt_logprobs, dtype="<f4").tobytes()
    return bytes(msg.SerializeToString())
