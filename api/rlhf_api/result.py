"""The stage result: `<out>/result.json`, and its short form on the termination-message file.

Import-light: the operator reads the termination message with the same model.
"""

from __future__ import annotations

import json
import os
from typing import Literal

from pydantic import Field

from .camel_model import CamelModel
from .stage_config import StageName

TERMINATION_LOG_ENV = "RLHF_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
# Kubernetes keeps at most 4096 bytes of a termination message.
TERMINATION_LIMIT = 4096


class StageResult(CamelModel):
    stage: StageName
    status: Literal["succeeded", "failed"]
    output_path: str = Field(description="The stage's output directory.")
    merged_path: str | None = Field(default=None, description="Loadable merged model, when produced.")
    adapter_path: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    message: str | None = Field(default=None, description="Why the stage failed, one line.")
    started_at: str | None = None
    finished_at: str | None = None

    def termination_message(self) -> str:
        """Compact JSON that fits the kubelet's 4 KiB limit (metrics dropped first if needed)."""
        text = json.dumps(self.to_file_dict(), separators=(",", ":"))
        if len(text.encode()) <= TERMINATION_LIMIT:
            return text
        slim = self.model_copy(update={"metrics": {}, "message": (self.message or "")[:1024] or None})
        return json.dumps(slim.to_file_dict(), separators=(",", ":"))[:TERMINATION_LIMIT]


def write_result(result: StageResult, path: str) -> None:
    """Write result.json atomically (a reader never sees half a file) and the termination log."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(result.to_file_dict(), f, indent=2)
    os.replace(tmp, path)
    log = os.environ.get(TERMINATION_LOG_ENV, DEFAULT_TERMINATION_LOG)
    try:
        with open(log, "w") as f:
            f.write(result.termination_message())
    except OSError:
        pass  # not in a pod, or not writable: result.json is the record


def read_result(path: str) -> StageResult | None:
    try:
        with open(path) as f:
            return StageResult.model_validate(json.load(f))
    except (OSError, ValueError):
        return None
