"""The test API server refuses what a real one refuses (enforcement.py), so that a green operator
test says the operator would work against a cluster: each rule, once, with the answer a real API
server gives (401, 403, 422, 400), and nothing stored when a write is refused."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import aiohttp
import pytest
from rlhf_operator.api_ref import CONFIGMAPS, EVENTS, PODS, ApiRef
from rlhf_operator.controller.kube_client import ApiError

from tests.support.chart import NAMESPACE as RELEASE_NAMESPACE
from tests.support.chart import operator_rules

from .conftest import NAMESPACE, Cluster, base_run, client_as
from .emulator import PYTORCHJOBS, RLHFRUNS
from .enforcement import ADMIN_TOKEN, OPERATOR_TOKEN, SchemaCheck, name_problem, parse_label_selector

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

RUNS = f"/apis/rlhf.dev/v1alpha1/namespaces/{NAMESPACE}/rlhfruns"
CONFIGMAP_PATH = f"/api/v1/namespaces/{NAMESPACE}/configmaps"
RUN_API = ApiRef("rlhf.dev", "v1alpha1", "rlhfruns")


async def call(
    cluster: Cluster, method: str, path: str, body: Any = None, token: str | None = ADMIN_TOKEN, **kw: Any
) -> tuple[int, dict[str, Any]]:
    """A request with exactly this token (None: none at all), not the kmock client's default."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body is not None:
        content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
        headers["Content-Type"] = content_type
        kw["data"] = json.dumps(body)
    url = str(cluster.kmock.url).rstrip("/") + path
    async with aiohttp.ClientSession() as session, session.request(method, url, headers=headers, **kw) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, {"text": text}


# --- authentication and authorization ---------------------------------------------------------


@pytest.mark.expect_denied
async def test_no_token_or_an_unknown_token_is_401(cluster: Cluster) -> None:
    assert (await call(cluster, "GET", RUNS, token=None))[0] == 401
    assert (await call(cluster, "GET", RUNS, token="guessed"))[0] == 401
    assert (await call(cluster, "GET", RUNS, token=OPERATOR_TOKEN))[0] == 200
    assert (await call(cluster, "GET", "/apis", token=None))[0] == 401
    assert len(cluster.kmock.denied) == 3


@pytest.mark.expect_denied
async def test_the_operator_may_do_only_what_the_chart_grants(cluster: Cluster) -> None:
    client = client_as(str(cluster.kmock.url).rstrip("/"))
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": NAMESPACE}}
    try:
        assert await client.list(PODS, NAMESPACE) == []  # granted: get, list pods
        assert await client.create(CONFIGMAPS, {"metadata": {"name": "c", "namespace": NAMESPACE}})
        with pytest.raises(ApiError) as refused:
            await client.create(PODS, pod)  # the chart grants no pod create: 403, nothing stored
        assert refused.value.status == 403 and 'cannot create resource "pods"' in refused.value.message
        assert cluster.kmock.live("v1/pods", NAMESPACE) == []
        with pytest.raises(ApiError) as refused:
            await client.patch(CONFIGMAPS, NAMESPACE, "c", {"data": {"a": "b"}})  # create only
        assert refused.value.status == 403
        with pytest.raises(ApiError) as refused:  # spec writes: the operator only writes the status
            await client.patch(RUN_API, NAMESPACE, "x", {"spec": {}})
        assert refused.value.status == 403
    finally:
        await client.close()
    assert [d[0] for d in cluster.kmock.denied] == [403, 403, 403]


def test_the_grants_are_the_charts_rendered_rules() -> None:
    user, rules = operator_rules()
    assert user == f"system:serviceaccount:{RELEASE_NAMESPACE}:rlhf-operator"
    assert any(r.allows("patch", "rlhf.dev", "rlhfruns/status", NAMESPACE, "x") for r in rules)
    assert not any(r.allows("delete", "", "pods", NAMESPACE, "x") for r in rules)
    # The Lease: in the release namespace only, patch only the named one.
    assert any(
        r.allows("patch", "coordination.k8s.io", "leases", RELEASE_NAMESPACE, "rlhf-operator-leader") for r in rules
    )
    assert not any(r.allows("patch", "coordination.k8s.io", "leases", RELEASE_NAMESPACE, "other") for r in rules)
    assert not any(r.allows("create", "coordination.k8s.io", "leases", NAMESPACE, None) for r in rules)


