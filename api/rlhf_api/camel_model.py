"""The base of every contract model: camelCase in files (Kubernetes style), snake_case in Python."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

# The error type of model validators that report several "field: message" lines at once
# (validation.format_errors prefixes each line with the model's path).
FIELD_ERRORS = "rlhf_field_errors"


def field_errors(errors: list[str]) -> PydanticCustomError:
    """The error a model validator raises for several "field: message" lines, one per problem."""
    return PydanticCustomError(FIELD_ERRORS, "{lines}", {"lines": "\n".join(errors)})


class CamelModel(BaseModel):
    """Base for every schema model: camelCase in files, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )

    def to_file_dict(self) -> dict[str, Any]:
        """The camelCase dict written to YAML/JSON, without unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def cel_field_or_default(model: type[BaseModel], name: str) -> str:
    """A CEL expression for a field of `model` (in camelCase) that falls back to the model's
    default: the API server's CEL sees no defaults for fields the user left unset."""
    alias = to_camel(name)
    return f"(has(self.{alias}) ? self.{alias} : {model.model_fields[name].default})"
