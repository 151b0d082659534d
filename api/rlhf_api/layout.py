"""Where a stage puts things under its output directory (the same locally and on the volume)."""

from __future__ import annotations

from pathlib import PurePosixPath

CHECKPOINTS = "checkpoints"
MERGED = "merged"
ADAPTER = "adapter"
LOGS = "logs"
RESULT = "result.json"
CONFIG = "config.yaml"
CACHE = ".cache"  # under the run root: builtin models/data generated once and shared by stages
EVAL = "eval"  # under the run root: the side-by-side comparison after the final stage


def merged_dir(output_dir: str) -> str:
    return str(PurePosixPath(output_dir) / MERGED)


def result_path(output_dir: str) -> str:
    return str(PurePosixPath(output_dir) / RESULT)


def eval_dir(run_root: str) -> str:
    return str(PurePosixPath(run_root) / EVAL)


# rlaif: the labelled pairs (prompt/chosen/rejected/confidence), the next stage's training data.
RLAIF_PAIRS = "preferences.jsonl"


def rlaif_pairs(output_dir: str) -> str:
    return str(PurePosixPath(output_dir) / RLAIF_PAIRS)
