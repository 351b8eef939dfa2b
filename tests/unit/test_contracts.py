"""The pod contracts (rft.contracts): one set of exit codes, and entry points that are real,
runnable modules."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from rft.contracts import entrypoints, exit_codes, model_check, trainer_config, validation_summary


def test_every_contract_names_the_shared_exit_codes() -> None:
    bad_input = (trainer_config.EXIT_BAD_INPUT, validation_summary.EXIT_INVALID, model_check.EXIT_INVALID)
    retryable = (trainer_config.EXIT_INFRASTRUCTURE, validation_summary.EXIT_STORAGE, model_check.EXIT_STORAGE)
    ok = (trainer_config.EXIT_OK, validation_summary.EXIT_OK, model_check.EXIT_OK)
    assert set(bad_input) == {exit_codes.EXIT_BAD_INPUT}
    assert set(retryable) == {exit_codes.EXIT_RETRYABLE}
    assert set(ok) == {exit_codes.EXIT_OK}
    assert len({exit_codes.EXIT_OK, exit_codes.EXIT_BAD_INPUT, exit_codes.EXIT_RETRYABLE}) == 3
    limits = {trainer_config.TERMINATION_MESSAGE_LIMIT, model_check.TERMINATION_MESSAGE_LIMIT}
    assert limits == {exit_codes.TERMINATION_MESSAGE_LIMIT}


@pytest.mark.parametrize("module", entrypoints.ALL)
def test_each_entry_point_is_a_runnable_module(module: str) -> None:
    spec = importlib.util.find_spec(module)
    assert spec is not None, module
    assert spec.origin is not None, module
    if spec.submodule_search_locations is not None:
        # A package runs its __main__.
        assert importlib.util.find_spec(f"{module}.__main__") is not None, module
    else:
        assert 'if __name__ == "__main__":' in Path(spec.origin).read_text(), module


def test_python_command() -> None:
    assert entrypoints.python_command(entrypoints.MODEL_FETCH, "a", "b") == ["python", "-m", "rft.pods.fetch", "a", "b"]
