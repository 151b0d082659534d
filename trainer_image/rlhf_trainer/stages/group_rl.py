"""What the GRPO and RLOO stages share (TRL GRPOTrainer / RLOOTrainer).

The policy starts from cfg.model (the SFT output, or the base model without SFT), with LoRA or
QLoRA like the other stages (with LoRA the reference is the adapter-disabled model; beta 0
skips it). Prompts keep their dataset columns, which TRL hands to the reward functions built
from the stage's reward sources. After training: a summary of the logged rewards per source,
KL and completion length, held-out task_accuracy where the data has ground truth, and the
merged model.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from datasets import Dataset
from rlhf_api.stages.grpo import GRPOStageConfig
from rlhf_api.stages.rloo import RLOOStageConfig
from rlhf_api.trainer_job import TrainerJobConfig

from ..data import dataset_columns, load_prompt_rows
from ..errors import StageError
from ..modeling import apply_lora, load_causal_lm
from ..reward_sources import build_reward_functions, served_metrics
from .lifecycle import StageOutputs
from .trl_glue import ProgressCallback, task_accuracy_metrics, train_evaluate_merge, trainer_arguments, truncate_prompts

# The summary averages the last quarter of the logged steps: single steps are noisy (a few
# prompts each), and the end of training is what the merged model reflects.
_SUMMARY_SHARE = 4
# TRL's logged name -> ours in result.json; per-source rewards keep TRL's rewards/<label>/...
_SUMMARY_KEYS = {
    "reward": "reward",
    "reward_std": "reward_std",
    "kl": "kl",
    "completions/mean_length": "completion_length",
}


def build_trainer(cfg: TrainerJobConfig, trainer_cls: Any, config_cls: Any, algorithm: Mapping[str, Any]) -> Any:
    """The configured TRL trainer (policy adapted, prompts loaded, rewards built), not yet trained.

    `algorithm`: the config arguments only one of GRPO and RLOO has (loss type, scaling)."""
    import torch
    from transformers import set_seed

    from .. import placement

    section = cfg.section
    assert isinstance(section, GRPOStageConfig | RLOOStageConfig)
    training = section.training
    set_seed(section.seed)
    # Data and rewards first: a bad column or function path fails before the policy loads.
    prompts = load_prompt_rows(section.dataset, cfg.work_dir, section.seed)
    if isinstance(prompts, Dataset) and len(prompts) == 0:
        raise StageError("dataset", "the dataset yielded no prompts")
    rewards = build_reward_functions(
        section.rewards,
        reward_model=cfg.reward_model,
        work_dir=cfg.work_dir,
        columns=dataset_columns(prompts),
        device=torch.device(placement.this_device()),  # cuda:LOCAL_RANK on a GPU node
    )
    loading = placement.Loading.for_job(cfg)
    model, tokenizer = load_causal_lm(cfg.model, section.quantization, cfg.work_dir, loading=loading)
    prompts = truncate_prompts(prompts, tokenizer, training.max_prompt_length)
    model = apply_lora(model, section.lora, "CAUSAL_LM")
    args = config_cls(
        **trainer_arguments(cfg, training, section.seed)
        | {
            "remove_unused_columns": False,  # the reward functions read the dataset's columns
            "num_generations": training.num_generations,
            "max_completion_length": training.max_completion_length,
            "temperature": training.temperature,
            "top_p": training.top_p,
            "top_k": training.top_k,
            "num_iterations": training.num_iterations,
            "epsilon": training.epsilon,
            "beta": training.beta,
            "reward_weights": rewards.weights,
            "eval_strategy": "no",
        }
        | dict(algorithm)
    )
    return trainer_cls(
        model=model,
        reward_funcs=rewards.functions,
        args=args,
        train_dataset=prompts,
        processing_class=tokenizer,
        callbacks=[ProgressCallback(cfg.stage)],
    )


def train(trainer: Any, cfg: TrainerJobConfig) -> StageOutputs:
    """Fit (resuming from the latest checkpoint), summarize, evaluate, merge."""
    accuracy = task_accuracy_metrics(cfg)
    labels = [f.__name__ for f in trainer.reward_funcs]

    def evaluate(model: Any, tokenizer: Any) -> dict[str, float]:
        served = served_metrics(trainer.reward_funcs)  # remote sources: requests and retries
        return summarize(trainer.state.log_history, labels) | served | accuracy(model, tokenizer)

    return train_evaluate_merge(trainer, cfg, evaluate)


def summarize(log_history: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> dict[str, float]:
    """Reward (total and per source, mean and std), KL and completion length over the last
    quarter of the logged training steps, and the total reward of the first logged step."""
    logs = [entry for entry in log_history if "reward" in entry]
    if not logs:
        return {}
    window = logs[-max(1, len(logs) // _SUMMARY_SHARE) :]
    keys = dict(_SUMMARY_KEYS)
    for label in labels:
        keys |= {f"rewards/{label}/mean": f"rewards/{label}/mean", f"rewards/{label}/std": f"rewards/{label}/std"}
    summary: dict[str, float] = {"reward_initial": float(logs[0]["reward"])}
    for logged, ours in keys.items():
        values = [float(e[logged]) for e in window if isinstance(e.get(logged), int | float)]
        if values:
            summary[ours] = statistics.fmean(values)
    return summary
