"""Pod-level pieces shared by the PyTorchJob and TrainJob builders: pure dicts, no I/O.

Everything a stage's pods need: the trainer command (spec values never reach a shell: they
travel in the mounted config file), env (secrets only by Secret reference), resources,
volumes (the run's PVC, the stage ConfigMap, a memory-backed /dev/shm, a scratch /tmp) and node
placement. The root filesystem is read-only: the caches the trainer writes outside the volume
(matplotlib, torchinductor, triton, ~/.cache) are pointed at /tmp by env.
"""

from __future__ import annotations

import posixpath
from typing import Any

from rlhf_api.naming import configmap_name
from rlhf_api.served import secret_env
from rlhf_api.spec import RLHFRun

from ..plan import ResolvedPlacement, StagePlan
from ..settings import OperatorSettings
from .pvc import claim_name

CONFIG_MOUNT = "/etc/rlhf"
CONFIG_FILE = "config.yaml"
CONFIG_PATH = posixpath.join(CONFIG_MOUNT, CONFIG_FILE)
SHM_MOUNT = "/dev/shm"
SCRATCH_MOUNT = "/tmp"
HF_HOME_DIR = ".hf"  # under storage.mountPath: hub downloads persist across stages and retries
GPU_RESOURCE = "nvidia.com/gpu"

DATA_VOLUME = "data"
CONFIG_VOLUME = "config"
SHM_VOLUME = "dshm"
SCRATCH_VOLUME = "tmp"

# Where the trainer's libraries write outside the run's volume, all on the scratch emptyDir (the
# root filesystem is read-only; their defaults are under HOME, which the image owns).
SCRATCH_ENV = {
    "XDG_CACHE_HOME": f"{SCRATCH_MOUNT}/cache",  # ~/.cache: torch hub, kernels, ...
    "MPLCONFIGDIR": f"{SCRATCH_MOUNT}/matplotlib",  # ~/.config/matplotlib and its font cache
    "TORCHINDUCTOR_CACHE_DIR": f"{SCRATCH_MOUNT}/torchinductor",  # torch.compile
    "TRITON_CACHE_DIR": f"{SCRATCH_MOUNT}/triton",  # the trainer image sets one under HOME
}

TRAINER_PROGRAM = "rlhf-train"
SHUTDOWN_TIMEOUT_ENV = "TORCH_ELASTIC_SHUTDOWN_TIMEOUT"  # read by torchrun


def is_distributed(placement: ResolvedPlacement) -> bool:
    return placement.workers * placement.processes_per_worker > 1


def trainer_command(stage: StagePlan) -> list[str]:
    """The container command: an argv list, never a shell line.

    A single process runs `rlhf-train <stage> --config <file>` directly. A distributed stage
    (several pods or several processes per pod) runs it under `torchrun --no-python`, which
    reads the rendezvous settings the launcher injects into every pod (PET_NNODES,
    PET_NPROC_PER_NODE, PET_NODE_RANK, PET_MASTER_ADDR, PET_MASTER_PORT: both the v1 training
    operator and Trainer v2's torch plugin set them) and gives each process RANK, LOCAL_RANK
    and WORLD_SIZE.
    """
    command = [TRAINER_PROGRAM, stage.name, "--config", CONFIG_PATH]
    if is_distributed(stage.placement):
        return ["torchrun", "--no-python", *command]
    return command


def _secret_env(name: str, secret: Any) -> dict[str, Any]:
    return {
        "name": name,
        "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}},
    }


# Seconds of the grace period kept for torchrun itself to exit after its workers.
_SHUTDOWN_MARGIN = 10


def shutdown_timeout(placement: ResolvedPlacement) -> int:
    """How long torchrun lets its workers checkpoint after SIGTERM before it SIGKILLs them
    (its default, 30 s, is shorter than most checkpoints of a large model): the pod's grace
    period, less a margin."""
    return max(1, placement.termination_grace_period_seconds - _SHUTDOWN_MARGIN)


def trainer_env(run: RLHFRun, stage: StagePlan) -> list[dict[str, Any]]:
    """Env for the trainer container. Credentials come only from Secret references."""
    spec = run.spec
    env: list[dict[str, Any]] = [
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "HF_HOME", "value": posixpath.join(spec.storage.mount_path, HF_HOME_DIR)},
        *({"name": name, "value": value} for name, value in SCRATCH_ENV.items()),
    ]
    if is_distributed(stage.placement):
        env.append({"name": SHUTDOWN_TIMEOUT_ENV, "value": str(shutdown_timeout(stage.placement))})
    if spec.secrets.hf_token is not None:
        env.append(_secret_env("HF_TOKEN", spec.secrets.hf_token))
    if spec.secrets.wandb_api_key is not None:
        env.append(_secret_env("WANDB_API_KEY", spec.secrets.wandb_api_key))
        env.append({"name": "WANDB_DIR", "value": SCRATCH_MOUNT})  # its run files; default: the cwd
        if spec.wandb_project:
            env.append({"name": "WANDB_PROJECT", "value": spec.wandb_project})
    # Served models' credentials: remote reward headers, the endpoint judge's API key.
    if stage.config is not None:
        env += [_secret_env(name, secret) for name, secret in secret_env(stage.config.section)]
    return env


