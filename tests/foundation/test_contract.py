"""The contract package stays torch-free and kopf-free, the operator never imports the trainer,
and the controller never imports the user tools (rlhf_cli).

Checked in a fresh interpreter: what a module drags in through its imports is only visible there.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from types import ModuleType

import pytest
import rlhf_api
import rlhf_cli
import rlhf_operator
from rlhf_api.result import TERMINATION_LIMIT, StageResult

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
    # the controller is a package of its own: the laptop tools build on it, never the reverse
    assert "rlhf_cli" not in loaded


def test_cli_never_imports_the_trainer_or_torch() -> None:
    # `rlhf run` starts the trainer as a child process; the report's matplotlib is imported lazily.
    loaded = _imported_after(_modules(rlhf_cli))
    assert "rlhf_trainer" not in loaded
    assert not loaded & {"torch", "transformers", "trl", "peft", "accelerate", "datasets"}


@pytest.mark.parametrize(
    ("message", "metrics"),
    [
        ("é" * 5000, {}),  # 2 bytes per character: a character cut would overflow the byte limit
        ('"quoted" \\ and \n newlines ' * 400, {}),  # JSON escaping makes it longer still
        ("short", {f"metric_{i}": float(i) / 3 for i in range(400)}),
        ("日本語" * 2000, {f"m{i}": 1.0 for i in range(100)}),
    ],
)
def test_termination_message_is_valid_json_within_4096_bytes(message: str, metrics: dict[str, float]) -> None:
    result = StageResult(stage="sft", status="failed", output_path="/w/run/sft", message=message, metrics=metrics)
    text = result.termination_message()
    assert len(text.encode()) <= TERMINATION_LIMIT
    parsed = StageResult.model_validate_json(text)
    assert parsed.stage == "sft" and parsed.status == "failed"
    assert parsed.message and message.startswith(parsed.message)
    assert all(metrics[k] == v for k, v in parsed.metrics.items())


def test_termination_message_unchanged_when_it_fits() -> None:
    result = StageResult(stage="ppo", status="succeeded", output_path="/w/r/ppo", metrics={"kl": 0.5}, steps=3)
    assert StageResult.model_validate_json(result.termination_message()) == result
