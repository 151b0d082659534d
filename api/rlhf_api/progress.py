"""Progress lines on stdout that `rlhf run` turns into a terminal display.

One line per event: the marker, then compact JSON. Import-light.
"""

from __future__ import annotations

import json
import sys
from typing import Any

MARKER = "@@rlhf "


def emit(stage: str, **fields: Any) -> None:
    """Print one progress event, e.g. emit('sft', step=10, max_steps=50, loss=1.2)."""
    payload = {"stage": stage, **{k: v for k, v in fields.items() if v is not None}}
    sys.stdout.write(MARKER + json.dumps(payload, separators=(",", ":"), default=float) + "\n")
    sys.stdout.flush()


def parse(line: str) -> dict[str, Any] | None:
    if not line.startswith(MARKER):
        return None
    try:
        value = json.loads(line[len(MARKER) :])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
