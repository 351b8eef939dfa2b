"""Only the operator may change what a server serves: the admin token guard of server pods.

vLLM's server answers its inference API and, on the same port, routes that change the server:
loading and unloading LoRA adapters (`/v1/load_lora_adapter`, SageMaker's `/adapters`), and with
development settings sleeping, weight updates, cache resets, profiling. Any pod that can reach a
server pod could call them. This module closes them:

- `AdminGuard`, an ASGI middleware that vLLM loads with `--middleware rft_admin_guard.AdminGuard`:
  the inference API (`OPEN_ROUTES`) stays open to whoever reaches the port (the namespace's
  NetworkPolicy decides who that is); every other route needs `Authorization: Bearer <token>`
  whose SHA-256 is the pod's `RFT_ADMIN_TOKEN_SHA256`. An allow-list rather than a list of admin
  routes: a route a later vLLM adds is closed until listed here.
- `python -m rft.pods.admin_guard install DIR` copies this file to `DIR/rft_admin_guard.py`: an init
  container puts it on the server container's PYTHONPATH (vLLM's image does not contain `rft`),
  so the module uses the standard library only.

The pod holds only the token's hash (in its spec: whoever may read pods sees nothing usable); the
operator derives each Deployment's token from its own key (`rft_operator.admintoken`).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import shutil
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

TOKEN_HASH_ENV = "RFT_ADMIN_TOKEN_SHA256"  # noqa: S105 - the variable's name, not a secret
MODULE_NAME = "rft_admin_guard"
MIDDLEWARE = f"{MODULE_NAME}.AdminGuard"

# The inference API: open. A route matches itself and everything below it (`/v1/responses/{id}`).
OPEN_ROUTES = (
    "/health",
    "/ping",
    "/version",
    "/metrics",
    "/load",
    "/v1/models",
    "/v1/completions",
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/audio/transcriptions",
    "/v1/audio/translations",
    "/tokenize",
    "/detokenize",
    "/pooling",
    "/classify",
    "/score",
    "/v1/score",
    "/rerank",
    "/v1/rerank",
    "/v2/rerank",
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_open(path: str) -> bool:
    """Whether `path` is part of the inference API (no token needed). A path with `.`, `..` or
    empty segments is never open, whatever a router would make of it."""
    segments = path.split("/")
    if (
        not path.startswith("/")
        or any(s in ("", ".", "..") for s in segments[1:-1])
        or segments[-1] in (".", "..")
    ):
        return False
    path = path.rstrip("/") or "/"
    return any(path == route or path.startswith(route + "/") for route in OPEN_ROUTES)


def authorized(authorization: str | None, expected_sha256: str) -> bool:
    """Whether an `Authorization` header carries the token whose SHA-256 is `expected_sha256`.
    With no expected hash nothing is authorized (a pod without a token refuses, never opens)."""
    if not expected_sha256 or not authorization:
        return False
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    return hmac.compare_digest(token_sha256(token.strip()), expected_sha256.lower())


def allowed(path: str, authorization: str | None, expected_sha256: str) -> bool:
    return is_open(path) or authorized(authorization, expected_sha256)


REFUSAL = {
    "error": {
        "message": "this route changes the server: only the rft-operator may call it",
        "type": "Unauthorized",
        "code": 401,
    }
}


class AdminGuard:
    """ASGI middleware (pure ASGI: no framework import): refuses every route outside `OPEN_ROUTES`
    without the admin token, before the app sees the request."""

    def __init__(self, app: ASGIApp, expected_sha256: str | None = None) -> None:
        self.app = app
        self.expected = os.environ.get(TOKEN_HASH_ENV, "") if expected_sha256 is None else expected_sha256

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if allowed(scope.get("path", "/"), headers.get("authorization"), self.expected):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps(REFUSAL).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def install(directory: Path) -> Path:
    """Copy this module to `directory` as `rft_admin_guard.py` (for a PYTHONPATH entry)."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{MODULE_NAME}.py"
    partial = target.with_suffix(".partial")
    shutil.copyfile(__file__, partial)
    partial.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rft.pods.admin_guard", description="The server pods' admin guard."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    install_command = commands.add_parser("install", help="copy the guard to DIR/rft_admin_guard.py")
    install_command.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    print(json.dumps({"event": "installed", "path": str(install(args.directory))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
