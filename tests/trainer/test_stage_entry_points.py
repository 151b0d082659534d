"""Every registered kind's trainer entry point ("module:function") imports and is callable."""

from __future__ import annotations

import importlib

import pytest
from rlhf_api.stages import STAGE_KINDS


@pytest.mark.parametrize("name", list(STAGE_KINDS))
def test_entry_point_resolves(name: str) -> None:
    module, function = STAGE_KINDS[name].entry_point.split(":")
    assert callable(getattr(importlib.import_module(module), function))
