"""A rate-limited work queue of (kind, namespace, name) keys, like controller-runtime's.

Kopf's handlers only enqueue; workers run the level-based reconcilers. A key is never processed
by two workers at once, duplicates coalesce while queued, a key that is re-added while being
processed runs once more afterwards, and failures back off exponentially per key
(`kopf.TemporaryError(delay=...)` sets the delay, `kopf.PermanentError` drops the key).

Keys come at one of two priorities. Due keys of HIGH priority run before any due key of NORMAL
priority: the operator marks keys whose reconcile creates a child (a new ReinforcementStep,
whose first reconcile creates its Job) HIGH, so that a burst of new steps gets its Jobs first
instead of waiting behind status updates of the steps before them. Priority orders only the
queue: a key is still processed by one worker at a time, and queued duplicates still coalesce
(into the higher priority of the two).
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

NORMAL = 0
HIGH = 1

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
        # One heap per priority, of (due, sequence, key); _due holds each queued key's live entry.
        self._heaps: dict[int, list[tuple[float, int, Key]]] = {HIGH: [], NORMAL: []}
        self._due: dict[Key, tuple[float, int]] = {}  # key -> (due, priority)
        self._active: set[Key] = set()
        self._dirty: dict[Key, int] = {}  # re-added while processing -> the priority to run again at
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

    def add(self, key: Key, after: float = 0.0, priority: int = NORMAL) -> None:
        """Schedule `key`; an earlier schedule of the same key wins, and of two that are both due
        (or due at once), the higher priority."""
        now = time.monotonic()
        due = now + max(0.0, after)
        with self._cond:
            if key in self._active and after <= 0:
                self._dirty[key] = max(priority, self._dirty.get(key, NORMAL))
                return
            current = self._due.get(key)
            if current is not None:
                current_due = current[0]
                new_due = min(due, current_due)
                ready = max(new_due, now)  # either schedule that is due by then counts
                priority = max(p for d, p in ((due, priority), current) if d <= ready)
                if (new_due, priority) == current:
                    return
                due = new_due
            self._due[key] = (due, priority)
            self._seq += 1
            heapq.heappush(self._heaps[priority], (due, self._seq, key))
            self._cond.notify()

    def __len__(self) -> int:
        with self._cond:
            return len(self._due)

    def _next(self) -> Key | None:
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                wake: float | None = None
                for priority in (HIGH, NORMAL):
                    heap = self._heaps[priority]
                    while heap:
                        due, _, key = heap[0]
                        if self._due.get(key) != (due, priority):  # superseded by another schedule
                            heapq.heappop(heap)
                            continue
                        if due > now:
                            wake = due if wake is None else min(wake, due)
                            break
                        heapq.heappop(heap)
                        del self._due[key]
                        if key in self._active:  # busy: run again once the current pass ends
                            self._dirty[key] = max(priority, self._dirty.get(key, NORMAL))
                            continue
                        self._active.add(key)
                        return key
                self._cond.wait(None if wake is None else wake - now)
            return None

    def _done(self, key: Key, requeue_after: float | None) -> None:
        with self._cond:
            self._active.discard(key)
            rerun = self._dirty.pop(key, None)
        if rerun is not None:
            self.add(key, priority=rerun)
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
