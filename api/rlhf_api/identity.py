"""A stage's identity: which run (its uid) and which effective trainer config produced a
checkpoint or a result. Pure and torch-free: the plan computes it, the trainer stamps it into
every checkpoint and result.json, the reconcile and `rlhf run` compare it.

What is hashed: the stage's TrainerJobConfig as the trainer reads it (canonical JSON: sorted keys,
no whitespace, unset optional fields left out), without the fields that cannot change what is
trained (`reportTo`, the metric sinks, and `identity` itself), plus the config hashes of the
earlier stages it loads (`inputs`): a changed SFT changes the identity of every stage trained
from it. Placement, retries and backoff are not in the trainer config, so they never matter.
The run uid is kept beside the hash, not in it: the two parts say different things when they
differ (another run, e.g. a re-created one, versus an edited spec).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar, cast

from pydantic import Field

from .camel_model import CamelModel

# Fields of the trainer config that never change what a stage trains or computes.
UNHASHED_FIELDS = frozenset({"identity", "reportTo"})
HASH_LENGTH = 16  # hex characters: 64 bits, far beyond the configs one volume ever holds


class StageIdentity(CamelModel):
    """The run uid and the hash of the stage's effective config, as stamped and compared."""

    run_uid: str | None = Field(
        default=None, max_length=128, description="The RLHFRun's metadata.uid (rlhf run: local-<name>)."
    )
    config_hash: str = Field(
        min_length=1, max_length=64, description="Hash of the stage's effective trainer config and its inputs'."
    )

    def __str__(self) -> str:
        return f"{self.run_uid or '-'}/{self.config_hash}"


def canonical_json(data: Any) -> str:
    """One text per value: sorted keys, no whitespace, non-ASCII kept (the hash input)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def config_hash(config_file: Mapping[str, Any], upstream: Mapping[str, str] | None = None) -> str:
    """The hash of a stage config file (its camelCase dict) and its inputs' config hashes."""
    hashed = {k: v for k, v in config_file.items() if k not in UNHASHED_FIELDS}
    payload = {"config": hashed, "upstream": dict(sorted((upstream or {}).items()))}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:HASH_LENGTH]


def mismatch(expected: StageIdentity | None, found: StageIdentity | None) -> str | None:
    """Why `found` (a stamp, a result) is not `expected`'s, in words; None when it is.

    No expected identity (a config written before identities existed) accepts anything;
    an unstamped checkpoint or result is never taken for a stamped config's."""
    if expected is None:
        return None
    if found is None:
        return f"it carries no identity (expected {expected})"
    if found.run_uid != expected.run_uid:
        return f"it belongs to another run (uid {found.run_uid or '-'}, this run is {expected.run_uid or '-'})"
    if found.config_hash != expected.config_hash:
        return f"it was produced by another config of this stage (hash {found.config_hash}, now {expected.config_hash})"
    return None


def changed_fields(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON values differ (for messages naming what an edit changed)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        paths: list[str] = []
        for key in sorted(set(old) | set(new)):
            paths += changed_fields(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))
        return paths
    return [] if old == new else [prefix or "(value)"]


def changed_values(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted path, old value, new value) where two JSON values differ (None: absent)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        found: list[tuple[str, Any, Any]] = []
        for key in sorted(set(old) | set(new), key=str):
            found += changed_values(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))
        return found
    return [] if old == new else [(prefix or "(value)", old, new)]


def change_text(path: str, old: Any, new: Any, width: int = 60) -> str:
    """`reward.training.learningRate: 0.0001 -> 0.0007`, each value cut to `width` characters."""
    return f"{path}: {_short(old, width)} -> {_short(new, width)}"


def _short(value: Any, width: int) -> str:
    if value is None:
        return "(unset)"
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= width else text[: width - 3] + "..."


class _Identified(Protocol):
    """A TrainerJobConfig, as far as identify needs it (no import: stage_config imports this)."""

    @property
    def inputs(self) -> Sequence[Any]: ...

    def to_file_dict(self) -> dict[str, Any]: ...

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Any: ...


C = TypeVar("C", bound=_Identified)


def identify(config: C, run_uid: str | None, hashes: Mapping[str, str]) -> C:
    """The config with its identity set; `hashes`: the config hashes of the stages planned before."""
    upstream = {i.stage: hashes[i.stage] for i in config.inputs if i.stage in hashes}
    identity = StageIdentity(run_uid=run_uid, config_hash=config_hash(config.to_file_dict(), upstream))
    return cast(C, config.model_copy(update={"identity": identity}))
