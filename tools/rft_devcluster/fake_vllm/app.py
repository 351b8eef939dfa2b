"""The HTTP layer: FastAPI routes of vLLM's OpenAI server over the engine.

Handlers parse JSON and hand the work to worker threads (`service`), so the event loop keeps
answering /health and /v1/models while a request generates. `stream: true` answers with
server-sent events (`data: {chunk}` ... `data: [DONE]`). GET /metrics serves vLLM's load gauges
(`vllm:num_requests_running`, `vllm:num_requests_waiting`, labelled by model_name) in Prometheus'
text format, as vLLM does: the operator's autoscaler reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from rft_devcluster.fake_vllm import responses, service
from rft_devcluster.fake_vllm.engine import Engine
from rft_devcluster.fake_vllm.errors import ApiError, bad_request
from rft_devcluster.fake_vllm.generation import GenerationCancelledError

logger = logging.getLogger(__name__)


def create_app(engine: Engine, *, runtime_lora_updating: bool) -> FastAPI:
    """The server's ASGI app. The adapter admin routes exist only with `runtime_lora_updating`
    (vLLM registers them only when VLLM_ALLOW_RUNTIME_LORA_UPDATING is true)."""
    app = FastAPI(title="rft-operator reference inference server", docs_url=None, redoc_url=None)
    created = int(time.time())
    registry = CollectorRegistry()
    registry.register(LoadGauges(engine))

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

    @app.get("/version")
    async def version() -> dict[str, str]:
        # vLLM's own, which server pods' liveness probe asks (rft_operator.builders.serving).
        return {"version": "fake"}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return responses.model_list(engine.models(), created)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        prepared = await asyncio.to_thread(service.prepare_chat, engine, await _json(request))
        if prepared.request.stream:
            return _event_stream(partial(service.stream_chat, engine, prepared))
        return JSONResponse(await asyncio.to_thread(service.run_chat, engine, prepared))

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        prepared = await asyncio.to_thread(service.prepare_completion, engine, await _json(request))
        if prepared.request.stream:
            return _event_stream(partial(service.stream_completion, engine, prepared))
        return JSONResponse(await asyncio.to_thread(service.run_completion, engine, prepared))

    if runtime_lora_updating:
        logger.warning("LoRA dynamic loading & unloading is enabled: keep this server inside the cluster.")

        @app.post("/v1/load_lora_adapter")
        async def load_lora_adapter(request: Request) -> PlainTextResponse:
            text = await asyncio.to_thread(service.load_lora_adapter, engine, await _json(request))
            return PlainTextResponse(text)

        @app.post("/v1/unload_lora_adapter")
        async def unload_lora_adapter(request: Request) -> PlainTextResponse:
            text = await asyncio.to_thread(service.unload_lora_adapter, engine, await _json(request))
            return PlainTextResponse(text)

    return app


class LoadGauges(Collector):
    """vLLM's request gauges, read from the engine at each scrape."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        running, waiting = self._engine.request_counts()
        for name, help_text, value in (
            ("vllm:num_requests_running", "Number of requests in model execution batches.", running),
            ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", waiting),
        ):
            family = GaugeMetricFamily(name, help_text, labels=["model_name"])
            family.add_metric([self._engine.model_name], value)
            yield family


async def _json(request: Request) -> object:
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError as error:
        raise bad_request(f"The request body is not valid JSON: {error}") from None


def _event_stream(produce: Callable[[service.Emit, Callable[[], bool]], None]) -> StreamingResponse:
    """Server-sent events of the chunks `produce(emit, cancelled)` emits from a worker thread,
    then `data: [DONE]`. An error after the stream began is sent as an error event, as vLLM does;
    a client that goes away cancels the generation at its next token."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    gone = threading.Event()

    def put(item: dict[str, Any] | None) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop closed: nobody is listening
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def work() -> None:
        try:
            produce(put, gone.is_set)
        except GenerationCancelledError:
            pass
        except ApiError as error:
            put(error.body())
        except Exception as error:
            logger.exception("streaming request failed")
            failure = ApiError(
                f"Internal server error: {error}",
                status=HTTPStatus.INTERNAL_SERVER_ERROR,
                err_type="InternalServerError",
            )
            put(failure.body())
        finally:
            put(None)

    async def events() -> AsyncIterator[str]:
        worker = loop.run_in_executor(None, work)
        try:
            while (chunk := await queue.get()) is not None:
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"
            await worker
        finally:
            gone.set()

    return StreamingResponse(events(), media_type="text/event-stream")
