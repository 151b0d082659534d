"""Metric names are one contract: each stage kind declares its own (rlhf_api.stages.<kind>), the
shared ones are declared once (rlhf_api.metric_names), and every display derives its list.

Two scans keep it so: no module of the contract, the controller or the CLI holds a list of
metric names of its own (the old KEY_METRICS, SUMMARY_METRICS, HEADLINE_KEYS, PROGRESS_KEYS and
LOOP_METRICS were five, and drifted), and every declared name is one the trainer (our stage
program or the TRL/transformers trainer it runs) actually writes, so a renamed metric cannot
silently vanish from the displays.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import cache
from pathlib import Path

import pytest
from rlhf_api import metric_names
from rlhf_api.metric_names import (
    GUARDED,
    STEP_LEAD,
    STEP_TAIL,
    TRAINING_RESULTS,
    result_metrics,
    shown_results,
    status_step_metrics,
    step_headline,
    step_metrics,
)
from rlhf_api.progress import headline_numbers
from rlhf_api.progress_status import numbers_of
from rlhf_api.stages import STAGE_KINDS
from rlhf_api.stages.kind import StageKind

ROOT = Path(__file__).resolve().parents[2]
TRAINER = ROOT / "trainer_image" / "rlhf_trainer"


def declared_names() -> frozenset[str]:
    names = {*TRAINING_RESULTS, *STEP_LEAD, *STEP_TAIL, *GUARDED}
    for kind in STAGE_KINDS.values():
        names |= {*kind.metrics, *kind.progress, *kind.progress_detail}
    return frozenset(names)


# Where lists of metric names may be written: the declarations themselves, the guards (the
# numbers a rule judges, not a display's choice), and the report's plot layout (which logged
# curves share a plot: every curve is drawn, none is chosen away).
DECLARATIONS = (
    ROOT / "api" / "rlhf_api" / "metric_names.py",
    ROOT / "api" / "rlhf_api" / "guards.py",
    ROOT / "api" / "rlhf_api" / "stages",
    ROOT / "cli" / "rlhf_cli" / "report" / "panels.py",
)


def own_metric_lists(source: str, names: frozenset[str]) -> list[tuple[int, list[str]]]:
    """(line, names) of every tuple/list/set literal naming two or more declared metrics."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            listed = [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in names]
            if len(listed) >= 2:
                found.append((node.lineno, listed))
    return found


def test_the_scan_finds_a_display_list_of_its_own() -> None:
    old = 'SUMMARY_METRICS = ("task_accuracy_before", "task_accuracy", "pair_accuracy", "train_loss")'
    assert own_metric_lists(old, declared_names()) == [
        (1, ["task_accuracy_before", "task_accuracy", "pair_accuracy", "train_loss"])
    ]
    assert own_metric_lists('shown = ("task_accuracy",)\nkeys = ("prompt", "chosen")', declared_names()) == []


