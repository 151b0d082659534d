"""The quickstart's built-in model and task, generated at run time (nothing is downloaded).

Model `builtin:tiny-llama`: a small Llama built from a config (random weights, fixed seed)
with a byte-level BPE tokenizer trained offline on the task's text. Digits are always
single tokens, so arithmetic is learnable digit by digit.

Task `builtin:arithmetic`: "What is 37 + 5?" -> "42" (a two-digit number plus a one-digit
number). The SFT answers are deliberately imperfect in a human way: on most questions that
need a carry, the carry is forgotten ("37 + 5" -> "32"), and a few other answers are off by
one. A model trained on them learns the systematic mistake, so greedy decoding is wrong on
most carry questions; preference pairs always prefer the correct answer, which is what the
reward model, PPO and DPO can learn from. Held-out evaluation questions are disjoint from
every training question.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf_api.layout import CACHE
from rlhf_api.stages import kind_of

BUILTIN_MODEL = "builtin:tiny-llama"
BUILTIN_DATASET = "builtin:arithmetic"
DEFAULT_TEMPLATE = "Question: {question}\n\nAnswer: {answer}"

# Bump when the model or tokenizer recipe changes, so stale caches are not reused.
_MODEL_VERSION = "v2"
_MODEL_SEED = 1234
# The question space: a + b with a two-digit a and a one-digit b (sums stay below 100).
_A_RANGE = range(10, 90)
_B_RANGE = range(1, 10)
# Held-out questions, chosen once from a fixed seed so that every stage and every seed of a
# run agree on which questions are never trained on.
_EVAL_QUESTIONS = 120
_SPLIT_SEED = 20240601
# SFT noise: the share of carry questions whose answer forgets the carry, and the share of
# other answers that are off by one.
FORGET_CARRY_RATE = 0.7
OFF_BY_ONE_RATE = 0.1
# Preference pairs: the share whose rejected answer is a random near miss (within
# NEAR_MISS_SPAN of the sum) rather than a typical mistake, by what the stage trains: a reward
# model, or a policy straight from the pairs (DPO and any other preference-trained policy kind).
# Measured (one seed): the reward model reached pair accuracy 0.99 with 0.0 and 0.85 with 0.2
# (0.66 with 0.5), and PPO with a strong KL stays among the typical answers; DPO on the same SFT
# model reached task accuracy 0.53 with 0.5 but fell below SFT (0.40) with 0.0.
REWARD_MODEL_NEAR_MISS_RATE = 0.0
POLICY_NEAR_MISS_RATE = 0.5
NEAR_MISS_SPAN = 12


def is_builtin_dataset(source: str) -> bool:
    return source == BUILTIN_DATASET


# ----------------------------------------------------------------------------- the task


@dataclass(frozen=True)
class Problem:
    a: int
    b: int

    @property
    def question(self) -> str:
        return f"What is {self.a} + {self.b}?"

    @property
    def answer(self) -> str:
        return str(self.a + self.b)

    @property
    def needs_carry(self) -> bool:
        return (self.a % 10) + self.b >= 10

    @property
    def forgot_carry(self) -> str:
        """The classic mistake: the units digit is written, the carry is not added."""
        return str((self.a // 10) * 10 + (self.a % 10 + self.b) % 10)

    def wrong_answer(self, rng: random.Random) -> str:
        """A plausible wrong answer: the forgotten carry when there is one, else off by one."""
        if self.needs_carry:
            return self.forgot_carry
        return str(self.a + self.b + rng.choice((-1, 1)))

    def rejected_answer(self, rng: random.Random, near_miss_rate: float = 0.0) -> str:
        """The wrong answer of a preference pair: a typical mistake or a random near miss.

        Carry questions reject the forgotten carry (the SFT data's mistake), the others a
        spurious carry or an answer one too large; a share of pairs rejects a random near miss
        instead (either side). Measured: with only the two systematic mistakes (larger answer
        right in 3 of 4 pairs) the reward model learned "bigger wins" and PPO collapsed onto
        "88"; with only a fixed set of mistakes it scored unseen wrong answers (+2, +5) highly
        and PPO drifted onto them. Random near misses teach it that only the sum is right.
        """
        total = self.a + self.b
        if rng.random() < near_miss_rate:
            choices = [total + d for d in range(-NEAR_MISS_SPAN, NEAR_MISS_SPAN + 1) if d and 10 <= total + d < 100]
            return str(rng.choice(choices))
        if self.needs_carry:
            return self.forgot_carry
        if total + 10 < 100 and rng.random() < 0.5:
            return str(total + 10)
        return str(total + 1)


def _all_problems() -> list[Problem]:
    return [Problem(a, b) for a in _A_RANGE for b in _B_RANGE]


def _split_problems() -> tuple[list[Problem], list[Problem]]:
    """(training problems, held-out problems): fixed, disjoint, independent of the run seed."""
    problems = _all_problems()
    random.Random(_SPLIT_SEED).shuffle(problems)
    return problems[_EVAL_QUESTIONS:], problems[:_EVAL_QUESTIONS]


def parse_question(question: str) -> Problem | None:
    """The problem behind a question string (None when it is not one of ours)."""
    text = question.strip()
    if not (text.startswith("What is ") and text.endswith("?")):
        return None
    parts = text[len("What is ") : -1].split(" + ")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return Problem(int(parts[0]), int(parts[1]))


def correct_answer(question: str) -> str | None:
    problem = parse_question(question)
    return None if problem is None else problem.answer


def extract_answer(generated: str) -> str:
    """The answer part of a generation: up to the first line break, stripped."""
    return generated.strip().split("\n", 1)[0].strip()


def is_correct(question: str, generated: str) -> bool:
    """Exact match of the generated answer against the ground truth."""
    truth = correct_answer(question)
    return truth is not None and extract_answer(generated) == truth


def sft_rows(seed: int, n: int = 2400) -> list[dict[str, str]]:
    """question/answer rows drawn from the training problems, with imperfect answers."""
    rng = random.Random(seed * 7919 + 1)
    train, _ = _split_problems()
    rows = []
    for _ in range(n):
        p = rng.choice(train)
        if p.needs_carry and rng.random() < FORGET_CARRY_RATE:
            answer = p.forgot_carry
        elif not p.needs_carry and rng.random() < OFF_BY_ONE_RATE:
            answer = p.wrong_answer(rng)
        else:
            answer = p.answer
        rows.append({"question": p.question, "answer": answer})
    return rows


def preference_rows(
    seed: int, template: str = DEFAULT_TEMPLATE, split: str = "train", n: int = 2000, stage: str = "reward"
) -> list[dict[str, str]]:
    """prompt/chosen/rejected: the correct answer is preferred to a plausible wrong one.

    split="eval" draws from the held-out problems (for the reward model's pair accuracy).
    stage (a preference-data stage kind) picks the mix of rejected answers (near_miss_rate).
    """
    near_miss_rate = near_miss_rate_for(stage)
    rng = random.Random(seed * 7919 + 2)
    train, held_out = _split_problems()
    pool = train if split == "train" else held_out
    count = n if split == "train" else len(held_out)
    prompt_of = prompt_formatter(template)
    rows = []
    for i in range(count):
        p = rng.choice(pool) if split == "train" else pool[i]
        rows.append(
            {"prompt": prompt_of(p.question), "chosen": p.answer, "rejected": p.rejected_answer(rng, near_miss_rate)}
        )
    return rows


def near_miss_rate_for(stage: str) -> float:
    """The share of random near misses among the rejected answers a stage kind trains on."""
    return REWARD_MODEL_NEAR_MISS_RATE if kind_of(stage).produces_reward_model else POLICY_NEAR_MISS_RATE


def ppo_questions(seed: int) -> list[str]:
    """Training questions for PPO rollouts (shuffled by the seed)."""
    train, _ = _split_problems()
    questions = [p.question for p in train]
    random.Random(seed * 7919 + 3).shuffle(questions)
    return questions


def eval_rows() -> list[dict[str, str]]:
    """Held-out question/answer rows with the correct answers (never trained on)."""
    _, held_out = _split_problems()
    return [{"question": p.question, "answer": p.answer} for p in held_out]


def prompt_formatter(template: str) -> Any:
    """question -> the template's text before {answer}."""
    head = template.split("{answer}", 1)[0]

    def format_prompt(question: str) -> str:
        return head.format(question=question)

    return format_prompt


# ----------------------------------------------------------------------------- the model


def builtin_model_dir(work_dir: str) -> str:
    return str(Path(work_dir) / CACHE / "builtin" / f"tiny-llama-{_MODEL_VERSION}")


def _tokenizer_corpus() -> list[str]:
    texts = []
    for p in _all_problems():
        texts.append(DEFAULT_TEMPLATE.format(question=p.question, answer=p.answer))
    # A little general English so user text does not fall apart into bytes entirely.
    texts += [
        "The quick brown fox jumps over the lazy dog.",
        "Question: Answer: What is the answer to this question?",
        "User: Assistant: System: Human: Please explain how to do it step by step.",
    ]
    return texts


def build_tokenizer() -> Any:
    """A byte-level BPE tokenizer trained on the task's text; digits are single tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    # Digits first: every digit becomes its own piece, so BPE can never merge digits (or a
    # space into a digit), and the prompt/answer boundary tokenizes the same either way.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=256,
        padding_side="right",
    )


def build_model(tokenizer: Any, seed: int = _MODEL_SEED) -> Any:
    """A ~0.4M-parameter Llama with random weights from a fixed seed."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        # Many small heads: measured to escape the early loss plateau on the arithmetic task
        # far more reliably than 4 heads (3 of 3 seeds vs 1 of 3 within 600 steps).
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # A private RNG stream: seeding the global one here made a stage's training (its LoRA init,
    # its data order) depend on whether this model was already cached.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def materialize_tiny_llama(work_dir: str) -> str:
    """Build the tiny model once under <work_dir>/.cache/builtin and return its directory.

    Written to a temporary directory and renamed into place: a reader never sees half a
    model, and when two ranks race, the loser discards its copy (identical by construction).
    """
    target = Path(builtin_model_dir(work_dir))
    if (target / "config.json").exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-llama-", dir=target.parent))
    try:
        tokenizer = build_tokenizer()
        model = build_model(tokenizer)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)
