"""Placement decisions, table-driven over CPU/GPU x 1/N processes x quantization x strategy.

The functions take the hardware as a value, so these CPU tests cover the GPU decisions.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from rlhf_api.trainer_job import TrainerJobConfig
from rlhf_trainer.errors import StageError
from rlhf_trainer.placement import (
    Hardware,
    Loading,
    Precision,
    accelerate_fsdp_on_cpu,
    backend,
    device,
    fsdp_on_cpu,
    load_kwargs,
    precision,
    trainer_kwargs,
)

CPU1 = Hardware()
CPU2 = Hardware(world_size=2, local_rank=1)
A100 = Hardware(cuda=True, gpu_count=8, bf16=True)
A100_RANK5 = Hardware(cuda=True, gpu_count=8, bf16=True, local_rank=5, world_size=16)
T4_RANK1 = Hardware(cuda=True, gpu_count=2, bf16=False, local_rank=1, world_size=2)
HARDWARE = {"cpu x1": CPU1, "cpu x2": CPU2, "gpu x1": A100, "gpu x16 rank 5": A100_RANK5}
QUANT = ("none", "8bit", "4bit-nf4")
STRATEGY = ("ddp", "fsdp")
BF16 = Precision("bfloat16", "bf16")
FP32 = Precision("float32", "no")


@pytest.mark.parametrize(("hw", "want"), [(CPU1, "cpu"), (CPU2, "cpu"), (A100, "cuda:0"), (A100_RANK5, "cuda:5")])
def test_each_process_computes_on_its_own_gpu(hw: Hardware, want: str) -> None:
    assert device(hw) == want


def test_a_rank_without_a_gpu_names_gpus_per_worker() -> None:
    with pytest.raises(StageError, match=r"placement\.gpusPerWorker.*LOCAL_RANK=3"):
        device(Hardware(cuda=True, gpu_count=2, bf16=True, local_rank=3, world_size=4))


@pytest.mark.parametrize(
    ("hw", "strategy", "offload", "want"),
    [
        (CPU1, "ddp", False, "gloo"),
        (CPU2, "fsdp", False, "gloo"),
        (A100_RANK5, "ddp", False, "nccl"),
        (A100_RANK5, "fsdp", False, "nccl"),
        (A100_RANK5, "fsdp", True, "cuda:nccl,cpu:gloo"),
    ],
)
def test_process_group_backend(hw: Hardware, strategy: Any, offload: bool, want: str) -> None:
    assert backend(hw, strategy, offload) == want


CASES = [
    (name, quant, strategy)
    for name, quant, strategy in itertools.product(HARDWARE, QUANT, STRATEGY)
    if not (quant == "8bit" and strategy == "fsdp")
]


@pytest.mark.parametrize(("hw_name", "quant", "strategy"), CASES)
def test_load_kwargs_table(hw_name: str, quant: Any, strategy: Any) -> None:
    hw = HARDWARE[hw_name]
    prec = BF16 if hw.cuda else FP32
    kwargs = load_kwargs(hw, quant, "bfloat16", prec, strategy)
    # never "auto" (it would spread every rank's copy over every GPU); never another rank's GPU
    if hw.cuda and (strategy == "ddp" or quant != "none"):
        assert kwargs["device_map"] == {"": hw.local_rank}
    else:  # CPU, or an unquantized model fsdp will shard from the CPU
        assert "device_map" not in kwargs
    if quant == "none":
        assert "bnb" not in kwargs and kwargs["dtype"] == prec.load_dtype
    else:
        # on CPU the unquantized parts stay fp32 (bf16 there is slow and lossy)
        assert kwargs["dtype"] == (prec.load_dtype if hw.cuda else "float32")
        bnb = kwargs["bnb"]
        assert bool(bnb.get("load_in_8bit")) == (quant == "8bit")
        assert bool(bnb.get("load_in_4bit")) == (quant == "4bit-nf4")
        # FSDP2 shards floating storage only
        assert ("bnb_4bit_quant_storage" in bnb) == (quant == "4bit-nf4" and strategy == "fsdp")


def test_bf16_compute_on_a_gpu_without_bf16_names_the_field() -> None:
    with pytest.raises(StageError, match=r"quantization\.computeDtype"):
        load_kwargs(T4_RANK1, "4bit-nf4", "bfloat16", Precision("float16", "fp16"))
    assert load_kwargs(T4_RANK1, "4bit-nf4", "float32", Precision("float16", "fp16"))["device_map"] == {"": 1}


# requested dtype, hardware, trainer, full fine-tuning -> (load dtype, amp) or the error's field
PRECISION = [
    ("auto", CPU1, "trl", False, ("float32", "no")),
    ("float32", CPU1, "engine", True, ("float32", "no")),
    ("bfloat16", CPU1, "trl", False, ("bfloat16", "no")),
    ("float16", CPU1, "trl", False, "model.dtype"),
    ("auto", A100, "trl", False, ("bfloat16", "bf16")),
    ("auto", A100, "trl", True, ("bfloat16", "bf16")),
    ("bfloat16", A100, "engine", False, ("bfloat16", "bf16")),
    ("float32", A100, "trl", True, ("float32", "no")),
    ("float16", A100, "trl", False, ("float16", "fp16")),  # fp16 frozen base, fp32 adapters
    ("float16", A100, "trl", True, ("float32", "fp16")),  # fp32 master weights + GradScaler
    ("float16", A100, "engine", False, "model.dtype"),  # no loss scaling in the PPO engine
    ("auto", T4_RANK1, "trl", False, ("float16", "fp16")),
    ("auto", T4_RANK1, "trl", True, ("float32", "fp16")),
    ("auto", T4_RANK1, "engine", False, ("float32", "no")),
    ("bfloat16", T4_RANK1, "trl", False, "model.dtype"),
    ("float32", T4_RANK1, "engine", False, ("float32", "no")),
]


@pytest.mark.parametrize(("requested", "hw", "trainer", "full", "want"), PRECISION)
def test_precision_table(requested: Any, hw: Hardware, trainer: Any, full: bool, want: Any) -> None:
    if isinstance(want, str):
        with pytest.raises(StageError) as error:
            precision(requested, hw, trainer, full)
        assert error.value.field == want
    else:
        assert precision(requested, hw, trainer, full) == Precision(*want)


def test_precision_errors_name_the_model_they_are_about() -> None:
    with pytest.raises(StageError) as error:
        precision("float16", CPU1, "engine", False, field="rewardModel.dtype")
    assert error.value.field == "rewardModel.dtype"


@pytest.mark.parametrize(("hw_name", "strategy"), itertools.product(HARDWARE, STRATEGY))
@pytest.mark.parametrize("checkpointing", [False, True])
def test_trainer_kwargs_table(hw_name: str, strategy: Any, checkpointing: bool) -> None:
    hw = HARDWARE[hw_name]
    prec = BF16 if hw.cuda else FP32
    kwargs = trainer_kwargs(hw, prec, strategy, offload=strategy == "fsdp", gradient_checkpointing=checkpointing)
    assert kwargs["use_cpu"] is (not hw.cuda)
    assert kwargs["bf16"] is hw.cuda and kwargs["fp16"] is False
    assert kwargs["ddp_backend"] == ("gloo" if not hw.cuda and hw.distributed else None)
    sharded = strategy == "fsdp" and hw.distributed
    assert ("fsdp" in kwargs) is sharded
    if sharded:
        config = kwargs["fsdp_config"]
        assert config["version"] == 2 and config["cpu_offload"] is True
        assert config["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
        # the model's own checkpointing: FSDP's wrapper empties a PEFT model's sharded checkpoints
        assert "activation_checkpointing" not in config
    assert kwargs["gradient_checkpointing"] is checkpointing


def test_fp16_amp_reaches_the_trainer() -> None:
    kwargs = trainer_kwargs(T4_RANK1, Precision("float16", "fp16"), "ddp", False, False)
    assert kwargs["fp16"] is True and kwargs["bf16"] is False


@pytest.mark.parametrize(
    ("hw", "strategy", "want"),
    [(CPU2, "fsdp", True), (CPU1, "fsdp", False), (CPU2, "ddp", False), (A100_RANK5, "fsdp", False)],
)
def test_accelerate_needs_help_only_for_fsdp_across_cpu_processes(hw: Hardware, strategy: Any, want: bool) -> None:
    assert fsdp_on_cpu(hw, strategy) is want
    if not want:
        assert accelerate_fsdp_on_cpu(hw, strategy) == {}


@pytest.mark.parametrize(
    ("stage", "lora", "want"),
    [("sft", True, Loading("fsdp", "trl", False)), ("ppo", False, Loading("fsdp", "engine", True))],
)
def test_loading_follows_the_job(stage: str, lora: bool, want: Loading) -> None:
    cfg = TrainerJobConfig.model_validate(
        {
            "stage": stage,
            "runName": "r",
            "model": {"name": "m"},
            "rewardModel": {"name": "rm"},
            "outputDir": "/o",
            "workDir": "/w",
            "strategy": "fsdp",
            stage: {"dataset": {"source": "d"}, "lora": {"enabled": lora}},
        }
    )
    assert Loading.for_job(cfg) == want


def test_fsdp_offload_needs_fsdp_in_the_stage_config() -> None:
    with pytest.raises(ValueError, match="fsdpOffload needs strategy fsdp"):
        TrainerJobConfig.model_validate(
            {
                "stage": "sft",
                "runName": "r",
                "model": {"name": "m"},
                "outputDir": "/o",
                "workDir": "/w",
                "fsdpOffload": True,
                "sft": {"dataset": {"source": "d"}},
            }
        )


# --- the wiring: the two defects a GPU run would hit, checked with the GPU faked -----------------


def test_each_rank_selects_its_gpu_before_joining_the_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    import torch.distributed as dist
    from rlhf_trainer import distributed, placement

    calls: list[tuple[str, Any]] = []
    monkeypatch.setattr(placement, "hardware", lambda: A100_RANK5)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend: calls.append(("init_process_group", backend)))
    assert distributed.init_from_env("fsdp", offload=True) == torch.device("cuda:5")
    assert calls == [("set_device", "cuda:5"), ("init_process_group", "cuda:nccl,cpu:gloo")]


@pytest.mark.parametrize(("quant", "strategy"), [("8bit", "ddp"), ("4bit-nf4", "fsdp"), ("none", "ddp")])
def test_models_load_onto_this_ranks_gpu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, quant: str, strategy: str
) -> None:
    import torch
    from rlhf_api.model_config import ModelConfig
    from rlhf_api.stage_config import QuantizationConfig
    from rlhf_trainer import modeling, placement

    seen: dict[str, Any] = {}

    class FakeAuto:
        @staticmethod
        def from_pretrained(path: str, **kwargs: Any) -> Any:
            seen.update(kwargs)
            return torch.nn.Linear(1, 1)

    monkeypatch.setattr(placement, "hardware", lambda: A100_RANK5)
    monkeypatch.setattr(modeling, "_bnb_config", lambda q, options: ("bnb", options))
    (tmp_path / "config.json").write_text("{}")
    model = ModelConfig(name=str(tmp_path), dtype="auto")
    loading = placement.Loading(strategy=strategy)  # type: ignore[arg-type]
    modeling._load(FakeAuto, model, QuantizationConfig(mode=quant), str(tmp_path), "model", loading)  # type: ignore[arg-type]
    assert seen["device_map"] == {"": 5} and seen["dtype"] == torch.bfloat16
    if quant == "none":
        assert "quantization_config" not in seen
    else:
        assert seen["quantization_config"][0] == "bnb"


def test_a_rank_without_a_gpu_fails_the_stage_naming_the_field(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from rlhf_trainer import placement
    from rlhf_trainer.stages.lifecycle import StageOutputs, run_stage

    monkeypatch.setattr(placement, "hardware", lambda: Hardware(cuda=True, gpu_count=2, local_rank=3, world_size=4))
    cfg = TrainerJobConfig.model_validate(
        {"stage": "sft", "runName": "r", "model": {"name": "m"}, "outputDir": str(tmp_path), "workDir": str(tmp_path)}
        | {"sft": {"dataset": {"source": "d"}}}
    )
    result = run_stage(cfg, lambda _: StageOutputs())
    assert result.status == "failed" and result.message is not None
    assert result.message.startswith("placement.gpusPerWorker: process LOCAL_RANK=3 has no GPU")
