"""RLAIF stage: the policy samples response pairs, a judge model labels them, the pairs go to the volume.

Writes under the stage's output directory:
  candidates.jsonl   the sampled responses per prompt (reused when the stage restarts)
  judgements.jsonl   every judged pair: both orders' probabilities, confidence, kept or not,
                     and whether each response is right where the data has ground truth
  preferences.jsonl  the kept pairs: prompt/chosen/rejected/confidence (the next stage's data)
  judge/             builtin:arithmetic-judge only: the judge trained for this run
There is no model output: the stage after it (reward or dpo) trains on preferences.jsonl.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import torch
from rlhf_api import layout, progress
from rlhf_api.model_config import ModelConfig
from rlhf_api.result import StageResult
from rlhf_api.stages.rlaif import RlaifStageConfig
from rlhf_api.trainer_job import TrainerJobConfig
from transformers import set_seed

from .. import model_cache, placement
from ..data import PromptRows, prompt_rows
from ..errors import StageError
from ..jsonl import read_jsonl, write_jsonl
from ..modeling import load_causal_lm
from ..reward_sources.verifiable import exact_match
from ..rlaif import builtin_judge
from ..rlaif.judge import PairJudge
from ..rlaif.labels import Judgement, agreement, keep, pick_pair
from ..sampling import sample_responses
from .lifecycle import StageOutputs, run_stage

CANDIDATES = "candidates.jsonl"
JUDGEMENTS = "judgements.jsonl"
# The dataset column that holds the right answer (builtin:arithmetic has one).
ANSWER_COLUMN = "answer"


def run(cfg: TrainerJobConfig) -> StageResult:
    return run_stage(cfg, label)


def _load(model: ModelConfig, section: RlaifStageConfig, work_dir: str, field: str) -> tuple[Any, Any]:
    lm, tokenizer = load_causal_lm(model, section.quantization, work_dir, field=field)
    if section.quantization.mode == "none":
        lm.to(placement.this_device())  # type: ignore[arg-type]  # transformers' stub of .to is too narrow
    return lm, tokenizer


def _candidates(cfg: TrainerJobConfig, section: RlaifStageConfig, rows: PromptRows) -> list[list[str]]:
    path = Path(cfg.output_dir) / CANDIDATES
    if path.exists():
        saved = read_jsonl(path)
        if [r["prompt"] for r in saved] == rows.prompts:
            progress.emit("rlaif", event="reuse", candidates=str(path))
            return [list(r["responses"]) for r in saved]
    # builtin:arithmetic-judge fine-tunes these same weights next (model_cache): kept for it
    keep = builtin_judge.is_builtin_judge(section.judge) and builtin_judge.trains_from(cfg, section.quantization)
    policy, tokenizer = model_cache.causal_lm(cfg.model, section.quantization, cfg.work_dir, keep=keep)
    torch.manual_seed(section.seed)
    responses = sample_responses(policy, tokenizer, rows.prompts, section.responses_per_prompt, section.sampling)
    write_jsonl(path, ({"prompt": p, "responses": r} for p, r in zip(rows.prompts, responses, strict=True)))
    del policy
    return responses


def _judge(cfg: TrainerJobConfig, section: RlaifStageConfig) -> Any:
    """PairJudge (a model in this process) or EndpointJudge (judge.endpoint): both `.judge(pairs)`."""
    if section.judge.endpoint is not None:
        from ..serving.judge_client import endpoint_judge

        return endpoint_judge(section.judge.endpoint, section)
    judge_model: ModelConfig = section.judge
    if builtin_judge.is_builtin_judge(judge_model):
        path = builtin_judge.materialize(cfg, section, section.dataset, section.seed)
        judge_model = ModelConfig(name=path, dtype=cfg.model.dtype)
    model, tokenizer = _load(judge_model, section, cfg.work_dir, "rlaif.judge")
    return PairJudge(model, tokenizer, section)  # the section is an RlaifLabelConfig


def _ground_truth(rows: PromptRows, index: list[int], judged: list[Judgement]) -> list[tuple[bool | None, bool | None]]:
    """Whether each response of each pair is right, from the `answer` column (None: no ground truth)."""
    if ANSWER_COLUMN not in rows.columns:
        return [(None, None)] * len(judged)
    truths = [rows.columns[ANSWER_COLUMN][i] for i in index]
    score = exact_match(ANSWER_COLUMN, "firstLine")
    prompts = [j.prompt for j in judged]

    def right(responses: list[str]) -> list[bool | None]:
        return [None if s is None else s > 0.5 for s in score(prompts, responses, **{ANSWER_COLUMN: truths})]

    return list(zip(right([j.a for j in judged]), right([j.b for j in judged]), strict=True))


def label(cfg: TrainerJobConfig) -> StageOutputs:
    section = cfg.section_as(RlaifStageConfig)
    if placement.hardware().distributed:
        raise StageError("placement", "rlaif runs in one process: set workers 1 and gpusPerWorker at most 1")
    if builtin_judge.is_builtin_judge(section.judge):
        builtin_judge.check_usable(section, section.dataset)  # before any sampling
    set_seed(section.seed)
    rows = prompt_rows(section.dataset, cfg.work_dir, section.seed)
    if not rows.prompts:
        raise StageError("rlaif.dataset", "the dataset yielded no prompts")

    candidates = _candidates(cfg, section, rows)
    index, pairs = [], []
    for i, (prompt, responses) in enumerate(zip(rows.prompts, candidates, strict=True)):
        pair = pick_pair(responses)
        if pair is not None:
            index.append(i)
            pairs.append((prompt, *pair))
    progress.emit("rlaif", event="sampled", prompts=len(rows.prompts), pairs=len(pairs))
    if not pairs:
        raise StageError(
            "rlaif.responsesPerPrompt",
            "every prompt's responses were identical, so there is nothing to compare: sample more "
            "responses per prompt or raise sampling.temperature",
        )

    judge = _judge(cfg, section)
    judged = judge.judge(pairs)
    methods = getattr(judge, "methods", None) or [None] * len(judged)  # endpoint judge: logprobs/parsed
    truth = _ground_truth(rows, index, judged)
    kept = [keep(j, section.confidence_threshold) for j in judged]
    out = Path(cfg.output_dir)
    write_jsonl(
        out / JUDGEMENTS,
        (
            {**_judgement_row(j, k, t), **({"judge_method": m} if m else {})}
            for j, k, t, m in zip(judged, kept, truth, methods, strict=True)
        ),
    )
    judge_metrics: dict[str, float] = judge.metrics() if hasattr(judge, "metrics") else {}
    share = decided_share(judged)
    progress.emit("rlaif", event="judged", decided_share=share, pairs=len(judged))
    if share < section.min_decided_share:
        raise StageError("rlaif.minDecidedShare", undecided_message(section, judged, share, judge_metrics))
    written = [j for j, k in zip(judged, kept, strict=True) if k]
    if not written:
        raise StageError(
            "rlaif.confidenceThreshold",
            f"no pair reached confidence {section.confidence_threshold} with a preference "
            f"(highest {max(j.confidence for j in judged):.3f}); lower the threshold",
        )
    pairs_file = Path(layout.rlaif_pairs(cfg.output_dir))
    write_jsonl(
        pairs_file,
        ({"prompt": j.prompt, "chosen": j.chosen, "rejected": j.rejected, "confidence": j.confidence} for j in written),
    )
    metrics = _metrics(rows, judged, kept, truth)
    metrics.update(judge_metrics)
    progress.emit("rlaif", event="labelled", path=str(pairs_file), **metrics)
    # Its steps are the prompts labelled (the handover to the next stage checks them).
    return StageOutputs(metrics=metrics, steps=len(rows.prompts), planned_steps=len(rows.prompts))


def decided_share(judged: list[Judgement]) -> float:
    """The share of verdicts (one per pair and order) that named a label or had log-probabilities."""
    verdicts = [v for j in judged for v in (j.a_first, j.a_second)]
    return sum(v is not None for v in verdicts) / len(verdicts) if verdicts else 0.0


def undecided_message(
    section: RlaifStageConfig, judged: list[Judgement], share: float, judge_metrics: dict[str, float]
) -> str:
    """Why the verdict gate failed, with the likely causes (see docs/served-models.md)."""
    decided = sum(v is not None for j in judged for v in (j.a_first, j.a_second))
    causes = [f"the judge's answers name neither label {section.labels[0]!r} nor {section.labels[1]!r}"]
    endpoint = section.judge.endpoint
    if endpoint is not None and endpoint.logprobs and judge_metrics.get("judge_logprobs_share", 0.0) == 0.0:
        causes.append("the server returned no log-probabilities (transformers serve ignores them)")
    return (
        f"only {share:.0%} of the judge's verdicts were decided ({decided} of {2 * len(judged)}, "
        f"minimum {section.min_decided_share:g}); likely cause: {' and '.join(causes)}. Ask for the labels "
        "in judgeTemplate, set labels to what the model answers (see judge_method in judgements.jsonl), or "
        "serve the judge where logprobs are returned; nothing was written, so nothing trains on coin flips"
    )


def _judgement_row(judgement: Judgement, kept: bool, truth: tuple[bool | None, bool | None]) -> dict[str, Any]:
    return {
        "prompt": judgement.prompt,
        "a": judgement.a,
        "b": judgement.b,
        "p_a_shown_first": judgement.a_first,
        "p_a_shown_second": judgement.a_second,
        "chosen": judgement.chosen,
        "decided": judgement.decided,
        "confidence": judgement.confidence,
        "kept": kept,
        "a_right": truth[0],
        "b_right": truth[1],
    }


def _metrics(
    rows: PromptRows, judged: list[Judgement], kept: list[bool], truth: list[tuple[bool | None, bool | None]]
) -> dict[str, float]:
    written = [j for j, k in zip(judged, kept, strict=True) if k]
    decided = [j for j in judged if j.decided]
    metrics: dict[str, float] = {
        "prompts": float(len(rows.prompts)),
        "pairs_judged": float(len(judged)),
        "pairs_written": float(len(written)),
        "pairs_undecided": float(len(judged) - len(decided)),
        "decided_share": decided_share(judged),
        "mean_confidence": statistics.fmean(j.confidence for j in written),
    }
    if decided:  # both figures over the pairs decided in both orders only
        # 0.5: no preference for the first-shown response; both orders are averaged regardless.
        metrics["first_position_preference"] = statistics.fmean(j.first_position or 0.0 for j in decided)
        metrics["order_agreement"] = statistics.fmean(float(bool(j.orders_agree)) for j in decided)
    agreeing, total = agreement(written, [t for t, k in zip(truth, kept, strict=True) if k])
    if total:
        metrics["label_agreement"] = agreeing / total
        metrics["pairs_with_ground_truth"] = float(total)
    agreeing_all, total_all = agreement(judged, truth)
    if total_all:
        metrics["label_agreement_all"] = agreeing_all / total_all
    return metrics
