"""The HTTP routes of a session's sampling (see `sampling.py`), added to the session's app.

Client routes (the session's client authentication, as every Tinker call):
`POST /api/v1/create_sampling_session`, `GET /api/v1/samplers/{id}`, `POST /api/v1/asample`
(a future, answered by `retrieve_future` as a protobuf `SampleResponse`).

Operator routes (the operator's token for this session, `Authorization: Bearer`; the pod holds its
SHA-256 in `$RFT_ADMIN_TOKEN_SHA256`): `GET /api/v1/rft/sampler_weights`,
`POST /api/v1/rft/sampling_targets`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException
from rft.pods.admin_guard import authorized

from rft_trainer.session.sampling import (
    CreateSamplingSessionBody,
    SampleBody,
    SamplingBackend,
    SamplingTargetsBody,
    new_sequence_ids,
)

SAMPLER_WEIGHTS_PATH = "/api/v1/rft/sampler_weights"
SAMPLING_TARGETS_PATH = "/api/v1/rft/sampling_targets"


def install_sampling_routes(
    app: FastAPI,
    service: Any,  # server.SessionService (which imports this module)
    sampling: SamplingBackend,
    client_auth: Sequence[Any],
    operator_token_sha256: str,
    *,
    as_proto_future: Callable[[Callable[[], bytes]], Callable[[], Any]],
) -> None:
    """Add the sampling routes to `app`. `as_proto_future` makes a future's work of a function
    returning protobuf bytes (the server's refusal handling around it)."""

    def operator(authorization: Annotated[str | None, Header()] = None) -> None:
        if not authorized(authorization, operator_token_sha256):
            raise HTTPException(401, "this route takes the operator's token")

    auth = list(client_auth)
    operator_auth = [Depends(operator)]

    @app.post("/api/v1/create_sampling_session", dependencies=auth)
    def create_sampling_session(body: CreateSamplingSessionBody) -> dict[str, Any]:
        if not service.known_session(body.session_id):
            raise HTTPException(404, f"unknown session {body.session_id!r}")
        try:
            sampler_id = sampling.create_sampler(
                body.session_id,
                body.sampling_session_seq_id,
                path=body.model_path,
                base_model=body.base_model,
            )
        except Exception as exc:  # SessionError: the caller's mistake
            raise HTTPException(400, str(exc)) from None
        return {"type": "create_sampling_session", "sampling_session_id": sampler_id}

    @app.get("/api/v1/samplers/{sampler_id}", dependencies=auth)
    def get_sampler(sampler_id: str) -> dict[str, Any]:
        found = sampling.sampler(sampler_id)
        if found is None:
            raise HTTPException(404, f"unknown sampler {sampler_id!r}")
        return found

    @app.post("/api/v1/asample", dependencies=auth)
    def asample(body: SampleBody) -> dict[str, Any]:
        answer = service.submit(
            as_proto_future(lambda: sampling.sample(body)),
            model_id=body.sampling_session_id,
            seq_id=body.seq_id,
            executor=sampling.executor,
        )
        return {**answer, "sample_sequence_ids": new_sequence_ids(body.num_samples)}

    @app.get(SAMPLER_WEIGHTS_PATH, dependencies=operator_auth)
    def sampler_weights() -> dict[str, Any]:
        return {"samplerWeights": sampling.saved()}

    @app.post(SAMPLING_TARGETS_PATH, dependencies=operator_auth)
    def sampling_targets(body: SamplingTargetsBody) -> dict[str, str]:
        sampling.set_targets(body)
        return {"status": "ok"}
