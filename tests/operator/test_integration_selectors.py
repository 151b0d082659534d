"""The stage-job lists and watches carry a labelSelector (issue 16, item 9): the API server
filters them, not the operator (kmock does not filter; the requests are checked)."""

from __future__ import annotations

import pytest
from rlhf_api.naming import RUN_LABEL

from .conftest import Cluster, OperatorThread, base_run, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


async def test_job_lists_and_watches_are_selected_by_the_server(cluster: Cluster, operator: OperatorThread) -> None:
    await cluster.apply(base_run("demo"))
    await wait_for(lambda: "demo-sft-1" in cluster.job_names(), what="sft-1")
    job_reads = [
        r
        for r in list(cluster.kmock._requests)
        if r.method.value.upper() == "GET"
        and r.resource is not None
        and r.resource.plural in ("pytorchjobs", "trainjobs")
        and not r.name
    ]
    assert job_reads, "kopf listed/watched no stage jobs"
    assert {r.params.get("labelSelector") for r in job_reads} == {RUN_LABEL}
