"""Resource names: `accounts/<namespace>/<collection>/<name>` and short names.

The namespace plays the role of the managed service's account, so a full name carries the
namespace and a short name lives in the configured one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

from rft.api.common import NAME_PATTERN

Collection = Literal["models", "deployments", "datasets"]

MAX_NAME_LENGTH = 63
_NAME_RE = re.compile(NAME_PATTERN)
_FULL_NAME_RE = re.compile(r"^accounts/(?P<namespace>[^/]+)/(?P<collection>[^/]+)/(?P<name>[^/]+)$")


@dataclass(frozen=True)
class ResourceName:
    """A resolved name: the namespace (account), the collection and the object name."""

    namespace: str
    collection: Collection
    name: str

    @property
    def full(self) -> str:
        """The managed service's spelling, e.g. `accounts/team-a/models/qwen3-0-6b`."""
        return full_name(self.namespace, self.collection, self.name)

    def __str__(self) -> str:
        return self.full


def full_name(namespace: str, collection: Collection, name: str) -> str:
    """`accounts/<namespace>/<collection>/<name>`."""
    return f"accounts/{namespace}/{collection}/{name}"


def check_object_name(value: object, argument: str) -> str:
    """Return `value` if it is a valid Kubernetes object name, else raise ValueError naming `argument`."""
    if not isinstance(value, str):
        raise TypeError(f"{argument}: expected a string, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{argument}: must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"{argument}: {value!r} is longer than {MAX_NAME_LENGTH} characters")
    if not _NAME_RE.match(value):
        raise ValueError(
            f"{argument}: {value!r} is not a valid name (lower-case letters, digits and '-', "
            "starting and ending with a letter or digit)"
        )
    return value


def check_namespace(value: object, argument: str = "namespace") -> str:
    """Return `value` if it is a valid namespace name, else raise ValueError naming `argument`."""
    return check_object_name(value, argument)


def resolve_name(
    value: object, collection: Collection, default_namespace: str, argument: str
) -> ResourceName:
    """Resolve a full name (`accounts/<ns>/<collection>/<name>`) or a short name.

    A namespace in a full name is honoured; a short name lives in `default_namespace`. A full name
    of another collection (a deployment name where a model is expected) is an error.
    """
    if not isinstance(value, str):
        raise TypeError(f"{argument}: expected a string, got {type(value).__name__}")
    if value.startswith("accounts/"):
        match = _FULL_NAME_RE.match(value)
        if match is None:
            raise ValueError(
                f"{argument}: {value!r} is not of the form accounts/<namespace>/{collection}/<name>"
            )
        if match["collection"] != collection:
            raise ValueError(
                f"{argument}: {value!r} names {match['collection']}, expected "
                f"accounts/<namespace>/{collection}/<name>"
            )
        namespace = check_object_name(match["namespace"], f"{argument} (namespace part)")
        name = check_object_name(match["name"], argument)
        return ResourceName(namespace, collection, name)
    if "/" in value:
        raise ValueError(
            f"{argument}: {value!r} is neither a short name nor accounts/<namespace>/{collection}/<name>"
        )
    return ResourceName(default_namespace, collection, check_object_name(value, argument))


def derived_name(base: str, suffix: str) -> str:
    """A deterministic object name `<base>-<suffix>`, shortened with a hash when too long."""
    candidate = f"{base}-{suffix}"
    if len(candidate) <= MAX_NAME_LENGTH:
        return candidate
    digest = hashlib.sha256(candidate.encode()).hexdigest()[:8]
    keep = MAX_NAME_LENGTH - len(suffix) - len(digest) - 2
    return f"{base[:keep].rstrip('-')}-{digest}-{suffix}"
