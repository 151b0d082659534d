"""ReST's files on the volume: the scored samples of each Grow step and the finished iterations.

  grow-<g>/samples.jsonl   prompt, response, reward (and per-source rewards) of every sample
  rest_state.json          task accuracy before ReST and one record per finished Improve step,
                           naming the policy it produced; a restarted stage continues after
                           the last record, from that policy, with the same samples
Both are written atomically (temporary file, then rename).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rlhf_api.files import write_text_atomic

SAMPLES = "samples.jsonl"
STATE = "rest_state.json"


def samples_path(output_dir: str, grow: int) -> Path:
    return Path(output_dir) / f"grow-{grow}" / SAMPLES


@dataclass
class Iteration:
    """One finished Improve step."""

    grow: int
    improve: int
    threshold: float
    samples: int
    samples_kept: int
    reward_mean: float  # over all samples of the Grow step
    kept_reward_mean: float | None
    policy: str  # the merged model this step produced (the next step starts from it)
    task_accuracy: float | None = None
    train_loss: float | None = None


@dataclass
class RestState:
    task_accuracy_before: float | None = None
    iterations: list[Iteration] = field(default_factory=list)

    @classmethod
    def load(cls, output_dir: str) -> RestState:
        path = Path(output_dir) / STATE
        if not path.exists():
            return cls()
        data = json.loads(path.read_text())
        return cls(data.get("task_accuracy_before"), [Iteration(**i) for i in data.get("iterations", [])])

    def save(self, output_dir: str) -> None:
        write_text_atomic(Path(output_dir) / STATE, json.dumps(asdict(self), indent=2) + "\n")
