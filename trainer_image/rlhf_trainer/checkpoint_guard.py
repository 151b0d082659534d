"""Which checkpoint a stage may resume: its own (same identity), complete, the newest such.

Every checkpoint directory a stage writes (the HF Trainer's `checkpoint-N`, PPO's `step-N`)
gets `identity.json`: the stage config's identity (rlhf_api.identity, run uid + config hash),
written after the checkpoint's files are fsynced. The checkpoints directory itself is stamped
when an attempt starts, so a checkpoint whose own stamp never landed (killed between the save
and the stamp) is judged by the directory's: only attempts of that identity wrote into it.
At the start of an attempt (`set_aside`, by the holder of the output-dir lease):
- checkpoints stamped with another identity, or not stamped, are moved aside into
  `<out>/stale-checkpoints/<their identity>/` (never deleted: a re-created run or an edited spec
  starts fresh, and what the earlier one trained is still on the volume for whoever wants it);
- checkpoints of this identity whose files are incomplete (a truncated safetensors or torch file,
  a JSON file that does not parse, a weights index naming a missing shard) are moved aside into
  `<out>/stale-checkpoints/incomplete/`, so the resume falls back to the previous one and the
  Trainer does not write its next save into a damaged directory.
`resumable(root, pattern)` then picks the newest checkpoint that passes the same checks.

Without an identity in the config (a file written before identities existed) nothing is
moved aside for its identity and unstamped checkpoints resume, as before.

One process is one attempt of one stage: `begin` records the attempt's identity for the
stamping and selection calls made deep inside the stage programs (PPO loop, HF callbacks).
Also here: preemptions that make no progress (`no_progress_failure`).
"""

from __future__ import annotations

import json
import os
import re
import struct
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf_api.files import fsync_dir, fsync_tree, write_text_atomic
from rlhf_api.identity import StageIdentity, mismatch

STAMP = "identity.json"
STALE = "stale-checkpoints"
INCOMPLETE = "incomplete"
PREEMPTIONS = "preemptions.json"
# Attempts in a row stopped by SIGTERM without a new checkpoint before the next such preemption
# counts as a failed attempt (retries, backoff) instead of an immediate free retry: a stage that
# is evicted before its first save (a node pool that reclaims faster than one step) would
# otherwise loop for ever.
MAX_PREEMPTIONS_WITHOUT_PROGRESS = 3

CHECKPOINT_DIR = re.compile(r"^(checkpoint|step)-(\d+)$")
# The file each writer saves last, marking the directory complete: the HF Trainer's state, PPO's.
MARKERS = {"checkpoint": "trainer_state.json", "step": "state.json"}

_identity: StageIdentity | None = None


def set_identity(identity: StageIdentity | None) -> None:
    global _identity
    _identity = identity


# --- stamps ------------------------------------------------------------------------------------


def stamp_on_save() -> Any:
    """An HF TrainerCallback stamping each checkpoint-N the Trainer saved (main process)."""
    from transformers import TrainerCallback

    class StampOnSave(TrainerCallback):  # type: ignore[misc]
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                stamp(Path(args.output_dir) / f"checkpoint-{state.global_step}")

    return StampOnSave()


def stamp(checkpoint: str | Path, identity: StageIdentity | None = None) -> None:
    """Make the checkpoint's files durable, then write its identity stamp (the last file)."""
    identity = identity or _identity
    fsync_tree(checkpoint)
    if identity is not None:
        write_text_atomic(Path(checkpoint) / STAMP, json.dumps(identity.to_file_dict(), indent=2) + "\n")


def read_stamp(checkpoint: str | Path) -> StageIdentity | None:
    try:
        return StageIdentity.model_validate(json.loads((Path(checkpoint) / STAMP).read_text()))
    except (OSError, ValueError):
        return None


# --- completeness ------------------------------------------------------------------------------


def incomplete(checkpoint: str | Path, required: tuple[str, ...] = ()) -> str | None:
    """Why the checkpoint's files cannot be loaded (None: they can), without loading them:
    required files present, JSON parses, safetensors headers and lengths agree, torch files
    (zip archives) have their central directory, a weights index names only present shards."""
    root = Path(checkpoint)
    for name in required:
        if not (root / name).is_file():
            return f"{name} is missing"
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        why = _file_problem(path)
        if why is not None:
            return f"{path.relative_to(root)}: {why}"
    return None


def _file_problem(path: Path) -> str | None:
    suffix = path.suffix
    try:
        if suffix == ".json":
            data = json.loads(path.read_text())
            if path.name.endswith(".index.json") and isinstance(data, dict):
                missing = {f for f in (data.get("weight_map") or {}).values() if not (path.parent / f).is_file()}
                if missing:
                    return f"names missing shard(s) {sorted(missing)[:3]}"
        elif suffix == ".safetensors":
            return _safetensors_problem(path)
        elif suffix in (".pt", ".bin", ".pth") and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                archive.infolist()
        elif suffix in (".pt", ".bin", ".pth"):
            return "not a complete torch archive (truncated?)"
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        return f"unreadable ({type(exc).__name__}: {exc})".splitlines()[0][:300]
    return None