# --- the CRD's schema and CEL rules -----------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"storage": {"size": "5GiGi"}}, "spec.storage.size"),  # pattern
        ({"model": {"name": "x" * 513}}, "Too long"),  # maxLength
        ({"model": {"name": "builtin:tiny-llama", "dtype": "float8"}}, "Unsupported value"),  # enum
        ({"placement": {"gpusPerWorker": 2**63, "workers": 1}}, "must be of type integer"),  # int64
        ({"placement": {"gpusPerWorker": "1", "workers": 1}}, "must be of type integer"),  # type
        ({"pipeline": ["dpo", "sft"]}, "spec"),  # a CEL rule
        ({"model": None}, "spec.model: Required value"),  # required
    ],
)
async def test_a_run_the_crd_refuses_is_422_and_not_stored(
    cluster: Cluster, change: dict[str, Any], fragment: str
) -> None:
    run = base_run("bad")
    run["spec"].update(change)
    run["spec"] = {k: v for k, v in run["spec"].items() if v is not None}
    status, answer = await call(cluster, "POST", RUNS, run)
    assert status == 422 and fragment in answer["message"], answer["message"]
    assert (RLHFRUNS, NAMESPACE, "bad") not in cluster.kmock.objects


async def test_status_writes_and_spec_updates_are_validated_before_storing(cluster: Cluster) -> None:
    await cluster.apply(base_run("demo"))
    path = f"{RUNS}/demo"
    stored = copy.deepcopy(cluster.run("demo"))
    status, answer = await call(
        cluster, "PATCH", f"{path}/status", {"status": {"stages": [{"name": "sft", "attempts": 10**20}]}}
    )
    assert status == 422 and "must be of type integer" in answer["message"]
    status, answer = await call(cluster, "PATCH", f"{path}/status", {"status": {"phase": "Exploded"}})
    assert status == 422 and "Unsupported value" in answer["message"]
    # A transition rule: the model is immutable (self == oldSelf).
    status, answer = await call(cluster, "PATCH", path, {"spec": {"model": {"name": "other"}}})
    assert status == 422, answer
    assert cluster.run("demo") == stored
    assert (await call(cluster, "PATCH", f"{path}/status", {"status": {"phase": "Running"}}))[0] == 200


async def test_a_stage_job_the_upstream_crd_refuses_is_422(cluster: Cluster) -> None:
    """PyTorchJob and TrainJob are checked against the upstream CRDs (tests/operator/upstream_crds)."""
    job = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "j", "namespace": NAMESPACE},
        "spec": {"pytorchReplicaSpecs": {"Master": {"replicas": "one", "template": {}}}},
    }
    status, answer = await call(cluster, "POST", f"/apis/kubeflow.org/v1/namespaces/{NAMESPACE}/pytorchjobs", job)
    assert status == 422 and "spec.pytorchReplicaSpecs.Master.replicas" in answer["message"], answer
    assert cluster.kmock.live(PYTORCHJOBS, NAMESPACE) == []


def test_every_cel_rule_of_the_crd_is_evaluated() -> None:
    """No rule is skipped for want of a CEL function: the emulator checks them all."""
    from rlhf_operator.crd import crd

    check = SchemaCheck()
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert check.run(schema, base_run()) == []
    assert check.skipped_rules == set()


# --- names and labels -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        (RUNS, {**base_run("Demo")}, "RFC 1123 subdomain"),
        (f"/api/v1/namespaces/{NAMESPACE}/events", {"metadata": {"name": "x..y"}}, "RFC 1123 subdomain"),
        (f"/api/v1/namespaces/{NAMESPACE}/configmaps", {"metadata": {"name": "a" * 254}}, "RFC 1123 subdomain"),
        (
            f"/api/v1/namespaces/{NAMESPACE}/configmaps",
            {"metadata": {"name": "c", "labels": {"k": "v" * 64}}},
            "valid label",
        ),
        (
            f"/api/v1/namespaces/{NAMESPACE}/configmaps",
            {"metadata": {"name": "c", "labels": {"k": "-v"}}},
            "valid label",
        ),
    ],
)
async def test_invalid_names_and_labels_are_422(
    cluster: Cluster, path: str, body: dict[str, Any], fragment: str
) -> None:
    status, answer = await call(cluster, "POST", path, body)
    assert status == 422 and fragment in answer["message"], answer


