"""A thin client for the project's custom resources that speaks in API models and SDK errors.

Every Kubernetes API error is translated here: 404 becomes None or `ResourceNotFoundError`, 409
`ResourceExistsError` (create) or `ResourceConflictError` (update), 422 `ResourceInvalidError`
carrying the server's field messages (the CRDs' CEL rules name the field), 401/403
`PermissionDeniedError`.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from kubernetes import client as k8s
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from rft.api.common import API_VERSION, GROUP, VERSION, Resource
from rft.sdk.config import SdkConfig
from rft.sdk.errors import (
    PermissionDeniedError,
    ResourceConflictError,
    ResourceExistsError,
    ResourceInvalidError,
    ResourceNotFoundError,
    RftError,
)

R = TypeVar("R", bound=Resource)

DEFAULT_REQUEST_TIMEOUT = 30.0
HTTP_UNAUTHORIZED = 401
HTTP_FORBIDDEN = 403
HTTP_NOT_FOUND = 404
HTTP_CONFLICT = 409
HTTP_UNPROCESSABLE = 422


def api_client_from_config(config: SdkConfig) -> k8s.ApiClient:
    """An API client for the configured kubeconfig (and context), or the in-cluster ServiceAccount."""
    configuration = k8s.Configuration()
    try:
        if config.kubeconfig is not None:
            kube_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=config.kubeconfig,
                context=config.context,
                client_configuration=configuration,
                persist_config=False,
            )
        else:
            kube_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except kube_config.ConfigException as error:
        where = f"kubeconfig {config.kubeconfig}" if config.kubeconfig else "the in-cluster ServiceAccount"
        raise RftError(
            f"kubeconfig: cannot load {where}: {error}. Set KUBECONFIG or pass kubeconfig=..."
        ) from error
    return k8s.ApiClient(configuration)


def describe_api_error(error: ApiException) -> str:
    """The API server's own explanation: the Status message plus each cause's field and message."""
    try:
        status = json.loads(error.body or "")
    except ValueError:
        status = None
    if not isinstance(status, dict):
        return f"HTTP {error.status} {error.reason or ''}".strip()
    message = str(status.get("message") or error.reason or f"HTTP {error.status}")
    causes = (status.get("details") or {}).get("causes") or []
    details = [
        f"{cause.get('field')}: {cause.get('message')}" if cause.get("field") else str(cause.get("message"))
        for cause in causes
        if isinstance(cause, dict) and cause.get("message") and str(cause.get("message")) not in message
    ]
    return "; ".join([message, *details])


def translate_api_error(error: ApiException, action: str, *, creating: bool = False) -> RftError:
    """Map an ApiException to the SDK error a caller can handle; `action` says what was attempted."""
    explanation = describe_api_error(error)
    if error.status == HTTP_NOT_FOUND:
        return ResourceNotFoundError(f"{action}: not found ({explanation})")
    if error.status == HTTP_CONFLICT:
        if creating:
            return ResourceExistsError(f"{action}: already exists ({explanation})")
        return ResourceConflictError(f"{action}: conflict, the object changed meanwhile ({explanation})")
    if error.status == HTTP_UNPROCESSABLE:
        return ResourceInvalidError(f"{action}: rejected by the API server: {explanation}")
    if error.status in (HTTP_UNAUTHORIZED, HTTP_FORBIDDEN):
        return PermissionDeniedError(f"{action}: permission denied ({explanation})")
    return RftError(f"{action}: {explanation}")


def parse_resource(kind: type[R], raw: Any) -> R:
    """Parse a raw object into its API model, with a clear error when it does not fit."""
    if not isinstance(raw, dict):
        raise RftError(f"{kind.crd.kind}: expected an object from the API server, got {type(raw).__name__}")
    status = raw.get("status")
    if isinstance(status, dict) and "kopf" in status:
        # Kopf may keep handler progress under status.kopf; it is not part of the API.
        raw = {**raw, "status": {key: value for key, value in status.items() if key != "kopf"}}
    try:
        return kind.model_validate(raw)
    except ValidationError as error:
        name = (raw.get("metadata") or {}).get("name", "?")
        raise RftError(
            f"{kind.crd.kind} {name!r} does not match this SDK's API ({API_VERSION}); "
            f"is the SDK older than the CRDs? {error}"
        ) from error


class KubeClient:
    """Get, list, create, patch and delete the project's custom resources."""

    def __init__(self, api_client: k8s.ApiClient, request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> None:
        self.api_client = api_client
        self.request_timeout = request_timeout
        self.custom = k8s.CustomObjectsApi(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self.discovery = k8s.DiscoveryV1Api(api_client)

    @classmethod
    def from_config(cls, config: SdkConfig) -> KubeClient:
        """A client for the configured cluster."""
        return cls(api_client_from_config(config))

    def get(self, kind: type[R], namespace: str, name: str) -> R | None:
        """The object, or None when it does not exist."""
        try:
            raw = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, kind.plural(), name, _request_timeout=self.request_timeout
            )
        except ApiException as error:
            if error.status == HTTP_NOT_FOUND:
                return None
            raise translate_api_error(error, f"get {_label(kind, namespace, name)}") from error
        return parse_resource(kind, raw)

    def require(self, kind: type[R], namespace: str, name: str, hint: str = "") -> R:
        """The object, or `ResourceNotFoundError` naming it (and `hint`, if given)."""
        found = self.get(kind, namespace, name)
        if found is None:
            suffix = f": {hint}" if hint else ""
            raise ResourceNotFoundError(f"{_label(kind, namespace, name)} not found{suffix}")
        return found

    def list(self, kind: type[R], namespace: str, label_selector: str | None = None) -> list[R]:
        """All objects of `kind` in `namespace`, sorted by name."""
        try:
            raw = self.custom.list_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                kind.plural(),
                label_selector=label_selector,
                _request_timeout=self.request_timeout,
            )
        except ApiException as error:
            raise translate_api_error(error, f"list {kind.plural()} in namespace {namespace}") from error
        items = [parse_resource(kind, item) for item in _items(raw)]
        return sorted(items, key=lambda item: item.metadata.name)

    def create(self, kind: type[R], body: dict[str, Any]) -> R:
        """Create the object `body` (a wire dict); `ResourceExistsError` when the name is taken."""
        metadata = body.get("metadata", {})
        namespace, name = metadata.get("namespace", ""), metadata.get("name", "")
        try:
            raw = self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, kind.plural(), body, _request_timeout=self.request_timeout
            )
        except ApiException as error:
            raise translate_api_error(
                error, f"create {_label(kind, namespace, name)}", creating=True
            ) from error
        return parse_resource(kind, raw)

    def patch(self, kind: type[R], namespace: str, name: str, patch: dict[str, Any]) -> R:
        """Apply a JSON merge patch to the object."""
        try:
            raw = self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                kind.plural(),
                name,
                patch,
                _content_type="application/merge-patch+json",
                _request_timeout=self.request_timeout,
            )
        except ApiException as error:
            raise translate_api_error(error, f"update {_label(kind, namespace, name)}") from error
        return parse_resource(kind, raw)

    def delete(self, kind: type[R], namespace: str, name: str) -> bool:
        """Delete the object (in the background); False when it did not exist."""
        try:
            self.custom.delete_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                kind.plural(),
                name,
                propagation_policy="Background",
                _request_timeout=self.request_timeout,
            )
        except ApiException as error:
            if error.status == HTTP_NOT_FOUND:
                return False
            raise translate_api_error(error, f"delete {_label(kind, namespace, name)}") from error
        return True


def _label(kind: type[Resource], namespace: str, name: str) -> str:
    return f"{kind.crd.kind} {name!r} in namespace {namespace!r}"


def _items(listing: object) -> list[Any]:
    items = listing.get("items") if isinstance(listing, dict) else None
    if not isinstance(items, list):
        raise RftError(f"expected a list of objects from the API server, got {type(listing).__name__}")
    return items
