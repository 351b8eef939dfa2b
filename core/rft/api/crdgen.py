"""Render CustomResourceDefinitions from the Pydantic models (`make crds`).

Pydantic's JSON Schema is close to, but not, a Kubernetes structural schema. This module turns it
into one: `$ref`s inlined, `Optional[X]` (anyOf with null) folded into X, titles dropped,
`additionalProperties: false` dropped (the apiserver prunes and kubectl warns on unknown fields
instead), object fields with default factories given `default: {}` so their nested defaults apply,
and the CRD-level extras (CEL rules, list-map keys for conditions, printer columns) added.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from rft.api import ALL_KINDS
from rft.api.common import CATEGORY, GROUP, VERSION, Resource, cel_string

JsonSchema = dict[str, Any]

_DROPPED_KEYS = {"title", "additionalProperties", "$defs", "discriminator"}


def _resolve(node: Any, defs: dict[str, JsonSchema]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    if "anyOf" in node:
        variants = [v for v in node["anyOf"] if v.get("type") != "null"]
        if len(variants) != 1:
            raise ValueError(f"unsupported union in schema: {node['anyOf']}")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if rest.get("default", "absent") is None:
            del rest["default"]
        return _resolve({**variants[0], **rest}, defs)
    out: JsonSchema = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS and not (key == "additionalProperties" and isinstance(value, dict)):
            continue
        if key == "properties":
            out[key] = {name: _resolve(prop, defs) for name, prop in value.items()}
        else:
            out[key] = _resolve(value, defs)
    return out


def _structural(node: JsonSchema, *, keep_defaults: bool) -> JsonSchema:
    """Post-process a resolved schema node (recursively) into structural form."""
    node = dict(node)
    if not keep_defaults:
        node.pop("default", None)
    if "patternProperties" in node:
        # A map whose keys have a pattern (Pydantic's dict[Annotated[str, pattern], V]).
        ((pattern, values),) = node.pop("patternProperties").items()
        node["additionalProperties"] = values
        node["propertyNames"] = {**node.get("propertyNames", {}), "pattern": pattern}
    if "propertyNames" in node:
        # A structural schema has no propertyNames: a map's key constraints become a CEL rule.
        _keys_as_cel(node, node.pop("propertyNames"))
    if "const" in node:
        # A one-value Literal; the CRD schema dialect has no `const`.
        node["enum"] = [node.pop("const")]
    if node.get("type") == "object" and "properties" in node:
        required = set(node.get("required", []))
        props = {}
        for name, raw_prop in node["properties"].items():
            prop = _structural(raw_prop, keep_defaults=keep_defaults)
            if (
                keep_defaults
                and name not in required
                and prop.get("type") == "object"
                and "properties" in prop
                and "default" not in prop
                and not prop.get("required")
            ):
                prop["default"] = {}
            props[name] = prop
        node["properties"] = props
        if not node.get("required"):
            node.pop("required", None)
    if "items" in node:
        node["items"] = _structural(node["items"], keep_defaults=keep_defaults)
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = _structural(node["additionalProperties"], keep_defaults=keep_defaults)
    return node


def _keys_as_cel(node: JsonSchema, keys: JsonSchema) -> None:
    checks = []
    if "pattern" in keys:
        checks.append(f"k.matches({cel_string(keys['pattern'])})")
    if "maxLength" in keys:
        checks.append(f"size(k) <= {keys['maxLength']}")
    if "minLength" in keys:
        checks.append(f"size(k) >= {keys['minLength']}")
    if not checks:
        return
    bounds = [f"at least {keys['minLength']}"] if keys.get("minLength", 0) > 1 else []
    bounds += [f"at most {keys['maxLength']}"] if "maxLength" in keys else []
    what = f"match {keys['pattern']}" if "pattern" in keys else "be a valid key"
    rule = {
        "rule": f"self.all(k, {' && '.join(checks)})",
        "message": f"every key must {what}" + (f" ({' and '.join(bounds)} characters)" if bounds else ""),
    }
    node["x-kubernetes-validations"] = [*node.get("x-kubernetes-validations", []), rule]


def _conditions_as_map(status: JsonSchema) -> None:
    conditions = status.get("properties", {}).get("conditions")
    if conditions is not None:
        conditions["x-kubernetes-list-type"] = "map"
        conditions["x-kubernetes-list-map-keys"] = ["type"]
        conditions["items"]["required"] = ["type", "status"]
        conditions["maxItems"] = 32


def openapi_schema(kind: type[Resource]) -> JsonSchema:
    """The openAPIV3Schema of one kind."""
    spec_model = kind.model_fields["spec"].annotation
    status_model = kind.model_fields["status"].annotation
    assert isinstance(spec_model, type)
    assert isinstance(status_model, type)
    spec_raw = spec_model.model_json_schema(by_alias=True)
    status_raw = status_model.model_json_schema(by_alias=True)
    spec = _structural(_resolve(spec_raw, spec_raw.get("$defs", {})), keep_defaults=True)
    status = _structural(_resolve(status_raw, status_raw.get("$defs", {})), keep_defaults=False)
    if kind.crd.spec_validations:
        spec["x-kubernetes-validations"] = [
            *spec.get("x-kubernetes-validations", []),
            *kind.crd.spec_validations,
        ]
    _conditions_as_map(status)
    schema: JsonSchema = {
        "type": "object",
        "description": kind.crd.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "APIVersion defines the versioned schema of this representation of an object.",
            },
            "kind": {"type": "string", "description": "Kind is the type of this object."},
            # Only metadata.name (and generateName) may be restricted in a CRD.
            "metadata": {
                "type": "object",
                "properties": {"name": {"type": "string", "maxLength": 63, "pattern": kind.crd.name_pattern}},
            },
            "spec": spec,
            "status": status,
        },
    }
    if kind.crd.validations:
        schema["x-kubernetes-validations"] = kind.crd.validations
    return schema


def crd(kind: type[Resource]) -> JsonSchema:
    """The full CustomResourceDefinition manifest of one kind."""
    info = kind.crd
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name(),
            "labels": {"app.kubernetes.io/part-of": "rft-operator"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": info.short_names,
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {
                            "name": c.name,
                            "type": c.type,
                            "jsonPath": c.json_path,
                            **({"description": c.description} if c.description else {}),
                            **({"priority": c.priority} if c.priority else {}),
                        }
                        for c in info.printer_columns
                    ],
                    "schema": {"openAPIV3Schema": openapi_schema(kind)},
                }
            ],
        },
    }


class _QuotingDumper(yaml.SafeDumper):
    """Quotes strings a YAML 1.2 reader (Go, kubectl) would take for numbers, e.g. "1e-4"."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = '"' if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_QuotingDumper.add_representer(str, _represent_str)


def dump_yaml(obj: Any) -> str:
    """YAML that Kubernetes tools read back exactly as written."""
    return yaml.dump(obj, Dumper=_QuotingDumper, sort_keys=False, width=100)


HEADER = "# Generated by `make crds` from core/rft/api (rft.api.crdgen). Do not edit.\n"


def render_all() -> dict[str, str]:
    """File name -> YAML text, for every kind."""
    return {f"{GROUP}_{kind.crd.plural}.yaml": HEADER + dump_yaml(crd(kind)) for kind in ALL_KINDS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out", type=Path, action="append", required=True, help="Output directory (repeatable)."
    )
    parser.add_argument("--check", action="store_true", help="Fail if the files differ instead of writing.")
    args = parser.parse_args(argv)
    stale = []
    for out in args.out:
        rendered = render_all()
        for name, text in rendered.items():
            path = out / name
            if args.check:
                if not path.exists() or path.read_text() != text:
                    stale.append(str(path))
            else:
                out.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        if not args.check:
            for extra in out.glob(f"{GROUP}_*.yaml"):
                if extra.name not in rendered:
                    extra.unlink()
    if stale:
        print("out of date (run `make crds`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