def _safetensors_problem(path: Path) -> str | None:
    """A safetensors file is an 8-byte header length, a JSON header, then the data the header's
    offsets cover: a truncated file is shorter than the largest end offset."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return "truncated (no header)"
        (length,) = struct.unpack("<Q", head)
        if 8 + length > size:
            return "truncated (header)"
        header = json.loads(f.read(length))
    end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + length + end > size:
        return f"truncated ({size} bytes, the header needs {8 + length + end})"
    return None


# --- selection ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rejected:
    path: Path
    why: str
    foreign: bool  # another identity (else: incomplete)


def _candidates(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = CHECKPOINT_DIR.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(2)), child))
    return sorted(found, reverse=True)


def judge(checkpoint: Path, identity: StageIdentity | None) -> Rejected | None:
    """Why this checkpoint may not be resumed (None: it may)."""
    match = CHECKPOINT_DIR.match(checkpoint.name)
    marker = MARKERS[match.group(1)] if match else None
    if marker is not None and not (checkpoint / marker).is_file():  # a save cut off
        return Rejected(checkpoint, f"{marker} is missing (the save did not finish)", foreign=False)
    why = mismatch(identity, read_stamp(checkpoint) or read_stamp(checkpoint.parent))
    if why is not None:
        return Rejected(checkpoint, why, foreign=True)
    problem = incomplete(checkpoint)
    return Rejected(checkpoint, problem, foreign=False) if problem is not None else None


def resumable(root: str | Path, identity: StageIdentity | None = None) -> Path | None:
    """The newest checkpoint under root this attempt may resume (its identity, complete)."""
    identity = identity or _identity
    for _, checkpoint in _candidates(Path(root)):
        rejected = judge(checkpoint, identity)
        if rejected is None:
            return checkpoint
        print(f"checkpoint {checkpoint.name} not resumed: {rejected.why}", file=sys.stderr)
    return None


def set_aside(root: str | Path, output_dir: str | Path, identity: StageIdentity | None) -> list[Path]:
    """Move the checkpoints this attempt may not resume out of `root`, into
    `<output_dir>/stale-checkpoints/<identity or incomplete>/`; returns where they went. Called
    by the lease holder only, so no other attempt is saving into root meanwhile."""
    moved = []
    for _, checkpoint in _candidates(Path(root)):
        rejected = judge(checkpoint, identity)
        if rejected is None:
            continue
        stamp_found = read_stamp(checkpoint) or read_stamp(checkpoint.parent)
        if rejected.foreign:
            group = f"{stamp_found.run_uid or 'no-uid'}-{stamp_found.config_hash}" if stamp_found else "unstamped"
        else:
            group = INCOMPLETE
        target_dir = Path(output_dir) / STALE / group
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / checkpoint.name
        n = 1
        while target.exists():
            n += 1
            target = target_dir / f"{checkpoint.name}.{n}"
        os.replace(checkpoint, target)
        fsync_dir(Path(root))
        print(f"checkpoint {checkpoint.name} moved aside to {target}: {rejected.why}", file=sys.stderr)
        moved.append(target)
    if identity is not None:  # what remains, and what this attempt writes, is this identity's
        Path(root).mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(root) / STAMP, json.dumps(identity.to_file_dict(), indent=2) + "\n")
    return moved


# --- preemptions without progress ---------------------------------------------------------------


def no_progress_failure(output_dir: str | Path, saved_step: int | None, resumed_from: int | None) -> str | None:
    """Record a preempted attempt; the message that turns it into a failed attempt when it is
    the MAX_PREEMPTIONS_WITHOUT_PROGRESS-th in a row without a new checkpoint (None: a plain
    preemption, retried at once)."""
    path = Path(output_dir) / PREEMPTIONS
    try:
        record: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {}
    gained = saved_step is not None and saved_step > (resumed_from or 0)
    count = 0 if gained else int(record.get("withoutProgress", 0)) + 1
    step = saved_step if saved_step is not None else resumed_from
    message = None
    if count >= MAX_PREEMPTIONS_WITHOUT_PROGRESS:
        message = (
            f"preempted {count} times in a row without a new checkpoint (last at step {step or 0}): "
            "counted as a failed attempt"
        )
        count = 0  # the failed attempt's retry starts a new count
    write_text_atomic(path, json.dumps({"withoutProgress": count, "step": step}) + "\n")
    return message


def progress_made(output_dir: str | Path) -> None:
    """The attempt finished: forget the preemption count."""
    Path(output_dir, PREEMPTIONS).unlink(missing_ok=True)
