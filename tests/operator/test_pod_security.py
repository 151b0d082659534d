"""Least privilege for stage pods: every rendered stage pod passes Pod Security `restricted`
(tests/support/pod_security.py, the controls of the Kubernetes docs), carries no API token, and
runs as the trainer image's user; the checker itself refuses each kind of violation."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from rlhf_operator.manifests.pod import TRAINER_GID, TRAINER_UID
from rlhf_operator.render import render
from rlhf_operator.settings import OperatorSettings

from ..support.pod_security import BASELINE, violations
from .test_manifests import VARIANTS, jobs_of, make_run, validate_job


def stage_pod_specs(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod templates a job's controller creates pods from (every replica type)."""
    if job["kind"] == "PyTorchJob":
        return [replica["template"]["spec"] for replica in job["spec"]["pytorchReplicaSpecs"].values()]
    patch = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
    return [rj["template"]["spec"]["template"]["spec"] for rj in patch["replicatedJobs"]]


CASES = [
    (variant, launcher)
    for variant in sorted(VARIANTS)
    for launcher in ("pytorchjob", "trainjob")
    if not (variant == "trainjob-runtime" and launcher == "pytorchjob")
]


@pytest.mark.parametrize(("variant", "launcher"), CASES)
def test_every_rendered_stage_pod_is_restricted(variant: str, launcher: str) -> None:
    jobs = jobs_of(render(make_run(variant, launcher), OperatorSettings()))
    assert jobs
    for job in jobs:
        for pod in stage_pod_specs(job):
            assert violations(pod) == [], job["metadata"]["name"]
            # A TrainJob's runtimePatches cannot say it: the runtime must (docs/install.md).
            assert pod.get("automountServiceAccountToken") is (False if job["kind"] == "PyTorchJob" else None)
            assert "serviceAccountName" not in pod  # the namespace's default, but without its token
            assert pod["securityContext"]["runAsUser"] == TRAINER_UID
            assert pod["securityContext"]["runAsGroup"] == pod["securityContext"]["fsGroup"] == TRAINER_GID


@pytest.mark.parametrize("launcher", ["pytorchjob", "trainjob"])
def test_service_account_name_from_run_or_stage_placement(launcher: str) -> None:
    run = make_run("defaults", launcher)
    document = run.model_dump(by_alias=True, exclude_none=True)
    document["spec"]["placement"] = {"serviceAccountName": "trainer-gcs"}
    document["spec"]["ppo"]["placement"] = {"serviceAccountName": "ppo-only"}
    rendered = render(type(run).model_validate(document), OperatorSettings())
    accounts = {}
    for job in jobs_of(rendered):
        validate_job(job)  # the upstream CRD and the core Pod schema accept the fields
        (pod, *_) = stage_pod_specs(job)
        accounts[job["metadata"]["labels"]["rlhf.dev/stage"]] = pod["serviceAccountName"]
    assert accounts == {"sft": "trainer-gcs", "reward": "trainer-gcs", "ppo": "ppo-only"}


def test_service_account_name_must_be_a_dns_name() -> None:
    from pydantic import ValidationError
    from rlhf_api.spec import Placement

    with pytest.raises(ValidationError, match=r"service_account_name|serviceAccountName"):
        Placement.model_validate({"serviceAccountName": "Not A Name"})


# --- the checker refuses what the docs list ---------------------------------------------------

COMPLIANT: dict[str, Any] = {
    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [
        {
            "name": "c",
            "image": "x",
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        }
    ],
    "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "pvc"}}, {"name": "e", "emptyDir": {}}],
}


def _container_sc(**fields: Any) -> Any:
    def change(pod: dict[str, Any]) -> None:
        pod["containers"][0]["securityContext"].update(fields)

    return change


def _pod_sc(**fields: Any) -> Any:
    def change(pod: dict[str, Any]) -> None:
        pod["securityContext"].update(fields)

    return change


def _drop_pod_sc(key: str) -> Any:
    def change(pod: dict[str, Any]) -> None:
        del pod["securityContext"][key]

    return change


def _set(key: str, value: Any) -> Any:
    def change(pod: dict[str, Any]) -> None:
        pod[key] = value

    return change


def _volume(**kind: Any) -> Any:
    def change(pod: dict[str, Any]) -> None:
        pod["volumes"].append({"name": "extra", **kind})

    return change


