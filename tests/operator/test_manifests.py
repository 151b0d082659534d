"""Manifest builders: expected dicts, key properties per spec variant, and every generated
PyTorchJob/TrainJob validated against the upstream CRD schemas (strictly: a field the API
server would prune is an error here), core objects against the Kubernetes 1.37 schemas."""

from __future__ import annotations

import copy
import functools
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes_validate import utils as kv_utils
from referencing import Registry, Resource
from rlhf_api.naming import (
    ATTEMPT_LABEL,
    MANAGED_BY_LABEL,
    RUN_LABEL,
    RUN_NAME_ANNOTATION,
    STAGE_JOB_FINALIZER,
    STAGE_LABEL,
    labels,
)
from rlhf_api.spec import RLHFRun
from rlhf_api.trainer_job import TrainerJobConfig
from rlhf_operator.launchers import launcher_for
from rlhf_operator.manifests import pod as manifests
from rlhf_operator.manifests.configmap import build_stage_configmap
from rlhf_operator.manifests.meta import owner_reference
from rlhf_operator.manifests.pod import CONFIG_FILE, CONFIG_MOUNT
from rlhf_operator.manifests.pvc import build_pvc, claim_name
from rlhf_operator.plan import GPU_TAINT_TOLERATION
from rlhf_operator.render import (
    build_stage_job,
    render,
    stage_plans,
)
from rlhf_operator.settings import OperatorSettings

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.37.0"

# ---------------------------------------------------------------- upstream CRD schemas

_CRD_DIRS = [
    os.environ.get("RLHF_UPSTREAM_CRDS", ""),
    str(REPO / "tests" / "operator" / "upstream_crds"),
    str(REPO.parent / "shared" / "reference" / "crds"),
]
PYTORCHJOB_CRD = "kubeflow.org_pytorchjobs.yaml"
TRAINJOB_CRD = "trainer.kubeflow.org_trainjobs.yaml"


def _crd_path(filename: str) -> Path:
    for directory in _CRD_DIRS:
        if directory and (Path(directory) / filename).is_file():
            return Path(directory) / filename
    raise FileNotFoundError(f"upstream CRD {filename} not found in {[d for d in _CRD_DIRS if d]}")


def _strict(schema: Any) -> Any:
    """OpenAPI v3.0 structural schema -> JSON Schema draft 4 that also rejects unknown fields.

    The API server silently prunes unknown fields; treating them as errors here catches typos.
    int-or-string and nullable map to their JSON Schema forms; CEL rules are checked apart.
    """
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "x-kubernetes-validations":
            continue
        if key == "properties":
            out[key] = {name: _strict(prop) for name, prop in value.items()}
        else:
            out[key] = _strict(value)
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    open_ended = schema.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in schema
    if "properties" in schema and not open_ended:
        out["additionalProperties"] = False
    return out


def _list_map_keys(validator: Any, keys: list[str], instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "array"):
        return
    seen: set[tuple[Any, ...]] = set()
    for item in instance:
        key = tuple(item.get(k) for k in keys)
        if key in seen:
            yield jsonschema.ValidationError(f"duplicate entry for list-map keys {keys}: {key}")
        seen.add(key)


def _list_type(validator: Any, kind: str, instance: Any, schema: Any) -> Iterator[Any]:
    if kind == "set" and validator.is_type(instance, "array") and len(set(map(repr, instance))) != len(instance):
        yield jsonschema.ValidationError("duplicate entries in a list-type set")


_Validator = jsonschema.validators.extend(
    jsonschema.Draft4Validator,
    {"x-kubernetes-list-map-keys": _list_map_keys, "x-kubernetes-list-type": _list_type},
)

