"""The stage-kind registry: one module per kind, and no stage-name comparisons elsewhere.

What differs between stage kinds is asked of rlhf_api.stages (StageKind), so that a new kind is
its own modules plus one registry line. The scan below fails on `stage == "ppo"`,
`cfg.stage != "sft"`, `stage in ("reward", "dpo")` and on getattr/hasattr over a stage section
anywhere outside a kind's own modules (the contract's rlhf_api/stages/<kind>.py and the trainer
module its entry point names).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from rlhf_api.precision import TrainerKind
from rlhf_api.rules import AFTER_RLAIF, ALLOWED_PIPELINES, REWARD_SOURCE_STAGES
from rlhf_api.spec import SECTIONS, RLHFRunSpec
from rlhf_api.stages import POLICY_STAGES, STAGE_KINDS, STAGES, StageName, kind_of
from rlhf_api.stages.kind import StageKind
from rlhf_api.trainer_job import TrainerJobConfig

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("api", "operator", "cli", "trainer_image")
NAMES = frozenset(STAGE_KINDS)


def _is_stage_name(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value in NAMES


def _is_section(node: ast.AST) -> bool:
    """`section`, `self.section`, `cfg.section`: a stage section whose kind is not known here."""
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return name == "section"


def stage_name_uses(source: str) -> list[tuple[int, str]]:
    """(line, code) of every comparison with a stage name and every getattr/hasattr over a section."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for op, left, right in zip(node.ops, operands, operands[1:], strict=False):
                if (
                    isinstance(op, ast.Eq | ast.NotEq | ast.Is | ast.IsNot)
                    and (_is_stage_name(left) or _is_stage_name(right))
                ) or (
                    isinstance(op, ast.In | ast.NotIn)
                    and isinstance(right, ast.Tuple | ast.List | ast.Set)
                    and any(_is_stage_name(e) for e in right.elts)
                ):
                    found.append(node)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and node.args
            and _is_section(node.args[0])
        ):
            found.append(node)
    return sorted({(n.lineno, ast.get_source_segment(source, n) or "") for n in found})


def _kind_modules() -> set[Path]:
    """The files allowed to name their own kind: rlhf_api/stages/<kind>.py and the entry point's module."""
    allowed = set()
    for name, kind in STAGE_KINDS.items():
        allowed.add(ROOT / "api" / "rlhf_api" / "stages" / f"{name}.py")
        module = kind.entry_point.split(":")[0]
        allowed.add(ROOT / "trainer_image" / Path(*module.split(".")).with_suffix(".py"))
    return allowed


@pytest.mark.parametrize(
    ("code", "caught"),
    [
        # the forms the registry replaced (estimate, plan, data, handover, placement)
        ('if stage == "ppo": pass', True),
        ('x = 2 if stage in ("reward", "dpo") else 1', True),
        ('uses = stage != "sft" and ok', True),
        ('t = "ppo" if cfg.stage == "ppo" else "trl"', True),
        ('if "sft" == name: pass', True),
        ('if s not in ["rlaif"]: pass', True),
        ('if s in {"grpo", "x"}: pass', True),
        ('m = getattr(section, "base_model", None)', True),
        ('ok = hasattr(cfg.section, "lora")', True),
        # not stage-name decisions
        ('if mode == "8bit": pass', False),
        ('if "rlaif" in spec.pipeline: pass', False),  # membership in this run's pipeline
        ('x = spec.section("reward")', False),
        ("m = getattr(self, name)", False),
    ],
)
def test_the_scan_catches_stage_name_comparisons(code: str, caught: bool) -> None:
    assert bool(stage_name_uses(code)) is caught


def test_no_stage_name_comparisons_outside_the_kind_modules() -> None:
    allowed = _kind_modules()
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path in allowed:
                continue
            for line, code in stage_name_uses(path.read_text()):
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {code}")
    assert offenders == [], "ask rlhf_api.stages.kind_of(stage) instead:\n" + "\n".join(offenders)


def test_kind_modules_exist() -> None:
    """Every kind's contract module and trainer entry point are where the scan allows them."""
    for path in _kind_modules():
        assert path.is_file(), path


# ----------------------------------------------------------------------------- the registry


# The accepted pipelines before they were declared per kind (issue 18): the set must not change.
PIPELINES_BEFORE_THE_REGISTRY = [
    ["sft", "reward", "ppo"],
    ["sft", "reward"],
    ["sft", "ppo"],
    ["reward", "ppo"],
    ["sft"],
    ["reward"],
    ["ppo"],
    ["sft", "dpo"],
    ["dpo"],
    ["sft", "reward", "grpo"],
    ["sft", "grpo"],
    ["reward", "grpo"],
    ["grpo"],
    ["sft", "reward", "rloo"],
    ["sft", "rloo"],
    ["reward", "rloo"],
    ["rloo"],
    ["sft", "reward", "rest"],
    ["sft", "rest"],
    ["reward", "rest"],
    ["rest"],
    ["sft", "rlaif", "reward", "ppo"],
    ["sft", "rlaif", "reward", "rest"],
    ["sft", "rlaif", "reward"],
    ["sft", "rlaif", "dpo"],
    ["rlaif", "reward"],
    ["rlaif", "dpo"],
    ["sft", "rlaif", "reward", "grpo"],
    ["sft", "rlaif", "reward", "rloo"],
]

# Kinds added since, each by its own modules and one registry line.
PIPELINES_OF_NEW_KINDS = [["kto"], ["sft", "kto"]]


def test_the_accepted_pipelines_are_unchanged() -> None:
    assert sorted(ALLOWED_PIPELINES) == sorted(PIPELINES_BEFORE_THE_REGISTRY + PIPELINES_OF_NEW_KINDS)
    assert len(ALLOWED_PIPELINES) == len({tuple(p) for p in ALLOWED_PIPELINES})


def test_registry_derived_sets() -> None:
    assert STAGES == ("sft", "reward", "ppo", "dpo", "grpo", "rloo", "rest", "rlaif", "kto")
    assert POLICY_STAGES == ("sft", "ppo", "dpo", "grpo", "rloo", "rest", "kto")
    assert REWARD_SOURCE_STAGES == ("grpo", "rloo", "rest")
    assert AFTER_RLAIF == ("reward", "dpo")
    assert [n for n, k in STAGE_KINDS.items() if not k.produces_model] == ["rlaif"]
    assert [n for n, k in STAGE_KINDS.items() if k.produces_reward_model] == ["reward"]
    assert [n for n, k in STAGE_KINDS.items() if k.trainer == "engine"] == ["ppo"]


@pytest.mark.parametrize("name", list(STAGE_KINDS))
def test_each_kind_is_consistent(name: StageName) -> None:
    kind: StageKind = kind_of(name)
    assert kind.name == name
    assert all(p[-1] == name and set(p) <= set(STAGE_KINDS) for p in kind.pipelines)
    assert all(needed in STAGE_KINDS for needed, _ in kind.requires)
    # The spec's section is the kind's config plus StageControl; the trainer file has one field per kind.
    assert issubclass(SECTIONS[name], kind.config)
    assert RLHFRunSpec.model_fields[name].description == kind.spec_description
    assert TrainerJobConfig.model_fields[name].annotation == kind.config | None
    assert kind.trainer in TrainerKind.__args__
    # The entry point names a module:function; only the trainer image can import it (torch).
    module, function = kind.entry_point.split(":")
    assert module.startswith("rlhf_trainer.") and function.isidentifier()
