"""What a real API server enforces and kmock does not, one rule per function, each naming the
Kubernetes behaviour it copies. The Emulator (emulator.py) calls each in one place of its
request handling, before anything is stored; docs/architecture.md lists what is and is not here.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonpatch
from kmock import action
from kmock._internal import rendering
from kmock._internal.k8s import KubernetesError

from tests.support.chart import Rule

# --- authentication ---------------------------------------------------------------------------

ADMIN = "kubernetes-admin"  # in system:masters: every verb on everything (the test's own requests)
ADMIN_TOKEN = "admin-token-for-the-tests"
OPERATOR_TOKEN = "operator-service-account-token"
SWEEP_TOKEN = "uninstall-hook-service-account-token"


def authenticate(request: rendering.Request, tokens: Mapping[str, str]) -> str:
    """The user of a bearer token (the token authenticator: `Authorization: Bearer <token>`, the
    scheme case-insensitive); 401 for a missing or unknown token. A cluster that keeps anonymous
    auth on answers a request with no token 403 (system:anonymous) instead: refused either way."""
    scheme, _, token = str(request.headers.get("Authorization", "")).partition(" ")
    user = tokens.get(token.strip()) if scheme.lower() == "bearer" else None
    if user is None:
        raise KubernetesError(status=401, reason="Unauthorized", message="Unauthorized")
    return user


# --- authorization (RBAC) ---------------------------------------------------------------------


def verb_of(request: rendering.Request) -> str:
    """The RBAC verb of a resource request (the API server's RequestInfo)."""
    method = request.method.value.upper()
    if method == "GET":
        if request.action == action.WATCH or str(request.params.get("watch", "")).lower() in ("true", "1"):
            return "watch"
        return "get" if request.name else "list"
    if method == "DELETE":
        return "delete" if request.name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


def authorize(request: rendering.Request, user: str, grants: Mapping[str, list[Rule]]) -> None:
    """RBAC: a request is allowed only by a rule bound to its user (403 otherwise). The admin is
    in system:masters; every authenticated user may read discovery (system:discovery)."""
    if user == ADMIN or request.resource is None or request.resource.plural is None:
        return  # the admin; discovery (/api, /apis/GROUP/VERSION): system:discovery
    group = request.resource.group or ""
    resource = str(request.resource.plural) + (f"/{request.subresource}" if request.subresource else "")
    verb = verb_of(request)
    if any(rule.allows(verb, group, resource, request.namespace, request.name) for rule in grants.get(user, [])):
        return
    where = f' in the namespace "{request.namespace}"' if request.namespace else " at the cluster scope"
    subject = f'{resource} "{request.name}"' if request.name else resource
    message = f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource}" in API group "{group}"{where}'
    raise KubernetesError(status=403, reason="Forbidden", message=message)


# --- names and labels (apimachinery's validation) ---------------------------------------------

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL = re.compile(rf"^{_LABEL}$")
DNS1123_SUBDOMAIN = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_QUALIFIED = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
# Kinds whose names are DNS-1123 labels (Namespace; Service is DNS-1035); every other kind used
# here (Pod, ConfigMap, PVC, Event, NetworkPolicy, Lease, custom resources) is a subdomain.
LABEL_NAMED = {"namespaces"}


def _invalid(kind: str, name: Any, path: str, value: Any, why: str) -> KubernetesError:
    message = f'{kind} "{name}" is invalid: {path}: Invalid value: {json.dumps(value)}: {why}'
    return KubernetesError(status=422, reason="Invalid", message=message)


_ALNUM_ENDS = "and must start and end with an alphanumeric character"
LABEL_NAME = f"a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', {_ALNUM_ENDS}"
SUBDOMAIN_NAME = (
    f"a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', {_ALNUM_ENDS}"
)
QUALIFIED = f"must consist of alphanumeric characters, '-', '_' or '.', {_ALNUM_ENDS}"


def name_problem(plural: str, name: str) -> str | None:
    if plural in LABEL_NAMED:
        if len(name) > 63 or not DNS1123_LABEL.match(name):
            return f"{LABEL_NAME} (at most 63 characters)"
        return None
    if len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
        return f"{SUBDOMAIN_NAME} (at most 253 characters)"
    return None


