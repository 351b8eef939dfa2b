"""Shared building blocks of the API: naming, conditions, object envelope, CRD metadata."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

GROUP = "rft-operator.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "rft"

# The label a cluster admin puts (value "true") on the ServiceAccounts that the project's
# resources may name in spec.serviceAccountName (the operator's default; its config can rename it).
WORKLOAD_SERVICE_ACCOUNT_LABEL = f"{GROUP}/workload"

# A Kubernetes object name, kept to an RFC 1123 label (63 characters, no dots) so that it can also
# be a label value and the stem of every child's name (Jobs, Services: naming.child_name).
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ObjectName = Annotated[str, Field(min_length=1, max_length=63, pattern=NAME_PATTERN)]
# An RFC 1035 label: what a Service name must be (a Deployment's Service is <name>-server).
DNS1035_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"

# A storage URL: s3://bucket/key, gs://bucket/key, or file:///path (local clusters only). The key
# is a path of non-empty segments, none of them '.' or '..' (no escaping the prefix, no '//'), of
# printable characters without whitespace; the bucket follows S3's and GCS's naming rules (the
# lengths and reserved forms that a pattern cannot say are STORAGE_URL_RULES below).
_KEY_FIRST = r"[A-Za-z0-9_~+=@,:-]"
_KEY_CHAR = r"[A-Za-z0-9._~+=@,:-]"
_SEGMENT = rf"(\.?{_KEY_FIRST}{_KEY_CHAR}*|\.\.{_KEY_CHAR}+)"
_S3_BUCKET = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*"
_GCS_BUCKET = r"[a-z0-9]([a-z0-9_-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9_-]*[a-z0-9])?)*"
STORAGE_URL_PATTERN = rf"^((s3://{_S3_BUCKET}|gs://{_GCS_BUCKET})(/{_SEGMENT})*/?|file://(/{_SEGMENT})+/?)$"
STORAGE_URL_RULES: tuple[tuple[str, str], ...] = (
    # (a pattern the URL must NOT match, why), checked by the schema (CEL) and by the model alike.
    (r"^s3://([^/]{0,2}|[^/]{64,})(/|$)", "an S3 bucket name has 3 to 63 characters"),
    (r"^gs://([^/]{0,2}|[^/]{223,})(/|$)", "a GCS bucket name has 3 to 222 characters"),
    (
        r"^gs://([^/.]*\.)*[^/.]{64,}",
        "each dot-separated part of a GCS bucket name has at most 63 characters",
    ),
    (r"^(s3|gs)://[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+(/|$)", "a bucket name is not an IP address"),
    (
        r"^s3://(xn--|sthree-)|^s3://[^/]*(-s3alias|--ol-s3)(/|$)",
        "the S3 bucket name uses a reserved prefix or suffix",
    ),
    (r"^gs://goog", "a GCS bucket name cannot begin with 'goog'"),
)


def cel_string(value: str) -> str:
    """A CEL single-quoted string literal of `value`."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _check_storage_url(url: str) -> str:
    for pattern, why in STORAGE_URL_RULES:
        if re.search(pattern, url):
            raise ValueError(why)
    return url


StorageURL = Annotated[
    str,
    Field(
        max_length=1024,
        pattern=STORAGE_URL_PATTERN,
        description="A location in the user's bucket: s3://bucket/key, gs://bucket/key "
        "(file:///path for local development clusters only). No '.', '..' or empty path segments, "
        "no whitespace.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": f"!self.matches({cel_string(p)})", "message": why} for p, why in STORAGE_URL_RULES
            ]
        },
    ),
    AfterValidator(_check_storage_url),
]

# Decimal numbers are strings in specs (the API conventions discourage floats): "1e-4", "0.001".
DECIMAL_PATTERN = r"^[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"
SIGNED_DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"


def _cel_number(value: float) -> str:
    text = repr(float(value))
    return text if "e" in text or "." in text else f"{text}.0"


@dataclass(frozen=True)
class DecimalRange:
    """`Annotated[str, DecimalRange(low, high)]`: a decimal string whose value lies in [low, high]
    (or an open end). The schema gets the pattern and length of its spelling and a CEL rule for its
    range; the model checks the same (and that the value is finite)."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    signed: bool = False

    @property
    def span(self) -> str:
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"

    def check(self, text: str) -> str:
        value = float(text)
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        if not (math.isfinite(value) and above and below):
            raise ValueError(f"{text} is outside {self.span}")
        return text

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        pattern = SIGNED_DECIMAL_PATTERN if self.signed else DECIMAL_PATTERN
        return core_schema.no_info_after_validator_function(
            self.check, core_schema.str_schema(max_length=32, pattern=pattern)
        )

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        low_op, high_op = (">" if self.low_open else ">="), ("<" if self.high_open else "<=")
        rule = f"double(self) {low_op} {_cel_number(self.low)} && double(self) {high_op} {_cel_number(self.high)}"
        out["x-kubernetes-validations"] = [{"rule": rule, "message": f"must be within {self.span}"}]
        return out


# Label and annotation keys and values as Kubernetes validates them on a pod: a key is an optional
# DNS subdomain prefix (at most 253 characters) and '/', then a name of at most 63 characters.
_QUALIFIED_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)


def _check_key_prefix(key: str) -> str:
    prefix, slash, _ = key.rpartition("/")
    if slash and len(prefix) > 253:
        raise ValueError(f"{key[:40]}...: the prefix before '/' has more than 253 characters")
    return key


QualifiedName = Annotated[
    str,
    Field(min_length=1, max_length=317, pattern=_QUALIFIED_NAME_PATTERN),
    AfterValidator(_check_key_prefix),
]
LabelValue = Annotated[str, Field(max_length=63, pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")]

# A container image reference: [registry[:port]/]path[:tag][@sha256:digest], as the container
# runtimes parse it (lower-case repository path).
_IMAGE_DOMAIN = (
    r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*(:[0-9]{1,5})?"
)
_IMAGE_PATH = r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*"
IMAGE_PATTERN = (
    rf"^({_IMAGE_DOMAIN}/)?{_IMAGE_PATH}(/{_IMAGE_PATH})*(:[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?"
    r"(@sha256:[0-9a-f]{64})?$"
)
ImageRef = Annotated[str, Field(min_length=1, max_length=512, pattern=IMAGE_PATTERN)]

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
    # Rules on the whole object (CEL's self is the object: self.metadata.name, self.spec...).
    validations: list[dict[str, str]] = Field(default_factory=list)
    # metadata.name: a DNS label of at most 63 characters, so that every child name the operator
    # derives from it (naming.child_name), and the label values naming it, are valid.
    name_pattern: str = NAME_PATTERN


class Resource(ApiModel):
    """The envelope of a custom resource: apiVersion, kind, metadata, spec, status."""

    model_config = ConfigDict(extra="ignore")
    crd: ClassVar[CrdInfo]

    api_version: str = API_VERSION
    kind: str
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    @model_validator(mode="after")
    def _name_fits_its_children(self) -> Resource:
        name = self.metadata.name
        if name and (len(name) > 63 or not re.match(self.crd.name_pattern, name)):
            raise ValueError(
                f"metadata.name: {name[:80]!r} must be at most 63 characters matching "
                f"{self.crd.name_pattern} (it names the operator's Jobs, Services and labels)"
            )
        return self

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
