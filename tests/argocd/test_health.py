"""Argo CD health scripts (argocd/health/*.lua) under Argo CD's Lua 5.1 sandbox, one fixture per
case in Argo CD's health_test.yaml layout; the argocd-cm snippet that installs them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from rft.api import Dataset, Deployment, Model, ReinforcementStep, TrainingSession

from tests.argocd.generate import CM_PATH, KEY_PREFIX, main, render_cm, render_script
from tests.argocd.sandbox import HEALTH_DIR, KINDS, HealthScriptError, health, script

API_MODELS = {
    "Dataset": Dataset,
    "Deployment": Deployment,
    "Model": Model,
    "ReinforcementStep": ReinforcementStep,
    "TrainingSession": TrainingSession,
}


def _cases() -> list[tuple[str, Path, dict[str, str]]]:
    cases = []
    for kind, stem in KINDS.items():
        suite = HEALTH_DIR / "tests" / stem / "health_test.yaml"
        for test in yaml.safe_load(suite.read_text())["tests"]:
            cases.append((kind, suite.parent / test["inputPath"], test["healthStatus"]))
    return cases


CASES = _cases()


@pytest.mark.parametrize(("kind", "path", "expected"), CASES, ids=[f"{k}/{p.stem}" for k, p, _ in CASES])
def test_health(kind: str, path: Path, expected: dict[str, str]) -> None:
    obj = yaml.safe_load(path.read_text())
    assert obj["kind"] == kind
    assert health(obj) == {"status": expected["status"], "message": expected.get("message", "")}


@pytest.mark.parametrize(
    ("kind", "path"), [(k, p) for k, p, _ in CASES], ids=[f"{k}/{p.stem}" for k, p, _ in CASES]
)
def test_fixtures_are_objects_the_api_accepts(kind: str, path: Path) -> None:
    """Every fixture is a valid object of its kind, status included (the API models forbid
    unknown fields), so the scripts are tested against what the operator can really write."""
    API_MODELS[kind].model_validate(yaml.safe_load(path.read_text()))


def test_every_kind_has_a_script_and_the_cases_the_issue_asks_for() -> None:
    assert sorted(p.stem for p in HEALTH_DIR.glob("*.lua")) == sorted(KINDS.values())
    step_outcomes = {p.stem: e["status"] for k, p, e in CASES if k == "ReinforcementStep"}
    assert step_outcomes["running"] == "Progressing"
    assert step_outcomes["completed"] == "Healthy"
    assert step_outcomes["failed"] == "Degraded"
    assert step_outcomes["expired"] == "Degraded"
    assert step_outcomes["cancelled"] == "Suspended"
    assert step_outcomes["suspended"] == "Suspended"
    for kind in KINDS:
        statuses = {e["status"] for k, _, e in CASES if k == kind}
        assert {"Progressing", "Healthy", "Degraded"} <= statuses, kind


@pytest.mark.parametrize("kind", KINDS)
def test_scripts_use_nothing_outside_argo_cds_sandbox(kind: str) -> None:
    source = re.sub(r"--[^\n]*", "", script(kind))  # comments
    source = re.sub(r'"[^"\n]*"', '""', source)  # string literals
    assert not re.search(r"\b(string|math|io|debug|coroutine|os|require|load|loadstring|dofile)\b", source)
    assert not re.search(r"[\w)\]]:\w+\s*\(", source), "string methods need the string library"


@pytest.mark.parametrize(
    "probe",
    [
        'return {status = string.upper("healthy")}',
        'return {status = ("Healthy"):sub(1)}',
        "return {status = math.floor(1)}",
        'return {status = io.write("x")}',
        "return {status = debug.traceback()}",
        'return {status = os.getenv("HOME")}',
        'return {status = require("string").upper("x")}',
    ],
)
def test_the_sandbox_really_lacks_what_argo_cd_lacks(probe: str) -> None:
    with pytest.raises(HealthScriptError):
        health({"kind": "Model", "metadata": {"name": "m"}}, source=probe)


def test_the_sandbox_has_what_argo_cd_has() -> None:
    source = """
    local t = {}
    table.insert(t, tostring(tonumber("3")))
    for _, v in ipairs({"a"}) do table.insert(t, v) end
    for k, _ in pairs({b = true}) do table.insert(t, k) end
    table.insert(t, type(os.time()))
    return {status = "Healthy", message = table.concat(t, ",") .. "," .. select("#", 1, 2) .. "," .. #"xyz"}
    """
    assert health({"kind": "Model", "metadata": {"name": "m"}}, source=source) == {
        "status": "Healthy",
        "message": "3,a,b,number,2,3",
    }


def test_an_invalid_status_reads_unknown_as_in_argo_cd() -> None:
    result = health({"kind": "Model", "metadata": {}}, source='return {status = "Fine"}')
    assert result == {"status": "Unknown", "message": "Lua returned an invalid health status"}


def test_numbers_may_arrive_as_strings() -> None:
    """Argo CD hands json.Number values to Lua as strings; generations still compare."""
    obj: dict[str, Any] = yaml.safe_load(
        (HEALTH_DIR / "tests/reinforcementstep/testdata/running.yaml").read_text()
    )
    obj["metadata"]["generation"] = "2"
    obj["status"]["observedGeneration"] = "1"
    assert health(obj) == {
        "status": "Progressing",
        "message": "Waiting for rft-operator to observe generation 2",
    }
    obj["status"]["observedGeneration"] = "2"
    assert health(obj)["status"] == "Progressing"
    assert health(obj)["message"].startswith("training on")


# --- the argocd-cm snippet --------------------------------------------------------------------
def test_argocd_cm_snippet_installs_exactly_the_scripts() -> None:
    cm = yaml.safe_load(CM_PATH.read_text())
    assert cm["kind"] == "ConfigMap"
    assert cm["metadata"]["name"] == "argocd-cm"
    expected = {f"{KEY_PREFIX}rft-operator.io_{kind}": script(kind) for kind in KINDS}
    health_keys = {k: v for k, v in cm["data"].items() if k.startswith(KEY_PREFIX)}
    assert health_keys == expected


def test_argocd_cm_snippet_is_generated_from_the_scripts() -> None:
    assert CM_PATH.read_text() == render_cm(), "run: python -m tests.argocd.generate --write"


def test_argocd_cm_names_the_kinds_of_the_crds() -> None:
    crd_kinds = {
        yaml.safe_load(p.read_text())["spec"]["names"]["kind"]
        for p in (HEALTH_DIR.parents[1] / "crds").glob("*.yaml")
    }
    assert crd_kinds == set(KINDS)


def test_health_scripts_are_generated_from_one_source() -> None:
    """The committed scripts are the generator's output from argocd/health/src/ (edit there)."""
    for kind, stem in KINDS.items():
        assert (HEALTH_DIR / f"{stem}.lua").read_text() == render_script(kind), (
            f"{stem}.lua: run python -m tests.argocd.generate --write"
        )
    assert main(["--check"]) == 0