# Every CEL rule of the CRDs that applies on create (rules with oldSelf only apply to
# updates), as Python. A new upstream rule fails test_all_create_time_cel_rules_are_known.
_CEL: dict[str, Callable[[Any], bool]] = {
    "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')": lambda obj: bool(
        re.match(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", obj["metadata"]["name"])
    ),
    "size(self.metadata.name) <= 63": lambda obj: len(obj["metadata"]["name"]) <= 63,
    "self >= 1": lambda value: value >= 1,
    "self == '' || self.matches('^[A-Za-z][A-Za-z0-9+.-]*://.+$')": lambda value: bool(
        value == "" or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://.+$", value)
    ),
    "self in ['trainer.kubeflow.org/trainjob-controller', 'kueue.x-k8s.io/multikueue']": lambda value: (
        value in ["trainer.kubeflow.org/trainjob-controller", "kueue.x-k8s.io/multikueue"]
    ),
    "has(self.lastUpdatedTime)": lambda value: "lastUpdatedTime" in value,
}


def _cel_rules(schema: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """(instance path, rule) for every create-time rule; '*' in a path means each list item."""
    if not isinstance(schema, dict):
        return
    for rule in schema.get("x-kubernetes-validations", []):
        if "oldSelf" not in rule["rule"]:
            yield path, rule["rule"]
    for name, prop in schema.get("properties", {}).items():
        yield from _cel_rules(prop, (*path, name))
    if isinstance(schema.get("items"), dict):
        yield from _cel_rules(schema["items"], (*path, "*"))
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _cel_rules(schema["additionalProperties"], (*path, "**"))


def _at(instance: Any, path: tuple[str, ...]) -> Iterator[Any]:
    if not path:
        yield instance
        return
    head, rest = path[0], path[1:]
    if head == "*" and isinstance(instance, list):
        for item in instance:
            yield from _at(item, rest)
    elif head == "**" and isinstance(instance, dict):
        for item in instance.values():
            yield from _at(item, rest)
    elif isinstance(instance, dict) and head in instance:
        yield from _at(instance[head], rest)


@functools.cache
def _crd(filename: str) -> tuple[Any, list[tuple[tuple[str, ...], str]]]:
    with _crd_path(filename).open() as handle:
        document = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    version = document["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    validator = _Validator(_strict(schema))
    return validator, list(_cel_rules(schema))


# Kinds outside core/v1 that the operator creates: the schema file's group part.
_KIND_GROUPS = {"NetworkPolicy": "-networking"}


@functools.cache
def _core_validator(kind: str) -> Any:
    """kubernetes_validate's strict schema for `kind` (core/v1, or the group in _KIND_GROUPS),
    built once (its own validate() re-reads the schema files on every call)."""
    directory = f"kubernetes-json-schema/v{K8S_VERSION}-local-strict"
    schema = kv_utils.schema_contents(f"{directory}/{kind.lower()}{_KIND_GROUPS.get(kind, '')}-v1.json", K8S_VERSION)
    definitions = kv_utils.schema_contents(f"{directory}/_definitions.json", K8S_VERSION)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _check_key(key: str) -> None:
    """A label/annotation key: optional DNS-subdomain prefix, '/', a name of <= 63 characters."""
    prefix, _, name = key.rpartition("/")
    assert not prefix or (len(prefix) <= 253 and _DNS_SUBDOMAIN.match(prefix)), f"key prefix: {key!r}"
    assert len(name) <= 63 and _QUALIFIED_NAME.match(name), f"key name: {key!r}"


def _check_metadata(meta: dict[str, Any]) -> None:
    """What the API server checks in ObjectMeta beyond its JSON schema."""
    assert len(meta["name"]) <= 253 and _DNS_SUBDOMAIN.match(meta["name"]), meta["name"]
    for key, value in meta.get("labels", {}).items():
        _check_key(key)
        assert len(value) <= 63 and _LABEL_VALUE.match(value), f"label value: {value!r}"
    for key in meta.get("annotations", {}):
        _check_key(key)


def _validate_core(obj: dict[str, Any]) -> None:
    errors = list(_core_validator(obj["kind"]).iter_errors(obj))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])
    _check_metadata(obj["metadata"])


def validate_job(job: dict[str, Any]) -> None:
    """Schema + create-time CEL of the job's CRD, and object metadata and pod templates
    against the core schemas."""
    filename = TRAINJOB_CRD if job["kind"] == "TrainJob" else PYTORCHJOB_CRD
    validator, rules = _crd(filename)
    errors = sorted(validator.iter_errors(job), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])
    for path, rule in rules:
        for value in _at(job, path):
            assert _CEL[rule](value), f"CEL rule failed at {'/'.join(path)}: {rule}"
    # metadata is only `type: object` in CRDs: check it as ObjectMeta on a ConfigMap.
    _validate_core({"apiVersion": "v1", "kind": "ConfigMap", "metadata": job["metadata"]})
    if job["kind"] == "PyTorchJob":
        for replica in job["spec"]["pytorchReplicaSpecs"].values():
            template = replica["template"]
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", **template["metadata"]}}
            _validate_core({**pod, "spec": template["spec"]})


# ---------------------------------------------------------------- spec variants

BASE: dict[str, Any] = {
    "apiVersion": "rlhf.dev/v1alpha1",
    "kind": "RLHFRun",
    "metadata": {"name": "demo", "namespace": "team-a"},
    "spec": {
        "model": {"name": "builtin:tiny-llama"},
        "sft": {"dataset": {"source": "builtin:arithmetic"}},
        "reward": {"dataset": {"source": "builtin:arithmetic", "format": "preference"}},
        "ppo": {"dataset": {"source": "builtin:arithmetic"}},
    },
}
CUSTOM_TOLERATION = {"key": "dedicated", "operator": "Equal", "value": "rlhf", "effect": "NoSchedule"}
AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["z1"]}]}
            ]
        }
    }
}
OWNER_BODY = {
    "apiVersion": "rlhf.dev/v1alpha1",
    "kind": "RLHFRun",
    "metadata": {"name": "demo", "namespace": "team-a", "uid": "0b7e-uid"},
}

VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "gpu-multi-worker": {
        "placement": {
            "workers": 4,
            "gpusPerWorker": 8,
            "nodePool": {"accelerator": "nvidia-a100-80gb"},
            "resources": {"requests": {"cpu": "32", "memory": "400Gi"}, "limits": {"memory": "480Gi"}},
            "shmSize": "64Gi",
            "priorityClassName": "training-high",
            "imagePullPolicy": "Always",
        }
    },
    "stage-override": {
        "placement": {"gpusPerWorker": 1},
        "ppo": {
            "dataset": {"source": "builtin:arithmetic"},
            "placement": {"workers": 2, "gpusPerWorker": 4, "image": "registry.example/trainer:dev"},
        },
    },
    "tolerations-override": {
        "placement": {
            "nodePool": {
                "nodeSelector": {"pool": "rlhf"},
                "tolerations": [CUSTOM_TOLERATION],
                "affinity": AFFINITY,
            }
        }
    },
    "cpu-multi-worker": {"placement": {"workers": 3, "gpusPerWorker": 0}},
    "existing-claim": {"storage": {"existingClaim": "shared-models", "mountPath": "/models"}},
    "retention-delete": {"storage": {"retention": "Delete", "storageClassName": "fast-rwx", "size": "2Ti"}},
    "kueue": {"queueName": "team-a-queue"},
    "secrets": {
        "secrets": {
            "hfToken": {"name": "hf", "key": "token"},
            "wandbApiKey": {"name": "wandb", "key": "api-key"},
        },
        "wandbProject": "rlhf",
    },
    "skipped-sft": {"pipeline": ["reward", "ppo"], "sft": {"existingOutput": "/workspace/base-sft/merged"}},
    "dpo": {
        "pipeline": ["sft", "dpo"],
        "reward": None,
        "ppo": None,
        "dpo": {"dataset": {"source": "builtin:arithmetic", "format": "preference"}},
    },
    "ttl-suspend": {"ttlSecondsAfterFinished": 3600, "suspend": True},
    "trainjob-runtime": {"launcher": "trainjob", "runtimeRef": "torch-cuda-251"},
}


def make_run(variant: str = "defaults", launcher: str | None = None, **metadata: Any) -> RLHFRun:
    document = copy.deepcopy(BASE)
    for key, value in copy.deepcopy(VARIANTS[variant]).items():
        if value is None:
            document["spec"].pop(key, None)
        else:
            document["spec"][key] = value
    if launcher:
        document["spec"]["launcher"] = launcher
    document["metadata"].update(metadata)
    return RLHFRun.model_validate(document)


def jobs_of(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in ("PyTorchJob", "TrainJob")]


def stage(run: RLHFRun, name: str, settings: OperatorSettings | None = None) -> Any:
    return next(s for s in stage_plans(run, settings or OperatorSettings()) if s.name == name)


def pytorch_container(job: dict[str, Any], replica: str = "Master") -> dict[str, Any]:
    containers = job["spec"]["pytorchReplicaSpecs"][replica]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["pytorch"]
    return dict(containers[0])


def pod_spec(job: dict[str, Any], replica: str = "Master") -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["pytorchReplicaSpecs"][replica]["template"]["spec"]
    return spec


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# ---------------------------------------------------------------- schema validation

SETTINGS_VARIANTS = {
    "plain": OperatorSettings(),
    "defaults": OperatorSettings(
        trainer_image="registry.example/rlhf-trainer:1.0",
        trainer_image_pull_policy="IfNotPresent",
        default_node_selector={"node-pool": "training"},
        default_tolerations=[{"key": "team", "operator": "Exists", "effect": "NoSchedule"}],
    ),
}


@pytest.mark.parametrize(
    ("variant", "launcher"),
    [
        (variant, launcher)
        for variant in sorted(VARIANTS)
        for launcher in ("pytorchjob", "trainjob")
        if not (variant == "trainjob-runtime" and launcher == "pytorchjob")  # sets its own
    ],
)
@pytest.mark.parametrize("settings_name", sorted(SETTINGS_VARIANTS))
def test_every_generated_object_validates(variant: str, launcher: str, settings_name: str) -> None:
    settings = SETTINGS_VARIANTS[settings_name]
    run = make_run(variant, launcher)
    objects = render(run, settings)
    assert jobs_of(objects), "at least one stage job"
    for obj in objects:
        if obj["kind"] in ("PyTorchJob", "TrainJob"):
            assert obj["kind"] == ("TrainJob" if run.spec.launcher == "trainjob" else "PyTorchJob")
            validate_job(obj)
        else:
            _validate_core(obj)
    # Later attempts and owned objects validate too.
    owner = owner_reference(OWNER_BODY)
    for plan_stage in stage_plans(run, settings):
        if not plan_stage.skipped:
            validate_job(build_stage_job(run, plan_stage, 7, owner, settings, suspend=True))
            _validate_core(build_stage_configmap(run, plan_stage, owner))


