"""Fixtures shared by the stage tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A run root with the builtin tiny model materialized (one per test module)."""
    from rlhf_trainer.builtin_task.arithmetic import materialize_tiny_llama

    root = tmp_path_factory.mktemp("run")
    materialize_tiny_llama(str(root))
    return str(root)
