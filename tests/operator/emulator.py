"""kmock's KubernetesEmulator plus what the real kopf operator needs from an API server, and
what a real API server enforces (enforcement.py, on by default; docs/architecture.md's table):
bearer-token authentication (401), the Helm chart's RBAC for the operator's ServiceAccount (403),
the RLHFRun CRD's structural schema and CEL rules on create, update and status writes (422),
DNS-1123 names and label syntax (422), label and field selectors on lists and watches, and
lists that say their `kind` and `apiVersion`.

Added (DESIGN.md, "Operator tests against kmock"): metadata stamping on create (uid,
resourceVersion, creationTimestamp, generation, namespace, generateName), 201 on create, a
resourceVersion bump on every write (and generation on spec writes), 409 on a stale
resourceVersion in a patch, 422 when a JSON-patch `test` fails, a bounded request history (the
base class re-scans all of it on every request), and a test-side garbage collector, because
kmock has none. Like a real API server it answers 400 to a body with NaN/Infinity, and its
`admission` checks refuse a write before it is stored (kmock's reactions answer after storing):
422 for a quantity apimachinery would not parse or a claim of no storage, and whatever a test
adds (`quota_refusal`: a ResourceQuota's 403).
"""

from __future__ import annotations

import copy
import datetime
import functools
import itertools
import json
import re
import uuid
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import yaml
from kmock import KubernetesEmulator, RawHandler, action
from kmock._internal import dsl, rendering
from kmock._internal.k8s import KubernetesError, KubernetesObjectNotFoundError
from rlhf_operator.crd import crd

from tests.support.chart import Rule, operator_rules

from . import enforcement
from .enforcement import ADMIN, ADMIN_TOKEN, OPERATOR_TOKEN, SWEEP_TOKEN, Selector

CORE = ["v1/pods", "v1/persistentvolumeclaims", "v1/configmaps", "v1/events", "v1/namespaces"]
PYTORCHJOBS = "kubeflow.org/v1/pytorchjobs"
TRAINJOBS = "trainer.kubeflow.org/v1alpha1/trainjobs"
RLHFRUNS = "rlhf.dev/v1alpha1/rlhfruns"
VERBS = {"create", "delete", "get", "list", "patch", "update", "watch"}
# Each rule of enforcement.py, by the name a test may list in `lenient` to turn it off.
RULES = frozenset({"authentication", "authorization", "schema", "names", "selectors"})


UPSTREAM_CRDS = Path(__file__).parent / "upstream_crds"


@functools.cache
def _schemas() -> dict[str, tuple[str, dict[str, Any]]]:
    """resource -> (kind, openAPIV3Schema): the RLHFRun CRD (crd()) and the upstream job CRDs."""
    found = {RLHFRUNS: ("RLHFRun", crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])}
    for resource, file in (
        (PYTORCHJOBS, "kubeflow.org_pytorchjobs.yaml"),
        (TRAINJOBS, "trainer.kubeflow.org_trainjobs.yaml"),
    ):
        document = yaml.safe_load((UPSTREAM_CRDS / file).read_text())
        version = resource.split("/")[1]
        (served,) = [v for v in document["spec"]["versions"] if v["name"] == version]
        found[resource] = (document["spec"]["names"]["kind"], served["schema"]["openAPIV3Schema"])
    return found


def _chart_tokens_and_grants() -> tuple[dict[str, str], dict[str, list[Rule]]]:
    """Tokens of the admin, the operator's ServiceAccount and the uninstall hook's, and the
    rules the Helm chart (default values) binds to each ServiceAccount."""
    operator_user, operator_grants = operator_rules()
    sweep_user, sweep_grants = operator_rules(hook=True)
    tokens = {ADMIN_TOKEN: ADMIN, OPERATOR_TOKEN: operator_user, SWEEP_TOKEN: sweep_user}
    return tokens, {operator_user: operator_grants, sweep_user: sweep_grants}


