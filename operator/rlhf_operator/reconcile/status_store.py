"""Reading and writing the stored status: lenient in, minimal merge patch out. Pure.

A status written by another operator version (a rollback, a renamed or new field, a hand edit)
must never reset a run: whatever still validates is kept, field by field and stage by stage,
and fields this version does not know stay in the stored object (a merge patch only names the
keys it changes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypeVar, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError
from rlhf_api.status import RLHFRunStatus

M = TypeVar("M", bound=BaseModel)


def dump_status(status: RLHFRunStatus) -> dict[str, Any]:
    return status.to_file_dict()


def load_status(raw: Any) -> RLHFRunStatus:
    """The stored status; what does not validate is dropped piecemeal, never the whole history."""
    if not isinstance(raw, Mapping):
        return RLHFRunStatus()
    try:
        return RLHFRunStatus.model_validate(dict(raw))
    except ValidationError:
        return salvage(RLHFRunStatus, raw) or RLHFRunStatus()


def _item_model(annotation: Any) -> type[BaseModel] | None:
    if get_origin(annotation) is list:
        (item,) = get_args(annotation) or (None,)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return item
    return None


def salvage(model: type[M], raw: Mapping[str, Any]) -> M | None:
    """`model` from the fields of `raw` that validate on their own (lists of models item by
    item); None when a required field is lost."""
    values: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key not in raw:
            continue
        value = raw[key]
        item_model = _item_model(info.annotation)
        if item_model is not None and isinstance(value, list):
            items = [salvage(item_model, v) for v in value if isinstance(v, Mapping)]
            values[name] = [item for item in items if item is not None]
            continue
        annotation: Any = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        try:
            values[name] = TypeAdapter(annotation).validate_python(value)
        except ValidationError:
            continue
    try:
        return model.model_validate(values)
    except ValidationError:
        return None


def merge_patch(old: Any, new: Any) -> Any:
    """The smallest JSON merge patch turning `old` into `new` (None removes a key)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            if isinstance(old[key], dict) and isinstance(value, dict):
                patch[key] = merge_patch(old[key], value)
            else:
                patch[key] = value
    return patch
