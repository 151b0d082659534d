from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))

MINIMAL: dict[str, Any] = {
    "apiVersion": "rlhf.dev/v1alpha1",
    "kind": "RLHFRun",
    "metadata": {"name": "demo"},
    "spec": {
        "model": {"name": "builtin:tiny-llama"},
        "sft": {"dataset": {"source": "builtin:arithmetic"}},
        "reward": {"dataset": {"source": "builtin:arithmetic", "format": "preference"}},
        "ppo": {"dataset": {"source": "builtin:arithmetic"}},
    },
}


@pytest.fixture
def minimal() -> dict[str, Any]:
    return copy.deepcopy(MINIMAL)


def load_example(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((REPO / "examples" / name).read_text())
    return document


def spec_with(**changes: Any) -> dict[str, Any]:
    """MINIMAL with spec fields replaced; a None value removes the field."""
    document = copy.deepcopy(MINIMAL)
    for key, value in changes.items():
        if value is None:
            document["spec"].pop(key, None)
        else:
            document["spec"][key] = value
    return document
