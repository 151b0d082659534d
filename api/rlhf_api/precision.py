"""The precision table: how a stage's weights load and which mixed precision it trains under.

Torch-free, so that the trainer (which applies it) and the operator's memory estimate (which
sizes it) read the same rules. docs/gpu.md explains them.

| device             | model.dtype     | TRL stages (SFT, reward, DPO)        | PPO engine        |
|--------------------|-----------------|--------------------------------------|-------------------|
| CPU                | auto, float32   | fp32                                 | fp32              |
| CPU                | bfloat16        | bf16 weights                         | bf16 weights      |
| CPU                | float16         | error                                | error             |
| GPU with bf16      | auto, bfloat16  | bf16 weights, bf16 autocast          | bf16 weights      |
| GPU without bf16   | auto            | as float16                           | fp32              |
| GPU without bf16   | bfloat16        | error                                | error             |
| any GPU            | float16         | LoRA: fp16 base, fp32 adapters;      | error             |
|                    |                 | full: fp32 master weights; both with |                   |
|                    |                 | fp16 autocast and loss scaling       |                   |
| any GPU            | float32         | fp32                                 | fp32              |

fp16 needs loss scaling and fp32 trainable weights (a GradScaler refuses fp16 gradients): the HF
Trainer does both; the PPO engine scales no losses, so it refuses fp16.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .model_config import Dtype

LoadDtype = Literal["float32", "bfloat16", "float16"]
Amp = Literal["no", "bf16", "fp16"]
# Which trainer runs the stage: the TRL/HF Trainer (SFT, reward, DPO, ...) or the project's PPO engine.
TrainerKind = Literal["trl", "engine"]

BYTES: dict[str, int] = {"float32": 4, "bfloat16": 2, "float16": 2}


class PrecisionError(ValueError):
    """A dtype the hardware or trainer cannot train in; the message says what to use instead."""


@dataclass(frozen=True)
class Precision:
    """How weights are loaded and which mixed precision the trainer runs under."""

    load_dtype: LoadDtype
    amp: Amp

    @property
    def compute_bytes(self) -> int:
        """Bytes per activation value: 2 under 16-bit weights or autocast, else 4."""
        return 2 if self.amp != "no" else BYTES[self.load_dtype]


def resolve(requested: Dtype, gpu: bool, bf16: bool, trainer: TrainerKind, full_finetune: bool) -> Precision:
    """The table above. `bf16` means native bfloat16 (Ampere or newer), not emulation."""
    if requested == "float32":
        return Precision("float32", "no")
    if not gpu:
        if requested == "float16":
            raise PrecisionError("float16 needs a GPU; use float32 (or bfloat16) on CPU")
        return Precision("bfloat16", "no") if requested == "bfloat16" else Precision("float32", "no")
    if requested == "bfloat16" or (requested == "auto" and bf16):
        if not bf16:
            raise PrecisionError("bfloat16 is not native on this GPU (it predates Ampere): use float16 or auto")
        return Precision("bfloat16", "bf16")
    # float16 asked, or auto on a GPU without bf16
    if trainer == "engine":
        if requested == "auto":
            return Precision("float32", "no")
        raise PrecisionError(
            "the PPO engine does not train in float16 (no loss scaling): use bfloat16 on GPUs that have it, "
            "else float32 or auto"
        )
    return Precision("float32" if full_finetune else "float16", "fp16")
