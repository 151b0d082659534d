"""StageKind: what the rest of the system asks about a stage kind, declared once per kind.

Each kind module (rlhf_api.stages.<kind>) holds its config classes and one `KIND = StageKind(...)`;
the registry (rlhf_api.stages) maps names to kinds. The spec, the pipeline rules, the plan, the
memory estimate, the CRD and the trainer read these fields instead of comparing stage names.
Torch-free: the trainer entry point is a "module:function" string the trainer imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from ..precision import TrainerKind
from ..reward_sources import uses_reward_model

if TYPE_CHECKING:
    from ..stage_config import StageCommon

# What a stage's rows are (trainer data loading and `format: auto`): demonstrations (text,
# prompt/completion, chat, template), preference pairs (prompt/chosen/rejected, votes), or
# prompts only (the stage samples its own responses).
DataKind = Literal["demonstrations", "preference", "prompts"]
# Who supplies the reward model's scores: nobody, always the reward stage's model (PPO), or the
# stage's reward sources (a source of type rewardModel).
# never; always (the stage scores with the reward stage's model); sources (through a rewardModel
# entry of its `rewards`, the default list); unless_sources (always, unless its `rewards` list is
# given and names none: PPO against e.g. a remote reward server).
RewardModelUse = Literal["never", "always", "sources", "unless_sources"]
# The memory estimate's training shape: given sequences (SFT, reward, DPO, ReST's fine-tuning),
# the PPO engine ("engine": policy + value head, a reward model, generation), or TRL's group-relative RL
# (a generation batch, reward sources, a reference copy when beta > 0).
EstimateShape = Literal["sequences", "engine", "group"]


@dataclass(frozen=True)
class MemoryProfile:
    """What the per-GPU memory estimate (rlhf_operator.estimate.memory) needs of a kind."""

    shape: EstimateShape = "sequences"
    sequences_per_example: int = 1  # reward and DPO score a chosen and a rejected sequence
    classifier: bool = False  # a sequence-classification head (the reward model): no LM logits
    value_head: bool = False  # the PPO engine's value head, trained in fp32


@dataclass(frozen=True)
class StageKind:
    """One stage kind. `pipelines` lists the pipelines that end with it (see pipeline_table)."""

    name: str
    config: type[StageCommon]  # the section of the trainer's file; the spec section adds StageControl
    section_doc: str  # the spec section's description (CRD)
    spec_description: str  # RLHFRunSpec.<name>'s description
    entry_point: str  # "module:function" run by `rlhf-train <name>`, called with the TrainerJobConfig
    data: DataKind
    pipelines: tuple[tuple[str, ...], ...]  # every accepted pipeline whose last stage is this kind
    is_policy: bool  # its output is a policy (causal LM): task_accuracy and the comparison measure it
    produces_model: bool = True  # False: its output is data (rlaif's pairs), nothing to load
    produces_reward_model: bool = False  # its merged model is the run's reward model
    starts_from_sft: bool = True  # starts from the SFT model when there is one (else the base model)
    reward_model: RewardModelUse = "never"
    # Stages that must run before it or be given (existingOutput): (stage, what it provides).
    requires: tuple[tuple[str, str], ...] = ()
    can_follow_rlaif: bool = False  # may stand right after rlaif and train on its pairs
    pipeline_hint: str | None = None  # added to the error for a pipeline with this kind that is not accepted
    trainer: TrainerKind = "trl"  # which trainer's precision rules apply (precision.resolve)
    memory: MemoryProfile | None = MemoryProfile()  # None: no training formula (rlaif samples and judges)
    # The kind's own metric names, headline first, beyond those every training stage reports
    # (rlhf_api.metric_names): every display derives its list from these. `metrics`: result.json
    # (the summary table, `rlhf status`, the report, the end-of-stage line); `progress`: per-step
    # numbers for the live bars, the status and `rlhf status -w` (after the loss); and
    # `progress_detail`: per-step numbers the plain progress line adds.
    metrics: tuple[str, ...] = ()
    progress: tuple[str, ...] = ()
    progress_detail: tuple[str, ...] = ()
    # CEL rules the CRD attaches to a definition of this kind's config (by class name), each the
    # twin of a pydantic validator next to it.
    schema_rules: Mapping[str, list[dict[str, str]]] = field(default_factory=dict)

    @property
    def accepts_reward_sources(self) -> bool:
        return self.reward_model == "sources"

    def scores_with_reward_model(self, section: StageCommon) -> bool:
        """The stage loads the reward stage's model: always (PPO), or through a rewardModel source."""
        if self.reward_model == "always":
            return True
        if self.reward_model == "unless_sources":
            sources = section.reward_sources()
            return not sources or uses_reward_model(sources)
        return self.accepts_reward_sources and uses_reward_model(section.reward_sources())


def scored_pipelines(name: str) -> tuple[tuple[str, ...], ...]:
    """The pipelines of a kind that trains a policy against rewards, last: after sft and/or
    reward, or after [sft, rlaif, reward]."""
    return ((name,), ("sft", name), ("reward", name), ("sft", "reward", name), ("sft", "rlaif", "reward", name))
