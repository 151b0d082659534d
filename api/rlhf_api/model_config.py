"""Which model weights a stage (or a reward source) loads: its own module, so that the stage
configs and the reward sources can both use it without importing each other."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .camel_model import CamelModel

Dtype = Literal["auto", "float32", "bfloat16", "float16"]


class ModelConfig(CamelModel):
    """Which model weights a stage starts from."""

    name: str = Field(
        min_length=1,
        max_length=512,
        description=(
            "Hugging Face hub id (e.g. meta-llama/Llama-2-7b-hf), a path on the run's volume, "
            "or 'builtin:tiny-llama', a tiny Llama built from a config with a tokenizer trained "
            "offline (for CPU quickstarts and tests; nothing is downloaded)."
        ),
    )
    revision: str | None = Field(
        default=None,
        max_length=256,
        description="Hub revision (branch, tag or commit) to load; ignored for local paths.",
    )
    trust_remote_code: bool = Field(
        default=False,
        description="Allow the model repository's own Python code to run. Off unless you trust it.",
    )
    dtype: Dtype = Field(
        default="auto",
        description=(
            "Weight and compute dtype: auto is bfloat16 on GPUs with native bf16 (A100, H100, L4), "
            "float16 mixed precision on older GPUs (SFT, reward, DPO; float32 for PPO) and float32 on CPU. "
            "float16 trains with loss scaling; bfloat16 needs a GPU with native bf16. See docs/gpu.md."
        ),
    )

    def weights_at(self, path: str) -> ModelConfig:
        """Other weights (e.g. a previous stage's merged output) loaded like these: the same
        dtype and remote-code setting."""
        return ModelConfig(name=path, dtype=self.dtype, trust_remote_code=self.trust_remote_code)
