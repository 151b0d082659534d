"""The Helm chart rendered with the Helm v4 Go SDK (helm_python, no helm binary): its objects,
and the RBAC rules it grants the operator's ServiceAccount (what the test API server enforces
and what docs/install.md lists)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "rlhf-operator"
RELEASE = "rlhf-operator"
NAMESPACE = "rlhf-system"


def render(values: dict[str, Any]) -> dict[str, str]:
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
        manifests: dict[str, str] = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        return manifests


def objects(manifests: dict[str, str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path, text in manifests.items():
        if path.endswith(".yaml"):
            found.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return found


@functools.cache
def _rendered(values_json: str) -> tuple[dict[str, Any], ...]:
    return tuple(objects(render(json.loads(values_json))))


def rendered(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chart's objects for `values` (rendered once per value set and process)."""
    return list(_rendered(json.dumps(values or {}, sort_keys=True)))


@dataclass(frozen=True)
class Rule:
    """One PolicyRule of a Role or ClusterRole, where it applies (None: every namespace)."""

    namespace: str | None
    api_groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    resource_names: frozenset[str]

    def allows(self, verb: str, group: str, resource: str, namespace: str | None, name: str | None) -> bool:
        # RBAC's RuleAllows: every field matches (or is "*"); resourceNames, when set, only
        # ever match a request that names an object (never a create, list or watch).
        if self.namespace is not None and namespace != self.namespace:
            return False
        if not ({"*", verb} & self.verbs and {"*", group} & self.api_groups):
            return False
        if not {"*", resource} & self.resources:
            return False
        return not self.resource_names or (name is not None and name in self.resource_names)


def is_hook(obj: dict[str, Any]) -> bool:
    return "helm.sh/hook" in (obj["metadata"].get("annotations") or {})


def service_account(objs: list[dict[str, Any]], hook: bool = False) -> tuple[str, str]:
    """The operator's ServiceAccount (hook=True: the uninstall hook's)."""
    (sa,) = [o for o in objs if o["kind"] == "ServiceAccount" and is_hook(o) == hook]
    return str(sa["metadata"].get("namespace") or NAMESPACE), str(sa["metadata"]["name"])


def rules_for(objs: list[dict[str, Any]], namespace: str, name: str) -> list[Rule]:
    """Every rule bound to ServiceAccount namespace/name by the (Cluster)RoleBindings in `objs`."""
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objs}
    found: list[Rule] = []
    for binding in objs:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        subjects = binding.get("subjects") or []
        if not any(
            s.get("kind") == "ServiceAccount" and (s.get("namespace"), s["name"]) == (namespace, name) for s in subjects
        ):
            continue
        ref = binding["roleRef"]
        where = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
        role = roles.get((ref["kind"], where if ref["kind"] == "Role" else None, ref["name"]))
        if role is None:
            continue  # a binding to a role that does not exist grants nothing
        for rule in role.get("rules") or []:
            found.append(
                Rule(
                    namespace=where,
                    api_groups=frozenset(rule.get("apiGroups") or []),
                    resources=frozenset(rule.get("resources") or []),
                    verbs=frozenset(rule.get("verbs") or []),
                    resource_names=frozenset(rule.get("resourceNames") or []),
                )
            )
    return found


def operator_rules(values: dict[str, Any] | None = None, hook: bool = False) -> tuple[str, list[Rule]]:
    """The operator's user name (system:serviceaccount:NS:NAME) and every rule the chart binds to
    it (hook=True: the uninstall hook's, which runs `finalizer_sweep`)."""
    objs = rendered(values)
    namespace, name = service_account(objs, hook)
    return f"system:serviceaccount:{namespace}:{name}", rules_for(objs, namespace, name)
