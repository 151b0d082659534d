"""The rlaif kind: a judge model labels pairs of policy samples (rlhf_api.rlaif_config); the
stage right after it (reward or dpo) trains on the pairs."""

from __future__ import annotations

from pydantic import ConfigDict, Field, model_validator

from ..model_config import ModelConfig
from ..rlaif_config import RlaifLabelConfig
from ..served import JudgeEndpoint, JudgeModel
from ..stage_config import QuantizationConfig, StageCommon
from .kind import StageKind


class RlaifStageConfig(RlaifLabelConfig, StageCommon):
    """RLAIF: sample response pairs from the policy, label them with a judge model."""

    judge: JudgeModel = Field(
        description=(
            "The AI labeller: any causal LM (hub id or path on the volume), typically larger than the "
            "policy; or 'builtin:arithmetic-judge' (quickstart), trained here from the stage's "
            "policy on the exact answers of builtin:arithmetic, so that it knows more than the policy; "
            "or endpoint: an OpenAI-compatible server (choices: labels)."
        ),
    )
    quantization: QuantizationConfig = Field(
        default_factory=QuantizationConfig,
        description="Load the policy and the judge quantized (bitsandbytes), e.g. to fit a large judge.",
    )

    # An endpoint judge answers with a label; it cannot score the responses' own tokens.
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.judge) || !has(self.judge.endpoint) || !has(self.choices)"
                    " || self.choices == 'labels'",
                    "message": "judge.endpoint reads a label: choices must be labels",
                }
            ]
        }
    )

    @model_validator(mode="after")
    def _endpoint_reads_labels(self) -> RlaifStageConfig:
        if self.judge.endpoint is not None and self.choices != "labels":
            raise ValueError("choices: judge.endpoint reads a label: choices must be labels")
        return self

    def judge_endpoint(self) -> JudgeEndpoint | None:
        return self.judge.endpoint

    def extra_models(self) -> dict[str, ModelConfig]:
        # an endpoint judge has no model to resolve on the volume
        return {"judge": self.judge} if self.judge.name is not None else {}


KIND = StageKind(
    name="rlaif",
    config=RlaifStageConfig,
    section_doc="RLAIF: a judge model labels pairs of policy samples; the next stage (reward or dpo) trains on them.",
    spec_description="RLAIF stage (AI-labelled preference pairs).",
    entry_point="rlhf_trainer.stages.rlaif:run",
    data="prompts",
    pipelines=(),  # never last: the stage after it trains on its pairs
    is_policy=False,
    produces_model=False,
    requires=(),
    metrics=("pairs_written", "decided_share", "mean_confidence", "label_agreement"),
    pipeline_hint="rlaif must be followed by reward or dpo",
    memory=None,
)
