"""A user's reward function, imported by `module:function` from the trainer image or PYTHONPATH.

Only the trainer process imports it (the operator validates the path's shape, nothing more).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ..errors import StageError

_SHIP_IT = "ship it in a derived trainer image, or put its directory on the volume and on PYTHONPATH"


def import_reward_function(path: str, field: str) -> Callable[..., Any]:
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StageError(field, f"cannot import module '{module_name}' ({exc}); {_SHIP_IT}") from exc
    function = getattr(module, attribute, None)
    if not callable(function):
        raise StageError(field, f"module '{module_name}' has no function '{attribute}'")
    return function  # type: ignore[no-any-return]
