"""`rlhf estimate`: the GPU memory each stage of a run needs per GPU, against its GPU's memory.

Pure: a spec and a way to look up model architectures in, an estimate out; the operator runs the
same estimate when a run is created (a Warning, never a block: estimates are estimates). The
formulas are in docs/estimate.md; in short, per GPU:

  total = weights + training state + max(activations, KV cache) + overhead

- weights: the trained model in its load dtype (bitsandbytes: 1 byte per quantized weight for
  8-bit, 0.5 plus quantization constants for 4-bit), plus for PPO, GRPO and RLOO the classifiers
  they score with and, under full fine-tuning (GRPO/RLOO: with a KL term), the frozen reference
  copy; divided by the shard count under fsdp.
- training state: what trains (LoRA adapters and the value head in fp32; or every weight) with
  its gradient and two Adam moments, plus DDP's gradient buckets; sharded under fsdp.
- activations: per micro-batch, what backward keeps of each layer (or only each layer's input
  under gradient checkpointing, plus one layer recomputed), plus fp32 logits and their gradient.
- KV cache: PPO, GRPO and RLOO generation, for one rollout chunk.
- overhead: 1 GiB of CUDA/NCCL context, plus 10% for allocator fragmentation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from rlhf_api.precision import BYTES, Precision, PrecisionError, resolve
from rlhf_api.reward_sources import uses_reward_model
from rlhf_api.rules import stage_strategy
from rlhf_api.spec import ACCELERATOR_PRODUCTS, GPU_PRODUCT_LABEL, Placement, RLHFRun, RLHFRunSpec
from rlhf_api.stage_config import LoraConfig, QuantizationConfig
from rlhf_api.stages import StageName, kind_of
from rlhf_api.stages.group_rl import GroupRLTrainingConfig
from rlhf_api.stages.kind import MemoryProfile
from rlhf_api.stages.ppo import PPOTrainingConfig

from ..plan import DEFAULT_TRAINER_IMAGE, resolve_placement
from .catalog import Architecture

GIB = 2**30
CONTEXT_BYTES = 1 * GIB  # CUDA context, cuBLAS workspaces, NCCL buffers
FRAGMENTATION = 0.10
ADAM_STATES = 2  # exp_avg and exp_avg_sq, in the parameter's dtype


@dataclass(frozen=True)
class Gpu:
    memory_gib: float  # what the driver reports as total (nvidia-smi), in GiB
    bf16: bool  # native bfloat16 (Ampere or newer)


GPUS: dict[str, Gpu] = {
    "nvidia-a100-40gb": Gpu(40.0, True),
    "nvidia-a100-80gb": Gpu(80.0, True),
    "nvidia-h100-80gb": Gpu(79.6, True),
    "nvidia-h200": Gpu(140.4, True),
    "nvidia-l4": Gpu(22.5, True),
    "nvidia-a10g": Gpu(22.5, True),
    "nvidia-t4": Gpu(15.0, False),
}

Lookup = Callable[[str], "tuple[Architecture, str] | None"]


@dataclass(frozen=True)
class StageEstimate:
    stage: StageName
    model: str
    accelerator: str | None
    gpus: int  # processes (GPUs) the stage runs on
    strategy: str
    params: int = 0
    trainable: int = 0
    weights: float = 0.0  # bytes per GPU
    training_state: float = 0.0
    activations: float = 0.0
    kv_cache: float = 0.0
    note: str = ""  # why there is no estimate (unknown model, CPU stage, skipped, bad dtype)
    suggestions: list[str] = field(default_factory=list)

    @property
    def estimated(self) -> bool:
        return not self.note

    @property
    def total(self) -> float:
        working = self.weights + self.training_state + max(self.activations, self.kv_cache)
        return working * (1 + FRAGMENTATION) + CONTEXT_BYTES

    @property
    def capacity(self) -> float | None:
        gpu = GPUS.get(self.accelerator or "")
        return gpu.memory_gib * GIB if gpu else None

    @property
    def fits(self) -> bool | None:
        """None when there is nothing to compare (no estimate, or no known GPU)."""
        if not self.estimated or self.capacity is None:
            return None
        return self.total <= self.capacity


# --------------------------------------------------------------------------- the formulas


def quantized_bytes_per_weight(quant: QuantizationConfig) -> float:
    """bitsandbytes storage per quantized weight: int8 (+ a fp32 scale per row, negligible), or
    NF4 with one absmax per 64 weights (fp32; with double quantization 8-bit plus one fp32 per 256)."""
    if quant.mode == "8bit":
        return 1.0
    if quant.double_quant:
        return 0.5 + 1 / 64 + 4 / (64 * 256)
    return 0.5 + 4 / 64


def weight_bytes(arch: Architecture, prec: Precision, quant: QuantizationConfig, classifier: bool = False) -> float:
    """A model's weights as loaded: quantized decoder linears, the rest in the load dtype."""
    total = arch.params(classifier)
    if quant.mode == "none":
        return total * BYTES[prec.load_dtype]
    quantized = arch.quantizable_params
    return quantized * quantized_bytes_per_weight(quant) + (total - quantized) * BYTES[prec.load_dtype]


