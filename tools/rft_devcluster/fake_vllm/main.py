"""Start the server: load the engine, then serve the app with uvicorn."""

from __future__ import annotations

import importlib
import inspect
import logging

import uvicorn
from fastapi import FastAPI

from rft_devcluster.fake_vllm.app import create_app
from rft_devcluster.fake_vllm.config import ServerConfig
from rft_devcluster.fake_vllm.engine import Engine

logger = logging.getLogger(__name__)


def run(config: ServerConfig) -> None:
    """Load the model (and preloaded adapters), then serve until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine = Engine.from_config(config)
    logger.info(
        "serving %s as %s on %s:%d (max_model_len=%d, lora=%s)",
        config.model,
        ", ".join(engine.model_names),
        config.host,
        config.port,
        engine.max_model_len,
        config.enable_lora,
    )
    app = create_app(engine, runtime_lora_updating=config.allow_runtime_lora_updating)
    for path in config.middleware:
        add_middleware(app, path)
    try:
        uvicorn.run(app, host=config.host, port=config.port, log_level=config.uvicorn_log_level)
    finally:
        engine.close()


def add_middleware(app: FastAPI, path: str) -> None:
    """vLLM's `--middleware`: a class is added with `add_middleware`, a function as HTTP middleware."""
    module_name, _, name = path.rpartition(".")
    imported = getattr(importlib.import_module(module_name), name)
    if inspect.isclass(imported):
        app.add_middleware(imported)  # type: ignore[arg-type]  # any ASGI class, as vLLM allows
    elif inspect.iscoroutinefunction(imported):
        app.middleware("http")(imported)
    else:
        raise ValueError(f"middleware {path}: must be a class or a coroutine function")
