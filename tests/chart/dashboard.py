"""The metric names the chart's Grafana dashboard queries (a plain module: tests import it)."""

from __future__ import annotations

import json
import re
from pathlib import Path

DASHBOARD = (
    Path(__file__).resolve().parents[2] / "charts" / "rft-operator" / "dashboards" / "rft-operator.json"
)
_NAME = re.compile(r"(?<![A-Za-z0-9_:])((?:rft_|vllm:)[A-Za-z0-9_:]*)")


def queries() -> list[str]:
    """Every PromQL expression of the dashboard's panels."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def metric_names(prefix: str) -> set[str]:
    """The metric (sample) names starting with `prefix` in the dashboard's queries."""
    return {name for expr in queries() for name in _NAME.findall(expr) if name.startswith(prefix)}
