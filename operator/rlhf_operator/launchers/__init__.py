"""Launchers: one module per job kind that can run a stage (see base.Launcher).

`spec.launcher` picks one for the cluster; `rlhf run` uses the local one (local/launcher.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlhf_api.spec import RLHFRun

from .base import Launcher, release_patch
from .pytorchjob import PYTORCHJOB
from .trainjob import TRAINJOB

# The job kinds the operator creates on a cluster (and watches).
KUBERNETES_LAUNCHERS: dict[str, Launcher] = {PYTORCHJOB.name: PYTORCHJOB, TRAINJOB.name: TRAINJOB}


def launcher_for(run: RLHFRun) -> Launcher:
    """The cluster launcher the run's spec.launcher names."""
    return KUBERNETES_LAUNCHERS[run.spec.launcher]


def launcher_of(body: Mapping[str, Any]) -> Launcher:
    """The launcher a raw RLHFRun body's spec.launcher names; PyTorchJob when it is unset or
    unknown (an invalid spec is reported by reconcile, not here)."""
    name = str((body.get("spec") or {}).get("launcher") or PYTORCHJOB.name)
    return KUBERNETES_LAUNCHERS.get(name, PYTORCHJOB)


__all__ = ["KUBERNETES_LAUNCHERS", "PYTORCHJOB", "TRAINJOB", "Launcher", "launcher_for", "launcher_of", "release_patch"]
