"""The Flux healthCheckExprs for RLHFRun (examples/gitops/flux/kustomizations.yaml, repeated in
docs/gitops.md), evaluated with a CEL interpreter (PyPI common-expression-language) under the
kustomize-controller's rules:

1. status.observedGeneration present and different from metadata.generation: InProgress,
   no expression is evaluated;
2. inProgress, failed, current are evaluated in that order (each only if given); the first true
   one decides; an evaluation error is an error (Flux keeps waiting and reports it);
3. none true: InProgress.
The object's top-level fields (metadata, spec, status) are the expression's variables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from .gitops_samples import SAMPLES, failed, run, running, succeeded

cel = pytest.importorskip("cel")

ROOT = Path(__file__).resolve().parents[2]
FLUX_KUSTOMIZATIONS = ROOT / "examples" / "gitops" / "flux" / "kustomizations.yaml"


def rlhfrun_exprs() -> dict[str, str]:
    for doc in yaml.safe_load_all(FLUX_KUSTOMIZATIONS.read_text()):
        for entry in doc.get("spec", {}).get("healthCheckExprs", []):
            if (entry["apiVersion"], entry["kind"]) == ("rlhf.dev/v1alpha1", "RLHFRun"):
                return {k: v for k, v in entry.items() if k in ("inProgress", "failed", "current")}
    raise AssertionError("no RLHFRun healthCheckExprs in the Flux example")


def flux_status(obj: dict[str, Any], exprs: dict[str, str]) -> str:
    status = obj.get("status", {})
    if "observedGeneration" in status and status["observedGeneration"] != obj["metadata"].get("generation"):
        return "InProgress"
    variables = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    for key, outcome in (("inProgress", "InProgress"), ("failed", "Failed"), ("current", "Current")):
        if key not in exprs:
            continue
        try:
            result = cel.evaluate(exprs[key], variables)
        except Exception:  # the interpreter raises RuntimeError/ValueError for missing fields
            return "Error"
        assert isinstance(result, bool), f"{key} must evaluate to a bool, got {result!r}"
        if result:
            return outcome
    return "InProgress"


FLUX_CASES = [(name, obj, flux) for name, obj, _, flux in SAMPLES]


@pytest.mark.parametrize(("name", "obj", "expected"), FLUX_CASES, ids=[c[0] for c in FLUX_CASES])
def test_flux_status_of_samples(name: str, obj: dict[str, Any], expected: str) -> None:
    got = flux_status(obj, rlhfrun_exprs())
    if name == "no status yet":
        # No `status` variable at all: the expressions cannot be evaluated until the operator
        # writes its first status; Flux keeps waiting, which is what InProgress means here.
        assert got in ("InProgress", "Error")
    else:
        assert got == expected, name


def test_exprs_are_guarded_against_missing_fields() -> None:
    # A status without conditions or phase (the operator's very first write) must not error.
    obj = run(running())
    obj["status"] = {"observedGeneration": 3}
    assert flux_status(obj, rlhfrun_exprs()) == "InProgress"


def test_stale_ready_condition_is_not_current() -> None:
    obj = run(succeeded())
    del obj["status"]["phase"]
    obj["status"]["conditions"][0]["observedGeneration"] = 2
    assert flux_status(obj, rlhfrun_exprs()) == "InProgress"


def test_docs_show_the_same_expressions() -> None:
    docs = " ".join((ROOT / "docs" / "gitops.md").read_text().split())
    for expr in rlhfrun_exprs().values():
        assert " ".join(expr.split()) in docs


def test_harness_can_fail() -> None:
    wrong = {"current": "has(status.phase)"}
    assert flux_status(run(failed()), wrong) == "Current"
    assert flux_status(run(failed()), rlhfrun_exprs()) == "Failed"
