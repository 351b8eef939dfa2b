"""The HTTP layer: FastAPI routes of vLLM's OpenAI server over the engine.

Handlers parse JSON and hand the work to a worker thread (`service`), so the event loop keeps
answering /health and /v1/models while a request generates.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from rft_trainer.server import responses, service
from rft_trainer.server.engine import Engine
from rft_trainer.server.errors import ApiError, bad_request

logger = logging.getLogger(__name__)

T = TypeVar("T")


def create_app(engine: Engine, *, runtime_lora_updating: bool) -> FastAPI:
    """The server's ASGI app. The adapter admin routes exist only with `runtime_lora_updating`
    (vLLM registers them only when VLLM_ALLOW_RUNTIME_LORA_UPDATING is true)."""
    app = FastAPI(title="rft-operator reference inference server", docs_url=None, redoc_url=None)
    created = int(time.time())

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ApiError)
        return JSONResponse(error.body(), status_code=int(error.status))

    @app.exception_handler(Exception)
    async def internal_error(_: Request, error: Exception) -> JSONResponse:
        logger.exception("request failed")
        failure = ApiError(
            f"Internal server error: {error}",
            status=HTTPStatus.INTERNAL_SERVER_ERROR,
            err_type="InternalServerError",
        )
        return JSONResponse(failure.body(), status_code=int(failure.status))

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return responses.model_list(engine.models(), created)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> dict[str, Any]:
        return await _in_thread(service.chat_completion, engine, await _json(request))

    @app.post("/v1/completions")
    async def completions(request: Request) -> dict[str, Any]:
        return await _in_thread(service.text_completion, engine, await _json(request))

    if runtime_lora_updating:
        logger.warning("LoRA dynamic loading & unloading is enabled: keep this server inside the cluster.")

        @app.post("/v1/load_lora_adapter")
        async def load_lora_adapter(request: Request) -> PlainTextResponse:
            text = await _in_thread(service.load_lora_adapter, engine, await _json(request))
            return PlainTextResponse(text)

        @app.post("/v1/unload_lora_adapter")
        async def unload_lora_adapter(request: Request) -> PlainTextResponse:
            text = await _in_thread(service.unload_lora_adapter, engine, await _json(request))
            return PlainTextResponse(text)

    return app


async def _json(request: Request) -> object:
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError as error:
        raise bad_request(f"The request body is not valid JSON: {error}") from None


async def _in_thread(function: Callable[[Engine, object], T], engine: Engine, body: object) -> T:
    return await asyncio.to_thread(function, engine, body)
