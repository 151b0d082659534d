"""RLAIF (Bai et al. 2022, Constitutional AI; Lee et al. 2023): an AI labeller writes preference pairs.

For each prompt the stage samples responses from its policy, takes two that differ, and asks a
judge model which one better follows the constitution. The judge's answer is read from its
probabilities of the two choices, never from free text, and averaged over both orders of the
responses so that a preference for the first (or second) position cancels. Pairs whose
confidence is below the threshold are dropped; the rest are written as prompt/chosen/rejected
JSONL, the training data of the stage after it (reward or dpo). The stage section composing
these fields is `RlaifStageConfig` in rlhf_api.stages.rlaif.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic.json_schema import JsonDict

from .camel_model import CamelModel
from .sampling_config import SamplingConfig

# The dataset source that names the pairs of the rlaif stage before (plan.py wires the file).
RLAIF_SOURCE = "rlaif"
# The builtin judge of the quickstart (see rlhf_trainer.rlaif.builtin_judge).
BUILTIN_JUDGE = "builtin:arithmetic-judge"
PLACEHOLDERS = ("{constitution}", "{prompt}", "{response_a}", "{response_b}")

DEFAULT_CONSTITUTION = [
    "Choose the response that answers the prompt correctly and completely.",
    "Choose the response that is more helpful, honest and harmless.",
]
# Lee et al. 2023 end the labeller's prompt with "Preferred Summary=" and read the tokens 1/2.
DEFAULT_JUDGE_TEMPLATE = (
    "A good response follows these principles:\n{constitution}\n\n"
    "Prompt: {prompt}\n\nResponse A: {response_a}\n\nResponse B: {response_b}\n\n"
    "Which response follows the principles better, A or B?\nPreferred response="
)
Choices = Literal["labels", "responses"]
Label = Annotated[str, Field(min_length=1, max_length=256)]


def _cel(rule: str, message: str) -> JsonDict:
    """A CEL rule on one field, carried into the CRD by the schema generator."""
    return {"x-kubernetes-validations": [{"rule": rule, "message": message}]}


class RlaifLabelConfig(CamelModel):
    """How the AI labeller samples, asks and filters."""

    constitution: list[str] = Field(
        default_factory=lambda: list(DEFAULT_CONSTITUTION),
        min_length=1,
        max_length=32,
        description="The principles the judge compares the responses by; one '- principle' line each in the prompt.",
    )
    judge_template: str = Field(
        default=DEFAULT_JUDGE_TEMPLATE,
        min_length=1,
        max_length=8192,
        json_schema_extra=_cel(
            " && ".join(f"self.contains('{p}')" for p in PLACEHOLDERS),
            "must contain " + ", ".join(PLACEHOLDERS),
        ),
        description=(
            "The judge's prompt, with {constitution}, {prompt}, {response_a} and {response_b} "
            "(replaced literally; other braces are kept). The choice is read right after it."
        ),
    )
    choices: Choices = Field(
        default="labels",
        description=(
            "What the judge's probabilities are read for. labels: the two `labels` (e.g. the next "
            "tokens A and B), for instruction-following judges; responses: the two responses "
            "themselves, i.e. which one the judge would continue the prompt with (for judges that "
            "answer the task, such as builtin:arithmetic-judge)."
        ),
    )
    labels: list[Label] = Field(
        default_factory=lambda: ["A", "B"],
        min_length=2,
        max_length=2,
        json_schema_extra=_cel("self[0] != self[1]", "the two labels must differ"),
        description="choices labels: the texts that name response A and response B, read after the prompt.",
    )
    responses_per_prompt: int = Field(
        default=2,
        ge=2,
        le=64,
        description="Responses sampled per prompt; the first two that differ form the pair (none: no pair).",
    )
    confidence_threshold: float = Field(
        default=0.5,
        ge=0.5,
        lt=1.0,
        description=(
            "Drop pairs whose confidence (the judge's probability of its preferred response, "
            "averaged over both orders) is below this. 0.5 keeps every pair decided in both orders "
            "with a preference (a pair at exactly 0.5 or with an order undecided is never written)."
        ),
    )
    min_decided_share: float = Field(
        default=0.8,
        ge=0.0,
        le=1.0,
        description=(
            "The stage fails when fewer of the judge's verdicts (one per pair and order) than this "
            "were decided: an endpoint judge whose answer names neither label and that returned no "
            "log-probabilities has no verdict. 0 turns the check off."
        ),
    )
    judge_batch_size: int = Field(default=32, ge=1, le=4096, description="Judge prompts scored together.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="How candidates are sampled.")

    @field_validator("judge_template")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        missing = [p for p in PLACEHOLDERS if p not in value]
        if missing:
            raise ValueError(f"must contain {', '.join(missing)}")
        return value

    @field_validator("labels")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if value[0] == value[1]:
            raise ValueError("the two labels must differ")
        return value
