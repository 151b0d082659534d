"""plan(): stage inputs and outputs on the volume, placement overlay."""

from __future__ import annotations

from typing import Any

import pytest
from rlhf_api.trainer_job import TrainerJobConfig
from rlhf_api.validation import parse_run
from rlhf_operator.plan import GPU_TAINT_TOLERATION, on_volume, plan

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


# (case, spec changes, {stage: [(input stage, role)]}): the handover checks the trainer runs.
INPUT_CASES: list[tuple[str, dict[str, Any], dict[str, list[tuple[str, str]]]]] = [
    (
        "sft reward ppo",
        {},
        {"sft": [], "reward": [("sft", "model")], "ppo": [("sft", "model"), ("reward", "rewardModel")]},
    ),
    (
        "sft dpo",
        {"pipeline": ["sft", "dpo"], "reward": None, "ppo": None, "dpo": {"dataset": {"source": "d"}}},
        {"sft": [], "dpo": [("sft", "model")]},
    ),
    (
        "existing outputs have no result.json to check",
        {"sft": {"existingOutput": "/ws/old/merged"}},
        {"reward": [], "ppo": [("reward", "rewardModel")]},
    ),
    (
        "reward from its own base does not load the sft output",
        {"reward": {"dataset": {"source": "d"}, "baseModel": {"name": "microsoft/deberta-v3-large"}}},
        {"sft": [], "reward": [], "ppo": [("sft", "model"), ("reward", "rewardModel")]},
    ),
]


@pytest.mark.parametrize(("spec", "expected"), [c[1:] for c in INPUT_CASES], ids=[c[0] for c in INPUT_CASES])
def test_inputs_are_the_earlier_stages_of_this_run(spec: dict[str, Any], expected: dict[str, Any]) -> None:
    got = {
        p.name: [(i.stage, i.role) for i in p.config.inputs] for p in plan(_run(**spec), "/ws") if p.config is not None
    }
    assert got == expected
    for p in plan(_run(**spec), "/ws"):
        for stage_input in p.config.inputs if p.config else []:
            assert stage_input.output_dir == f"{R}/{stage_input.stage}"


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


DPO_ONLY = {"pipeline": ["sft", "dpo"], "reward": None, "ppo": None, "dpo": {"dataset": {"source": "d"}}}
# (case, spec changes, expected compare of each stage: None, or (prompts, max new tokens, reward model))
COMPARE_CASES: list[tuple[str, dict[str, Any], list[tuple[int, int, str | None] | None]]] = [
    ("final ppo, scored by the run's reward model", {}, [None, None, (128, 8, f"{R}/reward/merged")]),
    ("final dpo, no reward model: no win rate", DPO_ONLY, [None, (128, 8, None)]),
    (
        "dpo scored by a provided reward model",
        {**DPO_ONLY, "reward": {"existingOutput": "/ws/rm"}},
        [None, (128, 8, "/ws/rm")],
    ),
    ("switched off", {"evaluation": {"enabled": False}}, [None, None, None]),
    ("a reward model is no policy to compare", {"pipeline": ["sft", "reward"], "ppo": None}, [None, None]),
    (
        "sizes from the spec, else the final stage's evalMaxNewTokens",
        {
            "evaluation": {"prompts": 16},
            "ppo": {"dataset": {"source": "builtin:arithmetic"}, "training": {"evalMaxNewTokens": 5}},
        },
        [None, None, (16, 5, f"{R}/reward/merged")],
    ),
    ("maxNewTokens set", {"evaluation": {"maxNewTokens": 64}}, [None, None, (128, 64, f"{R}/reward/merged")]),
    ("final stage skipped: nothing runs it", {"ppo": {"existingOutput": "/ws/p"}}, [None, None, None]),
]


@pytest.mark.parametrize(("spec", "expected"), [c[1:] for c in COMPARE_CASES], ids=[c[0] for c in COMPARE_CASES])
def test_final_policy_stage_compares(spec: dict[str, Any], expected: list[tuple[int, int, str | None] | None]) -> None:
    got = []
    for p in plan(_run(**spec), "/ws"):
        compare = p.config.compare if p.config else None
        reward = compare.reward_model.name if compare and compare.reward_model else None
        got.append((compare.prompts, compare.max_new_tokens, reward) if compare else None)
    assert got == expected


