"""SIGTERM stops a stage at a checkpoint of the current step; the next attempt resumes there.

Kubernetes stops a pod (node drain, spot reclaim, Kueue preemption) with SIGTERM, then SIGKILL
after the pod's terminationGracePeriodSeconds. torchrun forwards SIGTERM to every worker and
kills them after its own --shutdown-timeout (TORCH_ELASTIC_SHUTDOWN_TIMEOUT, default 30 s).

What the handler does depends on where the stage process is:
- training (`training()`): it only sets a flag. The loop finishes the step in progress, every
  rank agrees to stop at that step (`stop_agreed`), saves a checkpoint there and raises
  `Preempted`; the step in progress must fit in the grace period.
- elsewhere in the stage body (`interruptible()`: loading, evaluating, merging): there is no new
  state worth saving, so it raises `Preempted` at once and the process exits within the grace period.
- anywhere else (parsing arguments, writing result.json): it only sets the flag, so a result
  file is never left half written.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from types import FrameType
from typing import Literal

Mode = Literal["record", "interrupt", "defer"]

_mode: Mode = "record"
_requested = False


class Preempted(BaseException):
    """SIGTERM stopped the stage. A BaseException, like KeyboardInterrupt, so that library
    code's `except Exception` cannot swallow it.

    `step`: the step of the checkpoint just saved (None: stopped outside training, no new
    checkpoint); `planned_steps` and `resumed_from` describe the attempt, for result.json.
    """

    def __init__(self, step: int | None = None, planned_steps: int | None = None, resumed_from: int | None = None):
        self.step = step
        self.planned_steps = planned_steps
        self.resumed_from = resumed_from
        super().__init__(self.message)

    @property
    def message(self) -> str:
        if self.step is None:
            return "preempted (SIGTERM) outside training: no new checkpoint, the next attempt resumes from the last one"
        of = f" of {self.planned_steps}" if self.planned_steps is not None else ""
        return f"preempted (SIGTERM): checkpoint saved at step {self.step}{of}, the next attempt resumes there"


def install() -> None:
    """Route SIGTERM to this module (from the main thread; elsewhere Python refuses handlers)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _requested
    _requested = True
    if _mode == "interrupt":
        raise Preempted()


def requested() -> bool:
    """Whether this process received SIGTERM."""
    return _requested


@contextmanager
def _scope(mode: Mode) -> Iterator[None]:
    global _mode
    previous, _mode = _mode, mode
    try:
        if _requested:  # arrived just before this scope: stop before doing anything in it
            raise Preempted()
        yield
    finally:
        _mode = previous


def interruptible() -> AbstractContextManager[None]:
    """The stage body: SIGTERM raises Preempted at once."""
    return _scope("interrupt")


def training() -> AbstractContextManager[None]:
    """A training loop: SIGTERM only sets the flag; the loop polls `stop_agreed` at each step end."""
    return _scope("defer")


def stop_agreed() -> bool:
    """True on every rank once any rank received SIGTERM.

    Under torch.distributed this is one all-reduce (MAX) of the flag, so call it at the same
    point on every rank: all ranks then stop, and save, at the same step, and no collective is
    left waiting for a rank that already left (on a multi-node job only the drained node's
    pods get the signal).
    """
    from . import distributed  # torch-heavy: only where a training loop runs

    return bool(distributed.all_reduce_max(1 if _requested else 0))
