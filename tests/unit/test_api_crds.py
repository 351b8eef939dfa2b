"""The Pydantic models are the one source of truth: crds/ must be what they generate."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from rft.api import ALL_KINDS, Dataset, Deployment, Model, ReinforcementStep
from rft.api.common import Resource
from rft.api.crdgen import crd, main, render_all

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "manifests"
KINDS: dict[str, type[Resource]] = {k.crd.kind: k for k in ALL_KINDS}


def test_crds_directory_is_in_sync_with_the_models() -> None:
    assert main(["--out", str(REPO / "crds"), "--check"]) == 0, "crds/ is stale: run `make crds`"
    assert sorted(p.name for p in (REPO / "crds").glob("*.yaml")) == sorted(render_all())


def _walk(schema: dict[str, object], path: str) -> list[str]:
    """Paths of schema nodes that lack a description (kubectl explain would show nothing)."""
    missing = [] if schema.get("description") else [path]
    props = schema.get("properties")
    if isinstance(props, dict):
        for name, sub in props.items():
            missing += _walk(sub, f"{path}.{name}")
    items = schema.get("items")
    if isinstance(items, dict) and items.get("type") == "object":
        missing += _walk(items, f"{path}[]")
    return missing


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda k: k.crd.kind)
def test_every_spec_and_status_field_is_described(kind: type[Resource]) -> None:
    schema = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    missing = _walk(schema["properties"]["spec"], "spec") + _walk(schema["properties"]["status"], "status")
    assert missing == []


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda k: k.crd.kind)
def test_crd_has_status_subresource_category_and_printer_columns(kind: type[Resource]) -> None:
    manifest = crd(kind)
    version = manifest["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert manifest["spec"]["names"]["categories"] == ["rft"]
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Phase", "Age"} <= columns
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert {"phase", "conditions", "observedGeneration"} <= set(status)
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


def test_examples_parse_with_the_models() -> None:
    seen = set()
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["apiVersion"].startswith("rft-operator.io/"):
                KINDS[doc["kind"]].model_validate(doc)
                seen.add(doc["kind"])
    assert seen == set(KINDS)


def test_defaults_match_the_managed_service() -> None:
    step = ReinforcementStep.model_validate(
        {"metadata": {"name": "s"}, "spec": {"dataset": "d", "model": "m", "outputModel": "o"}}
    )
    t = step.spec.training
    assert (t.lora_rank, t.learning_rate, t.max_context_length, t.epochs, t.batch_size) == (
        16,
        "1e-4",
        8192,
        1,
        32768,
    )
    assert step.spec.loss.method == "grpo"
    assert step.spec.loss.kl_coefficient == "0.001"


def test_wire_form_is_camel_case_and_round_trips() -> None:
    dep = Deployment.model_validate(
        {
            "metadata": {"name": "x"},
            "spec": {"model": "m", "deploymentType": "on-demand-lora", "baseDeployment": "b"},
        }
    )
    wire = dep.to_wire()
    assert wire["spec"]["deploymentType"] == "on-demand-lora"
    assert wire["spec"]["baseDeployment"] == "b"
    assert Deployment.model_validate(wire) == dep
    ds = Dataset.model_validate({"metadata": {"name": "d"}, "spec": {"source": "gs://bucket-x/data.jsonl"}})
    assert ds.to_wire()["spec"]["limits"]["minRows"] == 3
    assert (
        Model.model_validate(
            {"metadata": {"name": "m"}, "spec": {"kind": "base", "location": "s3://bkt/models/m/"}}
        ).spec.kind
        == "base"
    )
