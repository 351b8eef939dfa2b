"""Serve one training session: `python -m rft_trainer.session --base-model DIR --base-model-name NAME
--storage-url URL` with the client API key in $RFT_SESSION_API_KEY (or --api-key-file); with
--kube-token-audience (and --kube-namespace, --kube-credentials-dir) it also accepts Kubernetes
ServiceAccount tokens of that namespace bound to that audience (session/auth.py)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
import uvicorn
from rft.pods.admin_guard import TOKEN_HASH_ENV

from rft_trainer.errors import BadInputError
from rft_trainer.model import load_base_model, resolve_device
from rft_trainer.session.auth import TokenReviewer
from rft_trainer.session.core import TrainingSession
from rft_trainer.session.sampling import DEFAULT_LOAD_TIMEOUT, SamplingBackend
from rft_trainer.session.server import ServerSettings, SessionService, create_app
from rft_trainer.sources import fetch_base_model
from rft_trainer.threads import cpu_threads

API_KEY_ENV = "RFT_SESSION_API_KEY"
OPERATOR_TOKEN_ENV = TOKEN_HASH_ENV  # the operator's token for this session, as its SHA-256


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rft_trainer.session", description=__doc__)
    parser.add_argument(
        "--base-model",
        required=True,
        help="the base model: a bucket URL (fetched, verified) or a local directory",
    )
    parser.add_argument("--base-model-name", required=True, help="the name clients pass as base_model")
    parser.add_argument("--storage-url", required=True, help="bucket prefix for states and sampler weights")
    parser.add_argument("--api-key-file", help=f"file holding the client API key (else ${API_KEY_ENV})")
    parser.add_argument(
        "--kube-token-audience",
        help="also accept Kubernetes ServiceAccount tokens bound to this audience (TokenReview)",
    )
    parser.add_argument("--kube-namespace", help="the namespace whose ServiceAccounts may call")
    parser.add_argument(
        "--kube-credentials-dir",
        help="the pod's own API token and CA (files token, ca.crt) for the TokenReviews",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--max-context-length", type=int, default=4096)
    parser.add_argument("--max-lora-rank", type=int, default=None, help="refuse larger LoRA ranks")
    parser.add_argument("--lora-alpha", type=int, default=None, help="LoRA alpha (default: the rank)")
    parser.add_argument(
        "--sampling-deployment",
        default=None,
        help="the vLLM Deployment samples go to (where it serves what, the operator pushes, with the "
        f"token whose SHA-256 is in ${OPERATOR_TOKEN_ENV})",
    )
    parser.add_argument(
        "--sampler-load-timeout",
        type=float,
        default=DEFAULT_LOAD_TIMEOUT,
        help="seconds a sample waits for its sampler weights to be served before it fails",
    )
    return parser.parse_args(argv)


def _api_key(args: argparse.Namespace) -> str:
    key = (
        Path(args.api_key_file).read_text(encoding="utf-8").strip()
        if args.api_key_file
        else os.environ.get(API_KEY_ENV, "")
    )
    if not key.startswith("tml-") or len(key) < 20:
        raise BadInputError(
            "InvalidConfig",
            f"the API key (--api-key-file or ${API_KEY_ENV}) must start with 'tml-' (the Tinker client's "
            "rule) and hold at least 16 more characters",
        )
    return key


def _token_reviewer(args: argparse.Namespace) -> TokenReviewer | None:
    if not args.kube_token_audience:
        return None
    if not args.kube_namespace or not args.kube_credentials_dir:
        raise BadInputError(
            "InvalidConfig", "--kube-token-audience needs --kube-namespace and --kube-credentials-dir"
        )
    try:
        return TokenReviewer.in_cluster(
            Path(args.kube_credentials_dir), audience=args.kube_token_audience, namespace=args.kube_namespace
        )
    except (OSError, ValueError) as exc:
        raise BadInputError("InvalidConfig", f"Kubernetes token checks cannot be set up: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        api_key = _api_key(args)
        reviewer = _token_reviewer(args)
        device = resolve_device(args.device)
        torch.set_num_threads(cpu_threads())  # the container's CPU quota, as a step's trainer
        with tempfile.TemporaryDirectory(prefix="rft-session-base-") as scratch:
            source = fetch_base_model(args.base_model, Path(scratch), allow_hub_download=False)
            base, tokenizer = load_base_model(source.location, device, local_files_only=True)
    except BadInputError as exc:
        print(f"[rft-session] {exc.reason}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    session = TrainingSession(
        base,
        args.base_model_name,
        device,
        max_context_length=args.max_context_length,
        lora_alpha=args.lora_alpha,
        tokenizer=tokenizer,
    )
    token_sha256 = os.environ.get(OPERATOR_TOKEN_ENV) or None
    sampling = (
        SamplingBackend(
            args.base_model_name, deployment=args.sampling_deployment, load_timeout=args.sampler_load_timeout
        )
        if token_sha256 or args.sampling_deployment
        else None
    )
    service = SessionService(
        session,
        ServerSettings(
            base_model_name=args.base_model_name,
            storage_url=args.storage_url,
            api_key=api_key,
            max_lora_rank=args.max_lora_rank,
            token_reviewer=reviewer,
            operator_token_sha256=token_sha256,
        ),
        sampling,
    )
    try:
        uvicorn.run(create_app(service), host=args.host, port=args.port, log_level="warning")
    finally:
        service.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
