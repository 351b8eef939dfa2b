"""Bad datasets through the trainer's entry point: exit 1, reason, line number and what is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rft.contracts.trainer_config import TrainerFailure, parse_termination_message
from rft_trainer.main import main

from tests.trainer.trainer_testlib import ConfigFactory, jsonl, samples_row

GOOD = samples_row("say an animal", [("cat", 1.0), ("dog", 0.0)])
GOOD_LINE = json.dumps(GOOD).encode()


def _sample(content: Any = "cat", *, role: str = "assistant", evals: Any = None, prompt: str = "hi") -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": prompt}, {"role": role, "content": content}],
        "evals": {"score": 1.0} if evals is None else evals,
    }


def _row(*samples: dict[str, Any]) -> bytes:
    return json.dumps({"samples": list(samples)}).encode()


# (case id, dataset bytes, config overrides, line, expected text in the message)
CASES: list[tuple[str, bytes, dict[str, Any], int, str]] = [
    ("not-json", GOOD_LINE + b'\n{"samples": [\n', {}, 2, "not valid JSON"),
    ("not-an-object", GOOD_LINE + b"\n" + GOOD_LINE + b"\n[1, 2]\n", {}, 3, "a row must be a JSON object, got an array"),
    ("no-samples-key", GOOD_LINE + b'\n{"rows": []}\n', {}, 2, "missing 'samples'"),
    ("one-sample", GOOD_LINE + b"\n" + _row(_sample()) + b"\n", {}, 2, "needs at least 2"),
    ("no-evals", GOOD_LINE + b"\n" + json.dumps({"samples": [_sample(), {"messages": _sample()["messages"]}]}).encode() + b"\n", {}, 2, "samples[1] has no 'evals'"),
    ("reward-string", GOOD_LINE + b"\n" + _row(_sample(), _sample(evals={"score": "high"})) + b"\n", {}, 2, "samples[1].evals.score must be a number"),
    ("reward-boolean", GOOD_LINE + b"\n" + _row(_sample(evals={"score": True}), _sample()) + b"\n", {}, 2, "samples[0].evals.score is a boolean"),
    ("reward-nan", GOOD_LINE + b'\n{"samples": [' + json.dumps(_sample()).encode() + b', {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}], "evals": {"score": NaN}}]}\n', {}, 2, "samples[1].evals.score is NaN, which is not allowed"),
    ("last-not-assistant", GOOD_LINE + b"\n" + _row(_sample(), _sample(role="user")) + b"\n", {}, 2, "the last message must be the assistant's completion"),
    ("unknown-role", GOOD_LINE + b"\n" + _row(_sample(role="robot"), _sample()) + b"\n", {}, 2, "samples[0].messages[1].role is 'robot'"),
    ("empty-content", GOOD_LINE + b"\n" + _row(_sample(), _sample(content="  ")) + b"\n", {}, 2, "samples[1].messages[1].content is empty"),
    ("content-not-string", GOOD_LINE + b"\n" + _row(_sample(content=42), _sample()) + b"\n", {}, 2, "content must be a string"),
    ("prompts-differ", GOOD_LINE + b"\n" + _row(_sample(prompt="a"), _sample(prompt="b")) + b"\n", {}, 2, "prompt turns differ"),
    ("reward-keys-differ", GOOD_LINE + b"\n" + _row(_sample(evals={"score": 1}), _sample(evals={"other": 1})) + b"\n", {}, 2, "same reward keys"),
    ("blank-line-inside", GOOD_LINE + b"\n\n" + GOOD_LINE + b"\n", {}, 2, "blank lines are allowed only at the end"),
    ("invalid-utf8", GOOD_LINE + b'\n{"samples": "\xff\xfe"}\n', {}, 2, "not valid UTF-8"),
    ("two-rewards-no-weights", GOOD_LINE.replace(b'"score"', b'"a": 1, "b"') + b"\n", {}, 1, "rewards have 2 keys (a, b)"),
    ("weight-for-missing-key", GOOD_LINE + b"\n", {"reward_weights": {"accuracy": "1"}}, 1, "missing from the rewards: accuracy"),
    ("wrong-format", GOOD_LINE + b"\n", {"dataset_format": "prompt-completions"}, 1, "the row is in the samples format"),
    ("empty-dataset", b"", {}, 0, "the dataset has no rows"),
]


@pytest.fixture
def run_trainer(make_config: ConfigFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # main() sets it; keep the change inside the test

    def run(dataset: bytes, **overrides: Any) -> tuple[int, TrainerFailure]:
        config = make_config(dataset, **overrides)
        path = tmp_path / "config.json"
        path.write_text(config.to_json())
        code = main(["--config", str(path)])
        result = parse_termination_message(Path(config.termination_log).read_text())
        assert isinstance(result, TrainerFailure), result
        return code, result

    return run


@pytest.mark.parametrize(("dataset", "overrides", "line", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_dataset_stops_the_run_with_line_and_reason(
    run_trainer: Any, dataset: bytes, overrides: dict[str, Any], line: int, text: str
) -> None:
    code, failure = run_trainer(dataset, **overrides)
    assert code == 1
    assert failure.reason == "InvalidDataset"
    assert failure.message.startswith(f"line {line}: ")
    assert text in failure.message


def test_sampling_logprobs_that_do_not_fit_the_tokenizer_are_refused(run_trainer: Any) -> None:
    row = GOOD | {"samples": [dict(s) for s in GOOD["samples"]]}
    row["samples"][1]["logprobs"] = [-0.1] * 30
    code, failure = run_trainer(jsonl([GOOD, row]))
    assert code == 1
    assert failure.reason == "InvalidDataset"
    assert failure.message.startswith("line 2: samples[1] has 30 logprobs but tokenizes to")


def test_no_model_is_loaded_and_nothing_is_written_for_a_bad_dataset(
    run_trainer: Any, make_config: ConfigFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run_trainer(GOOD_LINE + b"\n[]\n")
    assert code == 1
    out = capsys.readouterr()
    phases = [json.loads(line)["phase"] for line in out.out.splitlines() if line.startswith("{")]
    assert "training" not in phases
    assert phases[-1] == "failed"
    assert not Path(make_config(b"").output_url).exists()
