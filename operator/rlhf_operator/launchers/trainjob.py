"""TrainJob (Kubeflow Trainer v2) on a ClusterTrainingRuntime (default torch-distributed).

Pure: dicts in and out. Validated against the upstream CRD schemas in the tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlhf_api.naming import MANAGED_BY, labels
from rlhf_api.spec import RLHFRun

from ..api_ref import ApiRef
from ..manifests.meta import job_meta
from ..manifests.pod import (
    container_resources,
    container_security_context,
    stage_pod_spec,
    trainer_command,
    trainer_env,
    volume_mounts,
)
from ..observed_job import JobState, ObservedJob, observe_common, state_from_conditions
from ..plan import StagePlan
from ..settings import OperatorSettings

TRAINJOB_API = ApiRef("trainer.kubeflow.org", "v1alpha1", "trainjobs")
TRAINJOB_KIND = "TrainJob"
RUNTIME_KIND = "ClusterTrainingRuntime"
# The replicated job and its container in Trainer v2's torch runtimes (torch-distributed & co.).
TRAINJOB_REPLICATED_JOB = "node"
TRAINJOB_CONTAINER = "node"
RUNTIME_PATCH_MANAGER = f"rlhf.dev/{MANAGED_BY}"

# Trainer v2 (JobSet) pods: the TrainJob name, the replicated job and the pod's index.
TRAINJOB_NAME_POD_LABEL = "jobset.sigs.k8s.io/jobset-name"
TRAINJOB_REPLICA_POD_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"
TRAINJOB_INDEX_POD_LABEL = "batch.kubernetes.io/job-completion-index"

_CONDITIONS: tuple[tuple[str, JobState], ...] = (
    ("Complete", "Succeeded"),
    ("Failed", "Failed"),
    ("Suspended", "Suspended"),
    ("Created", "Created"),
)


class TrainJobLauncher:
    name = "trainjob"
    kind = TRAINJOB_KIND
    api = TRAINJOB_API
    result_container = TRAINJOB_CONTAINER

    def build_job(
        self,
        run: RLHFRun,
        stage: StagePlan,
        attempt: int,
        owner: dict[str, Any] | None,
        settings: OperatorSettings,
        suspend: bool,
    ) -> dict[str, Any]:
        """Mapping: numNodes = workers, numProcPerNode = processes per worker, resourcesPerNode =
        the placement's resources (with the GPUs), image/command/env on `trainer`. What the
        `trainer` section cannot say (volumes, mounts, node selection, security context, grace
        period, labels on the pods) goes into one `runtimePatches` entry owned by this operator,
        patching the runtime's `node` replicated job and its `node` container. Not expressible in
        this TrainJob version and left to the runtime: imagePullPolicy, priorityClassName,
        terminationMessagePolicy (the trainer's result still reaches /dev/termination-log),
        ttlSecondsAfterFinished, and automountServiceAccountToken (set it to false in the
        ClusterTrainingRuntime's pod template: docs/install.md, Security).
        """
        placement = stage.placement
        pod_labels = labels(run.metadata.name, stage.name, attempt)
        container = {
            "name": TRAINJOB_CONTAINER,
            "volumeMounts": volume_mounts(run),
            "securityContext": container_security_context(),
        }
        pod_spec = stage_pod_spec(run, stage, settings, [container])

        trainer: dict[str, Any] = {
            "image": placement.image,
            "command": trainer_command(stage),
            "env": trainer_env(run, stage),
            "numNodes": placement.workers,
            "numProcPerNode": placement.processes_per_worker,
        }
        resources = container_resources(placement)
        if resources:
            trainer["resourcesPerNode"] = resources
        replicated_job = {
            "name": TRAINJOB_REPLICATED_JOB,
            "template": {
                "metadata": {"labels": dict(pod_labels)},
                "spec": {"template": {"metadata": {"labels": dict(pod_labels)}, "spec": pod_spec}},
            },
        }
        spec: dict[str, Any] = {}
        if stage.active_deadline_seconds is not None:
            spec["activeDeadlineSeconds"] = stage.active_deadline_seconds  # per attempt (job)
        return {
            "apiVersion": self.api.api_version,
            "kind": self.kind,
            "metadata": job_meta(run, stage, attempt, owner),
            "spec": {
                **spec,
                "runtimeRef": {"apiGroup": self.api.group, "kind": RUNTIME_KIND, "name": run.spec.runtime_ref},
                "suspend": suspend,
                "trainer": trainer,
                "runtimePatches": [
                    {
                        "manager": RUNTIME_PATCH_MANAGER,
                        "trainingRuntimeSpec": {
                            "template": {
                                "metadata": {"labels": dict(pod_labels)},
                                "spec": {"replicatedJobs": [replicated_job]},
                            }
                        },
                    }
                ],
            },
        }

    def observe(self, body: Mapping[str, Any]) -> ObservedJob:
        state, message = state_from_conditions(body, _CONDITIONS)
        return observe_common(body, state, message, bool((body.get("spec") or {}).get("suspend")))

    def suspend_patch(self, suspend: bool) -> dict[str, Any]:
        return {"spec": {"suspend": suspend}}

    def master_pod_name(self, job_name: str) -> str | None:
        return None  # JobSet pod names carry a random suffix: select by labels

    def master_pod_selector(self, job_name: str) -> dict[str, str]:
        return {
            TRAINJOB_NAME_POD_LABEL: job_name,
            TRAINJOB_REPLICA_POD_LABEL: TRAINJOB_REPLICATED_JOB,
            TRAINJOB_INDEX_POD_LABEL: "0",
        }


TRAINJOB = TrainJobLauncher()
