"""The stage result: `<out>/result.json`, and its short form on the termination-message file.

Import-light: the operator reads the termination message with the same model.
"""

from __future__ import annotations

import json
import os
from typing import Literal

from pydantic import Field, ValidationError

from .bounds import INT64_MAX
from .camel_model import CamelModel
from .files import write_text_atomic
from .identity import StageIdentity
from .stages import StageName

TERMINATION_LOG_ENV = "RLHF_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
# Kubernetes keeps at most 4096 bytes of a termination message.
TERMINATION_LIMIT = 4096

# The trainer's exit codes, also recorded in the result (under torchrun the container's own exit
# code only says that a worker failed).
EXIT_SUCCEEDED = 0
EXIT_FAILED = 1  # failed while running (data content, hardware, files)
EXIT_CONFIG = 2  # bad config or input values: retrying the same config cannot help
EXIT_PREEMPTED = 143  # 128 + SIGTERM: stopped after a checkpoint at the current step; a retry resumes there


# What a termination message keeps when even the paths do not fit.
_IDENTITY = ("stage", "status", "exitCode", "preempted", "steps", "plannedSteps", "identity")


class StageResult(CamelModel):
    stage: StageName
    status: Literal["succeeded", "failed"]
    output_path: str = Field(description="The stage's output directory.")
    merged_path: str | None = Field(default=None, description="Loadable merged model, when produced.")
    adapter_path: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    message: str | None = Field(default=None, description="Why the stage failed, one line.")
    started_at: str | None = None
    finished_at: str | None = None
    # int64 at most: the status copies them, and a real API server refuses a larger integer
    steps: int | None = Field(default=None, ge=0, le=INT64_MAX, description="Optimizer (or PPO) steps done in total.")
    planned_steps: int | None = Field(default=None, ge=0, le=INT64_MAX, description="Steps the stage was set to train.")
    resumed_from_step: int | None = Field(
        default=None,
        ge=0,
        le=INT64_MAX,
        description="The checkpoint step this attempt resumed from (None: started fresh).",
    )
    preempted: bool = Field(default=False, description="Stopped by SIGTERM after saving a checkpoint.")
    identity: StageIdentity | None = Field(
        default=None,
        description="The identity of the config that produced this result (run uid + config hash); "
        "a result of another identity is never taken for this stage's.",
    )
    exit_code: int | None = Field(
        default=None,
        ge=0,
        le=255,
        description="The trainer's exit code: 0 succeeded, 1 failed while running, 2 bad config or input, "
        "143 preempted (SIGTERM).",
    )

    def termination_message(self) -> str:
        """Compact JSON within the kubelet's 4096-byte limit, always valid JSON.

        Cut by bytes, not characters (a message in UTF-8 may be longer in bytes): metrics are
        dropped from the end first, then the message is shortened, then the paths.
        """
        data = self.to_file_dict()
        text = _compact(data)
        if len(text.encode()) <= TERMINATION_LIMIT:
            return text
        metrics = dict(data.pop("metrics", {}))
        message = data.pop("message", None)
        base = _compact(data)
        if len(base.encode()) > TERMINATION_LIMIT:  # absurdly long paths: keep what identifies the stage
            data = {k: data[k] for k in _IDENTITY if k in data}
            base = _compact(data)
        if message:
            room = TERMINATION_LIMIT - len(base.encode()) - len(',"message":""') - 16
            data["message"] = _cut_bytes(message, room)
        kept: dict[str, float] = {}
        for key, value in metrics.items():
            trial = _compact({**data, "metrics": {**kept, key: value}})
            if len(trial.encode()) > TERMINATION_LIMIT:
                break
            kept[key] = value
        if kept:
            data["metrics"] = kept
        return _compact(data)


def _compact(data: dict[str, object]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _cut_bytes(text: str, limit: int) -> str:
    """The longest prefix of text whose JSON-escaped UTF-8 form fits in `limit` bytes."""
    if limit <= 0:
        return ""
    encoded = json.dumps(text, ensure_ascii=False)[1:-1].encode()
    if len(encoded) <= limit:
        return text
    low, high = 0, len(text)
    while low < high:  # binary search on characters: escaping makes bytes per character vary
        mid = (low + high + 1) // 2
        if len(json.dumps(text[:mid], ensure_ascii=False)[1:-1].encode()) <= limit:
            low = mid
        else:
            high = mid - 1
    return text[:low]


def write_result(result: StageResult, path: str) -> None:
    """Write result.json atomically (a reader never sees half a file) and the termination log."""
    write_text_atomic(path, json.dumps(result.to_file_dict(), indent=2))
    write_termination_log(result)


def write_termination_log(result: StageResult) -> None:
    """The short form only (an attempt that may not write its output directory: another holds it)."""
    log = os.environ.get(TERMINATION_LOG_ENV, DEFAULT_TERMINATION_LOG)
    try:
        with open(log, "w") as f:
            f.write(result.termination_message())
    except OSError:
        pass  # not in a pod, or not writable: result.json is the record


def read_result(path: str) -> StageResult | None:
    try:
        with open(path, errors="replace") as f:
            text = f.read(MAX_RESULT_BYTES + 1)
    except OSError:
        return None
    return load_result(text)[0]


MAX_RESULT_BYTES = 1024 * 1024  # result.json with every metric is a few KiB; a message is at most 4 KiB
_REQUIRED = ("stage", "status", "outputPath")


def load_result(text: str | bytes | None) -> tuple[StageResult | None, list[str]]:
    """The StageResult in a result's JSON, whatever the bytes, never raising: (the result, what of
    it was dropped, in words), or (None, why there is none). A field that does not validate (an
    integer beyond int64, a metric beyond a float, a wrong type) is dropped, not the whole result;
    without a stage, status or outputPath there is none. NaN metrics stay (finite.py judges them)."""
    if not text:
        return None, ["empty"]
    if len(text) > MAX_RESULT_BYTES:
        return None, [f"{len(text) // 1024} KiB, over {MAX_RESULT_BYTES // 1024} KiB"]
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as error:  # RecursionError: nested too deep
        return None, [f"not JSON ({type(error).__name__})"]
    if not isinstance(data, dict):
        return None, [f"not a JSON object ({type(data).__name__})"]
    dropped: list[str] = []
    for _round in range(64):  # each round drops one field; a result has far fewer
        try:
            return StageResult.model_validate(data), dropped
        except ValidationError as error:
            found = [(e["loc"], str(e["msg"])[:120]) for e in error.errors() if e["loc"]]
        except RecursionError:
            return None, ["nested too deep"]
        if not found:
            return None, ["does not validate"]
        loc, why = found[0]  # one at a time: the locations may shift
        key = str(loc[0])
        if key in _REQUIRED or key not in data:
            return None, [f"{key}: {why}"]
        metrics = data.get("metrics")
        if key == "metrics" and len(loc) > 1 and isinstance(metrics, dict) and loc[1] in metrics:
            del metrics[loc[1]]
            dropped.append(f"metric {loc[1]} ({why})")
        else:
            del data[key]
            dropped.append(f"{key} ({why})")
    return None, ["too many fields that do not validate"]