def _sees(view: dsl.View, request: rendering.Request) -> bool:
    """`request in view` without re-scanning the whole request history for plain filters."""
    if isinstance(view, dsl.Filter):
        return bool(view.criteria(request)) and _sees(view._source, request)
    if isinstance(view, dsl.Priority):
        return _sees(view._source, request)
    if isinstance(view, dsl.Root):
        return True
    return request in view  # slices, groups, exclusions: the history matters, scan it


class _FastMatching(RawHandler):
    """RawHandler._handle with O(reactions) matching instead of O(reactions x history).

    kmock checks `request in reaction_view` for every reaction, which iterates every request
    ever recorded: a GET costs ~8 ms after 250 requests (DESIGN.md). Same order and semantics.
    """

    __slots__ = ()  # a plain (non-attrs) layer between kmock's slotted classes
    _order_key: tuple[int, ...]
    _order: list[Any]

    def _ordered_payloads(self) -> list[Any]:
        key = tuple(id(p) for p in self._payloads)
        if key != self._order_key:  # reactions were added or replaced since last time
            width = max((len(p.priorities) for p in self._payloads), default=0)
            self._order = sorted(
                self._payloads,
                key=lambda p: tuple(-x for x in p.priorities) + (0,) * (width - len(p.priorities)),
            )
            self._order_key = key
        return self._order

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        for payload in self._ordered_payloads():
            if not payload._disabled.is_set() and _sees(payload._source, request):
                try:
                    return await payload(request)
                except rendering.ReactionMismatchError:
                    payload._disabled.set()
                except NotImplementedError:
                    pass
        raise NotImplementedError("no reaction matches the request")


def _no_constant(name: str) -> Any:
    raise ValueError(f"invalid character {name!r} looking for beginning of value")


def _refuse_non_finite(request: rendering.Request) -> None:
    """A real API server's JSON decoder refuses NaN and Infinity (400); kmock's accepts them."""
    if not request.text or request.method.value.upper() not in ("POST", "PUT", "PATCH"):
        return
    try:
        json.loads(request.text, parse_constant=_no_constant)
    except ValueError as error:
        message = f"the body of the request was in an unknown format: {error}"
        raise KubernetesError(status=400, reason="BadRequest", message=message) from None


