"""Command-line arguments of `python -m rft_devcluster.fake_vllm`, named as `vllm serve` names them.

Pure argparse: no torch here, so `--help` and argument errors are instant.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence

from rft.contracts.vllm_args import DEFAULT_HOST, DEFAULT_PORT, RUNTIME_LORA_UPDATING_ENV

from rft_devcluster.fake_vllm.config import (
    DEVICES,
    DTYPES,
    LOG_LEVELS,
    LOGPROBS_MODES,
    LoraModule,
    ServerConfig,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; every option vLLM also has keeps vLLM's name and meaning."""
    parser = argparse.ArgumentParser(
        prog="python -m rft_devcluster.fake_vllm",
        description="OpenAI-compatible multi-LoRA inference server for CPU and small models "
        "(the protocol and arguments of `vllm serve`).",
    )
    parser.add_argument(
        "model_tag", nargs="?", help="Model directory or storage URL (as `vllm serve MODEL`)."
    )
    parser.add_argument("--model", help="Same as the positional model argument.")
    parser.add_argument(
        "--served-model-name", nargs="+", help="Names the base model answers to; the first is reported."
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="Bind address (default: %(default)s).")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="Port (default: %(default)s).")
    parser.add_argument("--enable-lora", action="store_true", help="Serve LoRA adapters.")
    parser.add_argument("--max-loras", type=int, default=1, help="Adapters resident at once (default: 1).")
    parser.add_argument("--max-lora-rank", type=int, default=16, help="Largest adapter rank (default: 16).")
    parser.add_argument(
        "--max-model-len", type=int, help="Longest prompt + completion (default: the model's maximum)."
    )
    parser.add_argument(
        "--lora-modules",
        nargs="+",
        default=[],
        metavar="NAME=PATH",
        help='Adapters to load at start: name=path or JSON {"name": ..., "path": ...}; path may be a '
        "storage URL.",
    )
    parser.add_argument("--device", choices=DEVICES, default="auto", help="Where the model runs.")
    parser.add_argument(
        "--dtype", choices=DTYPES, default="auto", help="Weight dtype (auto: float32 on CPU)."
    )
    parser.add_argument("--download-dir", help="Where models and adapters from storage URLs are fetched to.")
    parser.add_argument(
        "--logprobs-mode",
        choices=LOGPROBS_MODES,
        default="raw_logprobs",
        help="raw_logprobs: the model's distribution (vLLM's default); processed_logprobs: after "
        "temperature, top-k and top-p.",
    )
    parser.add_argument(
        "--runtime-lora-updating",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"Serve /v1/load_lora_adapter and /v1/unload_lora_adapter (default: from "
        f"{RUNTIME_LORA_UPDATING_ENV}, as vLLM).",
    )
    parser.add_argument(
        "--middleware",
        action="append",
        default=[],
        help="Import path of an ASGI middleware class or HTTP middleware function (repeatable), as vLLM's.",
    )
    parser.add_argument("--uvicorn-log-level", choices=LOG_LEVELS, default="info")
    return parser


def parse_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Parse command-line arguments into a validated ServerConfig; exits with a usage error otherwise."""
    parser = build_parser()
    args = parser.parse_args(argv)
    env = os.environ if environ is None else environ
    if args.model_tag and args.model and args.model_tag != args.model:
        parser.error(f"the positional model {args.model_tag!r} and --model {args.model!r} differ")
    model = args.model_tag or args.model
    if not model:
        parser.error("a model is required: python -m rft_devcluster.fake_vllm MODEL [options]")
    runtime_updating = args.runtime_lora_updating
    if runtime_updating is None:
        runtime_updating = env.get(RUNTIME_LORA_UPDATING_ENV, "0").strip().lower() in ("1", "true")
    try:
        return ServerConfig(
            model=model,
            served_model_names=tuple(args.served_model_name or ()),
            host=args.host,
            port=args.port,
            enable_lora=args.enable_lora,
            max_loras=args.max_loras,
            max_lora_rank=args.max_lora_rank,
            max_model_len=args.max_model_len,
            lora_modules=tuple(parse_lora_module(value) for value in args.lora_modules),
            allow_runtime_lora_updating=runtime_updating,
            device=args.device,
            dtype=args.dtype,
            download_dir=args.download_dir,
            logprobs_mode=args.logprobs_mode,
            uvicorn_log_level=args.uvicorn_log_level,
            middleware=tuple(args.middleware),
        )
    except ValueError as error:
        parser.error(str(error))


def parse_lora_module(value: str) -> LoraModule:
    """One --lora-modules value: `name=path` or vLLM's JSON form `{"name": ..., "path": ...}`."""
    if value.lstrip().startswith("{"):
        try:
            data = json.loads(value)
        except ValueError as error:
            raise ValueError(f"lora_modules: {value!r} is not valid JSON: {error}") from None
        if not isinstance(data, dict) or not data.get("name") or not data.get("path"):
            raise ValueError(f"lora_modules: {value!r} needs non-empty 'name' and 'path'")
        return LoraModule(name=str(data["name"]), path=str(data["path"]))
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise ValueError(f"lora_modules: {value!r} must be name=path")
    return LoraModule(name=name, path=path)
