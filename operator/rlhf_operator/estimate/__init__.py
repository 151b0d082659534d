"""GPU memory estimates (`rlhf estimate`) and the model catalog they read.

The reconcile core does not import this package: the kopf handlers and `rlhf run` pass
`fit_warnings` to it (reconcile's FitCheck seam), as they pass a launcher.
"""

from __future__ import annotations

from rlhf_api.spec import RLHFRun

from .catalog import lookup
from .memory import stage_fit_warnings


def fit_warnings(run: RLHFRun) -> list[str]:
    """One line per stage that will not fit its GPUs, with the catalog's model sizes."""
    return stage_fit_warnings(run, lookup)


__all__ = ["fit_warnings"]
