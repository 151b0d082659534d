"""PPO stage: the SFT model + LoRA, scored by the reward stage's model, trained by our engine.

Memory: policy, reference and value share one set of base weights (reference = adapter
disabled, value head on the policy's hidden states). When the reward stage trained a LoRA
adapter on the same weights the policy starts from (the default wiring: both start from the
SFT output), the reward model is that adapter and its score head on the same base too, not a
second model. With `lora.enabled: false` (full fine-tuning) the reference must be a frozen
copy of the SFT weights (which then also hosts the reward adapter), so memory doubles.
Under `strategy: fsdp` the policy (with its reference) and the reward model are sharded over
the stage's processes (`sharding`; the reward model is then always the separate merged model);
evaluation and the merged model use an unsharded copy.
"""

from __future__ import annotations

import copy
import os
import time
from typing import Any

import torch
from peft import LoraConfig
from rlhf_api import layout, progress
from rlhf_api.result import StageResult, read_result
from rlhf_api.reward_sources import RewardSource
from rlhf_api.stage_config import QuantizationConfig
from rlhf_api.stages.ppo import PPOStageConfig
from rlhf_api.trainer_job import TrainerJobConfig

from .. import distributed as dist
from .. import preemption, sharding
from ..data import load_prompts
from ..evaluate import task_accuracy
from ..modeling import (
    apply_lora,
    fix_bnb_cpu_layout,
    is_quantized,
    load_causal_lm,
    load_sequence_classifier,
    resolve_model_path,
    save_merged,
)
from ..placement import Loading
from ..ppo.engine import PPOEngine
from ..ppo.loop import seed_everything, train_loop
from ..ppo.reward_scoring import (
    REWARD_ADAPTER,
    AdapterScore,
    RewardModelScorer,
    ScoreFn,
    classifier_score,
    load_reward_adapter,
)
from ..ppo.value_head import ActorCritic, ValueHead
from .lifecycle import StageError, StageOutputs, run_stage, trained_base


def run(cfg: TrainerJobConfig) -> StageResult:
    return run_stage(cfg, train)


def _accuracy(
    model: Any, tokenizer: Any, section: PPOStageConfig, work_dir: str, sharded: bool = False
) -> float | None:
    """Held-out task accuracy (greedy) on rank 0; None on other ranks or without ground truth.
    A sharded model is evaluated on every rank (its forward passes are collective)."""
    if dist.rank() != 0 and not sharded:
        return None
    accuracy = task_accuracy(model, tokenizer, section.dataset, work_dir, section.training.eval_max_new_tokens)
    return accuracy if dist.rank() == 0 else None


def train(cfg: TrainerJobConfig) -> StageOutputs:
    section = cfg.section_as(PPOStageConfig)
    # ppo.rewards: any reward sources (e.g. a remote server) instead of the reward stage's model.
    sources = section.rewards
    training = section.training
    device = dist.init_from_env(cfg.strategy, cfg.fsdp_offload)  # cuda:LOCAL_RANK on a GPU node
    sharded = cfg.strategy == "fsdp" and dist.is_distributed()
    seed_everything(section.seed)

    prompts = load_prompts(section.dataset, cfg.work_dir, section.seed)
    if not prompts:
        raise StageError("ppo.dataset", "the dataset yielded no prompts")

    loading = Loading.for_job(cfg)
    policy, tokenizer = load_causal_lm(cfg.model, section.quantization, cfg.work_dir, loading=loading)
    if not is_quantized(policy) and not sharded:  # sharding moves each rank's shards itself
        policy.to(device)  # type: ignore[arg-type]  # transformers' stub of .to is too narrow
    # Under fsdp the adapter would live inside the sharded modules: keep the separate model there.
    reward_adapter = None if sharded or sources is not None else shared_reward_adapter(cfg)
    separate_score: ScoreFn | None = None
    reward_tokenizer = tokenizer  # the reward adapter was trained on the same base and tokenizer
    if reward_adapter is None and sources is None:
        assert cfg.reward_model is not None  # the config validator ensures it
        reward_model, reward_tokenizer = load_sequence_classifier(
            cfg.reward_model, QuantizationConfig(), cfg.work_dir, field="rewardModel", loading=loading
        )
        if sharded:
            sharding.shard_frozen(reward_model, cfg.fsdp_offload)
        else:
            reward_model.to(device)  # type: ignore[arg-type]
        if reward_model.config.num_labels != 1:
            raise StageError(
                "rewardModel.name", f"expected a one-output classifier, found {reward_model.config.num_labels} labels"
            )
        separate_score = classifier_score(reward_model)

    # Measured on the SFT weights, before any adapter exists (skipped when resuming).
    started = time.perf_counter()
    accuracy_before = None
    resuming = _has_checkpoint(cfg.output_dir)
    if not resuming:
        accuracy_before = _accuracy(policy, tokenizer, section, cfg.work_dir)

    reference = None
    if not section.lora.enabled:
        # Full fine-tuning: there is no adapter to disable, the reference needs its own copy.
        reference = copy.deepcopy(policy).eval().requires_grad_(False)
    torch.manual_seed(section.seed)  # identical adapter/value-head init on every process
    policy = apply_lora(policy, section.lora, "CAUSAL_LM")
    if is_quantized(policy):
        fix_bnb_cpu_layout(policy)
    score = separate_score
    if reward_adapter is not None:
        # On the weights that stay the SFT weights: the policy's base under LoRA, else the frozen copy.
        host, head = load_reward_adapter(policy if reference is None else reference, reward_adapter)
        if reference is not None:
            reference = host
        score = AdapterScore(host, head.to(device), reward_tokenizer.pad_token_id)
        progress.emit("ppo", event="reward_adapter", path=reward_adapter)
    hidden_size = policy.config.get_text_config().hidden_size
    model = ActorCritic(policy, ValueHead(hidden_size).to(device), reference=reference)
    if sharded:
        sharding.shard_actor_critic(model, cfg.fsdp_offload)

    scoring_batch = training.rollout_batch_size or training.batch_size
    scorer: Any
    if sources is not None:
        scorer = sources_scorer(cfg, sources, device)
    else:
        assert score is not None
        scorer = RewardModelScorer(score, reward_tokenizer, batch_size=scoring_batch, device=device)
    engine = PPOEngine(model, tokenizer, scorer, training, device=device)
    with preemption.training():
        outcome = train_loop(
            engine,
            prompts,
            cfg.output_dir,
            seed=section.seed,
            extra_state={"task_accuracy_before": accuracy_before},
            tensorboard="tensorboard" in cfg.report_to,
        )
    # Past the end of the last step (its checkpoint saved): a SIGTERM now stops at that step.
    steps_done = max(training.steps, outcome["resumed_from"] or 0)
    if preemption.stop_agreed():
        raise preemption.Preempted(steps_done, training.steps, outcome["resumed_from"])
    stats, extra = outcome["stats"], outcome["extra"]
    accuracy_after = _accuracy(policy, tokenizer, section, cfg.work_dir, sharded)
    if sharded:  # every rank takes part in gathering the trained weights for rank 0's copy
        policy = sharding.unsharded_copy(policy, dist.rank() == 0, trained_base(cfg), loading)

    metrics: dict[str, float] = {
        "steps": float(training.steps),
        "train_seconds": time.perf_counter() - started,
        "reward_on_shared_base": float(reward_adapter is not None),
    }
    for key in ("reward_mean", "reward_std", "kl", "kl_coef", "entropy", "response_length", "tokens_per_s"):
        if key in stats:
            metrics[key] = float(stats[key])
    if outcome["resumed_from"] is not None:
        metrics["resumed_from_step"] = float(outcome["resumed_from"])
    if accuracy_after is not None:
        metrics["task_accuracy"] = accuracy_after
    metrics.update(scorer.metrics() if hasattr(scorer, "metrics") else {})  # remote sources' call counts
    if extra.get("task_accuracy_before") is not None:
        metrics["task_accuracy_before"] = float(extra["task_accuracy_before"])

    merged_path = adapter_path = None
    if reward_adapter is not None and reference is None:
        policy.delete_adapter(REWARD_ADAPTER)  # the outputs hold the policy alone
    if dist.rank() == 0:
        merged_path, adapter_path = save_merged(policy, tokenizer, cfg.output_dir, trained_base(cfg))
        progress.emit("ppo", event="merged", path=merged_path)
    dist.barrier()
    return StageOutputs(
        merged_path=merged_path,
        adapter_path=adapter_path,
        metrics=metrics,
        steps=steps_done,
        planned_steps=training.steps,
        resumed_from_step=outcome["resumed_from"],
    )