def lora_params(arch: Architecture, lora: LoraConfig) -> int:
    """r x (in + out) per adapted linear layer; 'all-linear' adapts every decoder linear layer."""
    wanted = None if lora.target_modules == ["all-linear"] else set(lora.target_modules)
    per_layer = sum(lora.r * (n_in + n_out) for name, n_in, n_out in arch.linears() if wanted is None or name in wanted)
    return arch.num_layers * per_layer


def activation_bytes(arch: Architecture, tokens: int, value_bytes: int, checkpointing: bool) -> float:
    """What backward keeps for `tokens` tokens of one micro-batch.

    Per layer and token (in values; attention scores are not stored with SDPA/flash attention):
    Llama-style 6h + 2h_kv + 4I (norm inputs and outputs, q/k/v, attention output, MLP gate, up,
    activation and product); GPT/BERT-style 8h + 2I. Checkpointing keeps only each layer's input
    (h) and recomputes one layer at a time.
    """
    h, i = arch.hidden_size, arch.intermediate_size
    kv = arch.num_kv_heads * arch.dim_per_head
    per_token_layer = 6 * h + 2 * kv + 4 * i if arch.family == "llama" else 8 * h + 2 * i
    per_layer = tokens * per_token_layer * value_bytes
    layers = (arch.num_layers * tokens * h * value_bytes + per_layer) if checkpointing else arch.num_layers * per_layer
    return layers


def logits_bytes(arch: Architecture, tokens: int) -> float:
    """Output-layer logits in fp32 (losses upcast them) and their gradient."""
    return 2 * tokens * arch.vocab_size * 4


def kv_cache_bytes(arch: Architecture, sequences: int, length: int, value_bytes: int) -> float:
    return 2 * arch.num_layers * sequences * length * arch.num_kv_heads * arch.dim_per_head * value_bytes


def _trained_state(trainable: int, dtype_bytes: int) -> float:
    """Gradient and Adam moments of what trains, in its own dtype."""
    return trainable * dtype_bytes * (1 + ADAM_STATES)


# --------------------------------------------------------------------------- one stage


@dataclass(frozen=True)
class Sizing:
    """The stage facts the formulas need, read from the spec (and changed by suggestions)."""

    sequences: int  # per micro-batch, in the training forward/backward
    length: int  # tokens per sequence
    response: int = 0  # PPO, GRPO, RLOO: logits only over the response tokens
    checkpointing: bool = False
    rollout: int = 0  # PPO: sequences per generation chunk; GRPO, RLOO: per generation batch

    @property
    def tokens(self) -> int:
        return self.sequences * self.length

    @property
    def logit_tokens(self) -> int:
        return self.sequences * (self.response or self.length)


def _profile(stage: StageName) -> MemoryProfile:
    """The kind's memory-estimate facts (a kind without any is never sized: estimate_stage)."""
    return kind_of(stage).memory or MemoryProfile()


def _per_example(stage: StageName) -> int:
    """Sequences per training example: reward and DPO score a chosen and a rejected one."""
    return _profile(stage).sequences_per_example


def _sizing(spec: RLHFRunSpec, stage: StageName) -> Sizing:
    section: Any = spec.section(stage)
    training = section.training
    shape = _profile(stage).shape
    if shape == "engine":
        assert isinstance(training, PPOTrainingConfig)
        return Sizing(
            sequences=training.micro_batch_size or training.mini_batch_size,
            length=training.max_prompt_length + training.max_new_tokens,
            response=training.max_new_tokens,
            checkpointing=training.gradient_checkpointing,
            rollout=training.rollout_batch_size or training.batch_size,
        )
    if shape == "group":
        assert isinstance(training, GroupRLTrainingConfig)
        # TRL generates a whole generation batch (batchSize x gradientAccumulationSteps completions
        # per process) before training on it micro-batch by micro-batch.
        return Sizing(
            sequences=training.batch_size,
            length=training.max_prompt_length + training.max_completion_length,
            response=training.max_completion_length,
            checkpointing=training.gradient_checkpointing,
            rollout=training.batch_size * training.gradient_accumulation_steps,
        )
    return Sizing(
        sequences=training.batch_size * _per_example(stage),
        length=training.max_length,
        checkpointing=training.gradient_checkpointing,
    )


