"""JSON Lines files that stages write for people and for their own restarts (rlaif, rest)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rlhf_api.files import write_text_atomic


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Atomically (temporary file, then rename): a reader or a restarted stage never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
