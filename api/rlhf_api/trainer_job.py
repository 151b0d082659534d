"""The file `rlhf-train <stage> --config FILE` reads: one stage's resolved config.

Its stage section is one field per registered kind (`sft: {...}`, `ppo: {...}`), built from
the registry, so a new kind needs no edit here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, TypeVar

from pydantic import Field, create_model, model_validator

from .camel_model import CamelModel
from .identity import StageIdentity
from .model_config import ModelConfig
from .rules import offloads_without_fsdp, shards_8bit
from .stage_config import CompareConfig, DatasetConfig, ReportTo, StageCommon, Strategy
from .stages import STAGE_KINDS, StageName, kind_of

_Section = TypeVar("_Section", bound=StageCommon)


def _default_report_to() -> list[ReportTo]:
    return ["tensorboard"]


# dataset: the stage after rlaif trains on that stage's pairs (issue 11).
InputRole = Literal["model", "rewardModel", "dataset"]


class StageInput(CamelModel):
    """An earlier stage of the same run whose output this stage loads: checked before training."""

    stage: StageName = Field(description="The stage that produced the input.")
    output_dir: str = Field(min_length=1, description="That stage's output directory (holds its result.json).")
    role: InputRole = Field(
        description="What of this config the input provides: model, rewardModel, or dataset (rlaif's pairs)."
    )


class _TrainerJobHead(CamelModel):
    """The fields before the stage sections (the file's order)."""

    stage: StageName = Field(description="Which stage program runs.")
    run_name: str = Field(min_length=1, max_length=253, description="The RLHFRun's name.")
    model: ModelConfig = Field(description="Weights the stage starts from (base or a previous stage's merged output).")
    reward_model: ModelConfig | None = Field(
        default=None,
        description="The reward stage's merged model: for PPO, and for reward sources of type rewardModel.",
    )
    output_dir: str = Field(min_length=1, description="Where checkpoints, merged model, logs and result.json go.")
    work_dir: str = Field(
        min_length=1, description="Run root: shared cache for builtin models and data between stages."
    )
    report_to: list[ReportTo] = Field(
        default_factory=_default_report_to, description="Metric sinks (wandb needs WANDB_API_KEY)."
    )
    strategy: Strategy = Field(
        default="ddp", description="ddp: a model copy per process; fsdp: sharded over all processes (FSDP2)."
    )
    fsdp_offload: bool = Field(
        default=False, description="fsdp only: keep the shards of parameters, gradients and optimizer state on the CPU."
    )
    inputs: list[StageInput] = Field(
        default_factory=list,
        description=(
            "Earlier stages of this run whose outputs the stage loads: each must have succeeded and "
            "trained its planned steps (their result.json says so) before this stage trains."
        ),
    )
    compare: CompareConfig | None = Field(
        default=None,
        description="Final stage only: compare the starting and the trained model after training (<workDir>/eval/).",
    )


if TYPE_CHECKING:
    _TrainerJobSections = _TrainerJobHead
else:
    _TrainerJobSections = create_model(
        "_TrainerJobSections",
        __base__=_TrainerJobHead,
        **{name: (kind.config | None, None) for name, kind in STAGE_KINDS.items()},
    )


class TrainerJobConfig(_TrainerJobSections):
    """The resolved file one stage process reads: what to train, from what, into where.
    Exactly one stage section is set: the one named by `stage`."""

    eval_task: DatasetConfig | None = Field(
        default=None,
        description=(
            "The data with ground truth for task_accuracy, when the stage trains on data without it "
            "(the pairs an rlaif stage wrote from these prompts). Default: the stage's dataset."
        ),
    )
    identity: StageIdentity | None = Field(
        default=None,
        description=(
            "The run uid and the hash of this config (rlhf_api.identity): stamped into every checkpoint "
            "and result.json; the stage resumes only from checkpoints with the same identity."
        ),
    )

    @model_validator(mode="after")
    def _one_section(self) -> TrainerJobConfig:
        present = [name for name in STAGE_KINDS if getattr(self, name) is not None]
        if present != [self.stage]:
            raise ValueError(f"exactly the '{self.stage}' section must be set, found {present}")
        kind = kind_of(self.stage)
        if self.reward_model is None and kind.scores_with_reward_model(self.section):
            if kind.reward_model in ("always", "unless_sources"):
                raise ValueError(f"rewardModel is required for the {self.stage} stage")
            raise ValueError(f"rewardModel: required, a {self.stage}.rewards source has type rewardModel")
        # The spec's rules (rlhf_api.rules), for a file written by hand; the trainer trusts them.
        if offloads_without_fsdp(self.strategy, self.fsdp_offload):
            raise ValueError("fsdpOffload needs strategy fsdp")
        if shards_8bit(self.strategy, self.section.quantization.mode):
            raise ValueError(f"{self.stage}.quantization.mode: 8bit weights cannot be sharded (strategy is fsdp)")
        return self

    @property
    def section(self) -> StageCommon:
        """The stage's section (its kind's config class)."""
        section: StageCommon | None = getattr(self, self.stage)
        assert section is not None  # guaranteed by _one_section
        return section

    def section_as(self, config: type[_Section]) -> _Section:
        """The stage's section as its kind's config class (what a stage program reads)."""
        section = self.section
        if not isinstance(section, config):
            raise TypeError(f"the {self.stage} section is a {type(section).__name__}, not a {config.__name__}")
        return section

    def compare_settings(self) -> CompareConfig:
        """The compare section as planned; for a config written without one (an older run),
        the stage's own defaults."""
        return self.compare or CompareConfig(
            max_new_tokens=self.section.eval_max_new_tokens(), reward_model=self.reward_model
        )
