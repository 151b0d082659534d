"""Manifest builders: RLHFRun -> the dicts the operator creates. Pure: no I/O, no kopf, no torch.

The kopf handlers call these and apply the results; `rlhf render FILE` prints `render(...)`,
so what a user previews is exactly what the operator creates (minus ownerReferences, which
need the run's uid).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml
from rlhf_api.naming import configmap_name, labels, pvc_name
from rlhf_api.spec import API_VERSION, KIND, RLHFRun

from .manifests_jobs import (
    BACKOFF_LIMIT,
    CLEAN_POD_POLICY,
    PYTORCH_CONTAINER,
    PYTORCHJOB_API,
    TRAINJOB_API,
    build_pytorchjob,
    build_trainjob,
)
from .manifests_pod import (
    CONFIG_FILE,
    CONFIG_MOUNT,
    CONFIG_PATH,
    KUEUE_QUEUE_LABEL,
    claim_name,
    object_meta,
    trainer_command,
)
from .plan import StagePlan, plan
from .settings import OperatorSettings

# libyaml's dumper when present: the pure-Python one dominated the operator's first pass.
_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

__all__ = [
    "BACKOFF_LIMIT",
    "CLEAN_POD_POLICY",
    "CONFIG_FILE",
    "CONFIG_MOUNT",
    "CONFIG_PATH",
    "KUEUE_QUEUE_LABEL",
    "PYTORCH_CONTAINER",
    "build_pvc",
    "build_stage_configmap",
    "build_stage_job",
    "claim_name",
    "job_api",
    "owner_reference",
    "render",
    "stage_plans",
    "trainer_command",
]


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


def stage_plans(run: RLHFRun, settings: OperatorSettings) -> list[StagePlan]:
    """The plan as pods see it: stage paths under storage.mountPath."""
    return plan(run, run.spec.storage.mount_path, settings.trainer_image)


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


def build_stage_configmap(run: RLHFRun, stage: StagePlan, owner: dict[str, Any] | None) -> dict[str, Any]:
    """The stage's trainer config, mounted at CONFIG_MOUNT/CONFIG_FILE in its pods."""
    if stage.skipped or stage.config is None:
        raise ValueError(f"{stage.name}: stage is skipped (existingOutput): it has no trainer config")
    content = yaml.dump(stage.config_file(), Dumper=_DUMPER, sort_keys=False, allow_unicode=True)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(
            run, configmap_name(run.metadata.name, stage.name), labels(run.metadata.name, stage.name), owner
        ),
        "data": {CONFIG_FILE: content},
    }


def build_stage_job(
    run: RLHFRun,
    stage: StagePlan,
    attempt: int,
    owner: dict[str, Any] | None,
    settings: OperatorSettings,
    suspend: bool,
) -> dict[str, Any]:
    """The stage's job for one attempt: a PyTorchJob or a TrainJob per spec.launcher.

    Kueue: with spec.queueName the job carries the `kueue.x-k8s.io/queue-name` label and is
    always created suspended (whatever `suspend` says): Kueue admits the workload and
    unsuspends the job itself; the operator must not unsuspend a queued job on its own.
    Without a queue, `suspend` is the run's spec.suspend.
    """
    if stage.skipped:
        raise ValueError(f"{stage.name}: stage is skipped (existingOutput): nothing to run")
    effective_suspend = bool(suspend or run.spec.queue_name)
    builder = build_trainjob if run.spec.launcher == "trainjob" else build_pytorchjob
    return builder(run, stage, attempt, owner, settings, effective_suspend)


def job_api(run: RLHFRun) -> tuple[str, str, str]:
    """(group, version, plural) of the run's stage job kind."""
    return TRAINJOB_API if run.spec.launcher == "trainjob" else PYTORCHJOB_API


def render(run: RLHFRun, settings: OperatorSettings, namespace: str | None = None) -> list[dict[str, Any]]:
    """Everything the operator creates for the run, in creation order: the PVC (unless
    existingClaim), then per non-skipped stage its ConfigMap and its first job (attempt 1).
    The operator creates a later stage's job only once the previous stage succeeded."""
    if namespace and run.metadata.namespace and namespace != run.metadata.namespace:
        raise ValueError(
            f"metadata.namespace: '{run.metadata.namespace}' differs from the requested namespace '{namespace}'"
        )
    if namespace and not run.metadata.namespace:
        run = run.model_copy(update={"metadata": run.metadata.model_copy(update={"namespace": namespace})})
    objects: list[dict[str, Any]] = []
    pvc = build_pvc(run, None)
    if pvc is not None:
        objects.append(pvc)
    for stage in stage_plans(run, settings):
        if stage.skipped:
            continue
        objects.append(build_stage_configmap(run, stage, None))
        objects.append(build_stage_job(run, stage, 1, None, settings, run.spec.suspend))
    return objects
