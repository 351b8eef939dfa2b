"""A stand-in OpenAI-compatible server for SDK tests (the real servers need model weights)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any


@dataclass
class OpenAIStub:
    """A tiny OpenAI-compatible server on loopback that records what it was sent."""

    port: int
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def stub_handler(stub_requests: list[tuple[str, dict[str, Any]]]) -> type[BaseHTTPRequestHandler]:
    """A request handler answering chat and text completions, appending each request to `stub_requests`."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            stub_requests.append((self.path, body))
            n = int(body.get("n", 1))
            if self.path == "/v1/chat/completions":
                last = body["messages"][-1]["content"]
                reply: dict[str, Any] = {
                    "id": "chatcmpl-stub",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": i,
                            "message": {"role": "assistant", "content": f"echo {i}: {last}"},
                            "finish_reason": "stop",
                        }
                        for i in range(n)
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
            elif self.path == "/v1/completions":
                reply = {
                    "id": "cmpl-stub",
                    "object": "text_completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": i,
                            "text": f" after {body['prompt']}",
                            "finish_reason": "length",
                            "logprobs": None,
                        }
                        for i in range(n)
                    ],
                }
            else:
                self.send_error(404)
                return
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            return

    return Handler
