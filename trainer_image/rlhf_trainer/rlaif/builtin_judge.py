"""builtin:arithmetic-judge: a judge for the quickstart that knows more than the policy it labels.

Built at run time, once per rlaif stage (kept in `<out>/judge`, reused on resume): the stage's
own starting policy (the SFT model, which learned the SFT data's forgotten carries) fine-tuned
on the exact answers of builtin:arithmetic's training questions only. Half of its rows are the
task's prompt, half are the stage's judge prompt (its template and constitution) showing the
right answer and a plausible wrong one in random order; the completion is always the right
answer. So in `choices: responses` mode it puts its probability on the response it would give,
the right one, wherever that response is shown.

Measured (one 2-core machine): trained from scratch, a model of this size did not learn the
comparison in 600 steps (labels mode, agreement at chance); from the SFT policy, 100 steps gave
agreement 1.0 with ground truth on 300 right/wrong pairs in both orders (responses mode), and
the 60 steps it now trains give label agreement 0.983 +- 0.011 on the quickstart (3 seeds,
benchmarks/quickstart_bench.py).
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rlhf_api.model_config import ModelConfig
from rlhf_api.rlaif_config import BUILTIN_JUDGE, RlaifLabelConfig
from rlhf_api.stage_config import DatasetConfig, QuantizationConfig
from rlhf_api.stages.sft import SFTTrainingConfig
from rlhf_api.trainer_job import TrainerJobConfig

from ..builtin_task import arithmetic as builtin
from ..errors import StageError
from .labels import constitution_text, judge_prompt

JUDGE_DIR = "judge"
# 60 steps x 4 packed rows of 256 tokens; see the module docstring.
TRAINING = SFTTrainingConfig(
    learning_rate=2e-3,
    max_steps=60,
    batch_size=4,
    max_length=256,
    warmup_ratio=0.1,
    logging_steps=20,
    save_steps=1000,
    packing=True,
)
ROWS = 4000
# Share of rows in the judge's prompt format (the rest are the task's plain prompt).
JUDGE_FORMAT_SHARE = 0.5
# Wrong answers: half typical mistakes (the forgotten carry), half random near misses.
NEAR_MISS_RATE = 0.5


def is_builtin_judge(model: ModelConfig) -> bool:
    return model.name == BUILTIN_JUDGE


def check_usable(config: RlaifLabelConfig, dataset: DatasetConfig) -> None:
    if config.choices != "responses":
        raise StageError(
            "rlaif.choices",
            f"{BUILTIN_JUDGE} answers the task rather than naming a label: set choices: responses",
            kind="config",
        )
    if not builtin.is_builtin_dataset(dataset.source):
        raise StageError(
            "rlaif.judge.name",
            f"{BUILTIN_JUDGE} knows only {builtin.BUILTIN_DATASET}; give another judge for '{dataset.source}'",
            kind="config",
        )


def trains_from(cfg: TrainerJobConfig, quant: QuantizationConfig) -> bool:
    """Whether `materialize` will fine-tune the stage's policy as loaded with `quant`: the judge
    is not built yet, and it is trained from the unquantized weights."""
    return not (Path(cfg.output_dir) / JUDGE_DIR / "config.json").exists() and quant == QuantizationConfig()


def training_rows(config: RlaifLabelConfig, dataset: DatasetConfig, seed: int) -> list[dict[str, str]]:
    """prompt/completion rows whose completion is always the right answer."""
    rng = random.Random(seed * 7919 + 5)
    prompt_of = builtin.prompt_formatter(dataset.template)
    constitution = constitution_text(config.constitution)
    problems = [builtin.parse_question(q) for q in builtin.ppo_questions(seed)]
    rows = []
    for _ in range(ROWS):
        problem = rng.choice(problems)
        assert problem is not None  # ppo_questions are the task's own questions
        prompt = prompt_of(problem.question)
        if rng.random() < JUDGE_FORMAT_SHARE:
            wrong = problem.rejected_answer(rng, NEAR_MISS_RATE)
            first, second = (problem.answer, wrong) if rng.random() < 0.5 else (wrong, problem.answer)
            prompt = judge_prompt(config.judge_template, constitution, prompt, first, second)
        rows.append({"prompt": prompt, "completion": problem.answer})
    return rows


def materialize(cfg: TrainerJobConfig, config: RlaifLabelConfig, dataset: DatasetConfig, seed: int) -> str:
    """Train the judge into `<out>/judge` unless it is there already; returns its directory."""
    target = Path(cfg.output_dir) / JUDGE_DIR
    if (target / "config.json").exists():
        return str(target)
    check_usable(config, dataset)
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    from .. import model_cache
    from ..stages.trl_glue import ProgressCallback, trainer_arguments

    set_seed(seed)
    # Taken from the stage's model cache when the candidates were just sampled from these weights.
    model, tokenizer = model_cache.causal_lm(cfg.model, QuantizationConfig(), cfg.work_dir, keep=False)
    model.requires_grad_(True)
    tmp = Path(tempfile.mkdtemp(prefix=".judge-", dir=cfg.output_dir))
    try:
        arguments: dict[str, Any] = trainer_arguments(cfg, TRAINING, seed)
        arguments.update(output_dir=str(tmp / "checkpoints"), save_strategy="no", report_to=[])
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(**arguments, max_length=TRAINING.max_length, packing=True, completion_only_loss=True),
            train_dataset=Dataset.from_list(training_rows(config, dataset, seed)),
            processing_class=tokenizer,
            callbacks=[ProgressCallback("rlaif")],
        )
        trainer.train()
        shutil.rmtree(tmp / "checkpoints", ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(target, ignore_errors=True)  # a half-written judge of an interrupted attempt
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)
