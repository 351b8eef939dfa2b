"""The `rft` CLI rendering canned objects (typer's CliRunner): tables, descriptions, json/yaml, plots."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from rft.api import Dataset, Deployment, Model, ReinforcementStep
from rft.api.common import Resource
from rft.api.model import FileDigest
from rft.cli import app
from rft.cli.context import CliContext
from rft.cli.render import step_progress
from rft_devcluster.pytest_fixtures_storage import S3Bucket
from rich.console import Console
from typer.testing import CliRunner

R = TypeVar("R", bound=Resource)
NS = "team-a"


class CannedCluster:
    """A ClusterReader over fixed objects: what the CLI renders, without an API server."""

    def __init__(self, *resources: Resource) -> None:
        self.resources = list(resources)

    def get(self, kind: type[R], namespace: str, name: str) -> R | None:
        for resource in self.resources:
            if isinstance(resource, kind) and (resource.metadata.namespace, resource.metadata.name) == (
                namespace,
                name,
            ):
                return resource
        return None

    def list(self, kind: type[R], namespace: str, label_selector: str | None = None) -> list[R]:
        found = [r for r in self.resources if isinstance(r, kind) and r.metadata.namespace == namespace]
        return sorted(found, key=lambda r: r.metadata.name)


def _meta(name: str) -> dict[str, Any]:
    return {"name": name, "namespace": NS, "creationTimestamp": "2025-01-01T00:00:00Z", "generation": 1}


def _step(name: str, phase: str, **status: Any) -> ReinforcementStep:
    return ReinforcementStep.model_validate(
        {
            "metadata": _meta(name),
            "spec": {"dataset": "dataset-1", "model": "qwen3-0-6b", "outputModel": f"{name}-out"},
            "status": {"phase": phase, **status},
        }
    )


def _lora(name: str, parent: str | None, reward: str | None, loss: str | None) -> Model:
    metrics = {k: v for k, v in (("mean_reward", reward), ("loss", loss)) if v is not None}
    return Model.model_validate(
        {
            "metadata": _meta(name),
            "spec": {
                "kind": "lora",
                "location": f"s3://my-bucket/models/{name}/",
                "baseModel": "qwen3-0-6b",
                "parent": parent,
                "lora": {"rank": 16, "alpha": 32, "targetModules": ["q_proj"]},
                "training": {
                    "learningRate": "0.0001",
                    "maxContextLength": 8192,
                    "batchSize": 32768,
                    "epochs": 1,
                    "lossMethod": "grpo",
                    "step": f"{name}-step",
                },
                "metrics": metrics,
            },
            "status": {"phase": "READY"},
        }
    )


BASE = Model.model_validate(
    {
        "metadata": _meta("qwen3-0-6b"),
        "spec": {"kind": "base", "location": "s3://my-bucket/models/qwen3-0-6b/"},
        "status": {"phase": "READY"},
    }
)
CHAIN = [
    _lora("ckpt-1", None, "0.25", "0.91"),
    _lora("ckpt-2", "ckpt-1", "0.5", "0.62"),
    _lora("ckpt-3", "ckpt-2", "0.75", "0.40"),
]
RUNNING = _step(
    "step-running",
    "JOB_STATE_RUNNING",
    progress={"epoch": 1, "step": 3, "totalSteps": 10, "loss": "0.4321", "meanReward": "0.625"},
    conditions=[
        {
            "type": "Validated",
            "status": "True",
            "reason": "ReferencesResolved",
            "message": "dataset and model are ready",
            "lastTransitionTime": "2025-01-01T00:00:05Z",
        }
    ],
)
COMPLETED = _step("step-done", "JOB_STATE_COMPLETED", outputModel="accounts/team-a/models/step-done-out")
FAILED = _step("step-failed", "JOB_STATE_FAILED", message="trainer exited with code 1: CUDA out of memory")
DATASET_FAILED = Dataset.model_validate(
    {
        "metadata": _meta("dataset-bad"),
        "spec": {"source": "s3://my-bucket/datasets/dataset-bad.jsonl"},
        "status": {
            "phase": "FAILED",
            "errors": [
                {"line": 3, "message": "a row needs at least 2 samples"},
                {"line": 9, "message": "bad JSON"},
            ],
        },
    }
)
DATASET_READY = Dataset.model_validate(
    {
        "metadata": _meta("dataset-1"),
        "spec": {"source": "s3://my-bucket/datasets/dataset-1.jsonl"},
        "status": {"phase": "READY", "rows": 128, "format": "samples", "digest": "sha256:" + "a" * 64},
    }
)
DEPLOYMENT = Deployment.model_validate(
    {
        "metadata": _meta("base"),
        "spec": {"model": "qwen3-0-6b", "deploymentType": "on-demand", "accelerator": {"type": "CPU"}},
        "status": {
            "phase": "READY",
            "readyReplicas": 1,
            "servedModelName": "qwen3-0-6b",
            "endpoint": "http://base.team-a.svc:8000/v1",
        },
    }
)
EVERYTHING = CannedCluster(
    RUNNING, COMPLETED, FAILED, DATASET_FAILED, DATASET_READY, DEPLOYMENT, BASE, *CHAIN
)


def run(*args: str, cluster: CannedCluster = EVERYTHING) -> Any:
    context = CliContext(namespace=NS, reader=cluster, console=Console(width=250, color_system=None))
    return CliRunner().invoke(app, list(args), obj=context)


def test_steps_list_shows_phase_progress_reward_and_message() -> None:
    result = run("steps", "list")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[1:] if line.strip()}
    assert set(lines) == {"step-done", "step-failed", "step-running"}
    assert "JOB_STATE_RUNNING" in lines["step-running"]
    assert "epoch 1, step 3/10" in lines["step-running"]
    assert "0.4321" in lines["step-running"]
    assert "0.625" in lines["step-running"]
    assert "CUDA out of memory" in lines["step-failed"]
    assert result.output.splitlines()[0].split()[:3] == ["NAME", "PHASE", "DATASET"]


def test_steps_describe_shows_spec_status_and_conditions() -> None:
    result = run("steps", "describe", "step-running")
    assert result.exit_code == 0, result.output
    for expected in (
        "ReinforcementStep step-running",
        "training.learningRate",
        "1e-4",
        "progress.meanReward",
        "Conditions",
        "Validated",
        "ReferencesResolved",
        "dataset and model are ready",
    ):
        assert expected in result.output


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_list_as_json_and_yaml(fmt: str) -> None:
    result = run("datasets", "list", "-o", fmt)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output) if fmt == "json" else yaml.safe_load(result.output)
    assert data["kind"] == "List"
    assert [item["metadata"]["name"] for item in data["items"]] == ["dataset-1", "dataset-bad"]
    assert data["items"][1]["status"]["errors"][0] == {"line": 3, "message": "a row needs at least 2 samples"}


def test_describe_as_json_round_trips_the_object() -> None:
    result = run("deployments", "describe", "base", "-o", "json")
    assert result.exit_code == 0, result.output
    assert Deployment.model_validate(json.loads(result.output)) == DEPLOYMENT


def test_failed_dataset_shows_row_errors() -> None:
    listed = run("datasets", "list")
    assert "line 3: a row needs at least 2 samples (+1 more)" in listed.output
    described = run("datasets", "describe", "accounts/team-a/datasets/dataset-bad")
    assert described.exit_code == 0, described.output
    assert "Row errors" in described.output
    assert "bad JSON" in described.output


def test_models_and_deployments_lists() -> None:
    models = run("models", "list")
    assert models.exit_code == 0, models.output
    row = next(line for line in models.output.splitlines() if line.startswith("ckpt-2"))
    assert row.split()[:6] == ["ckpt-2", "lora", "READY", "qwen3-0-6b", "ckpt-1", "16"]
    deployments = run("deployments", "list")
    assert "on-demand" in deployments.output
    assert "qwen3-0-6b" in deployments.output


def test_empty_list_says_so() -> None:
    result = run("steps", "list", cluster=CannedCluster())
    assert result.exit_code == 0
    assert "No reinforcementsteps in namespace team-a." in result.output


def test_missing_object_is_a_one_line_error() -> None:
    result = run("models", "describe", "nope")
    assert result.exit_code == 1
    assert "Model 'nope' not found in namespace 'team-a'" in result.output


def test_bad_name_is_reported_with_the_argument() -> None:
    result = run("models", "describe", "accounts/team-a/deployments/base")
    assert result.exit_code == 1
    assert "NAME: 'accounts/team-a/deployments/base' names deployments" in result.output


def test_watch_of_a_finished_step_renders_once_and_sets_the_exit_code() -> None:
    done = run("steps", "watch", "step-done")
    assert done.exit_code == 0, done.output
    assert "JOB_STATE_COMPLETED" in done.output
    assert "accounts/team-a/models/step-done-out" in done.output
    failed = run("steps", "watch", "step-failed")
    assert failed.exit_code == 1
    assert "CUDA out of memory" in failed.output


def test_watch_follows_a_running_step_until_it_ends() -> None:
    class Progressing(CannedCluster):
        def __init__(self) -> None:
            super().__init__()
            self.snapshots = [
                RUNNING,
                _step("step-running", "JOB_STATE_WRITING_RESULTS"),
                _step("step-running", "JOB_STATE_COMPLETED", metrics={"mean_reward": "0.7"}),
            ]

        def get(self, kind: type[R], namespace: str, name: str) -> R | None:
            return self.snapshots.pop(0) if self.snapshots else None  # type: ignore[return-value]

    result = run("steps", "watch", "step-running", "--interval", "0.1", cluster=Progressing())
    assert result.exit_code == 0, result.output
    assert "JOB_STATE_COMPLETED" in result.output
    assert "metrics.mean_reward" in result.output


def test_watch_shows_a_progress_bar_the_latest_metrics_and_recent_curves() -> None:
    live = _step(
        "step-live",
        "JOB_STATE_RUNNING",
        progress={
            "epoch": 1,
            "step": 3,
            "totalSteps": 10,
            "loss": "0.3",
            "meanReward": "0.5",
            "metrics": {"kl": "0.0123", "grad_norm": "1.5"},
            "history": [
                {"step": 1, "loss": "0.9", "meanReward": "0.1"},
                {"step": 2, "loss": "0.5", "meanReward": "0.3"},
                {"step": 3, "loss": "0.3", "meanReward": "0.6"},
            ],
        },
    )
    # What `rft steps watch` redraws on every refresh.
    console = Console(width=250, color_system=None, record=True)
    console.print(step_progress(live))
    seen = console.export_text()
    assert "[█████████░░░░░░░░░░░░░░░░░░░░░] 3/10 (30%)" in seen
    assert "step.kl" in seen
    assert "0.0123" in seen
    assert "Loss, steps 1-3" in seen
    assert "█▃▁  0.3" in seen  # falling loss
    assert "▁▄█  0.6" in seen  # rising reward


def test_lineage_lists_the_chain_oldest_first() -> None:
    result = run("models", "lineage", "ckpt-3")
    assert result.exit_code == 0, result.output
    names = [line.split()[1] for line in result.output.splitlines()[1:] if line.strip()]
    assert names == ["qwen3-0-6b", "ckpt-1", "ckpt-2", "ckpt-3"]
    as_json = json.loads(run("models", "lineage", "ckpt-3", "-o", "json").output)
    assert [m["metadata"]["name"] for m in as_json["models"]] == names
    assert as_json["missing"] is None


def test_lineage_reports_a_missing_parent() -> None:
    result = run("models", "lineage", "ckpt-3", cluster=CannedCluster(CHAIN[1], CHAIN[2]))
    assert result.exit_code == 0, result.output
    assert "the chain stops at 'ckpt-1', which does not exist" in result.output


def test_plot_writes_a_png(tmp_path: Path) -> None:
    target = tmp_path / "out" / "reward.png"
    result = run("plot", "ckpt-3", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert f"wrote {target} (3 checkpoint(s))" in result.output
    data = target.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (600, 600)


def test_plot_refuses_a_chain_without_metrics(tmp_path: Path) -> None:
    bare = CannedCluster(BASE, _lora("lonely", None, None, None))
    result = run("plot", "lonely", "-o", str(tmp_path / "x.png"), cluster=bare)
    assert result.exit_code == 1
    assert "no checkpoint in the chain has spec.metrics" in result.output
    assert not (tmp_path / "x.png").exists()


def test_plot_of_a_base_model_is_an_error(tmp_path: Path) -> None:
    result = run("plot", "qwen3-0-6b", "-o", str(tmp_path / "x.png"))
    assert result.exit_code == 1
    assert "is a base model" in result.output


def test_namespace_option_overrides_the_context() -> None:
    result = run("--namespace", "elsewhere", "steps", "list")
    assert result.exit_code == 0
    assert "No reinforcementsteps in namespace elsewhere." in result.output


def test_help_lists_the_command_groups() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for group in ("steps", "datasets", "models", "deployments", "plot"):
        assert group in result.output


def _series_checkpoint(bucket_url: str, name: str, parent: str | None, steps: int, tmp: Path) -> Model:
    """A checkpoint whose per-step series (written by the trainer's own writer) is in the bucket."""
    from rft.storage import create_bytes  # noqa: PLC0415
    from rft_trainer.metrics_log import MetricsLog  # noqa: PLC0415

    log = MetricsLog(tmp / name)
    for step in range(1, steps + 1):
        log.record(
            step, 1, {"loss": 1.0 / step, "mean_reward": 0.1 * step, "kl": 0.01 * step, "grad_norm": 2.0}
        )
    log.close()
    data = (tmp / name / "metrics" / "steps.jsonl").read_bytes()
    location = f"{bucket_url}/models/{name}/"
    create_bytes(location + "metrics/steps.jsonl", data)
    model = _lora(name, parent, "0.5", "0.1")
    spec = model.spec.model_copy(
        update={
            "location": location,
            "files": [
                FileDigest(
                    path="metrics/steps.jsonl", sha256=hashlib.sha256(data).hexdigest(), size=len(data)
                )
            ],
        }
    )
    return model.model_copy(update={"spec": spec})


def test_plot_draws_per_step_curves_from_the_series_in_the_bucket(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    first = _series_checkpoint(s3_bucket.url, "run-1", None, 3, tmp_path)
    second = _series_checkpoint(s3_bucket.url, "run-2", "run-1", 2, tmp_path)
    cluster = CannedCluster(BASE, first, second)
    target = tmp_path / "steps.png"
    result = run("plot", "run-2", "-o", str(target), cluster=cluster)
    assert result.exit_code == 0, result.output
    assert f"wrote {target} (5 optimizer step(s) over 2 checkpoint(s))" in result.output
    data = target.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (800, 80 + 4 * 180)  # four panels: reward, loss, KL, grad norm

    # --per-checkpoint: one point per checkpoint, as before.
    old = run("plot", "run-2", "-o", str(tmp_path / "old.png"), "--per-checkpoint", cluster=cluster)
    assert "(2 checkpoint(s))" in old.output

    # A series that does not hash to what the Model records is refused.
    from rft.storage import write_bytes  # noqa: PLC0415

    write_bytes(f"{s3_bucket.url}/models/run-1/metrics/steps.jsonl", b'{"step": 1, "loss": 0}\n')
    tampered = run("plot", "run-2", "-o", str(tmp_path / "bad.png"), cluster=cluster)
    assert tampered.exit_code == 1
    assert "records" in tampered.output
    assert "sha256" in tampered.output
