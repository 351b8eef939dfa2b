"""The work queue: per-key serialisation, dedup, requeues, and HIGH before NORMAL priority."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from rft_operator.workqueue import HIGH, NORMAL, WorkQueue


class Recorder:
    """Handlers that record the order of reconciles (and can hold one up)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.order: list[tuple[str, str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.running = 0
        self.max_running: dict[str, int] = {}
        self.requeue: dict[str, float | None] = {}

    def handler(self, kind: str) -> Callable[[str, str], float | None]:
        def sync(namespace: str, name: str) -> float | None:
            with self.lock:
                self.order.append((kind, name))
                self.running += 1
                self.max_running[name] = max(self.max_running.get(name, 0), self.running)
            self.gate.wait(10)
            with self.lock:
                self.running -= 1
            return self.requeue.pop(name, None)

        return sync


def wait_until(cond: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def queue_with(rec: Recorder, workers: int = 1) -> WorkQueue:
    return WorkQueue({"step": rec.handler("step"), "model": rec.handler("model")}, workers=workers)


def test_high_priority_keys_run_before_normal_ones_already_due() -> None:
    rec = Recorder()
    rec.gate.clear()
    queue = queue_with(rec)
    queue.start()
    queue.add(("model", "ns", "busy"))  # holds the only worker
    wait_until(lambda: rec.order == [("model", "busy")])
    for i in range(3):
        queue.add(("step", "ns", f"old-{i}"))  # due first, NORMAL
    queue.add(("step", "ns", "new-0"), priority=HIGH)
    queue.add(("step", "ns", "new-1"), priority=HIGH)
    rec.gate.set()
    wait_until(lambda: len(rec.order) == 6)
    assert [name for _, name in rec.order] == ["busy", "new-0", "new-1", "old-0", "old-1", "old-2"]
    queue.stop(1)


def test_a_high_priority_add_upgrades_a_queued_normal_key_and_dedups() -> None:
    rec = Recorder()
    rec.gate.clear()
    queue = queue_with(rec)
    queue.start()
    queue.add(("model", "ns", "busy"))
    wait_until(lambda: len(rec.order) == 1)
    queue.add(("step", "ns", "a"))
    queue.add(("step", "ns", "b"))
    queue.add(("step", "ns", "b"), priority=HIGH)  # upgraded: one entry, at HIGH
    queue.add(("step", "ns", "b"))  # a NORMAL duplicate does not downgrade it
    assert len(queue) == 2
    rec.gate.set()
    wait_until(lambda: len(rec.order) == 3)
    time.sleep(0.1)
    assert [name for _, name in rec.order] == ["busy", "b", "a"]
    queue.stop(1)


def test_a_later_high_priority_schedule_does_not_delay_a_due_key() -> None:
    rec = Recorder()
    queue = queue_with(rec)
    queue.add(("step", "ns", "a"))
    queue.add(("step", "ns", "a"), after=30, priority=HIGH)
    assert len(queue) == 1
    queue.start()
    wait_until(lambda: rec.order == [("step", "a")])
    queue.stop(1)


def test_a_high_priority_add_brings_a_key_scheduled_later_forward() -> None:
    rec = Recorder()
    queue = queue_with(rec)
    queue.add(("step", "ns", "a"), after=30)
    queue.add(("step", "ns", "a"), priority=HIGH)
    queue.start()
    wait_until(lambda: rec.order == [("step", "a")])
    queue.stop(1)


def test_a_key_never_runs_twice_at_once_and_a_readd_runs_once_more() -> None:
    rec = Recorder()
    rec.gate.clear()
    queue = queue_with(rec, workers=4)
    queue.start()
    queue.add(("step", "ns", "a"))
    wait_until(lambda: len(rec.order) == 1)
    for priority in (NORMAL, HIGH, NORMAL):
        queue.add(("step", "ns", "a"), priority=priority)
    time.sleep(0.1)
    assert len(rec.order) == 1  # not a second time while the first runs
    rec.gate.set()
    wait_until(lambda: len(rec.order) == 2)
    time.sleep(0.2)
    assert rec.order == [("step", "a")] * 2  # the three re-adds ran once
    assert rec.max_running["a"] == 1
    queue.stop(1)


def test_a_requeue_runs_at_normal_priority_after_its_delay() -> None:
    rec = Recorder()
    queue = queue_with(rec)
    rec.requeue["a"] = 0.2
    queue.start()
    started = time.monotonic()
    queue.add(("step", "ns", "a"), priority=HIGH)
    wait_until(lambda: len(rec.order) == 2)
    assert time.monotonic() - started >= 0.2
    queue.stop(1)