def _qualified_name_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
        return "prefix part must be a DNS-1123 subdomain"
    if not name or len(name) > 63 or not _QUALIFIED.match(name):
        return f"name part {QUALIFIED} (at most 63 characters)"
    return None


def check_metadata(plural: str, body: Mapping[str, Any]) -> None:
    """ValidateObjectMeta: the name per kind, label keys (qualified names) and label values (at
    most 63 characters of [A-Za-z0-9-_.], alphanumeric at both ends, or empty), annotation keys."""
    meta = body.get("metadata") or {}
    kind = str(body.get("kind") or plural)
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise KubernetesError(status=422, reason="Invalid", message=f"{kind} is invalid: metadata.name: Required value")
    problem = name_problem(plural, name)
    if problem:
        raise _invalid(kind, name, "metadata.name", name, problem)
    for key, value in (meta.get("labels") or {}).items():
        problem = _qualified_name_problem(str(key))
        if problem:
            raise _invalid(kind, name, "metadata.labels", key, problem)
        if not isinstance(value, str) or (value and (len(value) > 63 or not _QUALIFIED.match(value))):
            why = f"a valid label must be an empty string or {QUALIFIED.removeprefix('must ')} (at most 63 characters)"
            raise _invalid(kind, name, f"metadata.labels[{key}]", value, why)
    for key in meta.get("annotations") or {}:
        problem = _qualified_name_problem(str(key))
        if problem:
            raise _invalid(kind, name, "metadata.annotations", key, problem)


# --- the result of a write, computed before it is stored --------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (a null removes the key)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def patched(current: Mapping[str, Any], request: rendering.Request) -> dict[str, Any]:
    """What the object would be after this PATCH (the JSON-patch `test` failure is checked elsewhere)."""
    if isinstance(request.data, list):
        try:
            return dict(jsonpatch.apply_patch(copy.deepcopy(dict(current)), request.data))
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException):
            return copy.deepcopy(dict(current))
    return dict(merge_patch(current, request.data))


# --- the CRD's structural schema and CEL rules (apiextensions-apiserver) ----------------------

INT64 = (-(2**63), 2**63 - 1)


@functools.cache
def _program(rule: str) -> Any:
    """A CEL rule compiled once (None: the library cannot compile it)."""
    import cel

    try:
        return cel.compile(rule)
    except Exception:  # a syntax or extension this library lacks: not evaluated
        return None


@functools.lru_cache(maxsize=4096)
def _cel(rule: str, value_json: str, old_json: str | None) -> bool | None:
    """A CEL rule's verdict, None where the CEL library cannot evaluate it (skipped)."""
    program = _program(rule)
    if program is None:
        return None
    context: dict[str, Any] = {"self": json.loads(value_json)}
    if old_json is not None:
        context["oldSelf"] = json.loads(old_json)
    try:
        return bool(program.execute(context))
    except Exception:  # an extension function this library lacks: not evaluated
        return None


_MISSING = object()
# Every CEL rule met that the library could not evaluate (so not enforced), over the process.
SKIPPED_RULES: set[str] = set()


