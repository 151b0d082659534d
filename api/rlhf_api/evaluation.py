"""The side-by-side comparison's files: `<run>/eval/summary.json` and `samples.jsonl`.

The trainer writes them (generation and scoring need torch); the report and the status read
them. The summary's numbers also reach the final stage's metrics, prefixed `eval_`.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field

from .camel_model import CamelModel
from .files import write_text_atomic

SUMMARY = "summary.json"
SAMPLES = "samples.jsonl"
METRIC_PREFIX = "eval_"


class ModelScore(CamelModel):
    """One side of the comparison."""

    model: str = Field(description="The model's path (or hub name).")
    reward_mean: float | None = Field(default=None, description="Mean reward-model score of its answers.")
    task_accuracy: float | None = Field(default=None, description="Share of exactly right answers (ground truth).")
    response_length: float = Field(description="Mean answer length in tokens.")


class EvalSummary(CamelModel):
    stage: str = Field(description="The stage whose output is compared (the run's final stage).")
    prompts: int = Field(ge=0, description="Held-out prompts compared.")
    baseline: ModelScore = Field(description="The model the final stage started from (SFT, or the base).")
    candidate: ModelScore = Field(description="The final stage's trained model.")
    reward_model: str | None = Field(default=None, description="The scorer; None: no win rate.")
    win_rate: float | None = Field(
        default=None, description="Share of prompts where the candidate's answer scored higher (ties count half)."
    )
    wins: int | None = None
    ties: int | None = None
    losses: int | None = None
    max_new_tokens: int = Field(ge=1, description="Tokens generated per prompt (greedy decoding).")
    seconds: float = Field(default=0.0, ge=0.0, description="Time the comparison took.")

    def metrics(self) -> dict[str, float]:
        """The numbers that go into the final stage's metrics (and so into the run's status)."""
        values: dict[str, float | None] = {
            "win_rate": self.win_rate,
            "reward_baseline": self.baseline.reward_mean,
            "reward_final": self.candidate.reward_mean,
            "task_accuracy_baseline": self.baseline.task_accuracy,
            "task_accuracy_final": self.candidate.task_accuracy,
            "prompts": float(self.prompts),
        }
        return {METRIC_PREFIX + key: float(value) for key, value in values.items() if value is not None}


class EvalSample(CamelModel):
    """One held-out prompt with both answers."""

    prompt: str
    reference: str | None = Field(default=None, description="The ground-truth answer, when the task has one.")
    baseline: str
    candidate: str
    baseline_score: float | None = None
    candidate_score: float | None = None
    baseline_correct: bool | None = None
    candidate_correct: bool | None = None


def write_eval(directory: str | Path, summary: EvalSummary, samples: list[EvalSample]) -> None:
    """Samples first, then the summary (atomically): a summary means the samples are complete."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / SAMPLES, "w") as f:
        for sample in samples:
            f.write(json.dumps(sample.to_file_dict(), ensure_ascii=False) + "\n")
    write_text_atomic(root / SUMMARY, json.dumps(summary.to_file_dict(), indent=2) + "\n")


def read_summary(directory: str | Path) -> EvalSummary | None:
    try:
        return EvalSummary.model_validate_json((Path(directory) / SUMMARY).read_text())
    except (OSError, ValueError):
        return None


def read_samples(directory: str | Path) -> list[EvalSample]:
    samples: list[EvalSample] = []
    try:
        with open(Path(directory) / SAMPLES) as f:
            for line in f:
                if line.strip():
                    samples.append(EvalSample.model_validate_json(line))
    except (OSError, ValueError):
        return samples
    return samples