def _accelerator(spec: RLHFRunSpec, stage: StageName) -> tuple[str | None, int, int]:
    """(the stage's GPU kind from its node selector, its GPUs in all, its workers)."""
    placement = resolve_placement(spec, stage, DEFAULT_TRAINER_IMAGE)
    product = placement.node_selector.get(GPU_PRODUCT_LABEL)
    names = [name for name, label in ACCELERATOR_PRODUCTS.items() if label == product]
    return (names[0] if names else None), placement.workers * placement.gpus_per_worker, placement.workers


def _models(spec: RLHFRunSpec, stage: StageName) -> tuple[list[str], list[str]]:
    """Candidate names for the trained model and (stages after reward) the reward model, best first."""
    sft, reward = spec.section("sft"), spec.section("reward")
    base = [spec.model.name]
    policy = ([sft.existing_output] if sft and sft.existing_output else []) + base
    reward_own = reward.own_base_model() if reward else None
    reward_base = [reward_own.name] if reward_own else base
    kind = kind_of(stage)
    if not kind.starts_from_sft:
        return base, []
    if kind.produces_reward_model:
        return reward_base, []
    reward_model = ([reward.existing_output] if reward and reward.existing_output else []) + reward_base
    return policy, reward_model


def _find(names: list[str], lookup: Lookup) -> tuple[Architecture, str] | None:
    for name in names:
        found = lookup(name)
        if found:
            return found[0], name
    return None


def estimate_stage(
    spec: RLHFRunSpec,
    stage: StageName,
    lookup: Lookup,
    accelerator: str | None = None,
    gpus: int | None = None,
    sizing: Sizing | None = None,
) -> StageEstimate:
    """The per-GPU estimate of one stage (accelerator and GPU count default to its placement)."""
    section: Any = spec.section(stage)
    placed_accelerator, placed_gpus, workers = _accelerator(spec, stage)
    if gpus is None:  # a GPU named on the command line sizes a CPU placement as one GPU per worker
        gpus = placed_gpus or (workers if accelerator else 0)
    accelerator = accelerator or placed_accelerator
    strategy, offload = stage_strategy(spec, stage)
    policy_names, reward_names = _models(spec, stage)
    base = StageEstimate(stage, policy_names[0], accelerator, max(gpus, 1), strategy)
    if section is None or section.existing_output:
        return replace(base, note="skipped (existingOutput)")
    if gpus == 0:
        return replace(base, note="CPU stage (gpusPerWorker: 0)")
    profile = kind_of(stage).memory
    if profile is None:  # rlaif: sampling and a judge model, no training formula here
        return replace(base, note=f"no estimate: {stage} trains nothing (it samples and asks its judge)")
    found = _find(policy_names, lookup)
    if found is None:
        return replace(base, note=f"model size unknown: {policy_names[0]} (no config.json here, not in the table)")
    arch, name = found
    gpu = GPUS.get(accelerator or "")
    trainer = kind_of(stage).trainer
    lora, quant = section.lora_settings(), section.quantization
    own_base = section.own_base_model()
    dtype, dtype_field = (own_base.dtype, f"{stage}.baseModel.dtype") if own_base else (spec.model.dtype, "model.dtype")
    try:
        prec = resolve(dtype, True, gpu.bf16 if gpu else True, trainer, not lora.enabled)
    except PrecisionError as exc:
        return replace(base, model=name, note=f"{dtype_field}: {exc}")
    sizing = sizing or _sizing(spec, stage)
    classifier = profile.classifier
    shards = base.gpus if strategy == "fsdp" else 1

    weights = weight_bytes(arch, prec, quant, classifier)
    fsdp_fp32_master = strategy == "fsdp" and prec.amp != "no" and trainer == "trl"
    if lora.enabled:
        trainable = lora_params(arch, lora) + (arch.hidden_size if classifier else 0)
        state = trainable * 4 + _trained_state(trainable, 4)  # peft keeps adapters in fp32
    else:
        trainable = arch.params(classifier)
        if fsdp_fp32_master:  # accelerate upcasts trained weights to fp32 under fsdp
            weights = trainable * 4
        dtype_bytes = 4 if fsdp_fp32_master else BYTES[prec.load_dtype]
        state = _trained_state(trainable, dtype_bytes)
    if profile.value_head:
        state += _trained_state(arch.hidden_size + 1, 4) + (arch.hidden_size + 1) * 4  # value head, fp32
    if strategy == "ddp" and base.gpus > 1:
        state += trainable * (4 if lora.enabled else BYTES[prec.load_dtype])  # DDP's gradient buckets

    kv_cache = 0.0
    if profile.shape == "engine":
        if not lora.enabled:  # full fine-tuning: a frozen reference copy
            weights += weight_bytes(arch, prec, quant)
        reward_found = _find(reward_names, lookup) or (arch, name)
        weights += weight_bytes(reward_found[0], prec, QuantizationConfig(), classifier=True)
        kv_cache = kv_cache_bytes(arch, sizing.rollout, sizing.length, prec.compute_bytes)
    if profile.shape == "group":
        if not lora.enabled and section.training.beta > 0:  # full fine-tuning: a frozen reference copy
            weights += weight_bytes(arch, prec, quant)
        # each classifier among the reward sources: the reward stage's model, any other by name
        scorers = [reward_names] if uses_reward_model(section.reward_sources()) else []
        scorers += [[s.model.name] for s in section.reward_sources() if s.model is not None]
        for names in scorers:
            scorer = _find(names, lookup) or (arch, name)
            weights += weight_bytes(scorer[0], prec, QuantizationConfig(), classifier=True)
        kv_cache = kv_cache_bytes(arch, sizing.rollout, sizing.length, prec.compute_bytes)

    value_bytes = prec.compute_bytes
    activations = activation_bytes(arch, sizing.tokens, value_bytes, sizing.checkpointing)
    activations += 0 if classifier else logits_bytes(arch, sizing.logit_tokens)
    if shards > 1:
        weights, state = weights / shards, state / shards
        if offload:  # shards live in CPU memory; the GPU holds what is gathered
            weights, state = 0.0, 0.0
        # all-gathered working set: the current and the prefetched next layer, in compute dtype
        activations += 2 * arch.layer_params() * value_bytes
    return replace(
        base,
        model=name,
        params=arch.params(classifier),
        trainable=trainable,
        weights=weights,
        training_state=state,
        activations=activations,
        kv_cache=kv_cache,
    )


