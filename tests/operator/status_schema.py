"""The RLHFRun status as a real API server checks it: the CRD's status schema, with what the
schema leaves implicit made explicit (an `integer` is int64; a JSON number is finite).

Pure, so a test holds whatever the emulator enforces: what the operator writes must pass here.
"""

from __future__ import annotations

import copy
import json
import math
from functools import cache
from typing import Any

import jsonschema
from rlhf_api.bounds import INT64_MAX, INT64_MIN
from rlhf_operator.crd import crd


def _int64(node: Any) -> Any:
    if isinstance(node, list):
        return [_int64(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _int64(v) for k, v in node.items()}
    if out.get("type") == "integer":
        out["minimum"] = max(out.get("minimum", INT64_MIN), INT64_MIN)
        out["maximum"] = min(out.get("maximum", INT64_MAX), INT64_MAX)
    return out


@cache
def _validator() -> jsonschema.Draft7Validator:
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    return jsonschema.Draft7Validator(_int64(copy.deepcopy(schema)))


def status_errors(status: Any) -> list[str]:
    """Why a real API server would refuse this status ([]: it would take it)."""
    try:
        json.dumps(status, allow_nan=False)
    except ValueError as error:
        return [f"not JSON a server reads: {error}"]
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator().iter_errors(status)]
    return errors + _non_finite(status, "")


def _non_finite(value: Any, path: str) -> list[str]:
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{path}: {value}"]
    if isinstance(value, dict):
        return [e for k, v in value.items() for e in _non_finite(v, f"{path}/{k}")]
    if isinstance(value, list):
        return [e for i, v in enumerate(value) for e in _non_finite(v, f"{path}/{i}")]
    return []
