"""What every reconciler shares: the clock, status writes that skip no-ops, events on changes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from rft.api.common import ApiModel, Condition

from rft_operator.kube import Kube, Obj

Clock = Callable[[], datetime]
log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A merge patch turning `old` into `new` (keys that disappear are set to null)."""
    patch: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch


class PhasedStatus(Protocol):
    phase: Any
    conditions: list[Condition]


class Reconciler:
    """Base of the per-kind reconcilers: `sync(namespace, name)` returns seconds until the next
    look (None: only on the next event)."""

    plural: str

    def __init__(self, kube: Kube, clock: Clock = utcnow) -> None:
        self.kube = kube
        self.clock = clock

    def write_status(self, raw: Obj, old: ApiModel, new: ApiModel) -> bool:
        """Patch the status subresource when something changed; True when written."""
        old_wire, new_wire = old.to_wire(), new.to_wire()
        if old_wire == new_wire:
            return False
        patch = status_patch(old_wire, new_wire)
        meta = raw["metadata"]
        updated = self.kube.patch_status(
            self.plural, meta["namespace"], meta["name"], patch, resource_version=meta.get("resourceVersion")
        )
        if updated is not None:  # later writes in the same pass build on this version
            meta["resourceVersion"] = updated["metadata"]["resourceVersion"]
        return True

    def write_phase(self, raw: Obj, old: PhasedStatus, new: PhasedStatus) -> None:
        """Write the status; when its phase changed, say so in an Event (a Warning named for the
        Ready condition's reason when it FAILED) and in the log."""
        if not self.write_status(raw, old, new) or new.phase == old.phase:  # type: ignore[arg-type]
            return
        ready = next((c for c in new.conditions if c.type == "Ready"), None)
        message = ready.message if ready else str(new.phase)
        failed = new.phase == "FAILED"
        reason = ready.reason if failed and ready else str(new.phase).capitalize()
        self.kube.record_event(raw, "Warning" if failed else "Normal", reason, message)
        meta = raw["metadata"]
        log.info(
            "%s %s/%s: %s -> %s: %s",
            self.plural,
            meta["namespace"],
            meta["name"],
            old.phase,
            new.phase,
            message,
        )
