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

from collections.abc import Mapping
from typing import Any

from rlhf_api.identity import UNHASHED_FIELDS, change_text, changed_values, mismatch
from rlhf_api.result import StageResult
from rlhf_api.status import RLHFRunStatus

from ..plan import StagePlan

# At most this many changed fields are named per stage (the rest are counted).
NAMED_CHANGES = 8


def edited_stages(plans: list[StagePlan], status: RLHFRunStatus) -> list[StagePlan]:
    """The plans of the started stages whose config the spec changed (their recorded hash differs)."""
    recorded = {s.name: s.config_hash for s in status.stages if s.config_hash and s.phase not in ("Pending", "Skipped")}
    edited = []
    for stage_plan in plans:
        before = recorded.get(stage_plan.name)
        identity = stage_plan.config.identity if stage_plan.config else None
        if before is not None and identity is not None and identity.config_hash != before:
            edited.append(stage_plan)
    return edited


def edited_started_stages(
    plans: list[StagePlan], status: RLHFRunStatus, started: Mapping[str, Mapping[str, Any]] | None = None
) -> str | None:
    """The rejection message when the spec changed the config of a stage that already started.

    `started`: the config each stage started with (its ConfigMap's file), by stage: the message
    then names each changed field with its old and new value; without it, the config hashes."""
    recorded = {s.name: s.config_hash for s in status.stages}
    names: list[str] = []
    named: list[str] = []
    for stage_plan in edited_stages(plans, status):
        assert stage_plan.config is not None and stage_plan.config.identity is not None
        before = (started or {}).get(stage_plan.name)
        changes = _changes(stage_plan, before) if before is not None else []
        if changes:
            names.append(stage_plan.name)
            # paths in the config file: its stage section first (`sft.training.learningRate`)
            named += [change_text(path, old, new) for path, old, new in changes[:NAMED_CHANGES]]
            if len(changes) > NAMED_CHANGES:
                named.append(f"{len(changes) - NAMED_CHANGES} more in {stage_plan.name}")
        elif before is not None and stage_plan.config.inputs:  # only what it loads changed
            loads = ", ".join(i.stage for i in stage_plan.config.inputs)
            names.append(f"{stage_plan.name} (trained from {loads}, which changed)")
        else:
            now = stage_plan.config.identity.config_hash
            names.append(f"{stage_plan.name} (config {recorded.get(stage_plan.name)} -> {now})")
    if not names:
        return None
    detail = f" ({'; '.join(named)})" if named else ""
    return (
        f"the trainer config of started stage(s) {', '.join(names)} changed{detail}: a started stage keeps the "
        "config it started with; revert the edit, or re-create the run to train with it from scratch"
    )


def _changes(stage_plan: StagePlan, before: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    assert stage_plan.config is not None
    old = {k: v for k, v in before.items() if k not in UNHASHED_FIELDS}
    new = {k: v for k, v in stage_plan.config.to_file_dict().items() if k not in UNHASHED_FIELDS}
    return changed_values(old, new)


def foreign_result(result: StageResult | None, stage_plan: StagePlan) -> str | None:
    """Why a job's result is not this stage's (None: it is, or it carries no identity)."""
    if result is None or result.identity is None or stage_plan.config is None:
        return None
    why = mismatch(stage_plan.config.identity, result.identity)
    return f"its result is not this stage's: {why}" if why else None
