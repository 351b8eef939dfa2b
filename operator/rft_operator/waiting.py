"""Which steps wait for a Dataset or Model: kept in memory from the steps' own watch events."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any


class WaitingSteps:
    """Which steps a Dataset or Model event should wake, kept from the steps' own watch events.

    A step waits for its references while its phase is unset (not reconciled yet) or CREATING.
    Unreconciled steps wake only for the objects they name (`spec.dataset`, `spec.model`);
    CREATING ones for any Dataset or Model of their namespace (a LoRA source's base model is not
    named in the step). No API call: listing every step on every Dataset or Model event made a
    burst of N steps, each registering a Model, cost O(N^2).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._named: dict[tuple[str, str, str], set[str]] = {}  # (namespace, plural, name) -> steps
        self._creating: dict[str, set[str]] = {}  # namespace -> steps
        self._entries: dict[tuple[str, str], list[tuple[str, str, str]]] = {}

    def update(self, namespace: str, name: str, body: Mapping[str, Any] | None) -> None:
        """Record step `name` as the watch now shows it (None: deleted)."""
        with self._lock:
            self._forget(namespace, name)
            if body is None:
                return
            phase = (body.get("status") or {}).get("phase")
            if phase is None:
                spec = body.get("spec") or {}
                keys = [
                    (namespace, "datasets", str(spec.get("dataset", ""))),
                    (namespace, "models", str(spec.get("model", ""))),
                ]
                for key in keys:
                    self._named.setdefault(key, set()).add(name)
                self._entries[(namespace, name)] = keys
            elif phase == "JOB_STATE_CREATING":
                self._creating.setdefault(namespace, set()).add(name)

    def waking(self, namespace: str, plural: str, name: str) -> list[str]:
        """The steps to look again when `plural`/`name` in `namespace` changed."""
        with self._lock:
            return sorted(
                self._named.get((namespace, plural, name), set()) | self._creating.get(namespace, set())
            )

    def _forget(self, namespace: str, name: str) -> None:
        for key in self._entries.pop((namespace, name), []):
            steps = self._named.get(key)
            if steps is not None:
                steps.discard(name)
                if not steps:
                    del self._named[key]
        creating = self._creating.get(namespace)
        if creating is not None:
            creating.discard(name)
            if not creating:
                del self._creating[namespace]
