"""What a reconcile pass asks its caller to do: plain data, applied by the kopf shell on a
cluster and by the local backend on a laptop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api_ref import ApiRef


@dataclass(frozen=True)
class Create:
    """Create if absent: 409 means it is already there (deterministic names)."""

    api: ApiRef
    body: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])


@dataclass(frozen=True)
class PatchJob:
    """Merge-patch a stage job (suspend / resume)."""

    api: ApiRef
    name: str
    patch: dict[str, Any]


@dataclass(frozen=True)
class ReleaseJob:
    """Remove the operator's finalizer from a deleted stage job whose outcome is recorded.
    Applied after the status patch, so the outcome is stored before the job can vanish."""

    api: ApiRef
    name: str
    patch: dict[str, Any]


@dataclass(frozen=True)
class EndJob:
    """End a stage job that still runs (delete it): an attempt found stalled, or stopped by its
    guard. Applied after the status patch, so the outcome is stored before the job goes; the
    checkpoints are on the volume and stay."""

    api: ApiRef
    name: str
    # The attempt may be hung (a stall): no graceful stop to wait for. The kubelet kills a pod
    # after its grace period anyway; `rlhf run` kills the process at once.
    hung: bool = False


@dataclass(frozen=True)
class PostEvent:
    body: dict[str, Any]


Action = Create | PatchJob | ReleaseJob | EndJob | PostEvent
