"""The run's volume: every stage's checkpoints and outputs. Pure."""

from __future__ import annotations

from typing import Any

from rlhf_api.naming import labels, pvc_name
from rlhf_api.spec import RLHFRun

from .meta import object_meta


def claim_name(run: RLHFRun) -> str:
    """The PVC the run's pods mount: storage.existingClaim, or the one the operator creates."""
    return run.spec.storage.existing_claim or pvc_name(run.metadata.name)


def build_pvc(run: RLHFRun, owner: dict[str, Any] | None) -> dict[str, Any] | None:
    """The run's volume; None with storage.existingClaim (the user's claim is never touched).

    The ownerReference is set only with retention Delete, so Kubernetes' garbage collector
    deletes the PVC with the run; with Retain (the default: checkpoints are expensive) the PVC
    has no owner and outlives the run. No finalizer is needed either way.
    """
    storage = run.spec.storage
    if storage.existing_claim:
        return None
    spec: dict[str, Any] = {
        "accessModes": [storage.access_mode],
        "resources": {"requests": {"storage": storage.size}},
    }
    if storage.storage_class_name:
        spec["storageClassName"] = storage.storage_class_name
    keep_owner = owner if storage.retention == "Delete" else None
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": object_meta(run, pvc_name(run.metadata.name), labels(run.metadata.name), keep_owner),
        "spec": spec,
    }
