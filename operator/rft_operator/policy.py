"""The cluster admin's policy for the images and identities of the pods the operator creates.

Whoever may create a ReinforcementStep, Deployment, Dataset or Model names an image
(`spec.trainerImage`, `spec.image`) and a ServiceAccount (`spec.serviceAccountName`) that the
operator then runs a pod with, and that ServiceAccount's workload identity reaches the bucket.
Creating those resources must not grant what creating a pod would, so before any Job or server
Deployment exists every reconciler asks `WorkloadPolicy.check`:

- an image is allowed when it is one of the operator's own (its configured trainer and vLLM
  images) or matches an entry of `allowed_images` (a repository, a prefix ending in `/`, an exact
  tag or digest); anything else is `ImageNotAllowed`;
- a ServiceAccount is allowed when it carries the admin's label (`service_account_label`, value
  "true"); one without it is `ServiceAccountNotAllowed`; one that does not exist is waited for
  `service_account_wait_seconds` after the resource's creation, then `ServiceAccountNotFound`.

Every refusal names the field, the value and what the admin allows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rft_operator.config import OperatorConfig
    from rft_operator.kube import Kube, Obj

# An image reference (the distribution project's grammar, without its length limits): an optional
# registry host (with port), slash-separated lowercase path components, an optional tag, an
# optional sha256 digest.
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"(?:{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?)"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*"
_REFERENCE = re.compile(
    rf"(?P<name>{_NAME})(?::(?P<tag>[\w][\w.-]{{0,127}}))?(?:@(?P<digest>sha256:[0-9a-f]{{64}}))?"
)
_PREFIX = re.compile(rf"{_NAME}/")


@dataclass(frozen=True)
class ImageReference:
    name: str
    tag: str | None
    digest: str | None


def parse_image(image: str) -> ImageReference:
    """Split an image reference; ValueError when it is not one."""
    match = _REFERENCE.fullmatch(image)
    if match is None:
        raise ValueError(f"{image!r} is not an image reference (repository[:tag][@sha256:<64 hex>])")
    return ImageReference(match["name"], match["tag"], match["digest"])


@dataclass(frozen=True)
class AllowedImage:
    """One entry of `allowed_images`: a prefix ending in `/`, or a repository with an optional
    tag and digest that the image must carry too."""

    text: str
    prefix: bool
    ref: ImageReference

    def allows(self, image: ImageReference) -> bool:
        if self.prefix:
            return image.name.startswith(self.ref.name)
        return (
            image.name == self.ref.name
            and (self.ref.tag is None or image.tag == self.ref.tag)
            and (self.ref.digest is None or image.digest == self.ref.digest)
        )


def parse_allowed_images(text: str) -> tuple[AllowedImage, ...]:
    """The comma-separated entries of `allowed_images`; ValueError naming a malformed one."""
    out = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        if entry.endswith("/"):
            if _PREFIX.fullmatch(entry) is None:
                raise ValueError(f"allowed image prefix {entry!r} is not a repository path ending in /")
            out.append(AllowedImage(entry, True, ImageReference(entry, None, None)))
        else:
            out.append(AllowedImage(entry, False, parse_image(entry)))
    return tuple(out)


@dataclass(frozen=True)
class Refusal:
    """Why the operator will not (yet) run a pod for a resource. `permanent`: the resource fails;
    else it waits (a ServiceAccount that may still be created)."""

    reason: str
    message: str
    permanent: bool = True


class WorkloadPolicy:
    def __init__(self, config: OperatorConfig) -> None:
        # Every image the operator is configured with (trainer, vLLM, vLLM CPU, ...: each setting
        # named *_image), exactly as configured.
        self.own_images = tuple(
            dict.fromkeys(v for k, v in config if k.endswith("_image") and isinstance(v, str) and v)
        )
        self.allowed = parse_allowed_images(config.allowed_images)
        self.service_account_check = config.service_account_check
        self.label = config.service_account_label
        self.wait_seconds = config.service_account_wait_seconds

    # --- images -------------------------------------------------------------------------------
    def image_refusal(self, field: str, image: str | None) -> Refusal | None:
        """None when the image may run (no image named: the operator's own is used)."""
        if image is None or image in self.own_images:
            return None
        try:
            ref = parse_image(image)
        except ValueError as exc:
            return Refusal("ImageNotAllowed", f"{field}: {exc}")
        if any(entry.allows(ref) for entry in self.allowed):
            return None
        return Refusal("ImageNotAllowed", f"{field} {image!r} is not allowed: {self.describe_images()}")

    def describe_images(self) -> str:
        own = ", ".join(self.own_images)
        if not self.allowed:
            return f"the cluster admin allows only the operator's own images ({own})"
        extra = ", ".join(e.text for e in self.allowed)
        return f"the cluster admin allows the operator's own images ({own}) and {extra}"

    # --- ServiceAccounts ----------------------------------------------------------------------
    def service_account_refusal(
        self, kube: Kube, namespace: str, field: str, name: str, *, age_seconds: float
    ) -> Refusal | None:
        """None when pods may run as the ServiceAccount. `age_seconds`: how long the resource
        naming it has existed (a missing ServiceAccount is waited for until the bound)."""
        if not self.service_account_check:
            return None
        account = kube.read_service_account(namespace, name)
        if account is None:
            if age_seconds < self.wait_seconds:
                return Refusal(
                    "ServiceAccountNotFound",
                    f"waiting for ServiceAccount {name!r} ({field}) to exist in namespace {namespace}",
                    permanent=False,
                )
            return Refusal(
                "ServiceAccountNotFound",
                f"{field} {name!r}: no such ServiceAccount in namespace {namespace} "
                f"(waited {self.wait_seconds:g}s)",
            )
        labels = account.get("metadata", {}).get("labels") or {}
        if labels.get(self.label) == "true":
            return None
        return Refusal(
            "ServiceAccountNotAllowed",
            f"{field} {name!r} is not allowed: ServiceAccount {namespace}/{name} lacks the label "
            f'{self.label}="true" that the cluster admin puts on the identities workloads may run as',
        )

    # --- both, for one resource ---------------------------------------------------------------
    def check(
        self,
        kube: Kube,
        raw: Obj,
        now: datetime,
        *,
        service_account: str,
        images: Mapping[str, str | None] | None = None,
    ) -> Refusal | None:
        """The first refusal for the resource `raw` (its images, then its ServiceAccount, named
        by `spec.serviceAccountName`), or None when the operator may run its pods."""
        for field, image in (images or {}).items():
            if (refusal := self.image_refusal(field, image)) is not None:
                return refusal
        meta = raw["metadata"]
        created = meta.get("creationTimestamp")
        age = (
            (now - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds()
            if created
            else float("inf")
        )
        return self.service_account_refusal(
            kube, meta["namespace"], "spec.serviceAccountName", service_account, age_seconds=age
        )
