"""SFT packing: training batches carry no padding tokens, and packing really combines examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from rlhf_api.trainer_job import TrainerJobConfig
from rlhf_trainer.stages.sft import build_trainer

from .stage_helpers import write_config


def _dataset(tmp_path: Path) -> str:
    """Rows of very different lengths, so that unpacked batches need padding."""
    path = tmp_path / "texts.jsonl"
    rows = [{"text": " ".join(f"What is {i} + {j}?" for j in range(1 + (i * 7) % 9))} for i in range(96)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return str(path)


def _trainer(tmp_path: Path, packing: bool, strategy: str = "bfd") -> object:
    path = write_config(
        tmp_path / f"sft-{packing}-{strategy}.yaml",
        "sft",
        str(tmp_path),
        tmp_path / f"out-{packing}-{strategy}",
        dataset={"source": _dataset(tmp_path), "format": "text"},
        training={"batchSize": 4, "maxLength": 128, "packing": packing, "packingStrategy": strategy},
        lora={"enabled": False},
    )
    return build_trainer(TrainerJobConfig.model_validate(yaml.safe_load(path.read_text())))


def _batches(trainer: object, n: int = 4) -> list[dict[str, torch.Tensor]]:
    loader = trainer.get_train_dataloader()  # type: ignore[attr-defined]
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            break
    return out


@pytest.mark.parametrize("strategy", ["bfd", "wrapped"])
def test_packed_batches_have_no_padding(tmp_path: Path, strategy: str) -> None:
    trainer = _trainer(tmp_path, packing=True, strategy=strategy)
    pad_id = trainer.processing_class.pad_token_id  # type: ignore[attr-defined]
    for batch in _batches(trainer):
        ids = batch["input_ids"]
        assert "attention_mask" not in batch or bool(batch["attention_mask"].all())
        if strategy == "bfd":
            # padding-free: examples in one row are told apart by their position_ids restarting at 0
            starts = int((batch["position_ids"] == 0).sum())
            assert starts > ids.shape[0], "a packed row should hold several examples"
        if pad_id is not None:
            assert int((ids == pad_id).sum()) == 0, "padding tokens in a packed batch"
        labels = batch["labels"]
        assert int((labels != -100).sum()) > 0


def test_unpacked_batches_do_pad(tmp_path: Path) -> None:
    """The same data without packing pads: the assertion above can fail."""
    trainer = _trainer(tmp_path, packing=False)
    pad_id = trainer.processing_class.pad_token_id  # type: ignore[attr-defined]
    padded = sum(int((b["input_ids"] == pad_id).sum()) for b in _batches(trainer))
    assert padded > 0
