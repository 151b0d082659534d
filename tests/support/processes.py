"""Environment for the trainer subprocesses the tests start (torchrun workers, `python -m rlhf_trainer`)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def subprocess_env(**extra: str) -> dict[str, str]:
    """This process's environment, offline, one thread, with the repo root importable (tests.support)."""
    paths = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(paths),
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        **extra,
    )
