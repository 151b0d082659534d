"""`rlhf render`: every object the operator creates for a run, in creation order. Pure.

The flow is one way: plan -> per object builder (pvc, configmap, the launcher's job). What a user
previews is exactly what the operator creates (minus ownerReferences, which need the run's uid).
"""

from __future__ import annotations

from typing import Any

from rlhf_api.spec import RLHFRun

from .launchers import Launcher, launcher_for
from .manifests.configmap import build_stage_configmap
from .manifests.network_policy import build_network_policy
from .manifests.pvc import build_pvc
from .plan import StagePlan, plan
from .settings import OperatorSettings


def stage_plans(run: RLHFRun, settings: OperatorSettings) -> list[StagePlan]:
    """The plan as pods see it: stage paths under storage.mountPath."""
    return plan(run, run.spec.storage.mount_path, settings.trainer_image)


def build_stage_job(
    run: RLHFRun,
    stage: StagePlan,
    attempt: int,
    owner: dict[str, Any] | None,
    settings: OperatorSettings,
    suspend: bool,
    launcher: Launcher | None = None,
) -> dict[str, Any]:
    """The stage's job for one attempt, by the run's launcher (or the one given).

    Kueue: with spec.queueName the job carries the `kueue.x-k8s.io/queue-name` label and is
    always created suspended (whatever `suspend` says): Kueue admits the workload and
    unsuspends the job itself; the operator must not unsuspend a queued job on its own.
    Without a queue, `suspend` is the run's spec.suspend.
    """
    if stage.skipped:
        raise ValueError(f"{stage.name}: stage is skipped (existingOutput): nothing to run")
    chosen = launcher or launcher_for(run)
    return chosen.build_job(run, stage, attempt, owner, settings, bool(suspend or run.spec.queue_name))


def render(run: RLHFRun, settings: OperatorSettings, namespace: str | None = None) -> list[dict[str, Any]]:
    """The PVC (unless existingClaim), the run's NetworkPolicy (unless turned off), then per
    non-skipped stage its ConfigMap and its first job
    (attempt 1). The operator creates a later stage's job only once the previous one succeeded."""
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
    if settings.stage_network_policy:
        objects.append(build_network_policy(run, None))
    for stage in stage_plans(run, settings):
        if stage.skipped:
            continue
        objects.append(build_stage_configmap(run, stage, None))
        objects.append(build_stage_job(run, stage, 1, None, settings, run.spec.suspend))
    return objects
