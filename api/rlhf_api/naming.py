"""Deterministic names and labels for everything the operator creates for a run.

A restarted operator finds its children again by these names (create-if-absent, 409 means
"already there"), so every function here is a pure function of its arguments.

Run names are DNS-1123 *subdomains* (up to 253 characters, dots allowed); child names must be
DNS-1035 *labels* (63 characters, no dots, starting with a letter: TrainJob and the Services
the training operator creates per replica require that). Names that do not fit as they are get
truncated and a short hash of the full input appended, so different inputs stay distinct.
"""

from __future__ import annotations

import hashlib
import re

RUN_LABEL = "rlhf.dev/run"
STAGE_LABEL = "rlhf.dev/stage"
ATTEMPT_LABEL = "rlhf.dev/attempt"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "rlhf-operator"
# Label values are limited to 63 characters, run names are not: the full name is kept here.
RUN_NAME_ANNOTATION = "rlhf.dev/run-name"
# On every stage job: the job (and with it the Master pod holding the stage's result) cannot
# disappear (TTL, a user's delete, garbage collection) before the operator has recorded the
# stage's outcome in the run's status; the operator then removes it.
STAGE_JOB_FINALIZER = "rlhf.dev/stage-outcome"

MAX_NAME_LENGTH = 63
# The training operator names each replica's Pod and Service `<job>-worker-<index>`, and
# Trainer v2's JobSet names its Jobs `<job>-node-<index>`; Service names are DNS-1035 labels
# (<= 63), so the job name leaves room for "-worker-511" (spec.placement.workers <= 512).
MAX_JOB_NAME_LENGTH = MAX_NAME_LENGTH - len("-worker-511")

_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_HASH_LENGTH = 8


def _digest(*texts: str) -> str:
    # NUL cannot occur in names, so ("ab", "c") and ("a", "bc") hash differently.
    return hashlib.sha256("\0".join(texts).encode()).hexdigest()[:_HASH_LENGTH]


def _sanitize(text: str) -> str:
    """Lower-case, with every character a DNS label cannot hold (dots, mostly) turned into '-'."""
    return re.sub(r"[^a-z0-9-]", "-", text.lower())


def is_dns1035_label(name: str, max_length: int = MAX_NAME_LENGTH) -> bool:
    return len(name) <= max_length and _DNS1035_LABEL.match(name) is not None


def child_name(run_name: str, *parts: str, max_length: int = MAX_NAME_LENGTH) -> str:
    """`<run>-<part>-<part>...` as a DNS-1035 label of at most `max_length` characters.

    Used unchanged when it already is one; otherwise the run-name part is shortened (the parts,
    e.g. stage and attempt, stay readable) and a hash of the original inputs is inserted:
    `<run-prefix>-<hash8>-<parts>`. Deterministic; distinct inputs give distinct names.
    """
    if not run_name:
        raise ValueError("run name: must not be empty")
    clean_parts = [_sanitize(part) for part in parts if part]
    plain = "-".join([run_name, *parts])
    if is_dns1035_label(plain, max_length):
        return plain
    suffix = "-".join([_digest(run_name, *parts), *clean_parts])
    room = max_length - len(suffix) - 1
    if room < 1:
        raise ValueError(f"name parts {parts!r}: too long for a {max_length}-character name")
    head = _sanitize(run_name).strip("-")
    if not head or not head[0].isalpha():
        head = "r" + head  # DNS-1035: must start with a letter
    head = head[:room].rstrip("-") or "r"
    return f"{head}-{suffix}"


def pvc_name(run_name: str) -> str:
    """The run's volume (when the spec gives no existingClaim)."""
    return child_name(run_name, "data")


def configmap_name(run_name: str, stage: str) -> str:
    """The stage's trainer config (one per stage, shared by its attempts)."""
    return child_name(run_name, stage, "config")


def job_name(run_name: str, stage: str, attempt: int) -> str:
    """One PyTorchJob/TrainJob per attempt: a retry creates a new job, the failed one stays."""
    if attempt < 1:
        raise ValueError(f"attempt: must be >= 1, got {attempt}")
    return child_name(run_name, stage, str(attempt), max_length=MAX_JOB_NAME_LENGTH)


def label_value(text: str) -> str:
    """`text` as a label value (<= 63 characters): shortened with a hash when it does not fit."""
    if len(text) <= MAX_NAME_LENGTH and _LABEL_VALUE.match(text):
        return text
    room = MAX_NAME_LENGTH - _HASH_LENGTH - 1
    head = re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:room]
    head = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", head)
    return f"{head}-{_digest(text)}" if head else _digest(text)


def labels(run_name: str, stage: str | None = None, attempt: int | None = None) -> dict[str, str]:
    """Labels on every child: select a run's children, a stage's, or one attempt's."""
    result = {MANAGED_BY_LABEL: MANAGED_BY, RUN_LABEL: label_value(run_name)}
    if stage is not None:
        result[STAGE_LABEL] = stage
    if attempt is not None:
        result[ATTEMPT_LABEL] = str(attempt)
    return result


def selector(run_name: str, stage: str | None = None, attempt: int | None = None) -> str:
    """The label selector string matching `labels(...)` (for list calls)."""
    return ",".join(f"{key}={value}" for key, value in labels(run_name, stage, attempt).items())
