"""Shared base for the API models: camelCase on the wire, snake_case in Python."""

from __future__ import annotations

from typing import Any, cast

from pydantic import BaseModel, ConfigDict, JsonValue
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """A model of part of the QuantizedModel resource.

    Fields are snake_case in Python and camelCase in YAML/JSON, as Kubernetes APIs are. Unknown
    fields are refused, so a typo in a manifest fails loudly in the CLI rather than being pruned
    silently by the API server.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    def to_api(self) -> dict[str, Any]:
        """Return the object as the API server stores it: camelCase, unset optionals left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """Return one ``x-kubernetes-validations`` entry (a CEL rule checked at admission)."""
    entry = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


def cel_rules(*rules: dict[str, str]) -> dict[str, JsonValue]:
    """Return ``json_schema_extra`` carrying CEL admission rules."""
    return {"x-kubernetes-validations": cast(list[JsonValue], list(rules))}


def with_cel_rules(*rules: dict[str, str]) -> ConfigDict:
    """Return a model config that adds CEL admission rules to the model's schema.

    pydantic merges it with the parent's config, so camelCase aliases and ``extra="forbid"`` stay.
    """
    return ConfigDict(json_schema_extra=cel_rules(*rules))
