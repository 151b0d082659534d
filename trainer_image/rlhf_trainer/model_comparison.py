"""The side-by-side comparison: the model a stage started from against the model it produced.

Held-out prompts, greedy answers from both (one model in memory at a time), both scored by the
run's reward model when there is one (win rate: the trained model's answer scored higher, ties
count half), and with ground truth the share of exactly right answers. Writes
`<run>/eval/summary.json` and `samples.jsonl` (rlhf_api.evaluation) and returns the summary.

Runs as the final stage's last step (its summary goes into the stage's metrics) and alone as
`rlhf-train compare --config FILE` (what `rlhf compare DIR` calls).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
from rlhf_api import layout, progress
from rlhf_api.evaluation import EvalSample, EvalSummary, ModelScore, write_eval
from rlhf_api.model_config import ModelConfig
from rlhf_api.stage_config import CompareConfig, QuantizationConfig
from rlhf_api.trainer_job import TrainerJobConfig

from . import builtin_sources, model_cache, placement
from .data import HeldOutPrompt, load_heldout_prompts
from .errors import StageError
from .evaluate import ANSWER_BATCH, generate_answers
from .modeling import load_causal_lm, load_tokenizer
from .reward_sources.classifier import classifier_reward


@dataclass
class Side:
    """One model's answers to the held-out prompts."""

    model: str
    answers: list[str]
    lengths: list[int]
    scores: list[float] | None = None
    correct: list[bool] | None = None

    def score(self) -> ModelScore:
        return ModelScore(
            model=self.model,
            reward_mean=_mean(self.scores) if self.scores is not None else None,
            task_accuracy=_mean([float(c) for c in self.correct]) if self.correct is not None else None,
            response_length=_mean([float(n) for n in self.lengths]) if self.lengths else 0.0,
        )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def win_counts(candidate: list[float], baseline: list[float]) -> tuple[int, int, int]:
    """(wins, ties, losses) of the candidate, prompt by prompt."""
    wins = sum(c > b for c, b in zip(candidate, baseline, strict=True))
    ties = sum(c == b for c, b in zip(candidate, baseline, strict=True))
    return wins, ties, len(candidate) - wins - ties


def win_rate(wins: int, ties: int, total: int) -> float | None:
    return (wins + 0.5 * ties) / total if total else None


