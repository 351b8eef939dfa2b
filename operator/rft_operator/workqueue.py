"""A rate-limited work queue of (kind, namespace, name) keys, like controller-runtime's.

Kopf's handlers only enqueue; workers run the level-based reconcilers. A key is never processed
by two workers at once, duplicates coalesce while queued, a key that is re-added while being
processed runs once more afterwards, and failures back off exponentially per key
(`kopf.TemporaryError(delay=...)` sets the delay, `kopf.PermanentError` drops the key).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Mapping

import kopf
from kubernetes.client.exceptions import ApiException

from rft_operator.metrics import METRICS

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # (kind, namespace, name)
SyncFn = Callable[[str, str], float | None]

MIN_BACKOFF = 0.5
MAX_BACKOFF = 60.0
CONFLICT_RETRY = 0.05


class WorkQueue:
    def __init__(
        self, handlers: Mapping[str, SyncFn], workers: int = 8, active: threading.Event | None = None
    ) -> None:
        self._handlers = dict(handlers)
        # Keys queue up while inactive (not the leader); workers start once this is set.
        self._active_gate = active
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Key]] = []
        self._due: dict[Key, float] = {}
        self._active: set[Key] = set()
        self._dirty: set[Key] = set()
        self._failures: dict[Key, int] = {}
        self._seq = 0
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._work, name=f"reconcile-{i}", daemon=True) for i in range(workers)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def add(self, key: Key, after: float = 0.0) -> None:
        """Schedule `key`; an earlier schedule of the same key wins."""
        due = time.monotonic() + max(0.0, after)
        with self._cond:
            if key in self._active and after <= 0:
                self._dirty.add(key)
                return
            current = self._due.get(key)
            if current is not None and current <= due:
                return
            self._due[key] = due
            self._seq += 1
            heapq.heappush(self._heap, (due, self._seq, key))
            self._cond.notify()

    def __len__(self) -> int:
        with self._cond:
            return len(self._due)

    def _next(self) -> Key | None:
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                while self._heap:
                    due, _, key = self._heap[0]
                    if self._due.get(key) != due:  # superseded by an earlier schedule
                        heapq.heappop(self._heap)
                        continue
                    if due > now:
                        break
                    heapq.heappop(self._heap)
                    del self._due[key]
                    if key in self._active:  # busy: run again once the current pass ends
                        self._dirty.add(key)
                        continue
                    self._active.add(key)
                    return key
                self._cond.wait(self._heap[0][0] - now if self._heap else None)
            return None

    def _done(self, key: Key, requeue_after: float | None) -> None:
        with self._cond:
            self._active.discard(key)
            rerun = key in self._dirty
            self._dirty.discard(key)
        if rerun:
            self.add(key)
        elif requeue_after is not None:
            self.add(key, requeue_after)

    def _work(self) -> None:
        if self._active_gate is not None:
            while not self._active_gate.wait(1.0):
                if self._stopping:
                    return
        while (key := self._next()) is not None:
            kind, namespace, name = key
            requeue: float | None = None
            started = time.monotonic()
            try:
                requeue = self._handlers[kind](namespace, name)
                self._failures.pop(key, None)
            except kopf.PermanentError as exc:
                METRICS.errors.labels(kind=kind, error="permanent").inc()
                log.error("%s %s/%s: permanent error, not retrying: %s", kind, namespace, name, exc)
            except kopf.TemporaryError as exc:
                METRICS.errors.labels(kind=kind, error="temporary").inc()
                requeue = float(exc.delay) if exc.delay else self._backoff(key)
                log.info("%s %s/%s: %s (retry in %.1fs)", kind, namespace, name, exc, requeue)
            except ApiException as exc:
                METRICS.errors.labels(kind=kind, error=f"api-{exc.status}").inc()
                if exc.status == 409:  # a write raced a newer version: reconcile again from a fresh read
                    requeue = CONFLICT_RETRY
                    log.debug("%s %s/%s: conflict, retrying", kind, namespace, name)
                else:
                    requeue = self._backoff(key)
                    log.warning(
                        "%s %s/%s: API error %s %s (retry in %.1fs)",
                        kind,
                        namespace,
                        name,
                        exc.status,
                        exc.reason,
                        requeue,
                    )
            except Exception:
                METRICS.errors.labels(kind=kind, error="unexpected").inc()
                requeue = self._backoff(key)
                log.exception("%s %s/%s: unexpected error (retry in %.1fs)", kind, namespace, name, requeue)
            finally:
                METRICS.reconciles.labels(kind=kind).inc()
                METRICS.reconcile_seconds.labels(kind=kind).observe(time.monotonic() - started)
                self._done(key, requeue)

    def _backoff(self, key: Key) -> float:
        n = self._failures.get(key, 0) + 1
        self._failures[key] = n
        return float(min(MAX_BACKOFF, MIN_BACKOFF * 2.0 ** (n - 1)))
