"""The operator image against the test API server (the kmock emulator), as the chart runs it.

The container gets the chart's pod security context (its uid, read-only root with an emptyDir
at /tmp, every capability dropped, no privilege escalation) and the chart's RLHF_* settings,
on the host network; its connection is a kubeconfig with a bearer token, mounted read-only.
The test plays the training operator, as tests/operator do: the quickstart RLHFRun reaches
Succeeded.
"""

from __future__ import annotations

import json
import socket
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.operator.conftest import NAMESPACE, Cluster, wait_for
from tests.operator.enforcement import OPERATOR_TOKEN

from .conftest import ROOT, Images, podman, run_flags

pytestmark = [pytest.mark.images, pytest.mark.asyncio]

VALUES = yaml.safe_load((ROOT / "charts" / "rlhf-operator" / "values.yaml").read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chart_security_flags() -> list[str]:
    """The chart's podSecurityContext and securityContext (values.yaml) as podman flags."""
    pod, sc = VALUES["podSecurityContext"], VALUES["securityContext"]
    assert pod["runAsNonRoot"] and sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["allowPrivilegeEscalation"] is False
    assert pod["seccompProfile"] == sc["seccompProfile"] == {"type": "RuntimeDefault"}  # podman's default
    return [
        "--user",
        f"{sc['runAsUser']}:{sc['runAsGroup']}",
        "--group-add",
        str(pod["fsGroup"]),
        "--read-only",
        "--read-only-tmpfs=false",
        "--tmpfs",
        "/tmp:rw,mode=1777,size=64m",  # the chart's emptyDir (sizeLimit 64Mi)
        "--cap-drop",
        "all",
        "--security-opt",
        "no-new-privileges",
    ]


def token_of(cluster: Cluster) -> str:
    """The operator ServiceAccount's token: the test API server authenticates it and grants it
    exactly the chart's rendered RBAC (tests/operator/enforcement.py)."""
    return OPERATOR_TOKEN


def kubeconfig(server: str, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": server}}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "operator", "namespace": NAMESPACE}}],
        "current-context": "test",
    }


@dataclass(frozen=True)
class OperatorContainer:
    name: str
    health_url: str  # kopf's liveness endpoint, which the chart's probes call

    def logs(self) -> str:
        proc = podman("logs", self.name, timeout=60)
        return (proc.stdout + proc.stderr)[-6000:]

    def running(self) -> bool:
        proc = podman("inspect", "--format", "{{.State.Running}}", self.name, timeout=60)
        return proc.stdout.strip() == "true"


@pytest.fixture
def operator_container(images: Images, cluster: Cluster, tmp_path: Path) -> Iterator[OperatorContainer]:
    server = str(cluster.kmock.url).rstrip("/")
    token = token_of(cluster)
    config = tmp_path / "kubeconfig"
    config.write_text(yaml.safe_dump(kubeconfig(server, token)))
    config.chmod(0o644)
    health, metrics = free_port(), free_port()
    env = {
        # The chart's defaults (templates/deployment.yaml), ports moved off 8080/9090: host network.
        "RLHF_TRAINER_IMAGE": VALUES["trainer"]["image"],
        "RLHF_WATCH_NAMESPACES": "",
        "RLHF_METRICS_PORT": str(metrics),
        "RLHF_DEFAULT_NODE_SELECTOR": json.dumps(VALUES["trainer"]["nodeSelector"]),
        "RLHF_DEFAULT_TOLERATIONS": json.dumps(VALUES["trainer"]["tolerations"]),
        "RLHF_ALLOWED_IMAGES": "",
        "RLHF_STAGE_NETWORK_POLICY": str(VALUES["trainer"]["networkPolicy"]).lower(),
        "RLHF_PROGRESS_INTERVAL_SECONDS": str(VALUES["progress"]["intervalSeconds"]),
        "RLHF_LIVENESS_ENDPOINT": f"http://127.0.0.1:{health}/healthz",
        "PYTHONDONTWRITEBYTECODE": "1",
        "KUBECONFIG": "/etc/rlhf-test/kubeconfig",
    }
    name = f"rlhf-operator-test-{uuid.uuid4().hex[:8]}"
    flags = [f"--env={key}={value}" for key, value in env.items()]
    proc = podman(
        "run", "-d", "--name", name, *run_flags(), "--network", "host", *chart_security_flags(),
        "-v", f"{config}:/etc/rlhf-test/kubeconfig:ro", *flags, images.operator,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    try:
        yield OperatorContainer(name, f"http://127.0.0.1:{health}/healthz")
    finally:
        podman("rm", "-f", "-t", "5", name, timeout=120)


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


async def test_operator_image_drives_the_quickstart_to_succeeded(
    cluster: Cluster, operator_container: OperatorContainer
) -> None:
    container = operator_container
    url = container.health_url

    def started() -> bool:
        assert container.running(), f"the operator container exited:\n{container.logs()}"
        return healthy(url)

    try:
        await wait_for(started, timeout=120, what="the operator's liveness endpoint (the chart's probes)")
        run = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
        run["metadata"]["namespace"] = NAMESPACE
        await cluster.apply(run)
        for stage in run["spec"]["pipeline"]:
            job = f"quickstart-{stage}-1"
            await wait_for(lambda job=job: job in cluster.job_names(), timeout=120, what=f"job {job}")
            await cluster.finish_stage(job)
        await wait_for(lambda: cluster.status("quickstart").get("phase") == "Succeeded", timeout=120, what="Succeeded")
    except AssertionError as error:
        raise AssertionError(f"{error}\n--- operator log ---\n{container.logs()}") from None
    status = cluster.status("quickstart")
    assert [s["phase"] for s in status["stages"]] == ["Succeeded"] * 3
    # The operator's requests (its own client's and kopf's) came from the container; the test
    # writes only runs, job statuses and pods. kopf sent the mounted kubeconfig's token.
    agents = {agent for _verb, _plural, _sub, _name, agent in cluster.kmock.tally}
    assert {"operator", "kopf"} <= agents
    sent = {str(r.headers.get("Authorization")) for r in getattr(cluster.kmock, "_requests", [])}
    assert f"Bearer {token_of(cluster)}" in sent
    assert container.running() and healthy(url)
