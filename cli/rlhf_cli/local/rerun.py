"""`rlhf run` after a spec edit: the edited stages, and those trained from them, run again. Pure.

Each stage records the hash of the trainer config it ran (StageStatus.configHash, part of its
identity: rlhf_api.identity). When `rlhf run FILE` finds a stage of the work directory whose
recorded hash differs from the one the spec plans now, that stage goes back to Pending with its
attempts and job records cleared, and so does every stage whose identity follows from it (a
stage's hash includes the hashes of the stages it loads). The trainer then finds no checkpoint of
the new identity and trains from the start; the old checkpoints are moved aside, not deleted.
Unlike a cluster, where such an edit is rejected (reconcile/identity_check.py), the laptop loop is
edit-and-rerun, so the edit is applied and the stage's changed fields are named.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlhf_api.identity import UNHASHED_FIELDS, changed_fields
from rlhf_api.status import StageStatus
from rlhf_operator.plan import StagePlan
from rlhf_operator.reconcile import dump_status, load_status

# (stage, what changed: config field paths, or the earlier stages it loads)
Rerun = tuple[str, list[str]]


def rerun_edited(
    status_raw: Mapping[str, Any], plans: list[StagePlan], ran_with: Mapping[str, Mapping[str, Any]]
) -> tuple[dict[str, Any], list[Rerun]]:
    """The stored status with every stage whose config hash changed reset to Pending, and why.

    `ran_with`: the config file each stage last ran with (its config.yaml), to name the fields."""
    status = load_status(status_raw)
    planned = {p.name: p for p in plans}
    reruns: list[Rerun] = []
    for index, stage in enumerate(status.stages):
        stage_plan = planned.get(stage.name)
        identity = stage_plan.config.identity if stage_plan and stage_plan.config else None
        if identity is None or stage.config_hash is None or stage.config_hash == identity.config_hash:
            continue
        assert stage_plan is not None and stage_plan.config is not None
        before = {k: v for k, v in (ran_with.get(stage.name) or {}).items() if k not in UNHASHED_FIELDS}
        now = {k: v for k, v in stage_plan.config.to_file_dict().items() if k not in UNHASHED_FIELDS}
        fields = changed_fields(before, now) if before else []
        if not fields:
            loads = [i.stage for i in stage_plan.config.inputs]
            fields = [f"the output of {', '.join(loads)}"] if loads else ["its config"]
        reruns.append((stage.name, fields))
        status.stages[index] = StageStatus(name=stage.name)
    if reruns and status.phase in ("Succeeded", "Failed"):
        status.phase = "Running"
    return (dump_status(status) if reruns else dict(status_raw)), reruns


def rerun_line(stage: str, fields: list[str]) -> str:
    shown = ", ".join(fields[:5]) + (f" and {len(fields) - 5} more" if len(fields) > 5 else "")
    return f"{stage}: changed since it ran ({shown}): running it again from the start"
