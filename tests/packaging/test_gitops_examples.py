"""examples/gitops: the runs are valid RLHFRuns, the chart values in the Argo CD Application and
the Flux HelmRelease pass the chart's schema and render, and every path they name exists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

helm = pytest.importorskip("helm_python")
cel = pytest.importorskip("cel")

ROOT = Path(__file__).resolve().parents[2]
GITOPS = ROOT / "examples" / "gitops"
CHART = ROOT / "charts" / "rlhf-operator"
RUNS = sorted((GITOPS / "runs").glob("*.yaml"))


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load((CHART / "crds" / "rlhf.dev_rlhfruns.yaml").read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


@pytest.mark.parametrize("path", [p for p in RUNS if p.name != "kustomization.yaml"], ids=lambda p: p.name)
def test_runs_are_valid_rlhfruns(path: Path) -> None:
    validation = pytest.importorskip("rlhf_api.validation")
    (document,) = docs(path)
    jsonschema.Draft4Validator(crd_schema()).validate(document)
    validation.parse_run(document)
    for rule in crd_schema()["properties"]["spec"]["x-kubernetes-validations"]:
        assert cel.evaluate(rule["rule"], {"self": document["spec"]}) is True, rule["message"]


def test_kustomizations_list_existing_files() -> None:
    for kustomization in GITOPS.rglob("kustomization.yaml"):
        (doc,) = docs(kustomization)
        assert doc["kind"] == "Kustomization"
        for resource in doc["resources"]:
            assert (kustomization.parent / resource).is_file(), f"{kustomization}: {resource}"


def _render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
        rendered = chart.render(values, name="rlhf-operator", namespace="rlhf-system", is_install=True)
    return [d for path, text in rendered.items() if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]


def test_argocd_applications() -> None:
    (operator_app,) = docs(GITOPS / "argocd" / "application-operator.yaml")
    (runs_app,) = docs(GITOPS / "argocd" / "application-runs.yaml")
    for app in (operator_app, runs_app):
        assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
        assert app["spec"]["destination"]["server"] == "https://kubernetes.default.svc"
    with helm.Chart.load(str(CHART)) as chart:
        meta = chart.metadata
    source = operator_app["spec"]["source"]
    assert (source["chart"], source["targetRevision"]) == (meta["name"], meta["version"])
    objs = _render(source["helm"]["valuesObject"])
    roles = [o for o in objs if o["kind"] == "Role" and not o["metadata"]["name"].endswith("-leader-election")]
    # The operator's Role, and the uninstall hook's (a pre-delete hook, only while it runs).
    assert [o["metadata"]["namespace"] for o in roles] == ["ml-team-a", "ml-team-a"]
    assert sum("helm.sh/hook" in (o["metadata"].get("annotations") or {}) for o in roles) == 1
    assert any(o["kind"] == "ServiceMonitor" for o in objs)
    # The runs Application points at the runs directory, in the namespace the operator watches.
    assert (ROOT / runs_app["spec"]["source"]["path"]) == GITOPS / "runs"
    for run_path in RUNS:
        for doc in docs(run_path):
            if doc["kind"] == "RLHFRun":
                assert doc["metadata"]["namespace"] == runs_app["spec"]["destination"]["namespace"]
                assert doc["metadata"]["namespace"] in source["helm"]["valuesObject"]["watch"]["namespaces"]
    assert "SkipDryRunOnMissingResource=true" in runs_app["spec"]["syncPolicy"]["syncOptions"]


def test_flux_objects() -> None:
    release = next(d for d in docs(GITOPS / "flux" / "operator" / "helmrelease.yaml") if d["kind"] == "HelmRelease")
    repository = next(d for d in docs(GITOPS / "flux" / "operator" / "helmrepository.yaml"))
    with helm.Chart.load(str(CHART)) as chart:
        meta = chart.metadata
    chart_spec = release["spec"]["chart"]["spec"]
    assert (chart_spec["chart"], chart_spec["version"]) == (meta["name"], meta["version"])
    assert chart_spec["sourceRef"] == {"kind": "HelmRepository", "name": repository["metadata"]["name"]}
    # Flux can upgrade the CRD that plain Helm leaves alone.
    assert release["spec"]["install"]["crds"] == release["spec"]["upgrade"]["crds"] == "CreateReplace"
    _render(release["spec"]["values"])

    kustomizations = {
        d["metadata"]["name"]: d for d in docs(GITOPS / "flux" / "kustomizations.yaml") if d["kind"] == "Kustomization"
    }
    assert kustomizations["rlhf-runs"]["spec"]["dependsOn"] == [{"name": "rlhf-operator"}]
    for kustomization in kustomizations.values():
        path = ROOT / kustomization["spec"]["path"]
        assert (path / "kustomization.yaml").is_file(), path
