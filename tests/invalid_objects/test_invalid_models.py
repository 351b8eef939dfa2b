"""The invalid-object set against the models and the generated CRD schemas, without a cluster."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from pydantic import ValidationError
from rft.api import ALL_KINDS
from rft.api.common import Resource
from rft.api.crdgen import crd
from rft_operator.reconcilers.base import describe_invalid

from tests.invalid_objects.cases import CASES, Case

KINDS: dict[str, type[Resource]] = {k.crd.kind: k for k in ALL_KINDS}


def test_the_set_is_large_and_covers_every_kind() -> None:
    per_kind = Counter(c.kind for c in CASES)
    assert len(CASES) >= 80
    assert set(per_kind) == set(KINDS)
    assert min(per_kind.values()) >= 20, per_kind
    assert len({(c.kind, c.name) for c in CASES}) == len(CASES), "names must be unique per kind"


@pytest.mark.parametrize("case", [c for c in CASES if not c.operator_only], ids=lambda c: c.id)
def test_the_models_refuse_it_naming_the_field(case: Case) -> None:
    """Strict: the API server refuses a wrong JSON type before the models see it."""
    with pytest.raises(ValidationError) as refused:
        KINDS[case.kind].model_validate(case.body(), strict=True)
    assert case.field in describe_invalid(refused.value, most=10)


@pytest.mark.parametrize("case", [c for c in CASES if c.operator_only], ids=lambda c: c.id)
def test_what_only_the_operator_sees_parses(case: Case) -> None:
    KINDS[case.kind].model_validate(case.body())


def _unbounded(node: dict[str, Any], path: str) -> list[str]:
    """Schema nodes a user could make as large as etcd allows."""
    found = []
    kind = node.get("type")
    if kind == "string" and "maxLength" not in node and "enum" not in node:
        found.append(path)
    if kind == "integer" and ("minimum" not in node or "maximum" not in node):
        found.append(path)
    if kind == "array":
        found += [path] if "maxItems" not in node else []
        found += _unbounded(node["items"], f"{path}[]")
    if kind == "object":
        for name, sub in (node.get("properties") or {}).items():
            found += _unbounded(sub, f"{path}.{name}")
        if isinstance(node.get("additionalProperties"), dict):
            found += [path] if "maxProperties" not in node else []
            found += _unbounded(node["additionalProperties"], f"{path}.*")
    return found


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda k: k.crd.kind)
def test_every_spec_field_is_bounded(kind: type[Resource]) -> None:
    """Every string, list, map and integer of a spec has bounds: oversized input is refused by
    the schema, whatever the field."""
    schema = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _unbounded(schema["properties"]["spec"], "spec") == []
    name = schema["properties"]["metadata"]["properties"]["name"]
    assert name["maxLength"] == 63