def test_a_namespace_name_is_a_label() -> None:
    # (kmock 0.8 cannot route a create of /api/v1/namespaces: the rule alone.)
    assert name_problem("namespaces", "a.b") and not name_problem("configmaps", "a.b")
    assert name_problem("namespaces", "a" * 64) and not name_problem("namespaces", "a" * 63)


# --- selectors and list kinds -----------------------------------------------------------------


async def test_lists_and_watches_honour_selectors(cluster: Cluster) -> None:
    for name, labels in (("a", {"app": "x", "tier": "1"}), ("b", {"app": "y"}), ("c", {})):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels}}
        assert (await call(cluster, "POST", f"/api/v1/namespaces/{NAMESPACE}/pods", pod))[0] == 201
    client = client_as(str(cluster.kmock.url).rstrip("/"))
    try:
        names = lambda items: sorted(i["metadata"]["name"] for i in items)  # noqa: E731
        assert names(await client.list(PODS, NAMESPACE, "app=x")) == ["a"]
        assert names(await client.list(PODS, NAMESPACE, "app")) == ["a", "b"]
        assert names(await client.list(PODS, NAMESPACE, "!app")) == ["c"]
        assert names(await client.list(PODS, NAMESPACE, "app in (x,y),tier notin (2)")) == ["a", "b"]
        assert names(await client.list(PODS, NAMESPACE, "app!=x")) == ["b", "c"]
        assert names(await client.list(PODS, NAMESPACE, field_selector="metadata.name=b")) == ["b"]
        with pytest.raises(ApiError) as refused:
            await client.list(PODS, NAMESPACE, field_selector="spec.containers=x")
        assert refused.value.status == 400
        answer = await client._request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods")
        assert (answer["kind"], answer["apiVersion"]) == ("PodList", "v1")
        answer = await client._request("GET", f"/apis/kubeflow.org/v1/namespaces/{NAMESPACE}/pytorchjobs")
        assert (answer["kind"], answer["apiVersion"]) == ("PyTorchJobList", "kubeflow.org/v1")
        events = await client.list(EVENTS, NAMESPACE, field_selector="type=Warning")
        assert events == []
    finally:
        await client.close()

    # A watch: only the selected objects; one that stops matching is DELETED for this watcher.
    seen: list[tuple[str, str]] = []

    async def watch() -> None:
        url = f"/api/v1/namespaces/{NAMESPACE}/pods?watch=true&labelSelector=app%3Dx"
        async with cluster.kmock.request("GET", url) as response:
            async for line in response.content:
                if line.strip():
                    event = json.loads(line)
                    seen.append((event["type"], event["object"]["metadata"]["name"]))

    task = asyncio.create_task(watch())
    await asyncio.sleep(0.3)
    await call(cluster, "PATCH", f"/api/v1/namespaces/{NAMESPACE}/pods/b", {"metadata": {"labels": {"app": "x"}}})
    await call(cluster, "PATCH", f"/api/v1/namespaces/{NAMESPACE}/pods/a", {"metadata": {"labels": {"app": None}}})
    await asyncio.sleep(0.3)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert seen == [("ADDED", "a"), ("ADDED", "b"), ("DELETED", "a")]


def test_label_selector_grammar() -> None:
    assert [(r.key, r.operator, sorted(r.values)) for r in parse_label_selector("a=1,b!=2,c in (x, y),!d,e")] == [
        ("a", "=", ["1"]),
        ("b", "!=", ["2"]),
        ("c", "in", ["x", "y"]),
        ("d", "!", []),
        ("e", "exists", []),
    ]


async def test_the_job_watch_of_the_operator_sees_only_stage_jobs(cluster: Cluster) -> None:
    """kopf's watch of stage jobs carries the `rlhf.dev/run` existence selector: others never arrive."""
    job = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": "other", "namespace": NAMESPACE}}
    assert (await call(cluster, "POST", f"/apis/kubeflow.org/v1/namespaces/{NAMESPACE}/pytorchjobs", job))[0] == 201
    status, answer = await call(
        cluster, "GET", f"/apis/kubeflow.org/v1/namespaces/{NAMESPACE}/pytorchjobs?labelSelector=rlhf.dev%2Frun"
    )
    assert status == 200 and answer["items"] == [] and cluster.kmock.live(PYTORCHJOBS, NAMESPACE)
