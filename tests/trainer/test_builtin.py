"""The builtin task and tiny model: deterministic, checkable, and learnable by construction."""

from __future__ import annotations

import threading
from pathlib import Path

from rlhf_trainer.builtin_task import arithmetic as builtin


def test_problem_answers_and_the_forgotten_carry() -> None:
    p = builtin.Problem(37, 5)
    assert (p.question, p.answer, p.needs_carry, p.forgot_carry) == ("What is 37 + 5?", "42", True, "32")
    q = builtin.Problem(41, 5)
    assert (q.answer, q.needs_carry) == ("46", False)
    assert builtin.parse_question("What is 37 + 5?") == p
    assert builtin.parse_question("What is 37 - 5?") is None


def test_checker_is_exact_match_on_the_first_line() -> None:
    assert builtin.is_correct("What is 37 + 5?", "42")
    assert builtin.is_correct("What is 37 + 5?", " 42\n\nQuestion: What is")
    assert not builtin.is_correct("What is 37 + 5?", "421")
    assert not builtin.is_correct("What is 37 + 5?", "32")
    assert not builtin.is_correct("no question", "42")


def test_eval_questions_are_disjoint_from_every_training_split() -> None:
    held_out = {r["question"] for r in builtin.eval_rows()}
    assert len(held_out) == 120
    assert not held_out & {r["question"] for r in builtin.sft_rows(0)}
    assert not held_out & set(builtin.ppo_questions(0))
    prompts = {r["prompt"] for r in builtin.preference_rows(0)}
    assert not prompts & {builtin.prompt_formatter(builtin.DEFAULT_TEMPLATE)(q) for q in held_out}
    eval_pairs = builtin.preference_rows(0, split="eval")
    assert len(eval_pairs) == 120


def test_sft_answers_are_imperfect_in_a_plausible_way() -> None:
    rows = builtin.sft_rows(3)
    assert rows == builtin.sft_rows(3)  # deterministic in the seed
    assert rows != builtin.sft_rows(4)
    wrong = [r for r in rows if not builtin.is_correct(r["question"], r["answer"])]
    assert 0.3 <= len(wrong) / len(rows) <= 0.45
    for r in wrong:
        p = builtin.parse_question(r["question"])
        assert p is not None
        assert r["answer"] == p.forgot_carry or abs(int(r["answer"]) - int(p.answer)) == 1
    # On carry questions the wrong answer is the majority: SFT learns the mistake.
    carry = [r for r in rows if builtin.parse_question(r["question"]).needs_carry]  # type: ignore[union-attr]
    carry_wrong = [r for r in carry if not builtin.is_correct(r["question"], r["answer"])]
    assert len(carry_wrong) / len(carry) > 0.5


def test_preference_rows_prefer_the_correct_answer() -> None:
    for row in builtin.preference_rows(1, n=200):
        question = row["prompt"].split("Question: ", 1)[1].split("\n", 1)[0]
        assert builtin.is_correct(question, row["chosen"])
        assert not builtin.is_correct(question, row["rejected"])
        assert row["prompt"].endswith("Answer: ")


def test_preference_rows_have_no_bigger_answer_shortcut() -> None:
    # A reward model that learned "the larger answer wins" was exploited by PPO (it scored
    # "88" highest); the larger answer must be the chosen one in about half the pairs only.
    for stage in ("reward", "dpo"):
        rows = builtin.preference_rows(3, n=2000, stage=stage)
        larger_chosen = sum(int(r["chosen"]) > int(r["rejected"]) for r in rows) / len(rows)
        assert 0.4 < larger_chosen < 0.6, stage
    # DPO's pairs also reject random near misses on either side.
    dpo_rows = builtin.preference_rows(3, n=2000, stage="dpo")
    assert len({int(r["rejected"]) - int(r["chosen"]) for r in dpo_rows}) > 10


def test_tokenizer_digits_are_single_tokens_and_the_boundary_is_stable(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(builtin.materialize_tiny_llama(str(tmp_path)))
    assert tok.bos_token and tok.eos_token and tok.pad_token
    assert len({tok.pad_token_id, tok.eos_token_id, tok.bos_token_id}) == 3
    pieces = tok.convert_ids_to_tokens(tok("What is 1234567890?")["input_ids"])
    assert [p for p in pieces if p.strip("Ġ").isdigit()] == list("1234567890")
    prompt = "Question: What is 37 + 5?\n\nAnswer: "
    whole = tok(prompt + "42")["input_ids"]
    assert whole[: len(tok(prompt)["input_ids"])] == tok(prompt)["input_ids"]
    assert tok.decode(whole) == prompt + "42"


def test_materialize_is_cached_and_safe_when_ranks_race(tmp_path: Path) -> None:
    # Ranks are processes, each importing on its own; these threads share one module table, where
    # transformers' lazy first import is not thread-safe (ImportError when this test ran first).
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: F401

    paths: list[str] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            paths.append(builtin.materialize_tiny_llama(str(tmp_path)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(paths)) == 1
    target = Path(paths[0])
    assert (target / "model.safetensors").exists() and (target / "tokenizer.json").exists()
    leftovers = [p for p in target.parent.iterdir() if p != target]
    assert leftovers == []
    mtime = (target / "config.json").stat().st_mtime
    assert builtin.materialize_tiny_llama(str(tmp_path)) == str(target)
    assert (target / "config.json").stat().st_mtime == mtime


def test_tiny_model_weights_are_deterministic() -> None:
    import torch

    tok = builtin.build_tokenizer()
    a, b = builtin.build_model(tok), builtin.build_model(tok)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_core_modules_ask_the_registry_not_the_fixture() -> None:
    """Only the fixtures (builtin_task/, the builtin judge) and the registry's provider list
    name the quickstart's task; data loading, modeling, evaluation etc. ask builtin_sources."""
    from pathlib import Path

    import rlhf_trainer

    root = Path(rlhf_trainer.__file__).parent
    allowed = {root / "builtin_sources.py", root / "rlaif" / "builtin_judge.py"}
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if "builtin_task" not in path.parts and path not in allowed and "builtin_task" in path.read_text()
    ]
    assert offenders == []


def test_near_miss_rate_comes_from_what_the_kind_trains() -> None:
    """The mix of rejected answers is read off the kind (reward model or policy), not its name, so
    every preference-data kind in the registry gets pairs without an entry here."""
    from rlhf_api.stages import STAGE_KINDS

    preference_kinds = [name for name, kind in STAGE_KINDS.items() if kind.data == "preference"]
    assert len(preference_kinds) >= 2
    for name in preference_kinds:
        expected = (
            builtin.REWARD_MODEL_NEAR_MISS_RATE
            if STAGE_KINDS[name].produces_reward_model
            else builtin.POLICY_NEAR_MISS_RATE
        )
        assert builtin.near_miss_rate_for(name) == expected
        assert len(builtin.preference_rows(3, n=50, stage=name)) == 50
    assert builtin.near_miss_rate_for("reward") == 0.0 and builtin.near_miss_rate_for("dpo") == 0.5
