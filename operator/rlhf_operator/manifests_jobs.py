"""Stage job manifests: a Kubeflow PyTorchJob (training operator v1) or a Trainer v2 TrainJob.

Pure: a dict out, no I/O. Validated against the upstream CRD schemas in the tests.
"""

from __future__ import annotations

import copy
from typing import Any

from rlhf_api.naming import MANAGED_BY, job_name, labels
from rlhf_api.spec import RLHFRun

from .manifests_pod import (
    container_resources,
    container_security_context,
    image_pull_policy,
    job_labels,
    object_meta,
    pod_security_context,
    scheduling,
    trainer_command,
    trainer_env,
    volume_mounts,
    volumes,
)
from .plan import StagePlan
from .settings import OperatorSettings

PYTORCHJOB_API = ("kubeflow.org", "v1", "pytorchjobs")
PYTORCHJOB_KIND = "PyTorchJob"
PYTORCH_CONTAINER = "pytorch"  # the training operator finds the container by this name

TRAINJOB_API = ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
TRAINJOB_KIND = "TrainJob"
RUNTIME_KIND = "ClusterTrainingRuntime"
# The replicated job and its container in Trainer v2's torch runtimes (torch-distributed & co.).
TRAINJOB_REPLICATED_JOB = "node"
TRAINJOB_CONTAINER = "node"
RUNTIME_PATCH_MANAGER = f"rlhf.dev/{MANAGED_BY}"

# Pod-level restarts by the training operator: none. A failed pod fails the job at once and the
# operator retries the *stage* with a new job (attempt N+1) after retryBackoffSeconds; the
# trainer resumes from its last checkpoint on the volume. Two retry layers would multiply the
# attempts, hide failures from the run's status, and an in-place restart would replace the
# Master's termination message the operator reads.
BACKOFF_LIMIT = 0
RESTART_POLICY = "Never"
# Which pods the training operator deletes when the job finishes. "Running" (also covers
# Pending) rather than "None": finished pods are kept - above all the Master, whose termination
# message carries the stage result the operator reads - while pods still running after a
# failure (e.g. Workers stuck in a collective after the Master died) are deleted so they stop
# holding GPUs. "None" would leave those stragglers running until the job is deleted; "All"
# would delete the Master before its message is read. Kept pods go with the job (TTL, or the
# run's deletion through ownerReferences).
CLEAN_POD_POLICY = "Running"


def _job_meta(run: RLHFRun, stage: StagePlan, attempt: int, owner: dict[str, Any] | None) -> dict[str, Any]:
    return object_meta(run, job_name(run.metadata.name, stage.name, attempt), job_labels(run, stage, attempt), owner)


def _pod_spec(run: RLHFRun, stage: StagePlan, settings: OperatorSettings) -> dict[str, Any]:
    placement = stage.placement
    container: dict[str, Any] = {
        "name": PYTORCH_CONTAINER,
        "image": placement.image,
        "command": trainer_command(stage),
        "env": trainer_env(run),
        "volumeMounts": volume_mounts(run),
        # The trainer writes its result JSON to /dev/termination-log; when it dies before that
        # (OOM, import error), the log tail becomes the message instead.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security_context(),
    }
    pull_policy = image_pull_policy(placement, settings)
    if pull_policy:
        container["imagePullPolicy"] = pull_policy
    resources = container_resources(placement)
    if resources:
        container["resources"] = resources
    pod: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes(run, stage),
        "securityContext": pod_security_context(),
    }
    pod.update(scheduling(placement, settings))
    if placement.priority_class_name:
        pod["priorityClassName"] = placement.priority_class_name
    return pod


