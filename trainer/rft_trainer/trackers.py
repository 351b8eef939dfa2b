"""Experiment trackers the per-step series is also sent to: MLflow (optional, from the config).

The MLflow run of a step is keyed by the step's uid (tag ``rft.step_uid``): the first pod creates
it, a retried or resumed pod finds it and continues logging into the same run. Credentials never
pass through the config: MLflow's client reads ``MLFLOW_TRACKING_TOKEN`` or
``MLFLOW_TRACKING_USERNAME``/``_PASSWORD`` from the pod's environment (the operator fills them from
the Secret its admin names), or the tracking server trusts the pod's workload identity.

A tracker never fails the training: the checkpoint and its metrics files are the record; a
tracking server that is down costs a warning in the log and the rest of the run's points.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from rft.api.reinforcement_step import MlflowTracking

STEP_UID_TAG = "rft.step_uid"
# MLflow's client retries a failed request 7 times with exponential backoff by default (minutes);
# a tracker must not hold the training up that long.
_CLIENT_ENV_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


class Tracker(Protocol):
    """Receives each optimizer step's values and the run's end."""

    def log(self, step: int, values: Mapping[str, float]) -> None: ...

    def finish(self, succeeded: bool) -> None: ...


class MlflowTracker:
    """One MLflow run per step, found again by the step's uid."""

    def __init__(
        self,
        settings: MlflowTracking,
        *,
        run_key: str,
        run_name: str,
        params: Mapping[str, str],
        tags: Mapping[str, str],
    ) -> None:
        for name, value in _CLIENT_ENV_DEFAULTS.items():
            os.environ.setdefault(name, value)
        from mlflow.tracking import MlflowClient  # noqa: PLC0415 - only runs that track need it

        self.client = MlflowClient(tracking_uri=settings.tracking_uri)
        experiment = self.client.get_experiment_by_name(settings.experiment)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self.client.create_experiment(settings.experiment)
        )
        found = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{STEP_UID_TAG}` = '{run_key}'", max_results=1
        )
        if found:
            self.run_id: str = found[0].info.run_id
            self.resumed = True
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            run = self.client.create_run(
                experiment_id, run_name=run_name, tags={**tags, STEP_UID_TAG: run_key}
            )
            self.run_id = run.info.run_id
            self.resumed = False
            from mlflow.entities import Param  # noqa: PLC0415

            # Params are write-once in MLflow: logged when the run is created, never again.
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in params.items()])

    def log(self, step: int, values: Mapping[str, float]) -> None:
        from mlflow.entities import Metric  # noqa: PLC0415

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()]
        )

    def finish(self, succeeded: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if succeeded else "FAILED")


class Guarded:
    """A tracker whose errors become one warning, after which it stops (training goes on)."""

    def __init__(self, name: str, tracker: Tracker, warn: Callable[[str], None]) -> None:
        self.name = name
        self._tracker: Tracker | None = tracker
        self._warn = warn

    def _call(self, what: str, call: Callable[[Tracker], Any]) -> None:
        if self._tracker is None:
            return
        try:
            call(self._tracker)
        except Exception as exc:
            self._tracker = None
            self._warn(
                f"{self.name}: {what} failed, no more points are sent to it: {type(exc).__name__}: {exc}"
            )

    def log(self, step: int, values: Mapping[str, float]) -> None:
        self._call(f"logging step {step}", lambda t: t.log(step, values))

    def finish(self, succeeded: bool) -> None:
        self._call("ending the run", lambda t: t.finish(succeeded))


def open_mlflow(
    settings: MlflowTracking,
    *,
    run_key: str,
    run_name: str,
    params: Mapping[str, str],
    tags: Mapping[str, str],
    warn: Callable[[str], None],
) -> Guarded | None:
    """The MLflow tracker, or None (with a warning) when the server cannot be reached."""
    try:
        tracker = MlflowTracker(settings, run_key=run_key, run_name=run_name, params=params, tags=tags)
    except Exception as exc:
        warn(
            f"MLflow at {settings.tracking_uri}: cannot open the run, not tracking: {type(exc).__name__}: {exc}"
        )
        return None
    warn(
        f"MLflow at {settings.tracking_uri}: {'continuing' if tracker.resumed else 'created'} run "
        f"{tracker.run_id} in experiment {settings.experiment!r}"
    )
    return Guarded("MLflow", tracker, warn)
