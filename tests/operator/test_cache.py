"""The operator's read cache and the index of waiting steps, without a cluster."""

from __future__ import annotations

from typing import Any

from rft_operator.cache import Cache, trim
from rft_operator.kube import Kube
from rft_operator.waiting import WaitingSteps


def obj(name: str, rv: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv, "managedFields": [{"x": 1}]},
        "status": status,
    }


class FakeIndex(dict[Any, list[dict[str, Any]]]):
    """A Kopf index as the cache sees it: key -> store (an iterable of values)."""

    def put(self, body: dict[str, Any]) -> None:
        self[(body["metadata"]["namespace"], body["metadata"]["name"])] = [trim(body)]


def test_hits_are_copies_without_managed_fields() -> None:
    index = FakeIndex()
    index.put(obj("a", "5", phase="X"))
    cache = Cache({"models": index})
    got = cache.get("models", "ns", "a")
    assert got is not None
    assert got["status"] == {"phase": "X"}
    assert "managedFields" not in got["metadata"]
    got["status"]["phase"] = "changed"
    assert cache.get("models", "ns", "a") == {**trim(obj("a", "5", phase="X"))}
    assert cache.get("models", "ns", "missing") is None
    assert cache.get("datasets", "ns", "a") is None
    assert not cache.covers("datasets")


def test_own_writes_win_until_the_watch_catches_up() -> None:
    index = FakeIndex()
    index.put(obj("a", "5"))
    cache = Cache({"models": index})
    cache.remember("models", obj("a", "7", phase="READY"))
    assert cache.get("models", "ns", "a")["status"] == {"phase": "READY"}  # type: ignore[index]
    index.put(obj("a", "6"))  # an older event still arriving
    assert cache.get("models", "ns", "a")["metadata"]["resourceVersion"] == "7"  # type: ignore[index]
    index.put(obj("a", "8", phase="LATER"))
    assert cache.get("models", "ns", "a")["status"] == {"phase": "LATER"}  # type: ignore[index]
    cache.remember("models", obj("b", "9"))  # created, not yet watched
    assert cache.get("models", "ns", "b") is not None
    cache.forget("models", "ns", "b")
    assert cache.get("models", "ns", "b") is None


def test_pods_by_job() -> None:
    pods = {("ns", "j"): [{"metadata": {"name": "p1"}}, {"metadata": {"name": "p2"}}]}
    cache = Cache({}, pods)
    assert [p["metadata"]["name"] for p in cache.pods("ns", "j") or []] == ["p1", "p2"]
    assert cache.pods("ns", "other") == []
    assert Cache({}).pods("ns", "j") is None


class ReadsCounted(Kube):
    def __init__(self, cache: Cache) -> None:  # no API client: reads are recorded instead
        self.cache = cache
        self.reads: list[str] = []

    def read(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append(f"{plural}/{name}")
        return None


def test_a_miss_is_confirmed_with_the_api_unless_told_otherwise() -> None:
    index = FakeIndex()
    index.put(obj("a", "5"))
    kube = ReadsCounted(Cache({"models": index}))
    assert kube.get("models", "ns", "a") is not None
    assert kube.get("models", "ns", "b") is None
    assert kube.get("models", "ns", "c", confirm_absent=False) is None
    assert kube.get("deployments", "ns", "d", confirm_absent=False) is None  # not cached: asked
    assert kube.reads == ["models/b", "deployments/d"]


def step_body(phase: str | None, dataset: str = "ds", model: str = "base") -> dict[str, Any]:
    return {"spec": {"dataset": dataset, "model": model}, "status": {"phase": phase} if phase else {}}


def test_waiting_steps_wake_for_what_they_name_or_anything_while_creating() -> None:
    waiting = WaitingSteps()
    waiting.update("ns", "new", step_body(None))
    waiting.update("ns", "creating", step_body("JOB_STATE_CREATING", dataset="other"))
    waiting.update("ns", "running", step_body("JOB_STATE_RUNNING"))
    assert waiting.waking("ns", "datasets", "ds") == ["creating", "new"]
    assert waiting.waking("ns", "models", "base") == ["creating", "new"]
    assert waiting.waking("ns", "models", "s-out") == ["creating"]
    assert waiting.waking("elsewhere", "models", "base") == []
    waiting.update("ns", "new", step_body("JOB_STATE_PENDING"))
    waiting.update("ns", "creating", None)  # deleted
    assert waiting.waking("ns", "models", "base") == []
