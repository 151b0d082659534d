"""The Argo CD health check (gitops/argocd-health-rlhfrun.lua), run for real in Lua 5.1
(Argo CD's gopher-lua dialect) through lupa, against RLHFRun status samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from .gitops_samples import SAMPLES, failed, run, running, succeeded, unhealthy

lua51 = pytest.importorskip("lupa.lua51")

ROOT = Path(__file__).resolve().parents[2]
HEALTH_LUA = ROOT / "gitops" / "argocd-health-rlhfrun.lua"
ARGOCD_CM = ROOT / "examples" / "gitops" / "argocd" / "argocd-cm-health.yaml"
CM_KEY = "resource.customizations.health.rlhf.dev_RLHFRun"
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def _to_lua(runtime: Any, value: Any) -> Any:
    """JSON-shaped Python -> Lua tables (lists become 1-based arrays), as Argo CD passes `obj`."""
    if isinstance(value, dict):
        return runtime.table_from({k: _to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([_to_lua(runtime, v) for v in value])
    return value


def health(obj: dict[str, Any], script: str | None = None) -> tuple[str, str]:
    runtime = lua51.LuaRuntime(register_eval=False, register_builtins=False)
    env = runtime.globals()
    # Argo CD's sandbox has no file, process or module access: the script must not need them.
    for name in ("os", "io", "require", "dofile", "loadfile", "package", "debug"):
        env[name] = None
    env.obj = _to_lua(runtime, obj)
    result = runtime.execute(script if script is not None else HEALTH_LUA.read_text())
    assert result is not None, "the script must return a table"
    status, message = result["status"], result["message"]
    assert status in ARGO_STATUSES
    assert isinstance(message, str) and message
    return status, message


ARGO_CASES = [(name, obj, argo) for name, obj, argo, _ in SAMPLES]


@pytest.mark.parametrize(("name", "obj", "expected"), ARGO_CASES, ids=[c[0] for c in ARGO_CASES])
def test_health_of_samples(name: str, obj: dict[str, Any], expected: str) -> None:
    status, _ = health(obj)
    assert status == expected, name


def test_messages_explain_the_state() -> None:
    assert health(run(failed()))[1] == "stage dpo failed after 3 attempts: CUDA out of memory"
    assert "stage dpo running" in health(run(running()))[1]
    assert "generation 4" in health(run(succeeded(), generation=4))[1]
    assert health(run(succeeded()))[1] == "all stages finished"
    assert health(run(unhealthy()))[1] == "stage dpo at step 120: guard tripped: kl=0.93 (> maxKL 0.5)"


def test_conditions_alone_decide_without_a_phase() -> None:
    ready = run(succeeded())
    del ready["status"]["phase"]
    assert health(ready)[0] == "Healthy"
    stalled = run(failed())
    del stalled["status"]["phase"]
    assert health(stalled)[0] == "Degraded"


def test_stale_condition_is_ignored() -> None:
    # Top-level observedGeneration is current, but the Ready=True condition is about an older
    # generation and the phase says Running: not Healthy.
    obj = run(running(), generation=4)
    obj["status"]["observedGeneration"] = 4
    obj["status"]["conditions"] = [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Succeeded",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
            "observedGeneration": 3,
        },
    ]
    assert health(obj)[0] == "Progressing"


def test_argocd_cm_example_carries_the_same_script() -> None:
    configmap = yaml.safe_load(ARGOCD_CM.read_text())
    assert configmap["metadata"] == {
        "name": "argocd-cm",
        "namespace": "argocd",
        "labels": {"app.kubernetes.io/name": "argocd-cm", "app.kubernetes.io/part-of": "argocd"},
    }
    assert configmap["data"][CM_KEY] == HEALTH_LUA.read_text()
    docs = (ROOT / "docs" / "gitops.md").read_text()
    assert CM_KEY in docs and "gitops/argocd-health-rlhfrun.lua" in docs


def test_a_broken_script_would_be_caught() -> None:
    # The harness itself must be able to fail: a script that always says Healthy disagrees.
    always_healthy = 'return {status = "Healthy", message = "ok"}'
    assert health(run(failed()), always_healthy)[0] != dict((n, a) for n, _, a, _ in SAMPLES)["failed"]