@dataclass
class SchemaCheck:
    """Validation of a custom resource against its version's openAPIV3Schema, as the API server
    does before storing a create, an update or a status write (422 with every error)."""

    errors: list[str] = field(default_factory=list)
    skipped_rules: set[str] = field(default_factory=set)

    def run(self, schema: Mapping[str, Any], value: Any, old: Any = _MISSING, path: str = "") -> list[str]:
        self._walk(schema, value, old, path)
        return self.errors

    def _error(self, path: str, what: str) -> None:
        self.errors.append(f"{path or '<root>'}: {what}")

    def _walk(self, schema: Mapping[str, Any], value: Any, old: Any, path: str) -> None:
        if value is None:
            # A null in a field that is not nullable is pruned before validation (since 1.20).
            return
        if not self._type_ok(schema, value, path):
            return
        if "enum" in schema and value not in schema["enum"]:
            allowed = ", ".join(json.dumps(v) for v in schema["enum"])
            self._error(path, f"Unsupported value: {json.dumps(value)}: supported values: {allowed}")
        if isinstance(value, str):
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                self._error(path, f"Too long: may not be more than {schema['maxLength']} bytes")
            if "minLength" in schema and len(value) < schema["minLength"]:
                self._error(path, f"Invalid value: should be at least {schema['minLength']} chars long")
            if "pattern" in schema and not re.search(schema["pattern"], value):
                self._error(path, f"Invalid value: {json.dumps(value)}: should match '{schema['pattern']}'")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self._bounds(schema, value, path)
        if isinstance(value, dict):
            self._object(schema, value, old if isinstance(old, dict) else _MISSING, path)
        if isinstance(value, list):
            if "maxItems" in schema and len(value) > schema["maxItems"]:
                self._error(path, f"Too many: {len(value)}: must have at most {schema['maxItems']} items")
            if "minItems" in schema and len(value) < schema["minItems"]:
                self._error(path, f"Invalid value: should have at least {schema['minItems']} items")
            items = schema.get("items")
            if isinstance(items, dict):
                for index, item in enumerate(value):
                    self._walk(items, item, _MISSING, f"{path}[{index}]")
        self._rules(schema, value, old, path)

    def _type_ok(self, schema: Mapping[str, Any], value: Any, path: str) -> bool:
        if schema.get("x-kubernetes-int-or-string"):
            ok = isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
            if not ok:
                self._error(path, f"Invalid value: {json.dumps(value)}: must be an integer or a string")
            return ok
        wanted = schema.get("type")
        if wanted is None:
            return True
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = {
            "object": isinstance(value, dict),
            "array": isinstance(value, list),
            "string": isinstance(value, str),
            "boolean": isinstance(value, bool),
            "number": is_number,
            # go-openapi accepts an integral float as an integer; a number beyond int64 does not
            # decode as one (the CRD's `integer` is int64).
            "integer": is_number and float(value).is_integer() and INT64[0] <= value <= INT64[1],
        }.get(str(wanted), True)
        if not ok:
            self._error(path, f"Invalid value: {json.dumps(value)[:80]}: must be of type {wanted}")
        return ok

    def _bounds(self, schema: Mapping[str, Any], value: float, path: str) -> None:
        if "maximum" in schema:
            limit = schema["maximum"]
            if value > limit or (schema.get("exclusiveMaximum") and value == limit):
                self._error(path, f"Invalid value: {value}: should be less than or equal to {limit}")
        if "minimum" in schema:
            limit = schema["minimum"]
            if value < limit or (schema.get("exclusiveMinimum") and value == limit):
                self._error(path, f"Invalid value: {value}: should be greater than or equal to {limit}")

    def _object(self, schema: Mapping[str, Any], value: dict[str, Any], old: Any, path: str) -> None:
        properties = schema.get("properties") or {}
        for key in schema.get("required") or []:
            if value.get(key) is None:
                self._error(f"{path}.{key}" if path else key, "Required value")
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            self._error(path, f"Too many: {len(value)}: must have at most {schema['maxProperties']} items")
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            child = properties.get(key)
            if child is None and isinstance(additional, dict):
                child = additional
            if child is None:
                continue  # unknown fields are pruned, not refused (not emulated: kept as sent)
            before = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
            self._walk(child, item, before, f"{path}.{key}" if path else key)

    def _rules(self, schema: Mapping[str, Any], value: Any, old: Any, path: str) -> None:
        for rule in schema.get("x-kubernetes-validations") or []:
            expression = str(rule["rule"])
            transition = "oldSelf" in expression
            if transition and old is _MISSING:
                continue  # a transition rule is not evaluated on create (no old value)
            verdict = _cel(
                expression,
                json.dumps(value, sort_keys=True),
                json.dumps(old, sort_keys=True) if transition else None,
            )
            if verdict is None:
                self.skipped_rules.add(expression)
                SKIPPED_RULES.add(expression)
            elif not verdict:
                self._error(path, f"Invalid value: {rule.get('message') or 'failed rule: ' + expression}")


