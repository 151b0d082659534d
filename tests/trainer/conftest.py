"""Fixtures shared by the stage tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _torch_threads_restored() -> Iterator[None]:
    """A test that pins torch's thread count (to compare with a one-thread worker) must not pin it
    for the tests after it: their kernels' summation order, hence their rounding, would then
    depend on which tests ran first."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A run root with the builtin tiny model materialized (one per test module)."""
    from rlhf_trainer.builtin_task.arithmetic import materialize_tiny_llama

    root = tmp_path_factory.mktemp("run")
    materialize_tiny_llama(str(root))
    return str(root)
