"""plan(): stage inputs and outputs on the volume, placement overlay."""

from __future__ import annotations

from typing import Any

import pytest
from rlhf_api.stage_config import TrainerJobConfig
from rlhf_api.validation import parse_run
from rlhf_operator.plan import GPU_TAINT_TOLERATION, plan

from .conftest import MINIMAL, load_example


def _run(**spec: Any) -> Any:
    document = {**MINIMAL, "spec": {**MINIMAL["spec"], **spec}}
    return parse_run(document)


R = "/ws/demo"
GROUP_RL: dict[str, Any] = {"dataset": {"source": "builtin:arithmetic"}}
ARITH = {"type": "builtin", "builtin": "arithmetic"}
# (case, spec changes, expected [(stage, skipped, start model, reward model, output dir)])
CASES: list[tuple[str, dict[str, Any], list[tuple[str, bool, str | None, str | None, str]]]] = [
    (
        "sft reward ppo",
        {},
        [
            ("sft", False, "builtin:tiny-llama", None, f"{R}/sft"),
            ("reward", False, f"{R}/sft/merged", None, f"{R}/reward"),
            ("ppo", False, f"{R}/sft/merged", f"{R}/reward/merged", f"{R}/ppo"),
        ],
    ),
    (
        "sft dpo",
        {"pipeline": ["sft", "dpo"], "reward": None, "ppo": None, "dpo": {"dataset": {"source": "d"}}},
        [
            ("sft", False, "builtin:tiny-llama", None, f"{R}/sft"),
            ("dpo", False, f"{R}/sft/merged", None, f"{R}/dpo"),
        ],
    ),
    (
        "dpo from base",
        {"pipeline": ["dpo"], "sft": None, "reward": None, "ppo": None, "dpo": {"dataset": {"source": "d"}}},
        [("dpo", False, "builtin:tiny-llama", None, f"{R}/dpo")],
    ),
    (
        "existing sft model skips the stage",
        {"sft": {"existingOutput": "/ws/old/merged"}},
        [
            ("sft", True, None, None, f"{R}/sft"),
            ("reward", False, "/ws/old/merged", None, f"{R}/reward"),
            ("ppo", False, "/ws/old/merged", f"{R}/reward/merged", f"{R}/ppo"),
        ],
    ),
    (
        "ppo with provided sft and reward",
        {
            "pipeline": ["ppo"],
            "sft": {"existingOutput": "/ws/s"},
            "reward": {"existingOutput": "/ws/r"},
        },
        [("ppo", False, "/ws/s", "/ws/r", f"{R}/ppo")],
    ),
    (
        "grpo scored by the reward stage's model",
        {"pipeline": ["sft", "reward", "grpo"], "ppo": None, "grpo": GROUP_RL},
        [
            ("sft", False, "builtin:tiny-llama", None, f"{R}/sft"),
            ("reward", False, f"{R}/sft/merged", None, f"{R}/reward"),
            ("grpo", False, f"{R}/sft/merged", f"{R}/reward/merged", f"{R}/grpo"),
        ],
    ),
    (
        "rloo with a verifiable reward needs no reward model",
        {"pipeline": ["sft", "rloo"], "reward": None, "ppo": None, "rloo": {**GROUP_RL, "rewards": [ARITH]}},
        [
            ("sft", False, "builtin:tiny-llama", None, f"{R}/sft"),
            ("rloo", False, f"{R}/sft/merged", None, f"{R}/rloo"),
        ],
    ),
    (
        "reward stage trained but not a source",
        {"pipeline": ["sft", "reward", "grpo"], "ppo": None, "grpo": {**GROUP_RL, "rewards": [ARITH]}},
        [
            ("sft", False, "builtin:tiny-llama", None, f"{R}/sft"),
            ("reward", False, f"{R}/sft/merged", None, f"{R}/reward"),
            ("grpo", False, f"{R}/sft/merged", None, f"{R}/grpo"),
        ],
    ),
    (
        "grpo from the base model with an existing reward model",
        {"pipeline": ["grpo"], "sft": None, "reward": {"existingOutput": "/ws/r"}, "ppo": None, "grpo": GROUP_RL},
        [("grpo", False, "builtin:tiny-llama", "/ws/r", f"{R}/grpo")],
    ),
    (
        "reward from its own base",
        {"reward": {"dataset": {"source": "d"}, "baseModel": {"name": "microsoft/deberta-v3-large"}}},
        [
            ("sft", False, "builtin:tiny-llama", None, f"{R}/sft"),
            ("reward", False, f"{R}/sft/merged", None, f"{R}/reward"),
            ("ppo", False, f"{R}/sft/merged", f"{R}/reward/merged", f"{R}/ppo"),
        ],
    ),
]


