"""Shared building blocks of the API: naming, conditions, object envelope, CRD metadata."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "rft-operator.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "rft"

# The label a cluster admin puts (value "true") on the ServiceAccounts that the project's
# resources may name in spec.serviceAccountName (the operator's default; its config can rename it).
WORKLOAD_SERVICE_ACCOUNT_LABEL = f"{GROUP}/workload"

# A Kubernetes object name (RFC 1123 subdomain, kept to 63 characters so that it can also label
# and name children such as Jobs and Services).
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ObjectName = Annotated[str, Field(min_length=1, max_length=63, pattern=NAME_PATTERN)]

# A storage URL in the user's bucket; local paths are for development only.
STORAGE_URL_PATTERN = r"^(s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?|gs://[a-z0-9][a-z0-9._\-]{1,220}[a-z0-9](/.*)?|file:///.+)$"
StorageURL = Annotated[
    str,
    Field(
        max_length=1024,
        pattern=STORAGE_URL_PATTERN,
        description="A location in the user's bucket: s3://bucket/key, gs://bucket/key "
        "(file:///path for local development clusters only).",
    ),
]

# Decimal numbers are strings in specs (the API conventions discourage floats): "1e-4", "0.001".
DECIMAL_PATTERN = r"^[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"
SIGNED_DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"

ACCELERATOR_TYPES = (
    "NVIDIA_A100_80GB",
    "NVIDIA_H100_80GB",
    "NVIDIA_H200_141GB",
    "NVIDIA_A10G_24GB",
    "NVIDIA_L4_24GB",
    "NVIDIA_B200_180GB",
    "AMD_MI300X_192GB",
    "CPU",
)
AcceleratorType = Literal[
    "NVIDIA_A100_80GB",
    "NVIDIA_H100_80GB",
    "NVIDIA_H200_141GB",
    "NVIDIA_A10G_24GB",
    "NVIDIA_L4_24GB",
    "NVIDIA_B200_180GB",
    "AMD_MI300X_192GB",
    "CPU",
]


class ApiModel(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        protected_namespaces=(),
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict Kubernetes stores (camelCase, unset optionals left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Condition(ApiModel):
    """One observation of the object's state, in the Kubernetes API conventions' shape."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(
        max_length=316,
        description="Type of the condition in CamelCase, e.g. Ready, Succeeded, Failed, Validated.",
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(
        default="",
        max_length=1024,
        description="A CamelCase word that explains the status, for machines.",
    )
    message: str = Field(default="", max_length=32768, description="What happened, for humans.")
    last_transition_time: datetime | None = Field(
        default=None, description="When the status last changed (not when it was last checked)."
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation this condition was computed from."
    )


class ObjectMeta(BaseModel):
    """The subset of metadata the project reads; everything else is kept as is."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)

    name: str = ""
    namespace: str = ""
    uid: str = ""
    generation: int = 0
    resource_version: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    deletion_timestamp: str | None = None


class PrinterColumn(BaseModel):
    """An additionalPrinterColumns entry of the CRD."""

    name: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    json_path: str
    description: str = ""
    priority: int = 0


class CrdInfo(BaseModel):
    """What the CRD generator needs beyond the schema."""

    kind: str
    plural: str
    singular: str
    short_names: list[str]
    description: str
    printer_columns: list[PrinterColumn]
    spec_validations: list[dict[str, str]] = Field(default_factory=list)


class Resource(ApiModel):
    """The envelope of a custom resource: apiVersion, kind, metadata, spec, status."""

    model_config = ConfigDict(extra="ignore")
    crd: ClassVar[CrdInfo]

    api_version: str = API_VERSION
    kind: str
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    @classmethod
    def plural(cls) -> str:
        return cls.crd.plural

    @classmethod
    def crd_name(cls) -> str:
        return f"{cls.crd.plural}.{GROUP}"


def condition_columns(summary_type: str) -> list[PrinterColumn]:
    """Printer columns for a summary condition's message, shown with -o wide."""
    return [
        PrinterColumn(
            name="Message",
            type="string",
            json_path=f'.status.conditions[?(@.type=="{summary_type}")].message',
            description="The summary condition's message.",
            priority=1,
        )
    ]


AGE_COLUMN = PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp")
