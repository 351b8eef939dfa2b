"""HTTP to pods: redirects are not followed, no environment proxy is used, answers are bounded,
and a pod's words never reach an error message (which ends up in an object's status)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from rft_operator import podhttp
from rft_operator.adapters import AdapterAdminError, served_models

SECRET = "metadata-token-do-not-leak"


class _Pod(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/secret":  # what a redirect would lead the operator to
            self._answer(200, SECRET.encode())
        elif self.path == "/v1/models":
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/secret")
            self.end_headers()
        elif self.path == "/error":
            body = {"error": {"message": f"{SECRET} " * 50, "type": "BadRequestError", "code": 400}}
            self._answer(400, json.dumps(body).encode())
        elif self.path == "/huge":
            self._answer(200, b"x" * (podhttp.MAX_ANSWER_BYTES + 10))
        else:
            self._answer(200, b'{"data": [{"id": "base"}]}')

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def pod() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pod)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_redirect_is_refused_and_not_followed(pod: str) -> None:
    with pytest.raises(podhttp.PodHTTPError) as caught:
        podhttp.request(f"{pod}/v1/models")
    assert "HTTP 302: a redirect, which the operator does not follow" in str(caught.value)
    assert SECRET not in str(caught.value)
    port = int(pod.rsplit(":", 1)[1])
    with pytest.raises(AdapterAdminError) as through_adapters:
        served_models("127.0.0.1", port, token="t")
    assert SECRET not in str(through_adapters.value)


def test_an_error_names_its_status_and_type_never_its_text(pod: str) -> None:
    with pytest.raises(podhttp.PodHTTPError) as caught:
        podhttp.request(f"{pod}/error")
    assert str(caught.value) == f"{pod}/error: HTTP 400 (BadRequestError); see the operator's log"


def test_answers_are_bounded(pod: str) -> None:
    with pytest.raises(podhttp.PodHTTPError, match="exceeds"):
        podhttp.request(f"{pod}/huge")


def test_no_proxy_from_the_environment_is_used(pod: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert json.loads(podhttp.request(f"{pod}/v1/models-ok")) == {"data": [{"id": "base"}]}


def test_only_short_identifiers_count_as_an_error_type() -> None:
    assert podhttp.error_type(b'{"error": {"type": "NotFoundError"}}') == "NotFoundError"
    assert podhttp.error_type(b'{"type": "BadRequestError"}') == "BadRequestError"
    assert podhttp.error_type(json.dumps({"error": {"type": SECRET + " and more"}}).encode()) is None
    assert podhttp.error_type(b"<html>") is None
