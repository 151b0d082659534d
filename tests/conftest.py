"""Set for every test before any test module imports huggingface_hub (it reads the variable at
import): no test reaches the hub; the models and data are built locally."""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHUFFLED = Path(__file__).parent / "trainer"
# The image tier waits for the image build that scripts/install-dev.sh started in the background:
# it runs last, so the build overlaps every other test.
LAST = Path(__file__).parent / "images"


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> Generator[None, None, None]:
    """The trainer tests run in a random order (pytest-random-order, enabled in pyproject.toml's
    addopts: its seed is in the header and the summary; `--random-order-seed=N` replays it,
    `--random-order-bucket=none` turns it off), so a test that depends on another's leftovers
    (thread count, RNG state, a cached model) fails where it is written. Every other test keeps
    its written order, first; the image tier last."""
    written = list(items)
    yield
    trainer = [item for item in items if SHUFFLED in item.path.parents]
    images = [item for item in written if LAST in item.path.parents]
    others = [item for item in written if SHUFFLED not in item.path.parents and LAST not in item.path.parents]
    items[:] = others + trainer + images


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """The seed again at the end (the header is off under -q), where a failure is read."""
    if config.pluginmanager.hasplugin("random_order"):
        from random_order.config import Config

        order = Config(config)
        if order.is_enabled and order.bucket_type != "none":
            terminalreporter.write_line(f"trainer tests in random order: --random-order-seed={order.seed}")