def _example_runs() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted((REPO / "examples").rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and document.get("kind") == "RLHFRun":
                found.append((f"{path.relative_to(REPO)}:{document['metadata']['name']}", document))
    return found


@pytest.mark.parametrize(("where", "document"), _example_runs(), ids=[w for w, _ in _example_runs()])
def test_examples_render_and_validate(where: str, document: dict[str, Any]) -> None:
    run = RLHFRun.model_validate(document)
    objects = render(run, OperatorSettings(), namespace=run.metadata.namespace or "default")
    assert jobs_of(objects), where
    for obj in objects:
        if obj["kind"] in ("PyTorchJob", "TrainJob"):
            validate_job(obj)
        else:
            _validate_core(obj)


def test_long_run_name_validates() -> None:
    long_name = ("abcdefghij." * 30)[:252] + "z"
    for launcher in ("pytorchjob", "trainjob"):
        run = make_run("gpu-multi-worker", launcher, name=long_name)
        objects = render(run, OperatorSettings())
        for obj in objects:
            assert len(obj["metadata"]["name"]) <= 63
            assert obj["metadata"]["annotations"][RUN_NAME_ANNOTATION] == long_name
            assert len(obj["metadata"]["labels"][RUN_LABEL]) <= 63
            if obj["kind"] in ("PyTorchJob", "TrainJob"):
                assert len(obj["metadata"]["name"]) <= 52
                validate_job(obj)
            else:
                _validate_core(obj)
        names = [o["metadata"]["name"] for o in objects]
        assert len(set(names)) == len(names)


def test_strict_validation_catches_mistakes() -> None:
    """The validator must be able to fail: typos, wrong types, bad CEL, duplicate keys."""
    good = build_stage_job(make_run(), stage(make_run(), "sft"), 1, None, OperatorSettings(), False)
    validate_job(good)
    bad_cases: list[Callable[[dict[str, Any]], None]] = [
        lambda j: j["spec"].__setitem__("nprocPerNodes", "1"),
        lambda j: j["spec"].__setitem__("nprocPerNode", 1),
        lambda j: j["spec"]["runPolicy"].__setitem__("backoffLimit", "0"),
        lambda j: pod_spec(j)["containers"][0].__setitem__("volumeMount", []),
        lambda j: pod_spec(j)["containers"][0]["env"].append({"name": "HF_HOME", "value": "x"}),
        lambda j: pod_spec(j)["containers"][0].__setitem__("resources", {"limits": {"cpu": "two"}}),
        lambda j: j["metadata"].__setitem__("labels", {"bad label!": "x"}),
    ]
    for mutate in bad_cases:
        job = copy.deepcopy(good)
        mutate(job)
        with pytest.raises(AssertionError):
            validate_job(job)
    trainjob = build_stage_job(
        make_run(launcher="trainjob"), stage(make_run(launcher="trainjob"), "sft"), 1, None, OperatorSettings(), False
    )
    validate_job(trainjob)
    core_cases: list[tuple[dict[str, Any] | None, Callable[[dict[str, Any]], None]]] = [
        (build_pvc(make_run(), None), lambda p: p["spec"].__setitem__("accessMode", ["ReadWriteOnce"])),
        (build_pvc(make_run(), None), lambda p: p["metadata"].__setitem__("name", "Demo_Data")),
        (
            build_stage_configmap(make_run(), stage(make_run(), "sft"), None),
            lambda c: c["data"].__setitem__("n", 1),
        ),
    ]
    for obj, mutate in core_cases:
        assert obj is not None
        _validate_core(obj)
        broken = copy.deepcopy(obj)
        mutate(broken)
        with pytest.raises(AssertionError):
            _validate_core(broken)
    for mutate in [
        lambda j: j["spec"]["trainer"].__setitem__("numProcPerNode", 0),
        lambda j: j["metadata"].__setitem__("name", "1-starts-with-digit"),
        lambda j: j["spec"].__setitem__("podSpecOverrides", []),
    ]:
        job = copy.deepcopy(trainjob)
        mutate(job)
        with pytest.raises(AssertionError):
            validate_job(job)


def test_all_create_time_cel_rules_are_known() -> None:
    for filename in (PYTORCHJOB_CRD, TRAINJOB_CRD):
        _, rules = _crd(filename)
        unknown = {rule for _, rule in rules} - set(_CEL)
        assert not unknown, f"{filename}: new CEL rules to mirror in the test: {unknown}"


# ---------------------------------------------------------------- PyTorchJob


def test_quickstart_pytorchjob_expected() -> None:
    document = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    run = RLHFRun.model_validate(document)
    settings = OperatorSettings()
    job = build_stage_job(run, stage(run, "sft"), 1, None, settings, suspend=False)
    run_labels = {
        MANAGED_BY_LABEL: "rlhf-operator",
        RUN_LABEL: "quickstart",
        STAGE_LABEL: "sft",
        ATTEMPT_LABEL: "1",
    }
    assert job == {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {
            "name": "quickstart-sft-1",
            "labels": run_labels,
            "annotations": {RUN_NAME_ANNOTATION: "quickstart"},
            "finalizers": [STAGE_JOB_FINALIZER],
        },
        "spec": {
            "nprocPerNode": "1",
            "runPolicy": {"backoffLimit": 0, "cleanPodPolicy": "Running", "suspend": False},
            "pytorchReplicaSpecs": {
                "Master": {
                    "replicas": 1,
                    "restartPolicy": "Never",
                    "template": {
                        "metadata": {"labels": run_labels},
                        "spec": {
                            "containers": [
                                {
                                    "name": "pytorch",
                                    "image": settings.trainer_image,
                                    "command": ["rlhf-train", "sft", "--config", "/etc/rlhf/config.yaml"],
                                    "env": [
                                        {"name": "PYTHONUNBUFFERED", "value": "1"},
                                        {"name": "HF_HOME", "value": "/workspace/.hf"},
                                        {"name": "XDG_CACHE_HOME", "value": "/tmp/cache"},
                                        {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},
                                        {"name": "TORCHINDUCTOR_CACHE_DIR", "value": "/tmp/torchinductor"},
                                        {"name": "TRITON_CACHE_DIR", "value": "/tmp/triton"},
                                    ],
                                    "volumeMounts": [
                                        {"name": "data", "mountPath": "/workspace"},
                                        {"name": "config", "mountPath": "/etc/rlhf", "readOnly": True},
                                        {"name": "dshm", "mountPath": "/dev/shm"},
                                        {"name": "tmp", "mountPath": "/tmp"},
                                    ],
                                    "terminationMessagePolicy": "FallbackToLogsOnError",
                                    "securityContext": {
                                        "allowPrivilegeEscalation": False,
                                        "privileged": False,
                                        "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]},
                                    },
                                    "resources": {"requests": {"cpu": "2", "memory": "4Gi"}},
                                }
                            ],
                            "volumes": [
                                {"name": "data", "persistentVolumeClaim": {"claimName": "quickstart-data"}},
                                {"name": "config", "configMap": {"name": "quickstart-sft-config"}},
                                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
                                {"name": "tmp", "emptyDir": {}},
                            ],
                            "securityContext": {
                                "runAsNonRoot": True,
                                "runAsUser": 10001,
                                "runAsGroup": 10001,
                                "fsGroup": 10001,
                                "fsGroupChangePolicy": "OnRootMismatch",
                                "seccompProfile": {"type": "RuntimeDefault"},
                            },
                            "automountServiceAccountToken": False,
                            "terminationGracePeriodSeconds": 600,
                        },
                    },
                }
            },
        },
    }
    validate_job(job)


def test_gpu_multi_worker_with_accelerator_shorthand() -> None:
    run = make_run("gpu-multi-worker")
    job = build_stage_job(run, stage(run, "reward"), 2, None, OperatorSettings(), suspend=False)
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1
    assert replicas["Worker"]["replicas"] == 3
    assert job["spec"]["nprocPerNode"] == "8"
    for replica in ("Master", "Worker"):
        container = pytorch_container(job, replica)
        assert container["resources"] == {
            "requests": {"cpu": "32", "memory": "400Gi", "nvidia.com/gpu": "8"},
            "limits": {"memory": "480Gi", "nvidia.com/gpu": "8"},
        }
        assert container["command"] == [
            "torchrun",
            "--no-python",
            "rlhf-train",
            "reward",
            "--config",
            "/etc/rlhf/config.yaml",
        ]
        assert container["imagePullPolicy"] == "Always"
        pod = pod_spec(job, replica)
        assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
        assert pod["tolerations"] == [GPU_TAINT_TOLERATION]
        assert pod["priorityClassName"] == "training-high"
        assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}} in pod["volumes"]
    assert job["metadata"]["name"] == "demo-reward-2"
    assert job["metadata"]["labels"][ATTEMPT_LABEL] == "2"
    # Master and Worker templates are equal but not the same object.
    assert replicas["Master"]["template"] == replicas["Worker"]["template"]
    assert replicas["Master"]["template"] is not replicas["Worker"]["template"]


