"""Kubernetes API errors become SDK errors that keep the server's explanation (field paths included).

The bodies below are Status objects in the shape kube-apiserver returns; the cluster tests check
the same translation against a real server.
"""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException
from rft.api import Model
from rft.sdk.errors import (
    PermissionDeniedError,
    ResourceConflictError,
    ResourceExistsError,
    ResourceInvalidError,
    ResourceNotFoundError,
    RftError,
)
from rft.sdk.kube import describe_api_error, parse_resource, translate_api_error


def _error(
    status: int, reason: str, message: str, causes: list[dict[str, str]] | None = None
) -> ApiException:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason}
    if causes is not None:
        body["details"] = {"causes": causes}  # type: ignore[assignment]
    return ApiException(status=status, reason=reason, body=json.dumps(body))


def test_422_keeps_the_field_messages() -> None:
    error = _error(
        422,
        "Invalid",
        'ReinforcementStep.rft-operator.io "s" is invalid: spec.outputModel: Invalid value: "object": '
        "spec.outputModel must differ from spec.model",
        [{"reason": "FieldValueInvalid", "message": "extra detail", "field": "spec.training.loraRank"}],
    )
    translated = translate_api_error(error, "create ReinforcementStep 's'", creating=True)
    assert isinstance(translated, ResourceInvalidError)
    assert isinstance(translated, ValueError)
    assert "spec.outputModel must differ from spec.model" in str(translated)
    assert "spec.training.loraRank: extra detail" in str(translated)
    assert str(translated).startswith("create ReinforcementStep 's': rejected by the API server")


@pytest.mark.parametrize(
    ("status", "creating", "expected"),
    [
        (404, False, ResourceNotFoundError),
        (409, True, ResourceExistsError),
        (409, False, ResourceConflictError),
        (403, False, PermissionDeniedError),
        (401, False, PermissionDeniedError),
        (500, False, RftError),
    ],
)
def test_status_codes_map_to_sdk_errors(status: int, creating: bool, expected: type[RftError]) -> None:
    translated = translate_api_error(_error(status, "X", "the server says why"), "do it", creating=creating)
    assert type(translated) is expected
    assert "the server says why" in str(translated)
    assert str(translated).startswith("do it")


def test_non_json_body_falls_back_to_status_and_reason() -> None:
    error = ApiException(status=502, reason="Bad Gateway", body="<html>proxy</html>")
    assert describe_api_error(error) == "HTTP 502 Bad Gateway"


def test_parse_resource_ignores_kopf_bookkeeping_and_explains_mismatches() -> None:
    raw = {
        "apiVersion": "rft-operator.io/v1alpha1",
        "kind": "Model",
        "metadata": {"name": "m", "namespace": "ns"},
        "spec": {"kind": "base", "location": "s3://my-bucket/m/"},
        "status": {"phase": "READY", "kopf": {"progress": {}}},
    }
    assert parse_resource(Model, raw).status.phase == "READY"
    raw["spec"] = {"kind": "base", "location": "s3://my-bucket/m/", "unknownField": 1}
    with pytest.raises(RftError, match=r"Model 'm' does not match this SDK's API"):
        parse_resource(Model, raw)
