"""Turn an RLHFRun document into the pydantic model, or a list of field-named errors.

Shared by `rlhf validate`, `rlhf run` and the operator (which reports the same lines in status).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from .camel_model import FIELD_ERRORS
from .spec import RLHFRun


class RunInvalid(ValueError):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        # pydantic puts union/tagged branches and function names in loc; keep field names only
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in part or part.startswith("function-"):
            continue
        else:
            out += ("." if out else "") + part
    return out


def format_errors(error: ValidationError) -> list[str]:
    """One 'field.path: message' line per problem, cross-field messages split per field."""
    lines: list[str] = []
    for item in error.errors(include_url=False):
        path = _path(tuple(item["loc"]))
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == FIELD_ERRORS:
            # model validators report several "field: message" lines at once
            for line in message.splitlines():
                lines.append(f"{path}.{line}" if path else line)
        else:
            lines.append(f"{path}: {message}" if path else message)
    return lines


def parse_run(document: Mapping[str, Any] | None) -> RLHFRun:
    if not isinstance(document, Mapping):
        raise RunInvalid(["document: expected a mapping with apiVersion, kind, metadata and spec"])
    try:
        return RLHFRun.model_validate(dict(document))
    except ValidationError as error:
        raise RunInvalid(format_errors(error)) from None