@pytest.mark.parametrize(
    ("workers", "gpus", "nproc", "torchrun"),
    [(1, 0, "1", False), (1, 1, "1", False), (1, 4, "4", True), (3, 0, "1", True), (2, 8, "8", True)],
)
def test_replicas_and_processes(workers: int, gpus: int, nproc: str, torchrun: bool) -> None:
    document = copy.deepcopy(BASE)
    document["spec"]["placement"] = {"workers": workers, "gpusPerWorker": gpus}
    run = RLHFRun.model_validate(document)
    job = build_stage_job(run, stage(run, "ppo"), 1, None, OperatorSettings(), suspend=False)
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) == ({"Master", "Worker"} if workers > 1 else {"Master"})
    if workers > 1:
        assert replicas["Worker"]["replicas"] == workers - 1
    assert job["spec"]["nprocPerNode"] == nproc
    command = pytorch_container(job)["command"]
    assert command[-4:] == ["rlhf-train", "ppo", "--config", "/etc/rlhf/config.yaml"]
    assert (command[:2] == ["torchrun", "--no-python"]) is torchrun
    resources = pytorch_container(job).get("resources", {})
    if gpus:
        assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == str(gpus)
        assert pod_spec(job)["tolerations"] == [GPU_TAINT_TOLERATION]
    else:
        assert "nvidia.com/gpu" not in resources.get("limits", {})
        assert "tolerations" not in pod_spec(job)


