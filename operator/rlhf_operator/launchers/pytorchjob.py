"""PyTorchJob (Kubeflow training operator v1): one Master plus workers-1 Workers.

Pure: dicts in and out. Validated against the upstream CRD schema in the tests.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from rlhf_api.naming import labels
from rlhf_api.spec import RLHFRun

from ..api_ref import ApiRef
from ..manifests.meta import job_meta
from ..manifests.pod import (
    NO_TOKEN,
    container_resources,
    container_security_context,
    image_pull_policy,
    stage_pod_spec,
    trainer_command,
    trainer_env,
    volume_mounts,
)
from ..observed_job import JobState, ObservedJob, observe_common, state_from_conditions
from ..plan import StagePlan
from ..settings import OperatorSettings

PYTORCHJOB_API = ApiRef("kubeflow.org", "v1", "pytorchjobs")
PYTORCHJOB_KIND = "PyTorchJob"
PYTORCH_CONTAINER = "pytorch"  # the training operator finds the container by this name

# Labels the Kubeflow training operator puts on the pods of a PyTorchJob.
JOB_NAME_POD_LABEL = "training.kubeflow.org/job-name"
REPLICA_TYPE_POD_LABEL = "training.kubeflow.org/replica-type"

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

# Most decisive first: terminal conditions win, then the most specific of the others.
_CONDITIONS: tuple[tuple[str, JobState], ...] = (
    ("Succeeded", "Succeeded"),
    ("Failed", "Failed"),
    ("Suspended", "Suspended"),
    ("Restarting", "Restarting"),
    ("Running", "Running"),
    ("Created", "Created"),
)


def pod_spec(run: RLHFRun, stage: StagePlan, settings: OperatorSettings) -> dict[str, Any]:
    placement = stage.placement
    container: dict[str, Any] = {
        "name": PYTORCH_CONTAINER,
        "image": placement.image,
        "command": trainer_command(stage),
        "env": trainer_env(run, stage),
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
    pod = stage_pod_spec(run, stage, settings, [container])
    pod.update(NO_TOKEN)
    if placement.priority_class_name:
        pod["priorityClassName"] = placement.priority_class_name
    return pod


class PyTorchJobLauncher:
    name = "pytorchjob"
    kind = PYTORCHJOB_KIND
    api = PYTORCHJOB_API
    result_container = PYTORCH_CONTAINER

    def build_job(
        self,
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
            "spec": pod_spec(run, stage, settings),
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
        if stage.active_deadline_seconds is not None:
            # Per attempt: the training operator fails the job (DeadlineExceeded) past it.
            run_policy["activeDeadlineSeconds"] = stage.active_deadline_seconds
        if run.spec.ttl_seconds_after_finished is not None:
            run_policy["ttlSecondsAfterFinished"] = run.spec.ttl_seconds_after_finished
        return {
            "apiVersion": self.api.api_version,
            "kind": self.kind,
            "metadata": job_meta(run, stage, attempt, owner),
            "spec": {
                # A string in the CRD (it also accepts auto/cpu/gpu); one process per GPU.
                "nprocPerNode": str(stage.placement.processes_per_worker),
                "runPolicy": run_policy,
                "pytorchReplicaSpecs": replicas,
            },
        }

    def observe(self, body: Mapping[str, Any]) -> ObservedJob:
        state, message = state_from_conditions(body, _CONDITIONS)
        run_policy = (body.get("spec") or {}).get("runPolicy") or {}
        return observe_common(body, state, message, bool(run_policy.get("suspend")))

    def suspend_patch(self, suspend: bool) -> dict[str, Any]:
        return {"spec": {"runPolicy": {"suspend": suspend}}}

    def master_pod_name(self, job_name: str) -> str | None:
        # The training operator names replica pods `<job>-<replica type>-<index>`.
        return f"{job_name}-master-0"

    def master_pod_selector(self, job_name: str) -> dict[str, str]:
        return {JOB_NAME_POD_LABEL: job_name, REPLICA_TYPE_POD_LABEL: "master"}


PYTORCHJOB = PyTorchJobLauncher()
