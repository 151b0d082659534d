"""Metadata of everything the operator creates: names, labels, annotations, owner. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlhf_api.naming import RUN_NAME_ANNOTATION, STAGE_JOB_FINALIZER, job_name, labels
from rlhf_api.spec import API_VERSION, KIND, RLHFRun

from ..plan import StagePlan

KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def owner_reference(run_body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The RLHFRun as controller owner of a child; None when the body has no uid (render).

    blockOwnerDeletion keeps the run (with foreground deletion) until its children are gone.
    """
    metadata = run_body.get("metadata") or {}
    uid = metadata.get("uid")
    if not uid:
        return None
    return {
        "apiVersion": run_body.get("apiVersion") or API_VERSION,
        "kind": run_body.get("kind") or KIND,
        "name": metadata["name"],
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_meta(
    run: RLHFRun,
    name: str,
    object_labels: dict[str, str],
    owner: dict[str, Any] | None,
) -> dict[str, Any]:
    """metadata for a child: namespace only when known (render may not know it)."""
    meta: dict[str, Any] = {"name": name}
    if run.metadata.namespace:
        meta["namespace"] = run.metadata.namespace
    meta["labels"] = dict(object_labels)
    meta["annotations"] = {RUN_NAME_ANNOTATION: run.metadata.name}
    if owner is not None:
        meta["ownerReferences"] = [dict(owner)]
    return meta


def job_labels(run: RLHFRun, stage: StagePlan, attempt: int) -> dict[str, str]:
    """Labels of the job object: the run/stage/attempt labels plus Kueue's queue label."""
    result = labels(run.metadata.name, stage.name, attempt)
    if run.spec.queue_name:
        result[KUEUE_QUEUE_LABEL] = run.spec.queue_name
    return result


def job_meta(run: RLHFRun, stage: StagePlan, attempt: int, owner: dict[str, Any] | None) -> dict[str, Any]:
    """A stage job's metadata, with the operator's finalizer: the job outlives a delete (TTL,
    a user, garbage collection) until its outcome is recorded in the run's status."""
    meta = object_meta(run, job_name(run.metadata.name, stage.name, attempt), job_labels(run, stage, attempt), owner)
    meta["finalizers"] = [STAGE_JOB_FINALIZER]
    return meta
