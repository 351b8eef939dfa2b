"""Prometheus metrics of the operator (served at :<metricsPort>/metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram


class _Metrics:
    def __init__(self) -> None:
        self.reconciles = Counter("rft_reconciles_total", "Reconciles run, by kind.", ["kind"])
        self.errors = Counter(
            "rft_reconcile_errors_total", "Reconciles that raised, by kind and class.", ["kind", "error"]
        )
        self.steps_finished = Counter(
            "rft_steps_finished_total", "ReinforcementSteps that ended, by phase.", ["phase"]
        )
        self.time_to_job = Histogram(
            "rft_step_time_to_job_seconds",
            "From a ReinforcementStep's creation to its training Job's creation.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
        )
        self.api_writes = Counter(
            "rft_api_writes_total",
            "Writes to the Kubernetes API, by verb and resource.",
            ["verb", "resource"],
        )
        self.api_reads = Counter(
            "rft_api_reads_total",
            "Reads from the Kubernetes API (not from the watch caches), by verb and resource.",
            ["verb", "resource"],
        )
        self.events_dropped = Counter(
            "rft_events_dropped_total",
            "Kubernetes Events dropped unposted (the event queue was full, or at shutdown).",
        )
        self.reconcile_seconds = Histogram(
            "rft_reconcile_seconds", "Time spent in one reconcile, by kind.", ["kind"]
        )


METRICS = _Metrics()