def container_resources(placement: ResolvedPlacement) -> dict[str, dict[str, str]]:
    """requests/limits from the placement; GPUs come from gpusPerWorker only.

    Extended resources such as nvidia.com/gpu cannot be overcommitted: Kubernetes requires
    requests == limits for them, so both are set.
    """
    requests = {k: v for k, v in placement.requests.items() if k != GPU_RESOURCE}
    limits = {k: v for k, v in placement.limits.items() if k != GPU_RESOURCE}
    if placement.gpus_per_worker > 0:
        requests[GPU_RESOURCE] = str(placement.gpus_per_worker)
        limits[GPU_RESOURCE] = str(placement.gpus_per_worker)
    resources: dict[str, dict[str, str]] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return resources


def volumes(run: RLHFRun, stage: StagePlan) -> list[dict[str, Any]]:
    return [
        {"name": DATA_VOLUME, "persistentVolumeClaim": {"claimName": claim_name(run)}},
        {
            "name": CONFIG_VOLUME,
            "configMap": {"name": configmap_name(run.metadata.name, stage.name)},
        },
        # Shared memory for NCCL and DataLoader workers: the container runtime's default 64Mi
        # is far too small. Memory-backed, so it counts against the pod's memory.
        {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": stage.placement.shm_size}},
        # Scratch on the node's disk for the caches (SCRATCH_ENV) and temporary files: the root
        # filesystem is read-only. No sizeLimit: compile caches grow with the model.
        {"name": SCRATCH_VOLUME, "emptyDir": {}},
    ]


def volume_mounts(run: RLHFRun) -> list[dict[str, Any]]:
    return [
        {"name": DATA_VOLUME, "mountPath": run.spec.storage.mount_path},
        {"name": CONFIG_VOLUME, "mountPath": CONFIG_MOUNT, "readOnly": True},
        {"name": SHM_VOLUME, "mountPath": SHM_MOUNT},
        {"name": SCRATCH_VOLUME, "mountPath": SCRATCH_MOUNT},
    ]


def node_selector(placement: ResolvedPlacement, settings: OperatorSettings) -> dict[str, str]:
    """The stage's selector; the operator-wide default only when the stage sets none."""
    return dict(placement.node_selector or settings.default_node_selector)


def tolerations(placement: ResolvedPlacement, settings: OperatorSettings) -> list[dict[str, Any]]:
    """The stage's tolerations plus the operator-wide defaults (without duplicates)."""
    result = [dict(t) for t in placement.tolerations]
    for toleration in settings.default_tolerations:
        if toleration not in result:
            result.append(dict(toleration))
    return result


def container_security_context() -> dict[str, Any]:
    """Pod Security "restricted" for the container: no privilege escalation, every Linux
    capability dropped (training needs none: GPUs come through the device plugin), not
    privileged; and a read-only root filesystem (the trainer writes only to the volume, /tmp
    and /dev/shm). The user is set on the pod (pod_security_context)."""
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


# The trainer image's user and group (trainer_image/Dockerfile: USER 10001:10001; a test keeps
# the two equal). Pods run as this user whatever image they name: an image whose files belong to
# root still runs, as long as it writes only to HOME/the volume (HF_HOME is on the volume).
TRAINER_UID = 10001
TRAINER_GID = 10001


def pod_security_context() -> dict[str, Any]:
    """Pod Security "restricted" for the pod: a fixed non-root uid/gid (runAsNonRoot needs a
    numeric user to verify), the runtime's default seccomp profile, and fsGroup so that a
    freshly provisioned (root-owned) volume is writable by the trainer."""
    return {
        "runAsNonRoot": True,
        "runAsUser": TRAINER_UID,
        "runAsGroup": TRAINER_GID,
        "fsGroup": TRAINER_GID,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


# No API token in stage pods: they run user code (trustRemoteCode models, `function` rewards)
# and never call the Kubernetes API. Set where the job kind's pod template can say it
# (PyTorchJob; a TrainJob's runtimePatches cannot: its ClusterTrainingRuntime must).
NO_TOKEN = {"automountServiceAccountToken": False}


def service_account_fields(placement: ResolvedPlacement) -> dict[str, Any]:
    """serviceAccountName only when the spec sets one (e.g. an account with cloud IAM bindings,
    which work without the Kubernetes token); else the namespace's default account."""
    if placement.service_account_name:
        return {"serviceAccountName": placement.service_account_name}
    return {}


def scheduling(placement: ResolvedPlacement, settings: OperatorSettings) -> dict[str, Any]:
    """The node pool as pod spec fields: nodeSelector, affinity, tolerations (only those set)."""
    fields: dict[str, Any] = {
        "nodeSelector": node_selector(placement, settings),
        "affinity": placement.affinity,
        "tolerations": tolerations(placement, settings),
    }
    return {key: value for key, value in fields.items() if value}


def image_pull_policy(placement: ResolvedPlacement, settings: OperatorSettings) -> str | None:
    return placement.image_pull_policy or settings.trainer_image_pull_policy


def stage_pod_spec(
    run: RLHFRun, stage: StagePlan, settings: OperatorSettings, containers: list[dict[str, Any]]
) -> dict[str, Any]:
    """What every stage pod has around its containers: the volumes, the security context, the
    grace period and the node placement."""
    pod: dict[str, Any] = {
        "containers": containers,
        "volumes": volumes(run, stage),
        "securityContext": pod_security_context(),
        **service_account_fields(stage.placement),
        # SIGTERM (drain, spot reclaim, Kueue preemption) makes the trainer checkpoint the
        # current step; this is how long it gets before SIGKILL.
        "terminationGracePeriodSeconds": stage.placement.termination_grace_period_seconds,
    }
    pod.update(scheduling(stage.placement, settings))
    return pod
