"""The MLflow tracker against a real `mlflow server` on loopback, through the trainer's entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from rft.contracts.trainer_config import TrainerResult, parse_termination_message
from rft_devcluster.emulators import free_port
from rft_trainer.main import main
from rft_trainer.trackers import STEP_UID_TAG

from tests.trainer.trainer_testlib import ConfigFactory, jsonl, samples_row

pytestmark = pytest.mark.slow

ROWS = [samples_row(f"pick {i}", [("cat", 1.0), ("dog", 0.0), ("cat cat", 0.5)]) for i in range(4)]
METRICS = ("loss", "pg_loss", "kl", "clip_fraction", "entropy", "grad_norm", "lr", "tokens_per_second")


def _train(make_config: ConfigFactory, tmp_path: Path, name: str, tracking_uri: str, uid: str) -> Path:
    output = tmp_path / "out" / name
    config = make_config(
        dataset=jsonl(ROWS),
        output_url=str(output),
        output_model_name=name,
        termination_log=str(tmp_path / f"termination-{name}"),
        step_uid=uid,
        mlflow={"tracking_uri": tracking_uri, "experiment": "rft-tests"},
        training={"lora_rank": 4, "learning_rate": "1e-3", "batch_size": 128, "max_context_length": 64},
    )
    path = tmp_path / f"config-{name}.json"
    path.write_text(config.to_json())
    assert main(["--config", str(path)]) == 0
    assert isinstance(parse_termination_message(Path(config.termination_log).read_text()), TrainerResult)
    return output


def test_a_step_logs_every_optimizer_step_to_mlflow_and_a_retry_continues_its_run(
    make_config: ConfigFactory, tmp_path: Path, mlflow_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    output = _train(make_config, tmp_path, "model-1", mlflow_server, uid="5b0c-uid-1")
    lines = [json.loads(x) for x in (output / "metrics" / "steps.jsonl").read_text().splitlines()]
    steps = len(lines)
    assert steps >= 2

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("rft-tests")
    assert experiment is not None
    (run,) = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{STEP_UID_TAG}` = '5b0c-uid-1'"
    )
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "team-a/step-1"
    assert run.data.params["training.learningRate"] == "1e-3"
    assert run.data.tags["rft.output_model"] == "model-1"
    for name in METRICS:
        history = sorted(client.get_metric_history(run.info.run_id, name), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(1, steps + 1)), name
        assert [m.value for m in history] == pytest.approx([line[name] for line in lines], rel=1e-6), name

    # The same step's pod again (a retry): the same run, continued, not a second one.
    _train(make_config, tmp_path, "model-1-retry", mlflow_server, uid="5b0c-uid-1")
    (again,) = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{STEP_UID_TAG}` = '5b0c-uid-1'"
    )
    assert again.info.run_id == run.info.run_id
    assert again.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 2 * steps

    # Another step: its own run.
    _train(make_config, tmp_path, "model-2", mlflow_server, uid="5b0c-uid-2")
    runs = client.search_runs([experiment.experiment_id])
    assert {r.data.tags[STEP_UID_TAG] for r in runs} == {"5b0c-uid-1", "5b0c-uid-2"}


def test_an_unreachable_tracking_server_costs_a_warning_not_the_step(
    make_config: ConfigFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    nobody = f"http://127.0.0.1:{free_port()}"
    output = _train(make_config, tmp_path, "model-1", nobody, uid="uid-x")
    assert (output / "metrics" / "steps.jsonl").is_file()
    assert f"MLflow at {nobody}: cannot open the run, not tracking" in capsys.readouterr().err
