"""Resource names: full `accounts/<ns>/<collection>/<name>` names, short names, derived names."""

from __future__ import annotations

import pytest
from rft.sdk.names import MAX_NAME_LENGTH, ResourceName, derived_name, full_name, resolve_name


def test_short_name_lives_in_the_default_namespace() -> None:
    resolved = resolve_name("qwen3-0-6b", "models", "team-a", "model")
    assert resolved == ResourceName("team-a", "models", "qwen3-0-6b")
    assert resolved.full == "accounts/team-a/models/qwen3-0-6b"


def test_namespace_of_a_full_name_is_honoured() -> None:
    resolved = resolve_name("accounts/team-b/deployments/base", "deployments", "team-a", "id")
    assert (resolved.namespace, resolved.name) == ("team-b", "base")
    assert str(resolved) == "accounts/team-b/deployments/base"


def test_full_name_round_trips() -> None:
    text = full_name("ns", "datasets", "dataset-abc")
    assert resolve_name(text, "datasets", "other", "dataset").full == text


@pytest.mark.parametrize(
    ("value", "collection", "message"),
    [
        ("accounts/a/deployments/x", "models", "model: 'accounts/a/deployments/x' names deployments"),
        ("accounts/a/models", "models", "is not of the form accounts/<namespace>/models/<name>"),
        ("accounts/a/models/x/y", "models", "is not of the form"),
        ("Qwen3_8B", "models", "model: 'Qwen3_8B' is not a valid name"),
        ("-leading-dash", "models", "is not a valid name"),
        ("", "models", "model: must not be empty"),
        ("a" * (MAX_NAME_LENGTH + 1), "models", "longer than 63 characters"),
        ("accounts/Bad_NS/models/x", "models", "model (namespace part)"),
        ("team/model", "models", "neither a short name nor accounts/<namespace>/models/<name>"),
    ],
)
def test_bad_names_raise_value_error_naming_the_argument(value: str, collection: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"^model") as error:
        resolve_name(value, collection, "default", "model")  # type: ignore[arg-type]
    assert message in str(error.value)


def test_non_string_name_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"model: expected a string, got int"):
        resolve_name(42, "models", "default", "model")


def test_derived_name_is_deterministic_and_short_enough() -> None:
    assert derived_name("qwen3-0-6b", "serverless") == "qwen3-0-6b-serverless"
    long_model = "m" * 60
    first = derived_name(long_model, "serverless")
    assert first == derived_name(long_model, "serverless")
    assert len(first) <= MAX_NAME_LENGTH
    assert first.endswith("-serverless")
    assert first != derived_name("m" * 61, "serverless")