# --------------------------------------------------------------------------- what helps


def _with(spec: RLHFRunSpec, stage: StageName, **changes: Any) -> RLHFRunSpec:
    """The spec with the stage section's fields (and its placement's) changed."""
    section: Any = spec.section(stage)
    updates: dict[str, Any] = {}
    if "lora" in changes:
        updates["lora"] = section.lora.model_copy(update={"enabled": True})
    if "quant" in changes:
        updates["quantization"] = section.quantization.model_copy(update={"mode": changes["quant"]})
    if "strategy" in changes:
        own = section.placement.model_dump(exclude_unset=True) if section.placement else {}
        updates["placement"] = Placement.model_validate({**own, "strategy": changes["strategy"]})
    return spec.model_copy(update={stage: section.model_copy(update=updates)})


def suggestions(spec: RLHFRunSpec, stage: StageName, lookup: Lookup, estimate: StageEstimate) -> list[str]:
    """What brings a stage that does not fit under its GPU's memory, each with its new total.

    A ladder of changes, each added to the ones before (cheapest first: checkpointing, a smaller
    micro-batch, LoRA, 4-bit), then sharding: the fewest GPUs of this kind that fit under fsdp
    (with the ladder's changes when that alone is not enough), then a larger GPU.
    """
    if estimate.fits is not False or estimate.capacity is None:
        return []
    section: Any = spec.section(stage)
    capacity = estimate.capacity
    found: list[str] = []

    def fits(candidate: StageEstimate) -> bool:
        return candidate.estimated and candidate.total <= capacity

    def line(text: str, candidate: StageEstimate) -> str:
        return f"{text}: {candidate.total / GIB:.1f} GiB per GPU ({'fits' if fits(candidate) else 'still over'})"

    ladder: list[tuple[str, RLHFRunSpec, Sizing]] = []
    current, sizing = spec, _sizing(spec, stage)
    if not sizing.checkpointing:
        sizing = replace(sizing, checkpointing=True)
        ladder.append(("gradient checkpointing (training.gradientCheckpointing: true)", current, sizing))
    if sizing.sequences > _per_example(stage):
        sizing = replace(sizing, sequences=_per_example(stage))
        ladder.append(("a micro-batch of one example (batchSize or microBatchSize: 1)", current, sizing))
    same_weights = (" with checkpointing and a micro-batch of one", spec, sizing)  # weights as they are
    if not section.lora.enabled:
        current = _with(current, stage, lora=True)
        ladder.append(("LoRA (lora.enabled: true)", current, sizing))
    if section.quantization.mode != "4bit-nf4":
        current = _with(current, stage, quant="4bit-nf4", lora=True)
        ladder.append(("4-bit QLoRA (quantization.mode: 4bit-nf4)", current, sizing))
    for text, candidate_spec, candidate_sizing in ladder:
        candidate = estimate_stage(candidate_spec, stage, lookup, sizing=candidate_sizing)
        found.append(line("+ " + text, candidate))
        if fits(candidate):
            break

    # Sharding: the fewest GPUs of this kind that fit under fsdp, as is, with the activation
    # savings above, and with every change above.
    for variant, base_spec, base_sizing in (
        ("", spec, None),
        same_weights,
        (" with all of the above", current, sizing),
    ):
        sharded = _with(base_spec, stage, strategy="fsdp")
        candidates = (
            estimate_stage(sharded, stage, lookup, gpus=max(n, estimate.gpus), sizing=base_sizing)
            for n in (2, 4, 8, 16, 32, 64, 128, 256, 512)
        )
        first = next((c for c in candidates if fits(c)), None)
        if first is not None:
            found.append(line(f"placement.strategy: fsdp over {first.gpus} GPUs{variant}", first))
            break
    for name, gpu in sorted(GPUS.items(), key=lambda item: item[1].memory_gib):
        bigger = estimate_stage(spec, stage, lookup, accelerator=name)
        if gpu.memory_gib * GIB > capacity and bigger.estimated and bigger.total <= gpu.memory_gib * GIB:
            found.append(f"a larger GPU: {name} ({gpu.memory_gib:.0f} GiB) holds {bigger.total / GIB:.1f} GiB")
            break
    return found


