"""`python -m rft.pods.adapter_sidecar`: bucket-aware adapter loading next to a vLLM server.

vLLM's `/v1/load_lora_adapter` reads adapters from local paths only. This sidecar offers the same
route on its own port, accepts `lora_path` as a bucket URL, fetches the committed adapter into a
shared volume under the pod's workload identity, and then asks vLLM to load it from there. It
also passes `/health`, `/v1/models`, `/v1/completions` (the canary check, `rft.canary`) and
`/metrics` (vLLM's Prometheus text, read-only: the operator's autoscaler reads the load there) on
to vLLM, so the operator needs only this port.

Every route but `/health` needs the operator's admin token (`rft.pods.admin_guard`): only the operator
may load or unload adapters. The sidecar passes the token on to vLLM, whose own admin routes
need it too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import urllib.error
import urllib.request
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rft.pods.admin_guard import TOKEN_HASH_ENV, authorized
from rft.storage import StorageError
from rft.storage.checkpoints import fetch_checkpoint

METRICS_PATH = "/metrics"
# Prometheus' text exposition format, as vLLM serves it.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SAFE_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def _call_upstream(
    upstream: str,
    path: str,
    payload: dict[str, Any] | None,
    timeout: float = 600,
    authorization: str | None = None,
) -> tuple[int, bytes]:
    data = None if payload is None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    request = urllib.request.Request(  # noqa: S310 - upstream is the local vLLM URL given on the command line
        upstream + path,
        data=data,
        headers=headers,
        method="GET" if data is None else "POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _copies(adapter_dir: Path, name: str) -> list[Path]:
    """The local copies of adapter `name`: its first load's and its in-place reloads'."""
    return [p for p in [adapter_dir / name, *adapter_dir.glob(f"{name}@*")] if p.exists()]


def make_handler(upstream: str, adapter_dir: Path, token_sha256: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: HTTPStatus, message: str) -> None:
            body = {"error": {"message": message, "type": "BadRequestError", "code": int(status)}}
            self._reply(status, json.dumps(body).encode())

        def _authorized(self) -> bool:
            """Whether the request carries the admin token; if not, it is answered 401."""
            if authorized(self.headers.get("Authorization"), token_sha256):
                return True
            body = {
                "error": {
                    "message": "only the rft-operator may call this sidecar",
                    "type": "Unauthorized",
                    "code": 401,
                }
            }
            self._reply(HTTPStatus.UNAUTHORIZED, json.dumps(body).encode())
            return False

        def do_GET(self) -> None:
            if self.path == "/health":
                self._reply(*_call_upstream(upstream, self.path, None))
            elif not self._authorized():
                return
            elif self.path == "/v1/models":
                self._reply(*_call_upstream(upstream, self.path, None))
            elif self.path == METRICS_PATH:
                self._reply(*_call_upstream(upstream, self.path, None, timeout=30), METRICS_CONTENT_TYPE)
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no route {self.path}")

        def do_POST(self) -> None:
            if not self._authorized():
                return
            authorization = self.headers.get("Authorization")
            try:
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length) or b"{}")
                if self.path == "/v1/completions":
                    # The operator's canary check of a loaded adapter (rft.canary).
                    self._reply(*_call_upstream(upstream, self.path, payload))
                    return
                name = str(payload["lora_name"])
            except (ValueError, KeyError, TypeError):
                self._error(HTTPStatus.BAD_REQUEST, "body must be JSON with lora_name")
                return
            if not name or not set(name) <= SAFE_NAME_CHARS:
                self._error(
                    HTTPStatus.BAD_REQUEST, f"lora_name {name!r} has characters outside [A-Za-z0-9._-]"
                )
                return
            local = adapter_dir / name
            if self.path == "/v1/load_lora_adapter":
                source = str(payload.get("lora_path") or "")
                if not source:
                    self._error(HTTPStatus.BAD_REQUEST, "lora_path is required")
                    return
                # In place (vLLM's load_inplace): fetched afresh into a new directory, loaded, then
                # swapped in by vLLM; the name is served throughout. vLLM may read the files again
                # later (its CPU cache of adapters), so the loaded directory stays until replaced.
                in_place = payload.get("load_inplace") is True
                target = adapter_dir / f"{name}@{uuid.uuid4().hex[:12]}" if in_place else local
                try:
                    if in_place or not local.exists():
                        fetch_checkpoint(source, target)
                except StorageError as exc:
                    shutil.rmtree(target, ignore_errors=True)
                    self._error(HTTPStatus.BAD_REQUEST, f"cannot fetch {source}: {exc}")
                    return
                load: dict[str, Any] = {"lora_name": name, "lora_path": str(target)}
                if in_place:
                    load["load_inplace"] = True
                status, answer = _call_upstream(upstream, self.path, load, authorization=authorization)
                if in_place:  # keep the copy vLLM serves: the new one, or the old ones if it refused
                    stale = (
                        [c for c in _copies(adapter_dir, name) if c != target] if status < 300 else [target]
                    )
                    for copy in stale:
                        shutil.rmtree(copy, ignore_errors=True)
                self._reply(status, answer)
            elif self.path == "/v1/unload_lora_adapter":
                status, body = _call_upstream(
                    upstream, self.path, {"lora_name": name}, authorization=authorization
                )
                if status < 300:
                    for old in _copies(adapter_dir, name):
                        shutil.rmtree(old, ignore_errors=True)
                self._reply(status, body)
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no route {self.path}")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            sys.stderr.write(json.dumps({"event": "request", "line": format % args}) + "\n")

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--upstream", default="http://127.0.0.1:8000", help="the vLLM server in this pod")
    parser.add_argument("--host", default="0.0.0.0")  # noqa: S104 - the pod's own address
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--adapter-dir", type=Path, default=Path("/adapters"))
    parser.add_argument(
        "--admin-token-sha256",
        default=os.environ.get(TOKEN_HASH_ENV, ""),
        help=f"SHA-256 of the operator's admin token (default: ${TOKEN_HASH_ENV}); without it every "
        "route but /health is refused",
    )
    args = parser.parse_args(argv)
    args.adapter_dir.mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer(
        (args.host, args.port),
        make_handler(args.upstream.rstrip("/"), args.adapter_dir, args.admin_token_sha256),
    )
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
