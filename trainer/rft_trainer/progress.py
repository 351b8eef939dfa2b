"""Progress reporting: JSON lines on stdout, a human line on stderr, and optionally GET /progress.

The trainer has no Kubernetes API access; the operator learns about progress by polling
`GET /progress` on the pod (when `progress_port` is set) or from the structured log lines.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO

from rft.contracts.trainer_config import Phase, ProgressReport


class ProgressReporter:
    """Holds the latest progress snapshot, prints every update and serves the latest on demand."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, *, quiet: bool = False) -> None:
        """`quiet` (the non-zero ranks of a torchrun job) records progress without printing it."""
        self._out = out if out is not None else sys.stdout
        self._err = err if err is not None else sys.stderr
        self._quiet = quiet
        self._lock = threading.Lock()
        self._latest = ProgressReport(phase="loading")
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def latest(self) -> ProgressReport:
        with self._lock:
            return self._latest

    def latest_json(self) -> bytes:
        """The latest snapshot as the JSON body served at /progress."""
        return json.dumps(self.latest.model_dump(mode="json", by_alias=False)).encode()

    def phase(self, phase: Phase, message: str | None = None) -> None:
        """Enter a new phase, keeping the last counters."""
        self.update(self.latest.model_copy(update={"phase": phase, "message": message}))

    def update(self, report: ProgressReport) -> None:
        """Record `report`, print it as a JSON line on stdout and as prose on stderr."""
        with self._lock:
            self._latest = report
        if self._quiet:
            return
        line = {"event": "progress", **report.model_dump(mode="json", by_alias=False)}
        print(json.dumps(line, sort_keys=True), file=self._out, flush=True)
        print(_human(report), file=self._err, flush=True)

    def log(self, message: str) -> None:
        """A human-readable note on stderr."""
        if self._quiet:
            return
        print(f"[rft-trainer] {message}", file=self._err, flush=True)

    def serve(self, port: int, host: str = "0.0.0.0") -> int:  # noqa: S104 - the operator polls the pod IP
        """Serve GET /progress on (host, port) from a daemon thread; returns the bound port."""
        reporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/progress":
                    self.send_error(404, "only /progress is served")
                    return
                body = reporter.latest_json()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                """Polling is not worth a log line."""

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="progress-http", daemon=True)
        self._thread.start()
        return int(self._server.server_address[1])

    def close(self) -> None:
        """Stop serving (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def _human(report: ProgressReport) -> str:
    parts = [f"[rft-trainer] {report.phase}"]
    if report.total_steps:
        parts.append(f"step {report.step}/{report.total_steps}")
    if report.epoch is not None:
        parts.append(f"epoch {report.epoch}")
    if report.loss is not None:
        parts.append(f"loss {report.loss:.4g}")
    if report.mean_reward is not None:
        parts.append(f"mean reward {report.mean_reward:.4g}")
    for key in ("kl", "clip_fraction", "tokens_per_second"):
        if key in report.metrics:
            parts.append(f"{key} {report.metrics[key]:.4g}")
    if report.message:
        parts.append(f"- {report.message}")
    return " ".join(parts)