def test_stage_placement_overrides_run_placement() -> None:
    run = make_run("stage-override")
    sft = build_stage_job(run, stage(run, "sft"), 1, None, OperatorSettings(), suspend=False)
    ppo = build_stage_job(run, stage(run, "ppo"), 1, None, OperatorSettings(), suspend=False)
    assert set(sft["spec"]["pytorchReplicaSpecs"]) == {"Master"}
    assert pytorch_container(sft)["image"] == OperatorSettings().trainer_image
    assert ppo["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1
    assert ppo["spec"]["nprocPerNode"] == "4"
    assert pytorch_container(ppo)["image"] == "registry.example/trainer:dev"


def test_tolerations_override_and_affinity() -> None:
    settings = SETTINGS_VARIANTS["defaults"]
    run = make_run("tolerations-override")
    job = build_stage_job(run, stage(run, "sft", settings), 1, None, settings, suspend=False)
    pod = pod_spec(job)
    # The stage's list replaces the default GPU toleration; operator-wide ones are added.
    assert pod["tolerations"] == [CUSTOM_TOLERATION, *settings.default_tolerations]
    assert GPU_TAINT_TOLERATION not in pod["tolerations"]
    # The stage's selector wins over the operator-wide default.
    assert pod["nodeSelector"] == {"pool": "rlhf"}
    assert pod["affinity"] == AFFINITY


def test_operator_defaults_apply_when_stage_sets_none() -> None:
    settings = SETTINGS_VARIANTS["defaults"]
    run = make_run()
    job = build_stage_job(run, stage(run, "sft", settings), 1, None, settings, suspend=False)
    pod = pod_spec(job)
    assert pod["nodeSelector"] == {"node-pool": "training"}
    assert pod["tolerations"] == [GPU_TAINT_TOLERATION, *settings.default_tolerations]
    container = pytorch_container(job)
    assert container["image"] == "registry.example/rlhf-trainer:1.0"
    assert container["imagePullPolicy"] == "IfNotPresent"
    # No duplicate when the default repeats the stage's toleration.
    same = OperatorSettings(default_tolerations=[GPU_TAINT_TOLERATION])
    job = build_stage_job(run, stage(run, "sft", same), 1, None, same, suspend=False)
    assert pod_spec(job)["tolerations"] == [GPU_TAINT_TOLERATION]


def test_run_policy_and_suspend() -> None:
    run = make_run("ttl-suspend")
    plan_stage = stage(run, "sft")
    for suspend in (True, False):
        job = build_stage_job(run, plan_stage, 1, None, OperatorSettings(), suspend=suspend)
        assert job["spec"]["runPolicy"] == {
            "backoffLimit": 0,
            "cleanPodPolicy": "Running",
            "suspend": suspend,
            "ttlSecondsAfterFinished": 3600,
        }
    # render uses the run's spec.suspend
    assert all(j["spec"]["runPolicy"]["suspend"] for j in jobs_of(render(run, OperatorSettings())))
    assert not any(j["spec"]["runPolicy"]["suspend"] for j in jobs_of(render(make_run(), OperatorSettings())))


@pytest.mark.parametrize("launcher", ["pytorchjob", "trainjob"])
def test_kueue_queue_label_and_created_suspended(launcher: str) -> None:
    run = make_run("kueue", launcher)
    job = build_stage_job(run, stage(run, "sft"), 1, None, OperatorSettings(), suspend=False)
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a-queue"
    suspended = job["spec"]["suspend"] if launcher == "trainjob" else job["spec"]["runPolicy"]["suspend"]
    assert suspended is True
    plain = make_run(launcher=launcher)
    job = build_stage_job(plain, stage(plain, "sft"), 1, None, OperatorSettings(), suspend=False)
    assert "kueue.x-k8s.io/queue-name" not in job["metadata"]["labels"]


def test_secrets_only_by_reference() -> None:
    run = make_run("secrets")
    job = build_stage_job(run, stage(run, "ppo"), 1, None, OperatorSettings(), suspend=False)
    env = pytorch_container(job)["env"]
    by_name = {e["name"]: e for e in env}
    assert by_name["HF_TOKEN"] == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
    assert by_name["WANDB_API_KEY"] == {
        "name": "WANDB_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "api-key"}},
    }
    assert by_name["WANDB_PROJECT"] == {"name": "WANDB_PROJECT", "value": "rlhf"}
    assert by_name["WANDB_DIR"] == {"name": "WANDB_DIR", "value": "/tmp"}, "not the cwd: the root is read-only"
    assert by_name["HF_HOME"] == {"name": "HF_HOME", "value": "/workspace/.hf"}
    assert len(by_name) == len(env)
    configmap = build_stage_configmap(run, stage(run, "ppo"), None)
    assert yaml.safe_load(configmap["data"][CONFIG_FILE])["reportTo"] == ["tensorboard", "wandb"]
    trainjob_run = make_run("secrets", "trainjob")
    trainjob = build_stage_job(trainjob_run, stage(trainjob_run, "ppo"), 1, None, OperatorSettings(), False)
    assert trainjob["spec"]["trainer"]["env"] == env


def test_labels_annotations_and_owner_on_job_and_pods() -> None:
    run = make_run("cpu-multi-worker")
    owner = owner_reference(OWNER_BODY)
    job = build_stage_job(run, stage(run, "ppo"), 3, owner, OperatorSettings(), suspend=False)
    expected = labels("demo", "ppo", 3)
    assert job["metadata"]["labels"] == expected
    assert job["metadata"]["namespace"] == "team-a"
    assert job["metadata"]["ownerReferences"] == [owner]
    for replica in ("Master", "Worker"):
        assert job["spec"]["pytorchReplicaSpecs"][replica]["template"]["metadata"]["labels"] == expected


def test_owner_reference() -> None:
    assert owner_reference(OWNER_BODY) == {
        "apiVersion": "rlhf.dev/v1alpha1",
        "kind": "RLHFRun",
        "name": "demo",
        "uid": "0b7e-uid",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert owner_reference({"metadata": {"name": "demo"}}) is None
    assert owner_reference({}) is None


def test_skipped_stage_is_not_built() -> None:
    run = make_run("skipped-sft")
    plans = stage_plans(run, OperatorSettings())
    sft = next(s for s in plans if s.name == "sft") if any(s.name == "sft" for s in plans) else None
    objects = render(run, OperatorSettings())
    stages_rendered = {o["metadata"]["labels"].get(STAGE_LABEL) for o in objects} - {None}
    assert stages_rendered == {"reward", "ppo"}
    assert [j["metadata"]["name"] for j in jobs_of(objects)] == ["demo-reward-1", "demo-ppo-1"]
    ppo_config = yaml.safe_load(
        next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "demo-ppo-config")["data"][
            CONFIG_FILE
        ]
    )
    assert ppo_config["model"]["name"] == "/workspace/base-sft/merged"
    if sft is not None:
        with pytest.raises(ValueError, match="sft: stage is skipped"):
            build_stage_job(run, sft, 1, None, OperatorSettings(), suspend=False)
        with pytest.raises(ValueError, match="sft: stage is skipped"):
            build_stage_configmap(run, sft, None)


def test_skipped_stage_inside_pipeline_raises() -> None:
    document = copy.deepcopy(BASE)
    document["spec"]["reward"]["existingOutput"] = "/workspace/rm"
    run = RLHFRun.model_validate(document)
    reward = stage(run, "reward")
    assert reward.skipped
    with pytest.raises(ValueError, match="reward: stage is skipped"):
        build_stage_job(run, reward, 1, None, OperatorSettings(), suspend=False)
    names = [o["metadata"]["name"] for o in render(run, OperatorSettings())]
    assert "demo-reward-1" not in names and "demo-reward-config" not in names
    assert "demo-ppo-1" in names


# ---------------------------------------------------------------- TrainJob


def test_trainjob_mapping() -> None:
    settings = SETTINGS_VARIANTS["defaults"]
    run = make_run("gpu-multi-worker", "trainjob")
    owner = owner_reference(OWNER_BODY)
    job = build_stage_job(run, stage(run, "sft", settings), 1, owner, settings, suspend=True)
    assert job["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
    assert job["kind"] == "TrainJob"
    assert job["metadata"]["ownerReferences"] == [owner]
    spec = job["spec"]
    assert spec["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
        "name": "torch-distributed",
    }
    assert spec["suspend"] is True
    trainer = spec["trainer"]
    assert trainer["numNodes"] == 4
    assert trainer["numProcPerNode"] == 8
    assert trainer["image"] == "registry.example/rlhf-trainer:1.0"
    assert trainer["command"] == [
        "torchrun",
        "--no-python",
        "rlhf-train",
        "sft",
        "--config",
        "/etc/rlhf/config.yaml",
    ]
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    (patch,) = spec["runtimePatches"]
    assert patch["manager"] == "rlhf.dev/rlhf-operator"
    (replicated,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert replicated["name"] == "node"
    pod = replicated["template"]["spec"]["template"]
    assert pod["metadata"]["labels"] == labels("demo", "sft", 1)
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert pod["spec"]["tolerations"] == [GPU_TAINT_TOLERATION, *settings.default_tolerations]
    (container,) = pod["spec"]["containers"]
    assert container["name"] == "node"
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/workspace", CONFIG_MOUNT, "/dev/shm", "/tmp"}
    assert {v["name"] for v in pod["spec"]["volumes"]} == {"data", "config", "dshm", "tmp"}
    validate_job(job)


def test_trainjob_runtime_ref_and_job_api() -> None:
    run = make_run("trainjob-runtime")
    job = build_stage_job(run, stage(run, "sft"), 1, None, OperatorSettings(), suspend=False)
    assert job["spec"]["runtimeRef"]["name"] == "torch-cuda-251"
    assert job["spec"]["suspend"] is False
    api = launcher_for(run).api
    assert (api.group, api.version, api.plural) == ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
    api = launcher_for(make_run()).api
    assert (api.group, api.version, api.plural) == ("kubeflow.org", "v1", "pytorchjobs")


# ---------------------------------------------------------------- PVC and ConfigMap


def test_pvc_default_and_retention() -> None:
    owner = owner_reference(OWNER_BODY)
    retained = build_pvc(make_run(), owner)
    assert retained == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": "demo-data",
            "namespace": "team-a",
            "labels": labels("demo"),
            "annotations": {RUN_NAME_ANNOTATION: "demo"},
        },
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "100Gi"}}},
    }
    deleted = build_pvc(make_run("retention-delete"), owner)
    assert deleted is not None
    assert deleted["metadata"]["ownerReferences"] == [owner]
    assert deleted["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "2Ti"}},
        "storageClassName": "fast-rwx",
    }
    # Without a uid (render) there is no owner, whatever the retention.
    rendered = build_pvc(make_run("retention-delete"), None)
    assert rendered is not None and "ownerReferences" not in rendered["metadata"]
    for pvc in (retained, deleted):
        _validate_core(pvc)


