"""The run's NetworkPolicy (only its own pods reach its stage pods) and the operator's image
allow-list (a run naming another image is refused with a condition naming the field)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from rlhf_api import reasons
from rlhf_api.validation import parse_run
from rlhf_operator.api_ref import NETWORK_POLICIES
from rlhf_operator.image_policy import image_allowed, refused_images
from rlhf_operator.manifests.meta import owner_reference
from rlhf_operator.manifests.network_policy import build_network_policy, run_pod_selector
from rlhf_operator.reconcile import Create, PostEvent, reconcile
from rlhf_operator.render import render, stage_plans
from rlhf_operator.settings import OperatorSettings

from .conftest import NAMESPACE, Cluster, OperatorThread, base_run, wait_for
from .test_manifests import _validate_core, jobs_of
from .test_pod_security import stage_pod_specs
from .test_reconcile import NOW, body_of, condition, creates

# --- NetworkPolicy --------------------------------------------------------------------------------


def _matches(selector: dict[str, str], pod_labels: dict[str, str]) -> bool:
    return all(pod_labels.get(k) == v for k, v in selector.items())


def _pod_labels(job: dict[str, Any]) -> list[dict[str, str]]:
    if job["kind"] == "PyTorchJob":
        return [r["template"]["metadata"]["labels"] for r in job["spec"]["pytorchReplicaSpecs"].values()]
    patch = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
    return [rj["template"]["spec"]["template"]["metadata"]["labels"] for rj in patch["replicatedJobs"]]


@pytest.mark.parametrize("launcher", ["pytorchjob", "trainjob"])
def test_network_policy_selects_every_pod_of_the_run_and_admits_only_them(launcher: str) -> None:
    run = parse_run(base_run("demo", launcher=launcher, placement={"workers": 3, "gpusPerWorker": 0}))
    owner = owner_reference(body_of(base_run("demo")))
    policy = build_network_policy(run, owner)
    _validate_core(policy)  # strict networking/v1 schema (kubernetes-validate)
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "uid-1"  # deleted with the run
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]  # egress (hub, W&B, DNS) is left open: documented
    (rule,) = spec["ingress"]
    assert "ports" not in rule  # any port: rendezvous 23456 and NCCL's random ports
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"}  # same namespace only: no namespaceSelector, no ipBlock
    assert peer["podSelector"] == spec["podSelector"] == {"matchLabels": run_pod_selector("demo")}
    selector = spec["podSelector"]["matchLabels"]
    rendered = render(run, OperatorSettings())
    for job in jobs_of(rendered):
        for labels in _pod_labels(job):
            assert _matches(selector, labels)
    other = jobs_of(render(parse_run(base_run("other", launcher=launcher)), OperatorSettings()))
    assert not any(_matches(selector, labels) for job in other for labels in _pod_labels(job))
    assert [o for o in rendered if o["kind"] == "NetworkPolicy"] == [build_network_policy(run, None)]


def test_network_policy_can_be_turned_off() -> None:
    settings = OperatorSettings(metrics_port=0, stage_network_policy=False)
    outcome = reconcile(body_of(base_run("demo")), {}, NOW, settings)
    assert "demo-pods" not in creates(outcome)
    assert not [o for o in render(parse_run(base_run("demo")), settings) if o["kind"] == "NetworkPolicy"]
    on = reconcile(body_of(base_run("demo")), {}, NOW, OperatorSettings(metrics_port=0))
    (policy,) = [a for a in on.actions if isinstance(a, Create) and a.api == NETWORK_POLICIES]
    assert policy.body["spec"]["podSelector"]["matchLabels"] == run_pod_selector("demo")


def test_settings_from_env() -> None:
    settings = OperatorSettings.from_env(
        {
            "RLHF_ALLOWED_IMAGES": " ghcr.io/rlhf-dev/rlhf-trainer:* , registry.example.com/ml/*",
            "RLHF_STAGE_NETWORK_POLICY": "false",
        }
    )
    assert settings.allowed_images == ["ghcr.io/rlhf-dev/rlhf-trainer:*", "registry.example.com/ml/*"]
    assert settings.stage_network_policy is False
    assert OperatorSettings.from_env({}).allowed_images == [] and OperatorSettings.from_env({}).stage_network_policy


# --- image allow-list -------------------------------------------------------------------------

ALLOWED = ["ghcr.io/rlhf-dev/rlhf-trainer:*", "registry.example.com/ml/*"]


@pytest.mark.parametrize(
    ("image", "allowed"),
    [
        ("ghcr.io/rlhf-dev/rlhf-trainer:0.1.0", True),
        ("ghcr.io/rlhf-dev/rlhf-trainer:0.1.0@sha256:" + "a" * 64, True),
        ("registry.example.com/ml/team/trainer:dev", True),
        ("ghcr.io/rlhf-dev/rlhf-trainer-evil:1", False),
        ("registry.example.com.evil.io/ml/x:1", False),
        ("docker.io/library/python:3.12", False),
        ("GHCR.IO/rlhf-dev/rlhf-trainer:0.1.0", False),  # case-sensitive
    ],
)
def test_image_patterns(image: str, allowed: bool) -> None:
    assert image_allowed(image, ALLOWED) is allowed
    assert image_allowed(image, [])  # no list: everything


def _with_image(run: dict[str, Any], where: str | None, image: str) -> dict[str, Any]:
    run = copy.deepcopy(run)
    if where is None:
        run["spec"]["placement"]["image"] = image
    else:
        run["spec"][where]["placement"] = {"image": image}
    return run


@pytest.mark.parametrize(
    ("where", "field"),
    [(None, "spec.placement.image"), ("ppo", "spec.ppo.placement.image"), ("sft", "spec.sft.placement.image")],
)
def test_refused_image_names_its_field(where: str | None, field: str) -> None:
    run = parse_run(_with_image(base_run("demo"), where, "docker.io/evil/miner:1"))
    lines = refused_images(run.spec, stage_plans(run, OperatorSettings()), ALLOWED)
    assert len(lines) == 1 and lines[0].startswith(f"{field}: image 'docker.io/evil/miner:1' is not allowed")
    assert "allowed: ghcr.io/rlhf-dev/rlhf-trainer:*, registry.example.com/ml/*" in lines[0]


def test_default_image_outside_the_list_is_refused_too() -> None:
    run = parse_run(base_run("demo"))
    lines = refused_images(run.spec, stage_plans(run, OperatorSettings()), ["registry.example.com/ml/*"])
    assert lines and "RLHF_TRAINER_IMAGE" in lines[0]


def test_reconcile_refuses_then_carries_on_when_fixed() -> None:
    strict = OperatorSettings(metrics_port=0, allowed_images=ALLOWED)
    bad = body_of(_with_image(base_run("demo"), "ppo", "docker.io/evil/miner:1"))
    outcome = reconcile(bad, {}, NOW, strict)
    assert creates(outcome) == []  # nothing at all is created: no volume, no job
    after = {**bad, "status": outcome.new_status}
    assert after["status"]["phase"] == "Failed"
    stalled = condition(after, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == reasons.IMAGE_NOT_ALLOWED
    assert stalled["message"].startswith("spec.ppo.placement.image: image 'docker.io/evil/miner:1'")
    (event,) = [a.body for a in outcome.actions if isinstance(a, PostEvent)]
    assert event["type"] == "Warning" and event["reason"] == reasons.IMAGE_NOT_ALLOWED
    # Same input again: nothing new (no second event).
    again = reconcile(after, {}, NOW, strict)
    assert again.actions == [] and again.status_patch == {}
    # The user fixes the image (a new generation): the run starts.
    fixed = body_of(_with_image(base_run("demo"), "ppo", "registry.example.com/ml/trainer:1"), generation=2)
    fixed["status"] = after["status"]
    started = reconcile(fixed, {}, NOW, strict)
    assert creates(started) == ["demo-data", "demo-pods", "demo-sft-config", "demo-sft-1"]
    assert started.new_status["phase"] == "Running"


def test_pods_of_an_allowed_run_still_restricted() -> None:
    """The allow-list is not a substitute: an allowed image's pods are restricted all the same."""
    from ..support.pod_security import violations

    run = parse_run(_with_image(base_run("demo"), None, "registry.example.com/ml/trainer:1"))
    for job in jobs_of(render(run, OperatorSettings(allowed_images=ALLOWED))):
        assert all(violations(pod) == [] for pod in stage_pod_specs(job))


# --- against the API emulator -------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_operator_refuses_an_image_outside_its_allow_list(cluster: Cluster) -> None:
    url = str(cluster.kmock.url).rstrip("/")
    thread = OperatorThread(url, OperatorSettings(metrics_port=0, allowed_images=ALLOWED))
    await asyncio.to_thread(thread.start)
    try:
        await cluster.apply(_with_image(base_run("demo"), "sft", "docker.io/evil/miner:1"))
        await wait_for(lambda: cluster.status("demo").get("phase") == "Failed", what="refused")
        stalled = next(c for c in cluster.status("demo")["conditions"] if c["type"] == "Stalled")
        assert stalled["reason"] == "ImageNotAllowed" and "spec.sft.placement.image" in stalled["message"]
        events = cluster.kmock.live("v1/events", NAMESPACE)
        assert [(e["type"], e["reason"]) for e in events] == [("Warning", "ImageNotAllowed")]
        assert cluster.job_names() == [] and cluster.kmock.live("v1/persistentvolumeclaims", NAMESPACE) == []
    finally:
        await asyncio.to_thread(thread.stop)
