"""Check an object against the generated CRD as the API server would, offline.

The API server applies schema defaults, validates the OpenAPI v3 schema, then evaluates every
``x-kubernetes-validations`` CEL rule with ``self`` bound to the node it sits on. Here: defaults
by walking the schema, the schema with ``jsonschema`` (Draft 4 semantics, which OpenAPI v3's
boolean ``exclusiveMinimum`` follows), and the CEL rules with ``cel-python``.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import celpy
import jsonschema

from quantwise.api.crd import build_crd


@cache
def crd_schema() -> dict[str, Any]:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    if isinstance(value, dict) and "properties" in schema:
        for key, prop in schema["properties"].items():
            if key not in value and "default" in prop:
                value[key] = copy.deepcopy(prop["default"])
            if key in value:
                value[key] = apply_defaults(prop, value[key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], v) for v in value]
    return value


def _strip(schema: Any) -> Any:
    """Drop Kubernetes extensions and turn int-or-string into a JSON Schema type list."""
    if isinstance(schema, list):
        return [_strip(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strip(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if schema.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if "properties" in out and "type" not in out:
        out["type"] = "object"
    if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        # Structural schemas prune unknown fields; pydantic refuses them. Treat them as errors
        # so that a typo in a fixture is noticed rather than silently pruned.
        out.setdefault("additionalProperties", False)
    return out


_ENV = celpy.Environment()


@cache
def _program(rule: str) -> Any:
    return _ENV.program(_ENV.compile(rule))


def _cel_errors(schema: dict[str, Any], value: Any, path: str) -> list[str]:
    errors: list[str] = []
    for entry in schema.get("x-kubernetes-validations", ()):
        result = _program(entry["rule"]).evaluate({"self": celpy.json_to_cel(value)})
        if not isinstance(result, celpy.celtypes.BoolType) or not bool(result):
            errors.append(f"{path}: {entry['message']}")
    if isinstance(value, dict):
        for key, prop in schema.get("properties", {}).items():
            if key in value:
                errors += _cel_errors(prop, value[key], f"{path}.{key}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in value.items():
                errors += _cel_errors(extra, item, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            errors += _cel_errors(schema["items"], item, f"{path}[{i}]")
    return errors


def admission_errors(obj: dict[str, Any]) -> list[str]:
    """Messages the API server would refuse ``obj`` with (empty: it would be admitted)."""
    schema = crd_schema()
    obj = apply_defaults(schema, copy.deepcopy(obj))
    validator = jsonschema.Draft4Validator(_strip(schema))
    errors = [
        f"{'.'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
        for err in validator.iter_errors(obj)
    ]
    if errors:
        return errors  # The API server does not run CEL on a schema-invalid object.
    return _cel_errors(schema, obj, "<root>")


def defaulted(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with the CRD's defaults applied, as the API server stores it."""
    return apply_defaults(crd_schema(), copy.deepcopy(obj))