def test_existing_claim() -> None:
    run = make_run("existing-claim")
    assert build_pvc(run, owner_reference(OWNER_BODY)) is None
    assert claim_name(run) == "shared-models"
    assert claim_name(make_run()) == "demo-data"
    objects = render(run, OperatorSettings())
    assert "PersistentVolumeClaim" not in {o["kind"] for o in objects}
    for job in jobs_of(objects):
        pod = pod_spec(job)
        assert {"name": "data", "persistentVolumeClaim": {"claimName": "shared-models"}} in pod["volumes"]
        assert {"name": "data", "mountPath": "/models"} in pytorch_container(job)["volumeMounts"]
        assert env_of(pytorch_container(job))["HF_HOME"] == "/models/.hf"


@pytest.mark.parametrize("variant", ["defaults", "dpo", "existing-claim", "skipped-sft"])
def test_configmap_round_trips_to_trainer_config(variant: str) -> None:
    run = make_run(variant)
    root = f"{run.spec.storage.mount_path}/demo"
    owner = owner_reference(OWNER_BODY)
    built = 0
    for plan_stage in stage_plans(run, OperatorSettings()):
        if plan_stage.skipped:
            continue
        configmap = build_stage_configmap(run, plan_stage, owner)
        assert configmap["metadata"]["name"] == f"demo-{plan_stage.name}-config"
        assert configmap["metadata"]["labels"] == labels("demo", plan_stage.name)
        assert configmap["metadata"]["ownerReferences"] == [owner]
        assert list(configmap["data"]) == [CONFIG_FILE]
        config = TrainerJobConfig.model_validate(yaml.safe_load(configmap["data"][CONFIG_FILE]))
        assert config == plan_stage.config
        assert config.stage == plan_stage.name
        assert config.output_dir == f"{root}/{plan_stage.name}"
        assert config.work_dir == root
        if plan_stage.name in ("reward", "ppo", "dpo") and variant != "skipped-sft":
            assert config.model.name == f"{root}/sft/merged"
        if plan_stage.name == "ppo":
            assert config.reward_model is not None
            assert config.reward_model.name == f"{root}/reward/merged"
        # The job of the stage mounts exactly this ConfigMap at the config path.
        job = build_stage_job(run, plan_stage, 1, owner, OperatorSettings(), suspend=False)
        assert {"name": "config", "configMap": {"name": configmap["metadata"]["name"]}} in pod_spec(job)["volumes"]
        built += 1
    assert built >= 1


