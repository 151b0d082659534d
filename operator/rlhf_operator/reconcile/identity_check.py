"""What the state machine trusts, by stage identity (rlhf_api.identity). Pure.

- A stage that started records the hash of the config its jobs run (StageStatus.configHash). A
  later spec edit that changes it is rejected on a cluster (SpecChangeRejected, the run stalls
  without failing until the edit is reverted): the stage's ConfigMap, its checkpoints and any
  later stage already trained from it were made with the old config, and a retry would run the
  old ConfigMap. To train with the new config, re-create the run (a new uid: every stage starts
  fresh, the old checkpoints are kept aside). `rlhf run` instead re-runs the edited stage and
  those after it (rlhf_cli.local.rerun), because there the edit-and-rerun loop is the point.
- A job's result counts only when its identity is this stage's: a result of another run or
  another config (a pod that read a ConfigMap a deleted run left behind, a stale termination
  message) fails the stage without a retry, naming both identities. A result without an
  identity (a trainer image from before identities) is taken as before.
"""

from __future__ import annotations

from rlhf_api.identity import mismatch
from rlhf_api.result import StageResult
from rlhf_api.status import RLHFRunStatus

from ..plan import StagePlan


def edited_started_stages(plans: list[StagePlan], status: RLHFRunStatus) -> str | None:
    """The rejection message when the spec changed the config of a stage that already started."""
    recorded = {s.name: s.config_hash for s in status.stages if s.config_hash and s.phase not in ("Pending", "Skipped")}
    edited = []
    for stage_plan in plans:
        before = recorded.get(stage_plan.name)
        identity = stage_plan.config.identity if stage_plan.config else None
        if before is not None and identity is not None and identity.config_hash != before:
            edited.append(f"{stage_plan.name} (config {before} -> {identity.config_hash})")
    if not edited:
        return None
    return (
        f"the trainer config of started stage(s) {', '.join(edited)} changed: a started stage keeps the "
        "config it started with; revert the edit, or re-create the run to train with it from scratch"
    )


def foreign_result(result: StageResult | None, stage_plan: StagePlan) -> str | None:
    """Why a job's result is not this stage's (None: it is, or it carries no identity)."""
    if result is None or result.identity is None or stage_plan.config is None:
        return None
    why = mismatch(stage_plan.config.identity, result.identity)
    return f"its result is not this stage's: {why}" if why else None