@pytest.mark.parametrize(("spec", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_stage_wiring(spec: dict[str, Any], expected: list[tuple[str, bool, str | None, str | None, str]]) -> None:
    run = _run(**spec)
    plans = plan(run, "/ws")
    got = [
        (
            p.name,
            p.skipped,
            p.config.model.name if p.config else None,
            p.config.reward_model.name if p.config and p.config.reward_model else None,
            p.output_dir,
        )
        for p in plans
    ]
    assert got == expected
    for p in plans:
        if p.config is not None:
            # what the operator puts in the ConfigMap parses back into the trainer's model
            assert TrainerJobConfig.model_validate(p.config_file()) == p.config
            assert p.config.work_dir == R


def test_reward_base_model_reaches_the_trainer() -> None:
    run = _run(reward={"dataset": {"source": "d"}, "baseModel": {"name": "microsoft/deberta-v3-large"}})
    reward = plan(run, "/ws")[1]
    assert reward.config is not None and reward.config.reward is not None
    assert reward.config.reward.base_model is not None
    assert reward.config.reward.base_model.name == "microsoft/deberta-v3-large"


def test_stage_placement_overrides_field_by_field() -> None:
    run = parse_run(load_example("stackllama-7b-a100.yaml"))
    sft, reward, ppo = plan(run, "/workspace")
    assert sft.placement.gpus_per_worker == 8 and reward.placement.gpus_per_worker == 4
    assert ppo.placement.workers == 2 and ppo.placement.gpus_per_worker == 8
    assert reward.placement.node_selector == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert reward.placement.shm_size == "64Gi"
    assert sft.placement.tolerations == [GPU_TAINT_TOLERATION]
    assert sft.placement.processes_per_worker == 8
    assert ppo.config is not None and ppo.config.report_to == ["tensorboard", "wandb"]


def test_cpu_stage_gets_no_gpu_toleration() -> None:
    run = parse_run(load_example("quickstart.yaml"))
    for p in plan(run, "/workspace"):
        assert p.placement.gpus_per_worker == 0
        assert p.placement.tolerations == []
        assert p.placement.processes_per_worker == 1


def test_explicit_tolerations_replace_the_default() -> None:
    run = parse_run(load_example("dpo-7b.yaml"))
    dpo = plan(run, "/workspace")[1]
    assert {t["key"] for t in dpo.placement.tolerations} == {"nvidia.com/gpu", "dedicated"}


def test_group_rl_sections_reach_the_trainer() -> None:
    sources = [ARITH, {"type": "rewardModel", "weight": 0.5}, {"type": "function", "function": "my.mod:fn"}]
    training = {"numGenerations": 4, "beta": 0.0, "lossType": "dr_grpo", "maxCompletionLength": 16}
    run = _run(
        pipeline=["sft", "reward", "grpo"], ppo=None, grpo={**GROUP_RL, "rewards": sources, "training": training}
    )
    grpo = plan(run, "/ws")[2]
    assert grpo.config is not None and grpo.config.grpo is not None
    assert [(s.type, s.weight) for s in grpo.config.grpo.rewards] == [
        ("builtin", 1.0),
        ("rewardModel", 0.5),
        ("function", 1.0),
    ]
    assert grpo.config.grpo.training.loss_type == "dr_grpo" and grpo.config.grpo.training.num_generations == 4
    file = grpo.config_file()
    assert file["grpo"]["rewards"][2] == {"type": "function", "weight": 1.0, "function": "my.mod:fn"}
    assert "retries" not in file["grpo"] and "placement" not in file["grpo"]
