"""A stage's checkpoints on the volume: where they are, the latest complete one, its step."""

from __future__ import annotations

import re
from pathlib import Path

from rlhf_api.layout import CHECKPOINTS
from rlhf_api.trainer_job import TrainerJobConfig

from .. import checkpoint_guard


def checkpoints_dir(output_dir: str) -> str:
    return str(Path(output_dir) / CHECKPOINTS)


_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def latest_checkpoint(directory: str) -> str | None:
    """The checkpoint-N subdirectory with the highest N that is complete and stamped with this
    attempt's identity (checkpoint_guard), or None."""
    found = checkpoint_guard.resumable(directory)
    return str(found) if found is not None else None


def resume_point(cfg: TrainerJobConfig) -> str | None:
    """The latest complete checkpoint of this stage's output dir (a restarted stage resumes)."""
    return latest_checkpoint(checkpoints_dir(cfg.output_dir))


def step_of(checkpoint: str) -> int:
    match = _CHECKPOINT_RE.match(Path(checkpoint).name)
    return int(match.group(1)) if match else 0
