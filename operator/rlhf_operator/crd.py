"""Generate the RLHFRun CustomResourceDefinition from the pydantic models.

Pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3.0 schema:
no $ref, no anyOf-with-null, no `const`, boolean exclusive bounds, and
x-kubernetes-preserve-unknown-fields instead of free-form additionalProperties.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from rlhf_api.reward_sources import source_cel_rules
from rlhf_api.rules import spec_cel_rules
from rlhf_api.spec import API_VERSION, GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION, RLHFRunSpec
from rlhf_api.stages import STAGE_KINDS
from rlhf_api.status import RLHFRunStatus

CRD_PATH = "crds/rlhf.dev_rlhfruns.yaml"
_DROP = {"title", "default", "$defs", "discriminator"}

# Rules attached to one property of spec: immutable once the object exists.
_FIELD_RULES: dict[str, list[dict[str, str]]] = {
    "model": [{"rule": "self == oldSelf", "message": "model is immutable once the run exists"}],
    "pipeline": [{"rule": "self == oldSelf", "message": "pipeline is immutable once the run exists"}],
    "storage": [
        {"rule": "self == oldSelf", "message": "storage is immutable once the run exists"},
    ],
}


# Rules attached to a definition wherever it is used.
_DEF_RULES: dict[str, list[dict[str, str]]] = {
    "RewardSource": source_cel_rules(),
    # each kind's own rules (e.g. PPOTrainingConfig's batch sizes), next to its validators
    **{name: rules for kind in STAGE_KINDS.values() for name, rules in kind.schema_rules.items()},
}


def _structural(node: Any, defs: dict[str, Any], def_name: str | None = None) -> Any:
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].split("/")[-1]
        resolved = _structural(defs[name], defs, name)
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return {**resolved, **_structural(extra, defs)}
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"unions are not structural: {node['anyOf']}")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        return {**_structural(options[0], defs), **_structural(rest, defs)}

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {name: _structural(prop, defs) for name, prop in value.items()}
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "additionalProperties":
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif value is not False:
                out[key] = _structural(value, defs)
        else:
            out[key] = _structural(value, defs)
    if node.get("default") is not None and "description" in out:
        out["description"] = f"{out['description'].rstrip()} Default: {json.dumps(node['default'])}."
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if def_name in _DEF_RULES:
        out["x-kubernetes-validations"] = _DEF_RULES[def_name]
    return out


def _object_schema(model: type[RLHFRunSpec] | type[RLHFRunStatus]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema: dict[str, Any] = _structural(raw, raw.get("$defs", {}))
    return schema


def spec_schema() -> dict[str, Any]:
    schema = _object_schema(RLHFRunSpec)
    for field, rules in _FIELD_RULES.items():
        schema["properties"][field]["x-kubernetes-validations"] = rules
    schema["x-kubernetes-validations"] = spec_cel_rules()
    schema["description"] = "Desired state of an RLHF run: the base model, the stages and where they run."
    return schema


def status_schema() -> dict[str, Any]:
    schema = _object_schema(RLHFRunStatus)
    schema["description"] = "Observed state, written by the operator (kstatus conditions)."
    return schema


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "annotations": {"rlhf.dev/generated-by": "rlhf crd (from rlhf_operator.spec)"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": ["ml", "rlhf"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Stage", "type": "string", "jsonPath": ".status.currentStage"},
                        # The current stage's progress, so `kubectl get rlhfrun -w` moves (the operator
                        # copies them up: a JSONPath cannot pick the current stage from the list).
                        {"name": "Progress", "type": "string", "jsonPath": ".status.stageProgress"},
                        {"name": "ETA", "type": "string", "jsonPath": ".status.eta"},
                        {"name": "Stages", "type": "string", "jsonPath": ".status.progress", "priority": 1},
                        {
                            "name": "Ready",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                        },
                        {"name": "Model", "type": "string", "jsonPath": ".spec.model.name", "priority": 1},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": f"{KIND} ({API_VERSION}): one RLHF training run, stage by stage.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string", "description": "API version of this object."},
                                "kind": {"type": "string", "description": "Kind of this object."},
                                "metadata": {"type": "object", "description": "Standard object metadata."},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    return yaml.safe_dump(crd(), sort_keys=False, width=100)