def sources_scorer(cfg: TrainerJobConfig, sources: list[RewardSource], device: torch.device) -> Any:
    """The engine's reward_fn from ppo.rewards: the weighted total per response (a source's None
    counts 0, as in GRPO), on CPU like the reward model's scores."""
    from ..reward_sources import build_reward_functions, served_metrics

    functions = build_reward_functions(
        sources, reward_model=cfg.reward_model, work_dir=cfg.work_dir, columns=[], device=device, field="ppo.rewards"
    )

    class SourcesScorer:
        def __call__(self, prompts: list[str], responses: list[str], response_token_ids: list[list[int]]) -> Any:
            totals, _ = functions.score(prompts, responses)
            return torch.tensor(totals, dtype=torch.float32)

        def metrics(self) -> dict[str, float]:
            """Remote sources' requests and retries (the kind declares them)."""
            return served_metrics(functions.functions)

    return SourcesScorer()


def shared_reward_adapter(cfg: TrainerJobConfig) -> str | None:
    """The reward stage's LoRA adapter dir, when it can score on the policy's own base weights.

    Only when the reward stage of this run (the input with role rewardModel; else the stage
    whose output directory holds the merged reward model) succeeded, wrote the merged model PPO
    was given and a LoRA adapter, and that adapter was trained on the very weights (peft's
    base_model_name_or_path, the same directory) the policy starts from. The adapter then scores
    on the base as PPO loaded it. Anything else keeps the separate reward model.
    """
    assert cfg.reward_model is not None
    reward_merged = os.path.realpath(cfg.reward_model.name)
    inputs = [i.output_dir for i in cfg.inputs if i.role == "rewardModel"]
    result = read_result(layout.result_path(inputs[0] if inputs else os.path.dirname(reward_merged)))
    if result is None or result.stage != "reward" or result.status != "succeeded" or not result.adapter_path:
        return None
    if result.merged_path is None or os.path.realpath(result.merged_path) != reward_merged:
        return None
    try:
        trained_on = LoraConfig.from_pretrained(result.adapter_path).base_model_name_or_path
        policy_path = resolve_model_path(cfg.model, cfg.work_dir)
    except (OSError, ValueError, StageError):
        return None
    if not trained_on or not os.path.isdir(policy_path):
        return None
    return result.adapter_path if os.path.realpath(trained_on) == os.path.realpath(policy_path) else None


def _has_checkpoint(output_dir: str) -> bool:
    from rlhf_api import layout

    from ..ppo.checkpoint import latest_checkpoint

    return latest_checkpoint(f"{output_dir}/{layout.CHECKPOINTS}") is not None
