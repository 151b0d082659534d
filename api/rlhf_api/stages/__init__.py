"""The stage-kind registry: one line per kind. Everything that differs between stage kinds is
read from here (rlhf_api.stages.kind.StageKind) rather than compared by name.

To add a kind: write rlhf_api/stages/<kind>.py (its configs and `KIND`), add it below, and add
the trainer program its `entry_point` names (docs/architecture.md, "How to add a stage kind").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from . import dpo, grpo, kto, ppo, rest, reward, rlaif, rloo, sft
from .kind import StageKind

# Registry order is the order of STAGES: the spec's sections, the CRD, error and rule order.
STAGE_KINDS: dict[str, StageKind] = {
    kind.name: kind
    for kind in (
        sft.KIND,
        reward.KIND,
        ppo.KIND,
        dpo.KIND,
        grpo.KIND,
        rloo.KIND,
        rest.KIND,
        rlaif.KIND,
        kto.KIND,
    )
}

if TYPE_CHECKING:
    StageName = str
else:
    StageName = Literal[tuple(STAGE_KINDS)]

STAGES: tuple[StageName, ...] = tuple(STAGE_KINDS)
# The stages whose output is a policy (a causal LM): what task_accuracy and the comparison measure.
POLICY_STAGES: tuple[StageName, ...] = tuple(name for name, kind in STAGE_KINDS.items() if kind.is_policy)


def kind_of(name: str) -> StageKind:
    """The kind of a stage name (KeyError for a name no kind has)."""
    return STAGE_KINDS[name]
