"""A tiny judge for `transformers serve`, built offline in seconds: the builtin tiny Llama with a
chat template, fine-tuned briefly to answer the label of the response that is a number when
the other is a refusal (JUDGE_TEMPLATE, labels A and B).

A random tiny model answers neither label, so the tests can drive both sides of the verdict
gate: labels it never produces (e.g. "first"/"second") leave every verdict undecided; A/B are
decided, in both orders, for pairs of an answer and a refusal.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

# A plain chat template (the tiny tokenizer has none; `transformers serve` needs one).
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
# Short, so that fine-tuning takes seconds on two cores (the default template is ~250 tokens here).
JUDGE_TEMPLATE = "{constitution}\n{prompt}\nA: {response_a}\nB: {response_b}\nBetter:"
CONSTITUTION = ["right"]
REFUSALS = ["no idea", "I cannot say", "maybe", "unsure"]
STEPS = 40  # accuracy 1.0 on 100 fresh examples (measured), ~10-25 s on two cores


def refusal(index: int) -> str:
    return REFUSALS[index % len(REFUSALS)]


def _example(rng: random.Random) -> tuple[str, str]:
    from rlhf_trainer.rlaif.labels import constitution_text, judge_prompt

    a, b = rng.randrange(10, 90), rng.randrange(1, 10)
    prompt = f"Question: What is {a} + {b}?\n\nAnswer: "
    answer = str(a + b + rng.choice([0, 0, 1, -1, 10]))
    bad = rng.choice(REFUSALS)
    answer_first = rng.random() < 0.5
    first, second = (answer, bad) if answer_first else (bad, answer)
    text = judge_prompt(JUDGE_TEMPLATE, constitution_text(CONSTITUTION), prompt, first, second)
    return text, "A" if answer_first else "B"


def build_tiny_judge(directory: Path, seed: int = 0) -> Path:
    """The fine-tuned tiny judge (model + tokenizer with CHAT_TEMPLATE) saved in `directory`."""
    import torch
    from rlhf_trainer.builtin_task.arithmetic import build_model, build_tokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tensors this small gain nothing from more; shared CPUs lose a lot
    try:
        return _train(directory, seed, build_tokenizer, build_model)
    finally:
        torch.set_num_threads(threads)


def _train(directory: Path, seed: int, build_tokenizer: Any, build_model: Any) -> Path:
    import torch

    tokenizer = build_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    model = build_model(tokenizer)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(STEPS):
        rows = []
        for _ in range(16):
            text, label = _example(rng)
            chat = tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
            )
            ids = tokenizer(chat, add_special_tokens=False)["input_ids"]
            rows.append((ids, tokenizer(label, add_special_tokens=False)["input_ids"][0]))
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), tokenizer.pad_token_id)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids, _) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
        logits = model(input_ids=input_ids, attention_mask=mask).logits
        last = torch.tensor([len(ids) - 1 for ids, _ in rows])
        target = torch.tensor([t for _, t in rows])
        loss = torch.nn.functional.cross_entropy(logits[torch.arange(len(rows)), last], target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
