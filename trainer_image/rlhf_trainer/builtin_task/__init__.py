"""The quickstart's fixtures: the generated task `builtin:arithmetic` and model `builtin:tiny-llama`
(`arithmetic`), registered with `rlhf_trainer.builtin_sources` on import. Nothing outside this
package and the builtin judge (`rlaif/builtin_judge.py`, itself a fixture) imports them."""

from __future__ import annotations

from ..builtin_sources import BuiltinDataset, BuiltinModel, register_dataset, register_model
from . import arithmetic

register_dataset(
    BuiltinDataset(
        name=arithmetic.BUILTIN_DATASET,
        sft_rows=arithmetic.sft_rows,
        eval_rows=arithmetic.eval_rows,
        preference_rows=arithmetic.preference_rows,
        prompt_questions=arithmetic.ppo_questions,
        prompt_formatter=arithmetic.prompt_formatter,
        correct_answer=arithmetic.correct_answer,
        is_correct=arithmetic.is_correct,
    )
)
register_model(BuiltinModel(name=arithmetic.BUILTIN_MODEL, materialize=arithmetic.materialize_tiny_llama))