def check_schema(kind: str, schema: Mapping[str, Any], obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> None:
    """422, before storing, when the object breaks its CRD's schema (create, update, status)."""
    errors = SchemaCheck().run(schema, dict(obj), _MISSING if old is None else dict(old))
    if errors:
        name = (obj.get("metadata") or {}).get("name")
        message = f'{kind} "{name}" is invalid: ' + "; ".join(errors[:20])
        raise KubernetesError(status=422, reason="Invalid", message=message)


# --- label and field selectors (apimachinery labels.Parse, fields.ParseSelector) ---------------


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if self.operator in ("=", "in"):
            return present and value in self.values
        return not present or value not in self.values  # "!=", "notin"


def _split_top(text: str) -> Iterator[str]:
    depth, start = 0, 0
    for index, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            yield text[start:index]
            start = index + 1
    yield text[start:]


_SET = re.compile(r"^\s*(\S+)\s+(in|notin)\s*\(([^)]*)\)\s*$")


def parse_label_selector(text: str) -> list[Requirement]:
    """labels.Parse: `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`; 400 otherwise."""
    found: list[Requirement] = []
    for part in _split_top(text or ""):
        part = part.strip()
        if not part:
            continue
        matched = _SET.match(part)
        if matched:
            values = frozenset(v.strip() for v in matched[3].split(",") if v.strip())
            found.append(Requirement(matched[1], matched[2], values))
        elif part.startswith("!"):
            found.append(Requirement(part[1:].strip(), "!"))
        elif "!=" in part:
            key, value = part.split("!=", 1)
            found.append(Requirement(key.strip(), "!=", frozenset([value.strip()])))
        elif "=" in part:
            key, value = part.replace("==", "=", 1).split("=", 1)
            found.append(Requirement(key.strip(), "=", frozenset([value.strip()])))
        else:
            found.append(Requirement(part, "exists"))
    for requirement in found:
        if _qualified_name_problem(requirement.key):
            message = f"unable to parse requirement: invalid label key {requirement.key!r}"
            raise KubernetesError(status=400, reason="BadRequest", message=message)
    return found


# The fields each kind's field selector accepts (besides metadata.name and metadata.namespace);
# a custom resource accepts only those two (no selectableFields in these CRDs).
FIELDS: dict[str, dict[str, str]] = {
    "pods": {
        "spec.nodeName": "spec.nodeName",
        "spec.restartPolicy": "spec.restartPolicy",
        "spec.schedulerName": "spec.schedulerName",
        "spec.serviceAccountName": "spec.serviceAccountName",
        "status.phase": "status.phase",
        "status.podIP": "status.podIP",
        "status.nominatedNodeName": "status.nominatedNodeName",
    },
    "events": {
        "involvedObject.kind": "involvedObject.kind",
        "involvedObject.namespace": "involvedObject.namespace",
        "involvedObject.name": "involvedObject.name",
        "involvedObject.uid": "involvedObject.uid",
        "involvedObject.apiVersion": "involvedObject.apiVersion",
        "involvedObject.resourceVersion": "involvedObject.resourceVersion",
        "involvedObject.fieldPath": "involvedObject.fieldPath",
        "reason": "reason",
        "reportingComponent": "reportingComponent",
        "source": "source.component",
        "type": "type",
    },
    "namespaces": {"status.phase": "status.phase"},
}


def parse_field_selector(plural: str, text: str) -> list[tuple[str, str, str]]:
    """(path in the object, "=" or "!=", value); 400 for a field this kind does not index."""
    supported = {"metadata.name": "metadata.name", "metadata.namespace": "metadata.namespace", **FIELDS.get(plural, {})}
    found: list[tuple[str, str, str]] = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        operator = "!=" if "!=" in part else "="
        key, value = part.replace("==", "=", 1).split(operator, 1)
        key = key.strip()
        if key not in supported:
            message = f'"{key}" is not a known field selector: only "{", ".join(sorted(supported))}"'
            raise KubernetesError(status=400, reason="BadRequest", message=message)
        found.append((supported[key], operator, value.strip()))
    return found


def _field(obj: Mapping[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, bool):
        return "true" if node else "false"
    return "" if node is None else str(node)


@dataclass(frozen=True)
class Selector:
    labels: tuple[Requirement, ...] = ()
    fields: tuple[tuple[str, str, str], ...] = ()

    @classmethod
    def of(cls, request: rendering.Request) -> Selector:
        plural = str(request.resource.plural) if request.resource is not None else ""
        return cls(
            tuple(parse_label_selector(str(request.params.get("labelSelector", "")))),
            tuple(parse_field_selector(plural, str(request.params.get("fieldSelector", "")))),
        )

    def __bool__(self) -> bool:
        return bool(self.labels or self.fields)

    def matches(self, obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if not all(r.matches(labels) for r in self.labels):
            return False
        return all((_field(obj, path) == value) == (op == "=") for path, op, value in self.fields)
