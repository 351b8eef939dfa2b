"""The background Event recorder: reconciles never wait for an Event POST."""

from __future__ import annotations

import threading
import time
from typing import Any

from kubernetes import client
from rft_operator.kube import EventRecorder, Kube, Obj
from rft_operator.metrics import METRICS


def _dropped() -> float:
    return METRICS.events_dropped._value.get()


class SlowPoster:
    """Posts only when released; remembers what it posted."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.posted: list[tuple[str, Obj]] = []
        self.started = threading.Event()

    def __call__(self, namespace: str, event: Obj) -> None:
        self.started.set()
        self.release.wait(10)
        self.posted.append((namespace, event))


def test_record_returns_before_the_post_and_flush_waits_for_it() -> None:
    post = SlowPoster()
    recorder = EventRecorder(post, workers=1)
    started = time.monotonic()
    assert recorder.record("ns", {"reason": "Pending"})
    assert time.monotonic() - started < 0.5
    assert post.started.wait(5)
    assert post.posted == []
    assert not recorder.flush(0.1)  # still posting
    post.release.set()
    assert recorder.flush(5)
    assert post.posted == [("ns", {"reason": "Pending"})]
    assert len(recorder) == 0
    assert recorder.stop(1)


def test_a_full_queue_drops_and_counts() -> None:
    post = SlowPoster()
    recorder = EventRecorder(post, capacity=2, workers=1)
    before = _dropped()
    assert recorder.record("ns", {"reason": "A"})
    assert post.started.wait(5)  # A is being posted: the queue is empty again
    assert recorder.record("ns", {"reason": "B"})
    assert recorder.record("ns", {"reason": "C"})
    assert not recorder.record("ns", {"reason": "D"})  # full
    assert recorder.dropped == 1
    assert _dropped() == before + 1
    post.release.set()
    assert recorder.flush(5)
    assert [e["reason"] for _, e in post.posted] == ["A", "B", "C"]
    recorder.stop(1)


def test_stop_posts_what_is_queued_then_drops_the_rest() -> None:
    post = SlowPoster()
    recorder = EventRecorder(post, workers=1)
    for reason in ("A", "B", "C"):
        recorder.record("ns", {"reason": reason})
    before = _dropped()
    assert not recorder.stop(0.2)  # A is stuck in its POST: B and C are dropped
    assert recorder.dropped == 2
    assert _dropped() == before + 2
    assert not recorder.record("ns", {"reason": "late"})  # stopped
    post.release.set()


def test_stop_flushes_the_queue() -> None:
    posted: list[str] = []
    recorder = EventRecorder(lambda ns, e: posted.append(e["reason"]), workers=2)
    for i in range(50):
        recorder.record("ns", {"reason": str(i)})
    assert recorder.stop(5)
    assert sorted(posted, key=int) == [str(i) for i in range(50)]
    assert recorder.dropped == 0


def test_a_failing_post_does_not_stop_the_recorder() -> None:
    posted: list[str] = []

    def post(namespace: str, event: Obj) -> None:
        if event["reason"] == "bad":
            raise RuntimeError("boom")
        posted.append(event["reason"])

    recorder = EventRecorder(post, workers=1)
    recorder.record("ns", {"reason": "bad"})
    recorder.record("ns", {"reason": "good"})
    assert recorder.flush(5)
    assert posted == ["good"]
    recorder.stop(1)


def test_kube_record_event_posts_in_the_background() -> None:
    kube = Kube(client.ApiClient(client.Configuration()))
    posted: list[tuple[str, Any]] = []
    release = threading.Event()

    class Response:
        data = b"{}"

        def release_conn(self) -> None:
            pass

    def create(namespace: str, body: Any, **_: Any) -> Response:
        release.wait(10)
        posted.append((namespace, body))
        return Response()

    kube.core.create_namespaced_event = create  # type: ignore[method-assign]
    step = {
        "apiVersion": "rft-operator.io/v1alpha1",
        "kind": "ReinforcementStep",
        "metadata": {"name": "s", "namespace": "ns", "uid": "u1", "resourceVersion": "7"},
    }
    kube.record_event(step, "Normal", "Pending", "Job s-train created")
    assert posted == []  # the caller did not wait
    release.set()
    assert kube.events.flush(5)
    ((namespace, event),) = posted
    assert namespace == "ns"
    assert event["reason"] == "Pending"
    assert event["type"] == "Normal"
    assert event["involvedObject"] == {
        "apiVersion": "rft-operator.io/v1alpha1",
        "kind": "ReinforcementStep",
        "name": "s",
        "namespace": "ns",
        "uid": "u1",
        "resourceVersion": "7",
    }
    assert kube.writes.counts[("create", "events")] == 1
    kube.events.stop(1)