@pytest.mark.parametrize(
    ("path", "data_file", "expected"),
    [
        ("./data/train.jsonl", True, "/ws/data/train.jsonl"),
        ("../shared/train.jsonl", True, "/shared/train.jsonl"),
        ("data/train.jsonl", True, "/ws/data/train.jsonl"),  # a bare data file is on the volume
        ("train.parquet", True, "/ws/train.parquet"),
        ("org/dataset", True, "org/dataset"),  # a hub id
        ("builtin:arithmetic", True, "builtin:arithmetic"),
        ("/abs/train.jsonl", True, "/abs/train.jsonl"),
        ("./models/base", False, "/ws/models/base"),
        ("meta-llama/Llama-2-7b-hf", False, "meta-llama/Llama-2-7b-hf"),
        ("models/base", False, "models/base"),  # a model without ./ is a hub id
    ],
)
def test_relative_paths_resolve_against_the_volume_root(path: str, data_file: bool, expected: str) -> None:
    assert on_volume(path, "/ws", data_file) == expected


def test_one_file_means_the_same_data_on_a_laptop_and_a_cluster() -> None:
    run = _run(
        model={"name": "./models/base"},
        sft={"dataset": {"source": "data/sft.jsonl"}},
        reward={"dataset": {"source": "./data/pairs.jsonl"}, "baseModel": {"name": "./models/encoder"}},
        ppo={"existingOutput": "./previous/ppo/merged"},
    )
    for root in ("/workspace", "/home/me/runs"):
        sft, reward, _ppo = plan(run, root)
        assert sft.config is not None and reward.config is not None
        assert sft.config.model.name == f"{root}/models/base"
        assert sft.config.section.dataset.source == f"{root}/data/sft.jsonl"
        assert reward.config.section.dataset.source == f"{root}/data/pairs.jsonl"
        assert reward.config.reward is not None and reward.config.reward.base_model is not None
        assert reward.config.reward.base_model.name == f"{root}/models/encoder"
        assert _ppo.skipped and _ppo.merged_path == f"{root}/previous/ppo/merged"


def test_termination_grace_period_default_and_override() -> None:
    run = _run(
        placement={"terminationGracePeriodSeconds": 120},
        sft={"dataset": {"source": "builtin:arithmetic"}, "placement": {"terminationGracePeriodSeconds": 900}},
    )
    grace = {p.name: p.placement.termination_grace_period_seconds for p in plan(run, R)}
    assert grace == {"sft": 900, "reward": 120, "ppo": 120}
    assert {p.placement.termination_grace_period_seconds for p in plan(_run(), R)} == {600}


def test_strategy_reaches_each_stage_config() -> None:
    run = _run(
        placement={"strategy": "fsdp", "fsdpOffload": True},
        reward={"dataset": {"source": "d"}, "placement": {"strategy": "ddp", "fsdpOffload": False}},
    )
    sft, reward, ppo = (p.config for p in plan(run, "/ws"))
    assert sft is not None and (sft.strategy, sft.fsdp_offload) == ("fsdp", True)
    assert reward is not None and (reward.strategy, reward.fsdp_offload) == ("ddp", False)
    assert ppo is not None and (ppo.strategy, ppo.fsdp_offload) == ("fsdp", True)
    assert all(p.config is None or p.config.strategy == "ddp" for p in plan(_run(), "/ws"))


def test_stage_node_pool_overrides_the_runs() -> None:
    run = _run(
        placement={"nodePool": {"accelerator": "nvidia-a100-80gb"}, "resources": {"requests": {"cpu": "8"}}},
        sft={"dataset": {"source": "d"}, "placement": {"nodePool": {"accelerator": "nvidia-l4"}}},
    )
    sft, reward, _ = plan(run, "/ws")
    assert sft.placement.node_selector == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert reward.placement.node_selector == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert sft.placement.requests == {"cpu": "8"}


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


def test_reward_source_paths_resolve_against_the_volume_root() -> None:
    sources = [
        {"type": "model", "model": {"name": "./models/rm"}},
        {"type": "model", "model": {"name": "org/rm"}},
        {"type": "function", "function": "my_rewards:fn", "pythonPath": "code"},
        {"type": "function", "function": "my_rewards:fn", "pythonPath": "/opt/rewards"},
    ]
    run = _run(pipeline=["sft", "grpo"], reward=None, ppo=None, grpo={**GROUP_RL, "rewards": sources})
    for root in ("/workspace", "/home/me/runs"):
        grpo = plan(run, root)[1]
        assert grpo.config is not None and grpo.config.grpo is not None
        got = [(s.model.name if s.model else None, s.python_path) for s in grpo.config.grpo.rewards]
        assert got == [(f"{root}/models/rm", None), ("org/rm", None), (None, f"{root}/code"), (None, "/opt/rewards")]
