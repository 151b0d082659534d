"""Dependency sets: the operator image's base stays light, `rlhf run` can always write its report."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

PROJECT = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]


def names(pins: list[str]) -> set[str]:
    return {pin.split("==")[0] for pin in pins}


def test_train_has_every_pin_of_report() -> None:
    """`rlhf run` writes report.html at the end: the train extra must bring what that needs."""
    assert set(EXTRAS["report"]) <= set(EXTRAS["train"])
    assert all("==" in pin for pin in EXTRAS["report"])


def test_base_install_has_neither_torch_nor_plotting() -> None:
    assert not names(PROJECT["dependencies"]) & {"torch", "matplotlib", "tensorboard", "transformers"}


def test_console_scripts_resolve() -> None:
    for name, target in PROJECT["scripts"].items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), name
    assert PROJECT["scripts"]["kubectl-rlhf"] == "rlhf_cli.main:kubectl_main"  # kubectl finds plugins by name