def _release_memory() -> None:
    """After the last reference to a model is gone: collect it now, before the next one loads."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _answer(
    model_cfg: ModelConfig,
    quant: QuantizationConfig,
    work_dir: str,
    field: str,
    prompts: list[HeldOutPrompt],
    max_new_tokens: int,
    is_correct: Callable[[str, str], bool] | None,
) -> Side:
    texts = [p.prompt for p in prompts]
    # Answered already in this process by these weights as loaded (ReST's task_accuracy_before)?
    answers = model_cache.remembered_answers(
        model_cache.key_of(model_cfg, quant, work_dir), texts, max_new_tokens, ANSWER_BATCH
    )
    if answers is not None:
        model, tokenizer = None, load_tokenizer(model_cfg, work_dir, field)
    else:
        model, tokenizer = load_causal_lm(model_cfg, quant, work_dir, field)
        if quant.mode == "none":
            model.to(placement.this_device())  # type: ignore[arg-type]  # transformers' stub of .to is too narrow
        answers = generate_answers(model, tokenizer, texts, max_new_tokens, ANSWER_BATCH)
    lengths = [len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers]
    side = Side(model=model_cfg.name, answers=answers, lengths=lengths)
    if is_correct is not None and all(p.question is not None for p in prompts):
        side.correct = [is_correct(str(p.question), a) for p, a in zip(prompts, answers, strict=True)]
    del model, tokenizer
    _release_memory()
    return side


def _score(reward_cfg: ModelConfig, work_dir: str, prompts: list[HeldOutPrompt], sides: list[Side]) -> None:
    # The reward sources' loader: the same one-output check and prompt + response + eos scoring.
    score = classifier_reward(reward_cfg, "compare.rewardModel", work_dir, torch.device(placement.this_device()))
    texts = [p.prompt for p in prompts]
    for side in sides:
        side.scores = cast(list[float], score(texts, side.answers))  # a classifier always scores
    del score
    _release_memory()


def _score_sources(cfg: TrainerJobConfig, prompts: list[HeldOutPrompt], sides: list[Side]) -> str | None:
    """Score both sides through the stage's own reward sources (the weighted total, as in
    training), e.g. a remote reward server; returns their labels, or None when the stage has no
    sources or they need dataset columns the held-out prompts lack (then: no win rate)."""
    from rlhf_api.reward_sources import labels

    from .reward_sources import build_reward_functions

    sources = cfg.section.reward_sources()
    if not sources:
        return None
    try:
        functions = build_reward_functions(
            sources,
            reward_model=cfg.reward_model,
            work_dir=cfg.work_dir,
            columns=[],
            device=torch.device(placement.this_device()),
            field="compare.rewards",
        )
    except StageError as exc:
        progress.emit(cfg.stage, event="compare", note=f"no win rate: {exc}")
        return None
    texts = [p.prompt for p in prompts]
    for side in sides:
        side.scores, _ = functions.score(texts, side.answers)
    del functions
    _release_memory()
    return "rewards: " + ", ".join(labels(sources))


def compare(cfg: TrainerJobConfig, settings: CompareConfig, candidate: ModelConfig) -> EvalSummary:
    """Compare cfg.model (where the stage started) with `candidate` (what it produced)."""
    started = time.perf_counter()
    section = cfg.section
    # eval_task: a stage that trains on data without ground truth (after rlaif) is compared on its task
    task = cfg.eval_task or section.dataset
    prompts = load_heldout_prompts(task, cfg.work_dir, section.seed, settings.prompts)
    if not prompts:
        raise StageError("compare.prompts", "the dataset has no held-out prompts to compare on")
    progress.emit(cfg.stage, event="compare", prompts=len(prompts))
    quant = section.quantization
    builtin = builtin_sources.dataset(task.source)  # a builtin task checks answers exactly
    check = builtin.is_correct if builtin is not None else None
    baseline = _answer(cfg.model, quant, cfg.work_dir, "model", prompts, settings.max_new_tokens, check)
    final = _answer(candidate, quant, cfg.work_dir, "compare.candidate", prompts, settings.max_new_tokens, check)
    wins = ties = losses = None
    scored_by = None
    if settings.reward_model is not None:
        _score(settings.reward_model, cfg.work_dir, prompts, [baseline, final])
        scored_by = settings.reward_model.name
    else:  # no reward model planned: the stage's own sources (a remote server) give the win rate
        scored_by = _score_sources(cfg, prompts, [baseline, final])
    if scored_by is not None:
        assert baseline.scores is not None and final.scores is not None
        wins, ties, losses = win_counts(final.scores, baseline.scores)
    summary = EvalSummary(
        stage=cfg.stage,
        prompts=len(prompts),
        baseline=baseline.score(),
        candidate=final.score(),
        reward_model=scored_by,
        win_rate=win_rate(wins, ties, len(prompts)) if wins is not None and ties is not None else None,
        wins=wins,
        ties=ties,
        losses=losses,
        max_new_tokens=settings.max_new_tokens,
        seconds=time.perf_counter() - started,
    )
    samples = [
        EvalSample(
            prompt=p.prompt,
            reference=p.reference,
            baseline=baseline.answers[i],
            candidate=final.answers[i],
            baseline_score=baseline.scores[i] if baseline.scores is not None else None,
            candidate_score=final.scores[i] if final.scores is not None else None,
            baseline_correct=baseline.correct[i] if baseline.correct is not None else None,
            candidate_correct=final.correct[i] if final.correct is not None else None,
        )
        for i, p in enumerate(prompts)
    ]
    write_eval(layout.eval_dir(cfg.work_dir), summary, samples)
    progress.emit(cfg.stage, event="compared", **summary.metrics())
    return summary


def compare_stage_output(cfg: TrainerJobConfig, merged_path: str | None) -> EvalSummary:
    """The final stage's last step: compare its starting model with its merged output."""
    settings = cfg.compare_settings()
    if merged_path is None:
        raise StageError("compare", f"stage {cfg.stage} produced no merged model to compare")
    candidate = cfg.model.weights_at(merged_path)
    return compare(cfg, settings, candidate)
