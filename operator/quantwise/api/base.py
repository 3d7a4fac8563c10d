"""Shared base for the API models: camelCase on the wire, snake_case in Python."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
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
