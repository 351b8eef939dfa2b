"""Turning API objects into tables, descriptions, JSON and YAML for the terminal. No I/O."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import yaml
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from rft.api.common import Condition, Resource
from rft.api.dataset import Dataset
from rft.api.deployment import Deployment
from rft.api.model import Model
from rft.api.reinforcement_step import ReinforcementStep
from rft.sdk.lineage import Lineage

OutputFormat = Literal["table", "json", "yaml"]
R = TypeVar("R", bound=Resource)
Column = tuple[str, Callable[[Any], str]]

PHASE_STYLES = {
    "READY": "green",
    "JOB_STATE_COMPLETED": "green",
    "FAILED": "red",
    "JOB_STATE_FAILED": "red",
    "JOB_STATE_CANCELLED": "yellow",
    "JOB_STATE_EXPIRED": "yellow",
}


def wire(resource: Resource) -> dict[str, Any]:
    """The object as the API server stores it (camelCase, unset fields left out)."""
    return resource.model_dump(mode="json", by_alias=True, exclude_none=True)


def dump(data: Any, fmt: str) -> str:
    """JSON (indented) or YAML text of plain data; `fmt` is "json" or "yaml"."""
    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=False) + "\n"
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    raise ValueError(f"output: unknown format {fmt!r}; expected json or yaml")


def dump_resources(resources: Sequence[Resource], fmt: str) -> str:
    """A list of objects in the shape `kubectl get -o json` prints (`kind: List`)."""
    return dump({"apiVersion": "v1", "kind": "List", "items": [wire(r) for r in resources]}, fmt)


def age(resource: Resource, now: datetime | None = None) -> str:
    """How long ago the object was created, kubectl style (`42s`, `5m`, `3h`, `2d`), or '' if unknown."""
    created = (resource.metadata.model_extra or {}).get("creationTimestamp")
    if not isinstance(created, str):
        return ""
    try:
        when = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return ""
    seconds = int(((now or datetime.now(UTC)) - when).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def summary_message(resource: Resource) -> str:
    """The status message, else the message of a condition that is not True, else ''."""
    status = getattr(resource, "status", None)
    message = getattr(status, "message", None)
    if message:
        return str(message)
    conditions: list[Condition] = getattr(status, "conditions", [])
    for condition in conditions:
        if condition.status != "True" and condition.message:
            return condition.message
    return ""


def phase_text(phase: object) -> Text:
    """A phase, coloured by how good it is."""
    text = str(phase) if phase else "-"
    return Text(text, style=PHASE_STYLES.get(text, ""))


def _or_dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def _step_progress(step: ReinforcementStep) -> str:
    progress = step.status.progress
    if progress is None:
        return "-"
    parts = []
    if progress.epoch is not None:
        parts.append(f"epoch {progress.epoch}")
    if progress.step is not None:
        total = f"/{progress.total_steps}" if progress.total_steps is not None else ""
        parts.append(f"step {progress.step}{total}")
    return ", ".join(parts) or "-"


def _dataset_message(dataset: Dataset) -> str:
    if dataset.status.errors:
        first = dataset.status.errors[0]
        more = f" (+{len(dataset.status.errors) - 1} more)" if len(dataset.status.errors) > 1 else ""
        return f"line {first.line}: {first.message}{more}"
    return summary_message(dataset)


STEP_COLUMNS: list[Column] = [
    ("NAME", lambda s: s.metadata.name),
    ("PHASE", lambda s: s.status.phase),
    ("DATASET", lambda s: s.spec.dataset),
    ("MODEL", lambda s: s.spec.model),
    ("OUTPUT", lambda s: s.spec.output_model),
    ("PROGRESS", _step_progress),
    ("LOSS", lambda s: _or_dash(s.status.progress and s.status.progress.loss)),
    ("REWARD", lambda s: _or_dash(s.status.progress and s.status.progress.mean_reward)),
    ("AGE", age),
    ("MESSAGE", summary_message),
]
DATASET_COLUMNS: list[Column] = [
    ("NAME", lambda d: d.metadata.name),
    ("PHASE", lambda d: d.status.phase),
    ("ROWS", lambda d: _or_dash(d.status.rows)),
    ("FORMAT", lambda d: _or_dash(d.status.format)),
    ("SOURCE", lambda d: d.spec.source),
    ("AGE", age),
    ("MESSAGE", _dataset_message),
]
MODEL_COLUMNS: list[Column] = [
    ("NAME", lambda m: m.metadata.name),
    ("KIND", lambda m: m.spec.kind),
    ("PHASE", lambda m: m.status.phase),
    ("BASE", lambda m: _or_dash(m.spec.base_model)),
    ("PARENT", lambda m: _or_dash(m.spec.parent)),
    ("RANK", lambda m: _or_dash(m.spec.lora.rank if m.spec.lora else None)),
    ("REWARD", lambda m: _or_dash(m.spec.metrics.get("mean_reward"))),
    ("LOSS", lambda m: _or_dash(m.spec.metrics.get("loss"))),
    ("AGE", age),
    ("MESSAGE", summary_message),
]
DEPLOYMENT_COLUMNS: list[Column] = [
    ("NAME", lambda d: d.metadata.name),
    ("TYPE", lambda d: d.spec.deployment_type),
    ("MODEL", lambda d: d.spec.model),
    ("BASE", lambda d: _or_dash(d.spec.base_deployment)),
    ("PHASE", lambda d: d.status.phase),
    ("READY", lambda d: _or_dash(d.status.ready_replicas)),
    ("SERVED-AS", lambda d: _or_dash(d.status.served_model_name)),
    ("AGE", age),
    ("MESSAGE", summary_message),
]
COLUMNS: dict[type[Resource], list[Column]] = {
    ReinforcementStep: STEP_COLUMNS,
    Dataset: DATASET_COLUMNS,
    Model: MODEL_COLUMNS,
    Deployment: DEPLOYMENT_COLUMNS,
}


def list_table(kind: type[Resource], resources: Sequence[Resource]) -> Table:
    """One row per object, with the kind's columns."""
    columns = COLUMNS[kind]
    table = Table(box=None, pad_edge=False, header_style="bold")
    for header, _ in columns:
        table.add_column(header, overflow="fold")
    for resource in resources:
        cells: list[RenderableType] = []
        for header, cell in columns:
            value = cell(resource)
            cells.append(phase_text(value) if header == "PHASE" else Text(_or_dash(value)))
        table.add_row(*cells)
    return table


