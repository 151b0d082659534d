"""How a stage samples responses from its policy: ReST's Grow step and RLAIF's candidate pairs."""

from __future__ import annotations

from pydantic import Field

from .camel_model import CamelModel


class SamplingConfig(CamelModel):
    """Sampling settings for generating responses to the stage's prompts."""

    max_new_tokens: int = Field(default=64, ge=1, le=8192, description="Most tokens per sampled response.")
    temperature: float = Field(default=1.0, gt=0.0, le=10.0, description="Sampling temperature.")
    top_k: int = Field(default=0, ge=0, le=100000, description="Sampling top-k (0: off).")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Sampling nucleus probability.")
    max_prompt_length: int = Field(
        default=256, ge=1, le=131072, description="Prompts are cut to this many tokens (their end is kept)."
    )
    batch_size: int = Field(default=64, ge=1, le=65536, description="Sequences generated together.")
