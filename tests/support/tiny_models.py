"""Tiny models and tokenizers built offline, for the PPO tests and benchmarks (nothing downloaded),
and the toy reward the PPO tests learn."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")


def word_tokenizer(words: Sequence[str]) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer over `words` (ids: <pad>=0, <bos>=1, <eos>=2, words...).

    Encoding prepends <bos>; padding is on the left (decoder-only generation).
    """
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *words])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 1)]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")
    tokenizer.padding_side = "left"
    return tokenizer


def tiny_llama(
    vocab_size: int,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_positions: int = 256,
    initializer_range: float = 0.02,
) -> LlamaForCausalLM:
    """A randomly initialised Llama (call torch.manual_seed first for reproducible weights)."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_positions,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        initializer_range=initializer_range,
    )
    return LlamaForCausalLM(config)


def token_share_reward(
    tokenizer: PreTrainedTokenizerFast, word: str = "w3"
) -> Callable[[list[str], list[str], list[list[int]]], torch.Tensor]:
    """A reward_fn for the PPO engine: the share of a response's tokens that are `word`."""
    target = tokenizer.convert_tokens_to_ids(word)

    def reward(prompts: list[str], responses: list[str], ids: list[list[int]]) -> torch.Tensor:
        return torch.tensor([sum(t == target for t in row) / max(len(row), 1) for row in ids])

    return reward
