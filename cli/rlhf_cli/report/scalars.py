"""Scalar series from a stage's TensorBoard logs (`<stage>/logs/`), read without torch.

TensorBoard's own event reader: it merges the event files of every attempt and drops the
points a restarted attempt wrote again (it purges "orphaned" steps on a restart).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class ReportDependencyMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class Series:
    """One scalar tag: (step, value) points in step order."""

    tag: str
    steps: tuple[int, ...]
    values: tuple[float, ...]

    @property
    def prefix(self) -> str:
        """`train`, `eval`, `ppo`: the part before the first slash ('' when none)."""
        return self.tag.split("/", 1)[0] if "/" in self.tag else ""

    @property
    def metric(self) -> str:
        """The tag without its prefix: `train/rewards/margins` -> `rewards/margins`."""
        return self.tag.split("/", 1)[1] if "/" in self.tag else self.tag


def read_scalars(logs_dir: str | Path) -> dict[str, Series]:
    """Every scalar tag under logs_dir (event files of any depth); {} when there are none."""
    root = Path(logs_dir)
    if not root.is_dir() or not any(root.rglob("events.out.tfevents*")):
        return {}
    try:
        from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    except ImportError as error:
        raise ReportDependencyMissing(
            "rlhf report needs the report extra (tensorboard, matplotlib): pip install 'rlhf-operator[report]'"
        ) from error
    # A multiplexer reads each directory holding event files as one "run" (HF writes to
    # subdirectories on some versions); size_guidance 0 keeps every point, not a sample.
    multiplexer = EventMultiplexer(size_guidance={"scalars": 0})
    multiplexer.AddRunsFromDirectory(str(root))
    multiplexer.Reload()
    found: dict[str, Series] = {}
    for run in sorted(multiplexer.Runs()):
        accumulator = multiplexer.GetAccumulator(run)
        for tag in accumulator.Tags().get("scalars", []):
            points = sorted({e.step: e.value for e in accumulator.Scalars(tag)}.items())
            previous = found.get(tag)
            if previous is not None:  # the same tag in two directories: merge, later wins per step
                points = sorted({**dict(zip(previous.steps, previous.values, strict=True)), **dict(points)}.items())
            found[tag] = Series(tag, tuple(s for s, _ in points), tuple(float(v) for _, v in points))
    return found