# --------------------------------------------------------------------------- the run


def estimate_run(run: RLHFRun, lookup: Lookup, accelerator: str | None = None) -> list[StageEstimate]:
    """Every pipeline stage's estimate, with suggestions for those that do not fit."""
    # Suggestions re-estimate a stage dozens of times: read each model's config once.
    lookup = functools.cache(lookup)
    found = []
    for stage in run.spec.pipeline:
        estimate = estimate_stage(run.spec, stage, lookup, accelerator=accelerator)
        found.append(replace(estimate, suggestions=suggestions(run.spec, stage, lookup, estimate)))
    return found


def stage_fit_warnings(run: RLHFRun, lookup: Lookup) -> list[str]:
    """One line per stage that will not fit its GPUs (what the operator warns about)."""
    return [
        f"{e.stage}: needs about {e.total / GIB:.1f} GiB per GPU, {e.accelerator} has {e.capacity / GIB:.0f} GiB"
        + (f"; try {e.suggestions[0]}" if e.suggestions else "")
        for e in estimate_run(run, lookup)
        if e.fits is False and e.capacity is not None
    ]


def render_table(estimates: list[StageEstimate]) -> str:
    """A plain-text table, one row per stage, sizes in GiB per GPU."""
    header = ["stage", "model", "params", "trainable", "GPUs", "weights", "train state", "activations", "KV cache"]
    header += ["total/GPU", "GPU (GiB)", "fits"]
    rows: list[list[str]] = [header]
    for e in estimates:
        if not e.estimated:
            rows.append([e.stage, e.model, "", "", str(e.gpus), "", "", "", "", "", e.accelerator or "-", e.note])
            continue
        gib = [f"{value / GIB:.1f}" for value in (e.weights, e.training_state, e.activations, e.kv_cache, e.total)]
        fits = "?" if e.fits is None else "yes" if e.fits else "NO"
        gpu = f"{e.accelerator} ({e.capacity / GIB:.0f})" if e.capacity else "unknown"
        rows.append(
            [e.stage, e.model, _count(e.params), _count(e.trainable), f"{e.gpus} {e.strategy}", *gib, gpu, fits]
        )
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    for e in estimates:
        if e.fits is False:
            assert e.capacity is not None
            lines.append(
                f"\n{e.stage} does not fit: {e.total / GIB:.1f} GiB per GPU > {e.capacity / GIB:.1f} GiB. What helps:"
            )
            lines += [f"  - {s}" for s in e.suggestions] or ["  - nothing tried fits: shard over more GPUs"]
    return "\n".join(lines)


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.{1 if n < 100 * size else 0}f}{unit}"
    return str(n)
