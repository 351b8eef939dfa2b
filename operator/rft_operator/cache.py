"""The operator's read side: objects as its watches last delivered them, and its own newer writes.

Kopf indices (see `main.py`) keep the latest body of every ReinforcementStep, Dataset, Model and
managed Job, and the managed pods by Job name; Kopf fills them from the initial listing before any
event handler runs, so no reconcile reads a half-filled cache. Reconcilers read through
`Kube.get`/`Kube.get_job`, which consult this cache first:

* a hit is at most as stale as the watch, and every status write carries the object's
  resourceVersion, so a decision made on a stale read fails with a conflict and runs again;
* a miss is confirmed with a live GET: absence decides things (no Job yet, output name free, the
  Job was deleted) that a lagging cache must not decide;
* what the operator itself just wrote (a created Job, a patched status) is kept until the watch
  delivers that version or a newer one, so the next reconcile does not act on the version before
  its own write (and does not spend a write on a conflict).

Objects are kept without `metadata.managedFields`, and handed out as deep copies: reconcilers may
mutate what they get.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

Obj = dict[str, Any]

MAX_WRITTEN = 4096
"""At most this many of the operator's own writes are kept waiting for their watch events."""


def trim(body: Mapping[str, Any]) -> Obj:
    """What the cache keeps of an object: everything but metadata.managedFields (shallow)."""
    meta = body.get("metadata") or {}
    return {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def resource_version(obj: Mapping[str, Any]) -> int:
    """The object's resourceVersion as a number (etcd's revision); 0 when it is not one."""
    value = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    return int(value) if value.isdigit() else 0


def _first(store: Any) -> Obj | None:
    """The one value of a Kopf index store (None when empty)."""
    for _ in range(3):  # Kopf's event loop may change the store while a worker thread reads it
        try:
            values: list[Obj] = list(store)
        except RuntimeError:
            continue
        return values[0] if values else None
    return None


class Cache:
    """Objects by (plural, namespace, name); pods by (namespace, Job name)."""

    def __init__(
        self, objects: Mapping[str, Mapping[Any, Any]], pods: Mapping[Any, Any] | None = None
    ) -> None:
        self._objects = dict(objects)  # plural -> Kopf index keyed by (namespace, name)
        self._pods = pods  # Kopf index keyed by (namespace, job name)
        self._lock = threading.Lock()
        self._written: OrderedDict[tuple[str, str, str], Obj] = OrderedDict()

    def covers(self, plural: str) -> bool:
        return plural in self._objects

    def get(self, plural: str, namespace: str, name: str) -> Obj | None:
        """The newest version known of the object (a copy), or None when the cache has none."""
        index = self._objects.get(plural)
        if index is None:
            return None
        key = (plural, namespace, name)
        try:
            watched = _first(index[(namespace, name)])
        except KeyError:
            watched = None
        with self._lock:
            written = self._written.get(key)
            if (
                written is not None
                and watched is not None
                and resource_version(watched) >= resource_version(written)
            ):
                del self._written[key]  # the watch has caught up
                written = None
        newest = written if written is not None else watched
        return copy.deepcopy(newest) if newest is not None else None

    def remember(self, plural: str, obj: Mapping[str, Any]) -> None:
        """Keep what the operator just wrote until the watch delivers it."""
        if plural not in self._objects or not obj.get("metadata"):
            return
        meta = obj["metadata"]
        key = (plural, str(meta.get("namespace", "")), str(meta.get("name", "")))
        with self._lock:
            self._written[key] = copy.deepcopy(trim(obj))
            self._written.move_to_end(key)
            while len(self._written) > MAX_WRITTEN:
                self._written.popitem(last=False)

    def forget(self, plural: str, namespace: str, name: str) -> None:
        with self._lock:
            self._written.pop((plural, namespace, name), None)

    def count_by_phase(self, plural: str) -> dict[str, int]:
        """How many cached objects of `plural` are in each status.phase ("NONE": no phase yet)."""
        index = self._objects.get(plural)
        counts: dict[str, int] = {}
        if index is None:
            return counts
        for _ in range(3):  # Kopf's event loop may change the index while a scrape reads it
            try:
                keys = list(index)
                break
            except RuntimeError:
                continue
        else:
            return counts
        for key in keys:
            try:
                obj = _first(index[key])
            except KeyError:
                continue
            if obj is None:
                continue
            phase = str((obj.get("status") or {}).get("phase") or "NONE")
            counts[phase] = counts.get(phase, 0) + 1
        return counts

    def pods(self, namespace: str, job_name: str) -> list[Obj] | None:
        """The Job's pods as the pod watch last showed them (copies); None without a pod index."""
        if self._pods is None:
            return None
        for _ in range(3):
            try:
                store = self._pods[(namespace, job_name)]
            except KeyError:
                return []
            try:
                return [copy.deepcopy(p) for p in list(store)]
            except RuntimeError:
                continue
        return None