def flatten(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts as dotted `key: value` pairs; lists of scalars joined with commas."""
    if isinstance(data, dict):
        pairs: list[tuple[str, str]] = []
        for key, value in data.items():
            pairs.extend(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return pairs
    if isinstance(data, list):
        if all(not isinstance(item, dict | list) for item in data):
            return [(prefix, ", ".join(str(item) for item in data) or "[]")]
        pairs = []
        for index, item in enumerate(data):
            pairs.extend(flatten(item, f"{prefix}[{index}]"))
        return pairs
    return [(prefix, str(data))]


def _fields_table(title: str, pairs: list[tuple[str, str]]) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=None, show_header=False)
    table.add_column("field", style="cyan")
    table.add_column("value", overflow="fold")
    for key, value in pairs:
        table.add_row(key, value)
    return table


def conditions_table(conditions: Sequence[Condition]) -> Table:
    """The conditions with type, status, reason, message and last transition."""
    table = Table(title="Conditions", title_justify="left", title_style="bold", box=None, header_style="bold")
    for header in ("TYPE", "STATUS", "REASON", "MESSAGE", "SINCE"):
        table.add_column(header, overflow="fold")
    for condition in conditions:
        since = condition.last_transition_time.isoformat() if condition.last_transition_time else "-"
        style = "green" if condition.status == "True" else ("red" if condition.status == "False" else "")
        table.add_row(
            condition.type,
            Text(condition.status, style=style),
            condition.reason or "-",
            condition.message or "-",
            since,
        )
    return table


def describe(resource: Resource) -> Group:
    """A full description: identity, spec, status fields, conditions, and a dataset's row errors."""
    data = wire(resource)
    status = dict(data.get("status") or {})
    conditions = getattr(getattr(resource, "status", None), "conditions", [])
    status.pop("conditions", None)
    errors = status.pop("errors", None)
    kind = type(resource).crd.kind
    header = [
        ("Kind", kind),
        ("Name", resource.metadata.name),
        ("Namespace", resource.metadata.namespace),
        ("Phase", _or_dash(status.get("phase"))),
        ("Message", _or_dash(summary_message(resource))),
    ]
    parts: list[RenderableType] = [
        _fields_table(f"{kind} {resource.metadata.name}", header),
        _fields_table("Spec", flatten(data.get("spec") or {})),
        _fields_table("Status", flatten(status) or [("-", "no status reported yet")]),
    ]
    if conditions:
        parts.append(conditions_table(conditions))
    if errors:
        table = Table(
            title="Row errors", title_justify="left", title_style="bold", box=None, header_style="bold"
        )
        table.add_column("LINE")
        table.add_column("MESSAGE", overflow="fold")
        for error in errors:
            table.add_row(str(error.get("line")), str(error.get("message")))
        parts.append(table)
    return Group(*parts)


_BLOCKS = "▁▂▃▄▅▆▇█"


def progress_bar(done: int | None, total: int | None, width: int = 30) -> str:
    """A text progress bar, e.g. `[#########.........] 3/10 (30%)`; '-' when the total is unknown."""
    if not total or done is None:
        return "-"
    filled = min(width, round(width * done / total))
    return f"[{'█' * filled}{'░' * (width - filled)}] {done}/{total} ({100 * done / total:.0f}%)"


def sparkline(values: list[str | None]) -> str:
    """The values as one line of block characters (lowest to highest), with the last value."""
    numbers = []
    for value in values:
        try:
            numbers.append(float(value) if value is not None else None)
        except ValueError:
            numbers.append(None)
    known = [n for n in numbers if n is not None]
    if not known:
        return "-"
    low, high = min(known), max(known)
    span = (high - low) or 1.0
    line = "".join(
        " " if n is None else _BLOCKS[round((n - low) / span * (len(_BLOCKS) - 1))] for n in numbers
    )
    return f"{line}  {known[-1]:.4g}"


def step_progress(step: ReinforcementStep) -> Table:
    """The live view of `rft steps watch`: phase, epoch/step, loss, reward, message."""
    progress = step.status.progress
    rows = [
        ("Step", step.metadata.name),
        ("Phase", str(step.status.phase or "JOB_STATE_CREATING")),
        ("Epoch", _or_dash(progress.epoch if progress else None)),
        (
            "Optimizer step",
            _or_dash(progress.step if progress else None)
            + (f" / {progress.total_steps}" if progress and progress.total_steps is not None else ""),
        ),
        ("Progress", progress_bar(progress.step, progress.total_steps) if progress else "-"),
        ("Loss", _or_dash(progress.loss if progress else None)),
        ("Mean reward", _or_dash(progress.mean_reward if progress else None)),
        ("Output model", step.status.output_model or step.spec.output_model),
        ("Message", _or_dash(summary_message(step))),
    ]
    if progress is not None:
        rows.extend((f"step.{key}", value) for key, value in progress.metrics.items())
        if progress.history:
            first, last = progress.history[0].step, progress.history[-1].step
            rows.append((f"Loss, steps {first}-{last}", sparkline([p.loss for p in progress.history])))
            rows.append(
                (f"Reward, steps {first}-{last}", sparkline([p.mean_reward for p in progress.history]))
            )
    for key, value in step.status.metrics.items():
        rows.append((f"metrics.{key}", value))
    return _fields_table(f"ReinforcementStep {step.metadata.name}", rows)


def lineage_table(chain: Lineage) -> Table:
    """Checkpoints oldest first, with parent, producing step, reward and loss."""
    table = Table(box=None, header_style="bold")
    for header in ("#", "MODEL", "KIND", "PARENT", "STEP", "REWARD", "LOSS", "PHASE"):
        table.add_column(header, overflow="fold")
    for index, model in enumerate(chain.models):
        training = model.spec.training
        table.add_row(
            str(index),
            model.metadata.name,
            model.spec.kind,
            _or_dash(model.spec.parent or model.spec.base_model),
            _or_dash(training.step if training else None),
            _or_dash(model.spec.metrics.get("mean_reward")),
            _or_dash(model.spec.metrics.get("loss")),
            phase_text(model.status.phase),
        )
    return table