def _port(host_port: int) -> Any:
    def change(pod: dict[str, Any]) -> None:
        pod["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": host_port}]

    return change


# (what is wrong, the change, a word the violation names, also a Baseline violation)
VIOLATIONS = [
    ("no runAsNonRoot", _drop_pod_sc("runAsNonRoot"), "runAsNonRoot", False),
    ("container runAsNonRoot false", _container_sc(runAsNonRoot=False), "runAsNonRoot", False),
    ("root uid", _pod_sc(runAsUser=0), "runAsUser", False),
    ("no seccomp", _drop_pod_sc("seccompProfile"), "seccompProfile", False),
    ("seccomp unconfined", _container_sc(seccompProfile={"type": "Unconfined"}), "Unconfined", True),
    ("escalation allowed", _container_sc(allowPrivilegeEscalation=True), "allowPrivilegeEscalation", False),
    ("capabilities kept", _container_sc(capabilities={}), "drop must include ALL", False),
    ("capability added", _container_sc(capabilities={"drop": ["ALL"], "add": ["CHOWN"]}), "NET_BIND_SERVICE", False),
    ("SYS_ADMIN added", _container_sc(capabilities={"drop": ["ALL"], "add": ["SYS_ADMIN"]}), "SYS_ADMIN", True),
    ("privileged", _container_sc(privileged=True), "privileged", True),
    ("host network", _set("hostNetwork", True), "hostNetwork", True),
    ("host PID", _set("hostPID", True), "hostPID", True),
    ("hostPath volume", _volume(hostPath={"path": "/"}), "hostPath", True),
    ("nfs volume", _volume(nfs={"server": "s", "path": "/"}), "nfs", False),
    ("host port", _port(8080), "hostPort", True),
    ("proc mount", _container_sc(procMount="Unmasked"), "procMount", True),
    ("unsafe sysctl", _pod_sc(sysctls=[{"name": "kernel.msgmax", "value": "1"}]), "kernel.msgmax", True),
    ("selinux type", _pod_sc(seLinuxOptions={"type": "spc_t"}), "seLinuxOptions", True),
    ("apparmor", _container_sc(appArmorProfile={"type": "Unconfined"}), "appArmorProfile", True),
    ("host process", _pod_sc(windowsOptions={"hostProcess": True}), "hostProcess", True),
]


def test_the_compliant_pod_passes() -> None:
    assert violations(COMPLIANT) == []


@pytest.mark.parametrize(("what", "change", "named", "baseline"), VIOLATIONS, ids=[v[0] for v in VIOLATIONS])
def test_each_violation_is_refused(what: str, change: Any, named: str, baseline: bool) -> None:
    pod = copy.deepcopy(COMPLIANT)
    change(pod)
    found = violations(pod)
    assert found and any(named in problem for problem in found), (what, found)
    assert bool(violations(pod, BASELINE)) is baseline, what


def test_the_old_stage_pod_would_have_been_refused() -> None:
    """The stage pod as it was before (no runAsNonRoot, capabilities kept): refused."""
    pod = stage_pod_specs(jobs_of(render(make_run(), OperatorSettings()))[0])[0]
    old = copy.deepcopy(pod)
    old["securityContext"] = {"seccompProfile": {"type": "RuntimeDefault"}, "fsGroup": 10001}
    old["containers"][0]["securityContext"] = {"allowPrivilegeEscalation": False, "privileged": False}
    found = violations(old)
    assert any("runAsNonRoot" in p for p in found) and any("drop must include ALL" in p for p in found)


# --- deadlines reach the job ------------------------------------------------------------------


@pytest.mark.parametrize("launcher", ["pytorchjob", "trainjob"])
def test_active_deadline_reaches_the_job_per_stage(launcher: str) -> None:
    run = make_run("defaults", launcher)
    document = run.model_dump(by_alias=True, exclude_none=True)
    document["spec"]["ppo"]["activeDeadlineSeconds"] = 7200
    deadlines = {}
    for job in jobs_of(render(type(run).model_validate(document), OperatorSettings())):
        validate_job(job)
        spec = job["spec"]
        found = (
            spec["runPolicy"].get("activeDeadlineSeconds")
            if launcher == "pytorchjob"
            else spec.get("activeDeadlineSeconds")
        )
        deadlines[job["metadata"]["labels"]["rlhf.dev/stage"]] = found
    assert deadlines == {"sft": None, "reward": None, "ppo": 7200}