def test_configmap_keeps_unicode_and_multiline_template() -> None:
    document = copy.deepcopy(BASE)
    document["spec"]["sft"]["dataset"]["template"] = "Frage: {question}\n\nAntwort – {answer}"
    run = RLHFRun.model_validate(document)
    configmap = build_stage_configmap(run, stage(run, "sft"), None)
    config = TrainerJobConfig.model_validate(yaml.safe_load(configmap["data"][CONFIG_FILE]))
    assert config.section.dataset.template == "Frage: {question}\n\nAntwort – {answer}"


# ---------------------------------------------------------------- render


def test_render_order_and_contents() -> None:
    objects = render(make_run(), OperatorSettings())
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("PersistentVolumeClaim", "demo-data"),
        ("NetworkPolicy", "demo-pods"),
        ("ConfigMap", "demo-sft-config"),
        ("PyTorchJob", "demo-sft-1"),
        ("ConfigMap", "demo-reward-config"),
        ("PyTorchJob", "demo-reward-1"),
        ("ConfigMap", "demo-ppo-config"),
        ("PyTorchJob", "demo-ppo-1"),
    ]
    for obj in objects:
        assert "ownerReferences" not in obj["metadata"]
        assert obj["metadata"]["namespace"] == "team-a"
    dpo = render(make_run("dpo", "trainjob"), OperatorSettings())
    assert [(o["kind"], o["metadata"]["name"]) for o in dpo][-1] == ("TrainJob", "demo-dpo-1")


def test_render_namespace() -> None:
    document = copy.deepcopy(BASE)
    del document["metadata"]["namespace"]
    run = RLHFRun.model_validate(document)
    assert all("namespace" not in o["metadata"] for o in render(run, OperatorSettings()))
    assert all(o["metadata"]["namespace"] == "ml" for o in render(run, OperatorSettings(), namespace="ml"))
    assert run.metadata.namespace is None, "render must not modify its input"
    assert all(o["metadata"]["namespace"] == "team-a" for o in render(make_run(), OperatorSettings(), "team-a"))
    with pytest.raises(ValueError, match=r"metadata\.namespace"):
        render(make_run(), OperatorSettings(), namespace="other")


def test_render_is_deterministic_and_pure() -> None:
    run = make_run("gpu-multi-worker")
    before = run.model_dump()
    assert render(run, OperatorSettings()) == render(run, OperatorSettings())
    assert run.model_dump() == before


def test_no_shell_and_no_spec_values_in_command() -> None:
    document = copy.deepcopy(BASE)
    document["spec"]["sft"]["dataset"]["source"] = "x; rm -rf / #"
    run = RLHFRun.model_validate(document)
    for launcher_run in (run, run.model_copy(update={"spec": run.spec.model_copy(update={"launcher": "trainjob"})})):
        for job in jobs_of(render(launcher_run, OperatorSettings())):
            if job["kind"] == "PyTorchJob":
                command = pytorch_container(job)["command"]
                assert "args" not in pytorch_container(job)
            else:
                command = job["spec"]["trainer"]["command"]
            assert command[0] in ("rlhf-train", "torchrun")
            assert not any("rm -rf" in part or part in ("sh", "bash", "-c") for part in command)


def test_public_constants() -> None:
    assert manifests.CONFIG_MOUNT == "/etc/rlhf"
    assert manifests.CONFIG_FILE == "config.yaml"
    assert manifests.CONFIG_PATH == "/etc/rlhf/config.yaml"


@pytest.mark.parametrize("launcher", ["pytorchjob", "trainjob"])
def test_every_stage_job_is_held_by_the_operators_finalizer_and_gets_its_grace_period(launcher: str) -> None:
    run = make_run(launcher=launcher)
    run = run.model_copy(
        update={
            "spec": run.spec.model_copy(
                update={"placement": run.spec.placement.model_copy(update={"termination_grace_period_seconds": 1200})}
            )
        }
    )
    job = build_stage_job(run, stage(run, "sft"), 1, None, OperatorSettings(), suspend=False)
    assert job["metadata"]["finalizers"] == [STAGE_JOB_FINALIZER]
    if launcher == "pytorchjob":
        pod = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    else:
        patch = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
        pod = patch["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 1200
