"""Errors the SDK raises instead of raw Kubernetes API exceptions."""

from __future__ import annotations


class RftError(Exception):
    """Base class of every error the SDK raises on purpose."""


class ResourceNotFoundError(RftError, LookupError):
    """A named resource does not exist (HTTP 404)."""


class ResourceExistsError(RftError):
    """A resource that must not exist yet already does (HTTP 409 on create, or a pre-check)."""


class ResourceConflictError(RftError):
    """The object changed between read and write (HTTP 409 on update); retrying may succeed."""


class ResourceInvalidError(RftError, ValueError):
    """The API server rejected an object (HTTP 422), usually by a schema or CEL rule naming the field."""


class PermissionDeniedError(RftError, PermissionError):
    """The kubeconfig's user may not do this (HTTP 401/403)."""


class ImmutableFieldError(RftError, ValueError):
    """A field that cannot change after creation was asked to change."""


class DatasetValidationError(RftError, ValueError):
    """The dataset's rows are invalid, locally or as reported by the validation Job."""


class DeploymentFailedError(RftError):
    """The operator marked a Deployment FAILED."""


class WaitTimeoutError(RftError, TimeoutError):
    """A wait for a resource to reach a phase ran out of time."""
