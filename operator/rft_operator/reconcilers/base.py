"""What every reconciler shares: the clock, status writes that skip no-ops, events on changes."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError
from rft.api.common import ApiModel, Condition, Resource

from rft_operator.kube import Kube, Obj

Clock = Callable[[], datetime]
log = logging.getLogger(__name__)
R = TypeVar("R", bound=Resource)

INVALID_REASON = "InvalidSpec"
_RELATIVE_FIELD = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(\[[0-9]+\])?(\.[A-Za-z_][A-Za-z0-9_]*(\[[0-9]+\])?)*: "
)
CHILD_REFUSED_REASON = "ChildRefused"


def describe_invalid(exc: ValidationError, most: int = 3) -> str:
    """`field.path: what is wrong` for the first errors of a stored object that does not parse
    (paths spelled as the API server spells them: spec.files[0].path)."""
    parts = []
    for error in exc.errors()[:most]:
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]).lstrip(".")
        message = error["msg"].removeprefix("Value error, ")
        if not path or message.startswith(path):
            parts.append(message)
        elif _RELATIVE_FIELD.match(message):  # a nested validator names its own field
            parts.append(f"{path}.{message}")
        else:
            parts.append(f"{path}: {message}")
    more = exc.error_count() - most
    return ("; ".join(parts) + (f" (and {more} more)" if more > 0 else ""))[:1024]


def try_parse(kind: type[R], raw: Obj) -> R | str:
    """The object, or what is wrong with it (naming the field)."""
    try:
        return kind.model_validate(raw)
    except ValidationError as exc:
        return describe_invalid(exc)


def refused_message(exc: ApiException) -> str:
    """The API server's own words for a refused write (they name the field)."""
    try:
        message = str(json.loads(exc.body or "{}").get("message") or "")
    except (ValueError, AttributeError):
        message = ""
    return (message or f"{exc.status} {exc.reason}")[:1024]


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
    failed_phase = "FAILED"
    summary_condition = "Ready"

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

    def parse_or_fail(self, kind: type[R], raw: Obj) -> R | None:
        """The stored object, or None after its status says FAILED naming the field that does not
        parse: an object the models refuse (a rule the schema cannot state, or a CRD older than the
        operator) is a permanent failure until its spec changes, never an endless retry."""
        parsed = try_parse(kind, raw)
        if not isinstance(parsed, str):
            return parsed
        self.fail_raw(raw, INVALID_REASON, f"invalid {raw.get('kind', self.plural)}: {parsed}")
        return None

    def create_job_or_fail(self, raw: Obj, namespace: str, manifest: Obj) -> bool:
        """Create the Job `manifest` for `raw`; one the API server refuses (422: what only it can
        see) fails `raw` for good with ChildRefused. Whether the Job was created."""
        try:
            self.kube.create_job(namespace, manifest)
        except ApiException as exc:
            if exc.status != 422:
                raise
            name = manifest["metadata"]["name"]
            self.fail_raw(
                raw, CHILD_REFUSED_REASON, f"the API server refused Job {name}: {refused_message(exc)}"
            )
            return False
        return True

    def fail_raw(self, raw: Obj, reason: str, message: str) -> None:
        """FAILED with the summary condition False, written without the models (idempotent)."""
        meta = raw["metadata"]
        gen = meta.get("generation")
        status = raw.get("status")
        old: dict[str, Any] = status if isinstance(status, dict) else {}
        conditions = [c for c in old.get("conditions") or [] if isinstance(c, dict)]
        current = next((c for c in conditions if c.get("type") == self.summary_condition), {})
        if (
            old.get("phase") == self.failed_phase
            and old.get("observedGeneration") == gen
            and (current.get("reason"), current.get("message")) == (reason, message)
        ):
            return
        condition = {
            "type": self.summary_condition,
            "status": "False",
            "reason": reason,
            "message": message,
            "lastTransitionTime": self.clock().strftime("%Y-%m-%dT%H:%M:%SZ"),
            "observedGeneration": gen,
        }
        patch: dict[str, Any] = {
            "phase": self.failed_phase,
            "observedGeneration": gen,
            "conditions": [*(c for c in conditions if c.get("type") != self.summary_condition), condition],
        }
        if self.plural in ("reinforcementsteps", "deployments"):
            patch["message"] = message
        self.kube.patch_status(self.plural, meta["namespace"], meta["name"], patch)
        self.kube.record_event(raw, "Warning", reason, message)
        log.info("%s %s/%s: FAILED: %s", self.plural, meta["namespace"], meta["name"], message)
