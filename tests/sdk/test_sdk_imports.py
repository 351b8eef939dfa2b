"""`import rft` and `import rft.api` stay light for the operator and the trainer; the SDK loads lazily."""

from __future__ import annotations

import json
import subprocess
import sys


def _modules_after(code: str) -> dict[str, bool]:
    probe = (
        f"{code}\n"
        "import json, sys\n"
        "print(json.dumps({m: m in sys.modules for m in ('kubernetes', 'openai', 'typer', 'matplotlib')}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    loaded: dict[str, bool] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


def test_importing_the_api_loads_no_sdk_dependencies() -> None:
    assert _modules_after("import rft, rft.api") == {
        "kubernetes": False,
        "openai": False,
        "typer": False,
        "matplotlib": False,
    }


def test_sdk_names_load_on_first_use() -> None:
    loaded = _modules_after(
        "from rft import LLM, Dataset, ReinforcementStep\nassert LLM.__module__ == 'rft.sdk.llm'"
    )
    assert loaded["kubernetes"]
    assert loaded["openai"]
    assert not loaded["matplotlib"], "only `rft plot` needs matplotlib"
