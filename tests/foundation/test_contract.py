"""The contract package stays torch-free and kopf-free, and the operator never imports the trainer.

Checked in a fresh interpreter: what a module drags in through its imports is only visible there.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from types import ModuleType

import rlhf_api
import rlhf_operator

HEAVY = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "kopf")


def _imported_after(modules: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def _modules(package: ModuleType) -> list[str]:
    found = pkgutil.walk_packages(package.__path__, package.__name__ + ".")
    return [package.__name__, *(info.name for info in found)]


def test_contract_imports_neither_torch_nor_kopf() -> None:
    loaded = _imported_after(_modules(rlhf_api))
    assert not loaded & {*HEAVY, "rlhf_operator", "rlhf_trainer"}


def test_operator_never_imports_the_trainer_or_torch() -> None:
    # kopf is the operator's own dependency; torch and the trainer package are not.
    loaded = _imported_after(_modules(rlhf_operator))
    assert "rlhf_trainer" not in loaded
    assert not loaded & {"torch", "transformers", "trl", "peft", "accelerate", "datasets"}
