"""Reward sources (rlhf_api.reward_sources) -> reward functions with weights.

One module per source kind (`verifiable`: builtin checks; `classifier`: sequence-classifier
models; `function`: user code by import path) and `builder`, which turns a stage's sources
into TRL-style reward functions: `fn(prompts=[...], completions=[...], **dataset_columns)`
returning one float (or None) per completion, named by the source's metric label.
"""

from .builder import RewardFunction, RewardFunctions, build_reward_functions, served_metrics

__all__ = ["RewardFunction", "RewardFunctions", "build_reward_functions", "served_metrics"]
