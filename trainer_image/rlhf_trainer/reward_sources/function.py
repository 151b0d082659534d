"""A user's reward function, imported by `module:function` from the trainer image, PYTHONPATH, or
a directory on the volume (`pythonPath`).

Only the trainer process imports it (the operator validates the path's shape, nothing more).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from ..errors import StageError

_SHIP_IT = "ship it in a derived trainer image, or put its directory on the volume and name it in pythonPath"


def import_reward_function(path: str, field: str, python_path: str | None = None) -> Callable[..., Any]:
    """`field`: how errors name the source (its `.function`/`.pythonPath` are appended).
    `python_path`: a directory put first on sys.path (the plan resolved a relative one against
    the volume root)."""
    if python_path is not None:
        directory = os.path.expanduser(python_path)
        if not os.path.isdir(directory):
            raise StageError(f"{field}.pythonPath", f"directory '{directory}' does not exist")
        if directory not in sys.path:
            sys.path.insert(0, directory)
    field = f"{field}.function"
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StageError(field, f"cannot import module '{module_name}' ({exc}); {_SHIP_IT}") from exc
    function = getattr(module, attribute, None)
    if not callable(function):
        raise StageError(field, f"module '{module_name}' has no function '{attribute}'")
    return function  # type: ignore[no-any-return]
