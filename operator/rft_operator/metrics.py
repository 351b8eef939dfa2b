"""Prometheus metrics of the operator (served at :<metricsPort>/metrics)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from rft.api.reinforcement_step import StepPhase


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


class StateCollector(Collector):
    """Gauges read at scrape time from the running operator's state: the work queue's depth,
    whether this replica leads, and the ReinforcementSteps of the watch cache by phase. Until
    `bind` is called (the operator's start-up), it exports nothing."""

    def __init__(self) -> None:
        self._queue_depth: Callable[[], int] | None = None
        self._leading: Callable[[], bool] | None = None
        self._step_phases: Callable[[], Mapping[str, int]] | None = None

    def bind(
        self,
        *,
        queue_depth: Callable[[], int],
        leading: Callable[[], bool],
        step_phases: Callable[[], Mapping[str, int]],
    ) -> None:
        self._queue_depth, self._leading, self._step_phases = queue_depth, leading, step_phases

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self._queue_depth is None or self._leading is None or self._step_phases is None:
            return
        yield GaugeMetricFamily(
            "rft_workqueue_depth", "Objects waiting in the reconcile queue.", value=self._queue_depth()
        )
        yield GaugeMetricFamily(
            "rft_leader",
            "1 when this replica holds the leader lease (or leader election is off), else 0.",
            value=1.0 if self._leading() else 0.0,
        )
        counts = self._step_phases()
        steps = GaugeMetricFamily(
            "rft_steps", "ReinforcementSteps in the watched namespaces, by phase.", labels=["phase"]
        )
        for phase in [*(p.value for p in StepPhase), "NONE"]:
            steps.add_metric([phase], float(counts.get(phase, 0)))
        yield steps


STATE = StateCollector()
REGISTRY.register(STATE)
