"""TensorBoard scalars read back without torch: every point, attempts merged, bookkeeping kept apart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from rlhf_cli.report.scalars import read_scalars

from .conftest import write_events


def test_reads_every_point_of_every_tag(tmp_path: Path) -> None:
    points = [(step, step / 10) for step in range(1, 1001)]  # more than TensorBoard's default sample of 1000
    write_events(tmp_path / "logs", {"train/loss": points, "eval/loss": [(1000, 0.5)]})
    scalars = read_scalars(tmp_path / "logs")
    assert set(scalars) == {"train/loss", "eval/loss"}
    loss = scalars["train/loss"]
    assert loss.steps == tuple(range(1, 1001)) and loss.values[-1] == 100.0
    assert (loss.prefix, loss.metric) == ("train", "loss")
    assert scalars["eval/loss"].steps == (1000,)


def test_a_resumed_attempt_continues_the_curve(tmp_path: Path) -> None:
    """Attempt 1 logged steps 1-4 and died; attempt 2 resumed from step 2's checkpoint."""
    logs = tmp_path / "logs"
    write_events(logs, {"ppo/kl": [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.4)]}, wall_start=1_700_000_000)
    write_events(logs, {"ppo/kl": [(3, 0.33), (4, 0.44), (5, 0.55)]}, wall_start=1_700_000_500)
    kl = read_scalars(logs)["ppo/kl"]
    assert kl.steps == (1, 2, 3, 4, 5)
    assert kl.values == pytest.approx((0.1, 0.2, 0.33, 0.44, 0.55))  # float32 in the file


def test_event_files_in_subdirectories_are_read_too(tmp_path: Path) -> None:
    write_events(tmp_path / "logs" / "run-1", {"train/loss": [(1, 1.0)]})
    write_events(tmp_path / "logs", {"train/learning_rate": [(1, 0.1)]})
    assert set(read_scalars(tmp_path / "logs")) == {"train/loss", "train/learning_rate"}


def test_no_logs_is_no_scalars(tmp_path: Path) -> None:
    assert read_scalars(tmp_path / "absent") == {}
    (tmp_path / "empty").mkdir()
    assert read_scalars(tmp_path / "empty") == {}


def test_the_reader_imports_neither_torch_nor_tensorflow(tmp_path: Path) -> None:
    write_events(tmp_path / "logs", {"train/loss": [(1, 1.0)]})
    code = (
        "import sys; from rlhf_cli.report.build import write_report; "
        "from rlhf_cli.report.scalars import read_scalars; "
        f"assert read_scalars({str(tmp_path / 'logs')!r}); "
        "heavy = {'torch', 'tensorflow'} & {m.split('.')[0] for m in sys.modules}; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