def test_no_display_keeps_a_list_of_metric_names() -> None:
    names, offenders = declared_names(), []
    for package in ("api", "operator", "cli"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if any(path == d or d in path.parents for d in DECLARATIONS):
                continue
            found = own_metric_lists(path.read_text(), names)
            offenders += [f"{path.relative_to(ROOT)}:{line} {listed}" for line, listed in found]
    assert not offenders, "derive these from rlhf_api.metric_names / the kinds' declarations:\n" + "\n".join(offenders)


@cache
def string_constants(path: Path) -> frozenset[str]:
    """Every string constant of a module, f-strings' literal parts included."""
    nodes = ast.walk(ast.parse(path.read_text()))
    return frozenset(node.value for node in nodes if isinstance(node, ast.Constant) and isinstance(node.value, str))


def trainer_sources(entry_point: str) -> list[Path]:
    """The kind's trainer program and the rlhf_trainer modules it imports, transitively."""
    start = TRAINER.parent / (entry_point.split(":")[0].replace(".", "/") + ".py")
    seen, todo = [], [start]
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen.append(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = path.parent
                for _ in range(node.level - 1):
                    base = base.parent
                module = base.joinpath(*(node.module or "").split("."))
                todo += [module.with_suffix(".py"), module / "__init__.py"]
                todo += [module / f"{alias.name}.py" for alias in node.names]
    return seen


def library_sources() -> list[Path]:
    """The TRL trainers and transformers' Trainer: where the Trainer-based stages' step numbers come from."""
    found = []
    for package, pattern in (("trl", "trainer/*.py"), ("transformers", "trainer*.py")):
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.origin is not None
        found += sorted(Path(spec.origin).parent.glob(pattern))
    return found


def written(name: str, sources: list[Path]) -> bool:
    """The name is a string the sources write; the Trainer prefixes evaluation numbers with eval_."""
    candidates = {name, name.removeprefix("eval_")}
    return any(candidates & string_constants(path) for path in sources)


@pytest.mark.parametrize("kind", list(STAGE_KINDS.values()), ids=list(STAGE_KINDS))
def test_every_declared_name_is_one_the_trainer_writes(kind: StageKind) -> None:
    own = trainer_sources(kind.entry_point)
    missing = [m for m in kind.metrics if not written(m, own)]
    missing += [m for m in (*kind.progress, *kind.progress_detail) if not written(m, own + library_sources())]
    assert not missing, f"{kind.name} declares metrics its trainer never writes: {missing}"


def test_every_shared_name_is_one_the_trainer_writes() -> None:
    everything = [*TRAINER.rglob("*.py"), ROOT / "api" / "rlhf_api" / "evaluation.py", *library_sources()]
    missing = [m for m in (*TRAINING_RESULTS, *STEP_LEAD, *STEP_TAIL, *GUARDED) if not written(m, everything)]
    assert not missing


GROUP_STEPS = ("loss", "reward", "kl", "eval_loss", "learning_rate")


# What the displays show per kind, derived (see the report of issue 18 for the changes).
@pytest.mark.parametrize(
    ("stage", "headline", "plain"),
    [
        ("sft", ("loss", "eval_loss", "learning_rate"), ("loss", "eval_loss", "learning_rate")),
        (
            "reward",
            ("loss", "accuracy", "eval_loss", "learning_rate"),
            ("loss", "accuracy", "eval_loss", "learning_rate", "eval_accuracy"),
        ),
        (
            "ppo",
            ("loss", "reward_mean", "kl", "eval_loss", "learning_rate"),
            (
                *("loss", "reward_mean", "kl", "eval_loss", "learning_rate"),
                *("kl_coef", "policy_loss", "value_loss", "response_length", "tokens_per_s"),
            ),
        ),
        (
            "dpo",
            ("loss", "rewards/accuracies", "rewards/margins", "eval_loss", "learning_rate"),
            ("loss", "rewards/accuracies", "rewards/margins", "eval_loss", "learning_rate"),
        ),
        ("grpo", GROUP_STEPS, GROUP_STEPS),
        ("rloo", GROUP_STEPS, GROUP_STEPS),
    ],
)
def test_step_lists_per_kind(stage: str, headline: tuple[str, ...], plain: tuple[str, ...]) -> None:
    assert step_headline(stage) == headline
    assert step_metrics(stage) == plain
    assert status_step_metrics(stage) == tuple(dict.fromkeys((*headline, "kl", "reward_std")))


def test_results_lead_with_the_shared_ones_then_the_kinds_own() -> None:
    assert result_metrics("sft") == TRAINING_RESULTS
    rest = ("samples_kept", "kept_reward_mean", "task_accuracy_before", "remote_requests", "remote_retries")
    assert result_metrics("rest") == (*TRAINING_RESULTS, *rest)
    assert result_metrics("rlaif")[-4:] == ("pairs_written", "decided_share", "mean_confidence", "label_agreement")
    # the summary table's four: the comparison's win rate before the loss; the rest by kind
    ppo = {"task_accuracy": 0.8, "task_accuracy_before": 0.5, "eval_win_rate": 0.7, "reward_mean": 1.0, "kl": 2.0}
    assert [k for k, _ in shown_results("ppo", ppo, 4)] == ["task_accuracy", "eval_win_rate", "reward_mean", "kl"]
    assert [k for k, _ in shown_results("ppo", ppo)][-1] == "task_accuracy_before"
    # a name no kind has (`rlhf-train compare`, an older status): every kind's names
    assert set(result_metrics("compare")) >= {m for kind in STAGE_KINDS.values() for m in kind.metrics}


def test_the_trainer_and_the_status_read_the_same_declaration() -> None:
    event = {"stage": "ppo", "step": 3, "reward_mean": 1.5, "kl": 0.2, "kl_coef": 0.1, "reward_std": 0.4}
    assert headline_numbers(event) == [("reward_mean", 1.5), ("kl", 0.2)]
    assert numbers_of(event) == {"reward_mean": 1.5, "kl": 0.2, "reward_std": 0.4}
    grpo = {"stage": "grpo", "step": 1, "loss": 0.1, "reward": 0.5, "reward_std": 0.2, "kl": 0.01}
    grpo["learning_rate"] = 1e-5
    assert headline_numbers(grpo) == [("loss", 0.1), ("reward", 0.5), ("kl", 0.01), ("learning_rate", 1e-5)]
    assert metric_names.rank_of("grpo")["reward"] < metric_names.rank_of("grpo")["reward_std"]
