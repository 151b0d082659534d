"""ReST (Gulcehre et al. 2023, Reinforced Self-Training): the Grow/Improve schedule.

Grow: sample `samplesPerPrompt` responses per prompt from the current policy and score them.
Improve: keep the samples scoring at least the step's threshold, fine-tune the current policy
on them (SFT) and continue from the result. Each Grow step is followed by one Improve step per
threshold value; the threshold never falls, so each Improve step trains on a better subset.
The stage section composing these fields is `RestStageConfig` in rlhf_api.stages.rest.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, JsonValue, model_validator

from .camel_model import CamelModel
from .sampling_config import SamplingConfig

MAX_IMPROVE_STEPS = 8
ThresholdMode = Literal["percentile", "absolute"]


def _non_decreasing_rule(field: str, size: int) -> str:
    """CEL for 'the list never decreases' without loops or isSorted (the API server's CEL
    library has isSorted, the cel-python the tests use does not): one comparison per index."""
    pairs = [f"(self.{field}.size() <= {i + 1} || self.{field}[{i}] <= self.{field}[{i + 1}])" for i in range(size - 1)]
    return " && ".join(pairs)


# The CRD carries no defaults: an absent mode is percentile, absent values are the default ones.
THRESHOLD_CEL_RULES: list[JsonValue] = [
    {
        "rule": "!has(self.values) || " + _non_decreasing_rule("values", MAX_IMPROVE_STEPS),
        "message": "values must not decrease",
    },
    {
        "rule": "!has(self.values) || (has(self.mode) && self.mode != 'percentile')"
        " || self.values.all(v, v >= 0.0 && v < 100.0)",
        "message": "percentile values must be at least 0 and below 100",
    },
]


class ThresholdSchedule(CamelModel):
    """The rising filter of the Improve steps: one Improve step per value, in order."""

    model_config = CamelModel.model_config | ConfigDict(
        json_schema_extra={"x-kubernetes-validations": THRESHOLD_CEL_RULES}
    )

    mode: ThresholdMode = Field(
        default="percentile",
        description=(
            "percentile: keep the samples of the Grow step scoring at least this percentile of its "
            "rewards (50 keeps the better half); absolute: keep the samples scoring at least the value."
        ),
    )
    values: list[float] = Field(
        default_factory=lambda: [50.0, 75.0],
        min_length=1,
        max_length=MAX_IMPROVE_STEPS,
        description="One Improve step per value, in order; must not decrease (the filter rises).",
    )

    @model_validator(mode="after")
    def _rising(self) -> ThresholdSchedule:
        if any(later < earlier for earlier, later in zip(self.values, self.values[1:], strict=False)):
            raise ValueError("values must not decrease")
        if self.mode == "percentile" and any(not 0.0 <= v < 100.0 for v in self.values):
            raise ValueError("percentile values must be at least 0 and below 100")
        return self


class RestLoopConfig(CamelModel):
    """ReST's own knobs; the Improve steps' fine-tuning uses the section's `training`."""

    grow_steps: int = Field(default=2, ge=1, le=100, description="Grow steps (G), each followed by its Improve steps.")
    samples_per_prompt: int = Field(
        default=4, ge=1, le=1024, description="Responses sampled per prompt in each Grow step (N)."
    )
    prompts_per_grow: int | None = Field(
        default=None,
        ge=1,
        description="Prompts sampled in each Grow step (a different slice each time). Default: all of them.",
    )
    threshold: ThresholdSchedule = Field(
        default_factory=ThresholdSchedule,
        description="The reward filter of the Improve steps: one Improve step (I) per value.",
    )
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="How Grow samples responses.")

    @property
    def improve_steps(self) -> int:
        return len(self.threshold.values)
