"""Following `spec.parent` from a checkpoint back to its base model."""

from __future__ import annotations

import math

import pytest
from rft.api import Model
from rft.sdk.lineage import lineage, metric


def _model(name: str, parent: str | None = None, kind: str = "lora", **metrics: str) -> Model:
    spec: dict[str, object] = {"kind": kind, "location": f"s3://my-bucket/models/{name}/", "metrics": metrics}
    if kind == "lora":
        spec |= {"baseModel": "base", "lora": {"rank": 8, "alpha": 16, "targetModules": ["q_proj"]}}
        if parent:
            spec["parent"] = parent
    return Model.model_validate({"metadata": {"name": name, "namespace": "ns"}, "spec": spec})


def _store(*models: Model) -> dict[str, Model]:
    return {model.metadata.name: model for model in models}


def test_chain_is_oldest_first_with_the_base() -> None:
    store = _store(_model("base", kind="base"), _model("c1"), _model("c2", "c1"), _model("c3", "c2"))
    chain = lineage("c3", store.get)
    assert [m.metadata.name for m in chain.models] == ["base", "c1", "c2", "c3"]
    assert [m.metadata.name for m in chain.checkpoints] == ["c1", "c2", "c3"]
    assert chain.missing is None
    assert not chain.cycle


def test_missing_parent_ends_the_chain() -> None:
    chain = lineage("c3", _store(_model("c2", "c1"), _model("c3", "c2")).get)
    assert [m.metadata.name for m in chain.models] == ["c2", "c3"]
    assert chain.missing == "c1"


def test_missing_base_is_reported() -> None:
    chain = lineage("c1", _store(_model("c1")).get)
    assert chain.missing == "base"


def test_a_loop_of_parents_stops_at_the_first_repeat() -> None:
    chain = lineage("a", _store(_model("a", "b"), _model("b", "a")).get)
    assert chain.cycle
    assert [m.metadata.name for m in chain.models] == ["b", "a"]


def test_unknown_start_is_a_lookup_error() -> None:
    with pytest.raises(LookupError, match="model 'nope' not found"):
        lineage("nope", _store().get)


def test_metric_parses_decimal_strings() -> None:
    model = _model("c1", mean_reward="0.75", loss="not-a-number")
    assert metric(model, "mean_reward") == 0.75
    assert math.isnan(metric(model, "loss"))
    assert math.isnan(metric(model, "absent"))
