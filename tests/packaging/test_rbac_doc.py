"""docs/install.md's RBAC table is what the chart grants (rendered with default values): the
operator's ServiceAccount and the uninstall hook's, each rule, verb, scope and resource name.
The operator tests enforce the same rendered rules (tests/operator/enforcement.py)."""

from __future__ import annotations

import re

import pytest

from tests.support.chart import ROOT, Rule, operator_rules

pytest.importorskip("helm_python")

DOC = ROOT / "docs" / "install.md"
Grant = tuple[str, str, str, str, str, str]  # identity, group, resource, verb, scope, resource name


def _doc_grants() -> set[Grant]:
    text = DOC.read_text()
    table = text.split("<!-- rbac-table")[1].split("<!-- end rbac-table -->")[0]
    grants: set[Grant] = set()
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[0] in ("identity", "---"):
            continue
        who, group, resource, verbs, where, _why = cells
        group = "" if group == "core" else group.strip("`")
        names = re.findall(r"only `([^`]+)`", where)
        scope = "cluster" if where == "cluster" else "release namespace"
        for verb in (v.strip() for v in verbs.split(",")):
            grants.add((who, group, resource.strip("`"), verb, scope, names[0] if names else ""))
    return grants


def _chart_grants(who: str, rules: list[Rule]) -> set[Grant]:
    grants: set[Grant] = set()
    for rule in rules:
        scope = "cluster" if rule.namespace is None else "release namespace"
        for group in rule.api_groups:
            for resource in rule.resources:
                for verb in rule.verbs:
                    for name in sorted(rule.resource_names) or [""]:
                        grants.add((who, group, resource, verb, scope, name))
    return grants


def test_the_install_docs_rbac_table_is_what_the_chart_grants() -> None:
    _, operator = operator_rules()
    _, hook = operator_rules(hook=True)
    chart = _chart_grants("operator", operator) | _chart_grants("uninstall hook", hook)
    documented = _doc_grants()
    assert documented, "no RBAC table found in docs/install.md"
    assert sorted(documented - chart) == [], "documented but not granted"
    assert sorted(chart - documented) == [], "granted but not documented"