def build_pytorchjob(
    run: RLHFRun,
    stage: StagePlan,
    attempt: int,
    owner: dict[str, Any] | None,
    settings: OperatorSettings,
    suspend: bool,
) -> dict[str, Any]:
    """One Master plus workers-1 Workers, all running the same trainer command."""
    template = {
        "metadata": {"labels": labels(run.metadata.name, stage.name, attempt)},
        "spec": _pod_spec(run, stage, settings),
    }
    replicas: dict[str, Any] = {
        "Master": {"replicas": 1, "restartPolicy": RESTART_POLICY, "template": template},
    }
    if stage.placement.workers > 1:
        replicas["Worker"] = {
            "replicas": stage.placement.workers - 1,
            "restartPolicy": RESTART_POLICY,
            "template": copy.deepcopy(template),  # no shared dicts: callers may edit one
        }
    run_policy: dict[str, Any] = {
        "backoffLimit": BACKOFF_LIMIT,
        "cleanPodPolicy": CLEAN_POD_POLICY,
        "suspend": suspend,
    }
    if run.spec.ttl_seconds_after_finished is not None:
        run_policy["ttlSecondsAfterFinished"] = run.spec.ttl_seconds_after_finished
    group, version, _ = PYTORCHJOB_API
    return {
        "apiVersion": f"{group}/{version}",
        "kind": PYTORCHJOB_KIND,
        "metadata": _job_meta(run, stage, attempt, owner),
        "spec": {
            # A string in the CRD (it also accepts auto/cpu/gpu); one process per GPU.
            "nprocPerNode": str(stage.placement.processes_per_worker),
            "runPolicy": run_policy,
            "pytorchReplicaSpecs": replicas,
        },
    }


def build_trainjob(
    run: RLHFRun,
    stage: StagePlan,
    attempt: int,
    owner: dict[str, Any] | None,
    settings: OperatorSettings,
    suspend: bool,
) -> dict[str, Any]:
    """A Trainer v2 TrainJob on the spec's ClusterTrainingRuntime (default torch-distributed).

    Mapping: numNodes = workers, numProcPerNode = processes per worker, resourcesPerNode =
    the placement's resources (with the GPUs), image/command/env on `trainer`. What the
    `trainer` section cannot say (volumes, mounts, node selection, security context, labels on
    the pods) goes into one `runtimePatches` entry owned by this operator, patching the
    runtime's `node` replicated job and its `node` container. Not expressible in this TrainJob
    version and left to the runtime: imagePullPolicy, priorityClassName,
    terminationMessagePolicy (the trainer's result still reaches /dev/termination-log), and
    ttlSecondsAfterFinished.
    """
    placement = stage.placement
    pod_labels = labels(run.metadata.name, stage.name, attempt)
    pod_spec: dict[str, Any] = {
        "containers": [
            {
                "name": TRAINJOB_CONTAINER,
                "volumeMounts": volume_mounts(run),
                "securityContext": container_security_context(),
            }
        ],
        "volumes": volumes(run, stage),
        "securityContext": pod_security_context(),
    }
    pod_spec.update(scheduling(placement, settings))

    trainer: dict[str, Any] = {
        "image": placement.image,
        "command": trainer_command(stage),
        "env": trainer_env(run),
        "numNodes": placement.workers,
        "numProcPerNode": placement.processes_per_worker,
    }
    resources = container_resources(placement)
    if resources:
        trainer["resourcesPerNode"] = resources
    group, version, _ = TRAINJOB_API
    return {
        "apiVersion": f"{group}/{version}",
        "kind": TRAINJOB_KIND,
        "metadata": _job_meta(run, stage, attempt, owner),
        "spec": {
            "runtimeRef": {"apiGroup": group, "kind": RUNTIME_KIND, "name": run.spec.runtime_ref},
            "suspend": suspend,
            "trainer": trainer,
            "runtimePatches": [
                {
                    "manager": RUNTIME_PATCH_MANAGER,
                    "trainingRuntimeSpec": {
                        "template": {
                            "metadata": {"labels": dict(pod_labels)},
                            "spec": {
                                "replicatedJobs": [
                                    {
                                        "name": TRAINJOB_REPLICATED_JOB,
                                        "template": {
                                            "metadata": {"labels": dict(pod_labels)},
                                            "spec": {
                                                "template": {
                                                    "metadata": {"labels": dict(pod_labels)},
                                                    "spec": pod_spec,
                                                }
                                            },
                                        },
                                    }
                                ]
                            },
                        }
                    },
                }
            ],
        },
    }