# apimachinery's resource.ParseQuantity grammar (the project's own copy is what is under test).
_QUANTITY = re.compile(
    r"^[+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


def _quantities(kind: str, body: Any) -> list[tuple[str, str]]:
    """(field path, value) of every resource quantity in a PVC or a job's pod templates."""
    found: list[tuple[str, str]] = []
    if not isinstance(body, dict):
        return found
    spec = body.get("spec") or {}
    if kind == "PersistentVolumeClaim":
        for key, value in ((spec.get("resources") or {}).get("requests") or {}).items():
            found.append((f"spec.resources.requests[{key}]", str(value)))
        return found

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("requests", "limits") and isinstance(value, dict) and path.endswith("resources"):
                    found.extend((f"{path}.{key}[{k}]", str(v)) for k, v in value.items())
                else:
                    walk(value, f"{path}.{key}" if path else key)
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{path}[{index}]")

    walk(spec, "spec")
    return found


def _invalid_quantities(request: rendering.Request) -> KubernetesError | None:
    """422 for a quantity that does not parse, or a claim that asks for no storage."""
    body = request.data
    if not isinstance(body, dict) or request.action != action.CREATE:
        return None
    kind = str(body.get("kind") or "")
    name = (body.get("metadata") or {}).get("name")
    for path, value in _quantities(kind, body):
        if not _QUANTITY.match(value):
            message = f'{kind} "{name}" is invalid: {path}: Invalid value: "{value}": quantities must match the '
            message += "regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
            return KubernetesError(status=422, reason="Invalid", message=message)
        number = re.match(r"^[+-]?([0-9.]*)", value)
        if kind == "PersistentVolumeClaim" and (
            value.startswith("-") or not re.search("[1-9]", number[1] if number else "")
        ):
            message = f'{kind} "{name}" is invalid: {path}: Invalid value: "{value}": must be greater than zero'
            return KubernetesError(status=422, reason="Invalid", message=message)
    return None


def quota_refusal(plural: str, quota: str = "team-quota") -> Any:
    """An admission check: creates of `plural` exceed a ResourceQuota (403, as the quota admission)."""

    def check(request: rendering.Request) -> KubernetesError | None:
        if request.action != action.CREATE or request.resource is None or request.resource.plural != plural:
            return None
        name = ((request.data or {}).get("metadata") or {}).get("name")
        message = f'{plural} "{name}" is forbidden: exceeded quota: {quota}, requested: count/{plural}=1, '
        message += f"used: count/{plural}=0, limited: count/{plural}=0"
        return KubernetesError(status=403, reason="Forbidden", message=message)

    return check


@attrs.define(kw_only=True)
class Emulator(KubernetesEmulator, _FastMatching):
    """KubernetesEmulator that behaves enough like an API server for kopf."""

    history_limit: int | None = None  # keep at most this many recorded requests
    _order_key: tuple[int, ...] = attrs.field(default=(), init=False)  # see _FastMatching
    _order: list[Any] = attrs.field(factory=list, init=False)
    _versions: Any = attrs.field(factory=lambda: itertools.count(1), init=False)
    # Every request, classified, even when the history is trimmed (for write accounting).
    # (verb, plural, subresource, name, agent): agent "operator" (ours), "kopf", or "test".
    tally: list[tuple[str, str, str, str, str]] = attrs.field(factory=list, init=False)
    record_tally: bool = True
    # Admission: each check may refuse a write *before* it is stored (a kmock reaction answers
    # after the store). Built in: quantities (422, as the API server's validation); tests add
    # others, e.g. a ResourceQuota's 403 (`quota_refusal`).
    admission: list[Any] = attrs.field(factory=lambda: [_invalid_quantities], init=False)
    # The rules of a real API server that a test turns off (none by default; see RULES).
    lenient: frozenset[str] = frozenset()
    tokens: dict[str, str] = attrs.field(factory=dict)
    grants: dict[str, list[Rule]] = attrs.field(factory=dict)
    # Every request refused before storing: (HTTP status, method, path, message).
    refusals: list[tuple[int, str, str, str]] = attrs.field(factory=list, init=False)
    # The requests refused by authentication or RBAC: a test fails on any it did not expect
    # (conftest), so a missing RBAC rule fails a test even where the operator tolerates a 403.
    denied: list[tuple[int, str, str, str]] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        unknown = set(self.lenient) - RULES
        assert not unknown, f"unknown rules {unknown}: {sorted(RULES)}"
        if not self.tokens:
            tokens, grants = _chart_tokens_and_grants()
            self.tokens.update(tokens)
            self.grants.update(grants or {})

    def enforces(self, rule: str) -> bool:
        return rule not in self.lenient

    def _next_version(self) -> str:
        return str(next(self._versions))

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if self.record_tally:
            plural = request.resource.plural if request.resource is not None else ""
            verb = str(request.action.value if request.action else request.method.value).lower()
            agent = str(request.headers.get("User-Agent", ""))
            who = "operator" if agent.startswith("rlhf-operator") else "kopf" if agent.startswith("kopf") else "test"
            self.tally.append((verb, str(plural), request.subresource or "", request.name or "", who))
        if self.history_limit is not None and len(self._requests) > self.history_limit:
            del self._requests[: len(self._requests) - self.history_limit // 2]
        try:
            if request.resource is not None or request.url.path.startswith(("/api", "/apis")):
                try:
                    user = ADMIN
                    if self.enforces("authentication"):
                        user = enforcement.authenticate(request, self.tokens)
                    if self.enforces("authorization"):
                        enforcement.authorize(request, user, self.grants)
                except KubernetesError as error:
                    self.denied.append((error.status, request.method.value, str(request.url), str(error.message)))
                    raise
            _refuse_non_finite(request)
            if request.resource is not None and request.action in (action.CREATE, action.UPDATE):
                for check in self.admission:
                    refusal = check(request)
                    if refusal is not None:
                        raise refusal
            if request.resource is not None and request.action == action.CREATE:
                self._stamp_create(request)
                self._validate(request, request.data, None)
            elif request.resource is not None and request.action == action.UPDATE and request.name:
                current = copy.deepcopy(self._current(request))
                self._stamp_update(request)
                if current is not None:
                    self._validate(request, enforcement.patched(current, request), current)
            listing = request.resource is not None and request.action in (action.LIST, action.WATCH)
            if listing and self.enforces("selectors"):
                Selector.of(request)  # 400 for a selector the API server cannot parse
        except KubernetesError as error:
            self.refusals.append((error.status, request.method.value, request.url.path, str(error.message)))
            return await self._render_error(error)
        return await super()._handle(request)

    def _validate(self, request: rendering.Request, obj: Any, old: dict[str, Any] | None) -> None:
        """Validation before storing: names and labels of every object; the CRD schema of an
        RLHFRun, a PyTorchJob (kubeflow/training-operator) and a TrainJob (kubeflow/trainer)."""
        if not isinstance(obj, dict) or request.resource is None:
            return
        plural = str(request.resource.plural)
        if self.enforces("names"):
            enforcement.check_metadata(plural, obj)
        if self.enforces("schema"):
            for resource, (kind, schema) in _schemas().items():
                if request.resource == self.resource(resource):
                    enforcement.check_schema(kind, schema, obj, old)

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        """A list says what it lists (`PodList`, `v1`) and holds only what the selectors select."""
        answer = await super()._serve_list(request)
        if isinstance(answer, dict) and request.resource is not None:
            if self.enforces("selectors"):
                selector = Selector.of(request)
                answer["items"] = [item for item in answer.get("items", []) if selector.matches(item)]
            group, version = request.resource.group, request.resource.version
            answer["apiVersion"] = f"{group}/{version}" if group else str(version)
            answer["kind"] = f"{self._kind(request)}List"
        return answer

    async def _serve_watch(self, request: rendering.Request) -> Any:
        """Only the selected objects; one that stops matching is DELETED for this watcher, one
        that starts matching ADDED (the watch cache's filtering)."""
        selector = Selector.of(request) if self.enforces("selectors") else Selector()
        selected: set[tuple[Any, Any]] = set()
        async for event in super()._serve_watch(request):
            if not selector or not isinstance(event, dict) or "object" not in event:
                yield event
                continue
            meta = event["object"].get("metadata") or {}
            key = (meta.get("namespace"), meta.get("name"))
            if event.get("type") != "DELETED" and selector.matches(event["object"]):
                kind = "MODIFIED" if key in selected else "ADDED"
                selected.add(key)
                yield {**event, "type": kind}
            elif key in selected:
                selected.discard(key)
                yield {**event, "type": "DELETED"}

    def _kind(self, request: rendering.Request) -> str:
        for resource in self._get_resources():
            if resource == request.resource:
                try:
                    kind = self._resources[resource].kind
                except KeyError:
                    break
                if kind:
                    return str(kind)
        return str(request.resource.plural if request.resource else "").capitalize()

    def _stamp_create(self, request: rendering.Request) -> None:
        body = request.data
        if not isinstance(body, dict):
            return
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if request.namespace and not meta.get("namespace"):
            meta["namespace"] = request.namespace
        meta["uid"] = str(uuid.uuid4())
        meta["resourceVersion"] = self._next_version()
        meta["creationTimestamp"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        meta["generation"] = 1

    def _current(self, request: rendering.Request) -> dict[str, Any] | None:
        key = (request.resource, request.namespace, request.name)
        if key not in self._objects or self._objects[key].deleted:
            return None
        return self._objects[key].raw

    def _stamp_update(self, request: rendering.Request) -> None:
        current = self._current(request)
        if current is None:
            return  # the base class answers 404
        meta = current.get("metadata") or {}
        version = self._next_version()
        touches_spec = request.subresource is None
        if isinstance(request.data, list):  # JSON patch
            try:
                jsonpatch.apply_patch(copy.deepcopy(current), request.data)
            except (jsonpatch.JsonPatchTestFailed, jsonpatch.JsonPatchConflict) as error:
                raise KubernetesError(status=422, reason="Invalid", message=str(error)) from None
            touches_spec = touches_spec and any(str(op.get("path", "")).startswith("/spec") for op in request.data)
            request.data.append({"op": "add", "path": "/metadata/resourceVersion", "value": version})
            if touches_spec:
                generation = int(meta.get("generation") or 1) + 1
                request.data.append({"op": "add", "path": "/metadata/generation", "value": generation})
        elif isinstance(request.data, dict):
            wanted = (request.data.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != meta.get("resourceVersion"):
                raise KubernetesError(status=409, reason="Conflict", message="the object has been modified")
            touches_spec = touches_spec and "spec" in request.data
            patch_meta = request.data.setdefault("metadata", {}) or {}
            request.data["metadata"] = patch_meta
            patch_meta["resourceVersion"] = version
            if touches_spec:
                patch_meta["generation"] = int(meta.get("generation") or 1) + 1

    # The base class finds an object by scanning all objects; a dict lookup does the same.
    def _stored(self, request: rendering.Request, namespace: str | None, name: str | None) -> Any:
        obj = self._objects._objects.get((request.resource, namespace, name))
        return obj

    async def _serve_create(self, request: rendering.Request) -> rendering.Payload:
        meta = (request.data or {}).get("metadata", {})
        obj = self._stored(request, request.namespace or meta.get("namespace"), request.name or meta.get("name"))
        return rendering.Response(status=201, payload=obj.raw)

    async def _serve_update(self, request: rendering.Request) -> rendering.Payload:
        obj = self._stored(request, request.namespace, request.name)
        return obj.last.raw if obj is not None else await super()._serve_update(request)

    async def _serve_fetch(self, request: rendering.Request) -> rendering.Payload:
        obj = self._stored(request, request.namespace, request.name)
        if obj is None or obj.deleted:
            raise KubernetesObjectNotFoundError()
        return obj.raw

    # --- test conveniences -------------------------------------------------------------------

    def register(self, *, trainjobs: bool = True) -> None:
        """Built-ins, RLHFRun (from crd()), PyTorchJob and optionally TrainJob."""
        self.resources.load_bundled()
        names = crd()["spec"]["names"]
        self.resources[RLHFRUNS] = {
            "kind": names["kind"],
            "singular": names["singular"],
            "namespaced": True,
            "verbs": VERBS,
            "shortnames": set(names.get("shortNames", [])),
            "subresources": {"status"},
        }
        self.resources[PYTORCHJOBS] = {
            "kind": "PyTorchJob",
            "singular": "pytorchjob",
            "namespaced": True,
            "verbs": VERBS,
            "subresources": {"status"},
        }
        if trainjobs:
            self.resources[TRAINJOBS] = {
                "kind": "TrainJob",
                "singular": "trainjob",
                "namespaced": True,
                "verbs": VERBS,
                "subresources": {"status"},
            }

    def live(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Current (not deleted) objects of a resource."""
        found = []
        wanted = self.resource(resource)
        for (res, ns, _name), obj in list(self.objects.items()):
            if res != wanted:
                continue
            if namespace is not None and ns != namespace:
                continue
            if not obj.deleted:
                found.append(obj.raw)
        return found

    def collect_garbage(self, owner_uid: str) -> list[str]:
        """What Kubernetes' garbage collector would do after the owner's deletion."""
        removed = []
        for _key, obj in list(self.objects.items()):
            if obj.deleted:
                continue
            refs = (obj.raw.get("metadata") or {}).get("ownerReferences") or []
            if any(ref.get("uid") == owner_uid for ref in refs):
                obj.delete()
                removed.append(f"{obj.last.raw.get('kind')}/{obj.last.raw['metadata']['name']}")
        return removed
