"""Checkpoint identity, completeness and the output-dir lease (rlhf_trainer.checkpoint_guard,
checkpoint_lease): pure file tests, then real SFT runs on the builtin tiny model."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rlhf_api.identity import StageIdentity
from rlhf_api.result import EXIT_FAILED, read_result
from rlhf_trainer import checkpoint_guard as guard
from rlhf_trainer.checkpoint_lease import LEASE_FILE, Lease, LeaseHeld

from .stage_helpers import run_stage_cli, write_config

A = StageIdentity(run_uid="uid-a", config_hash="aaaa")
B = StageIdentity(run_uid="uid-b", config_hash="aaaa")


def _safetensors(path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.arange(64, dtype=torch.float32)}, str(path))


def _checkpoint(root: Path, step: int, identity: StageIdentity | None, kind: str = "checkpoint") -> Path:
    """A small complete checkpoint directory as the HF Trainer (or PPO) leaves it."""
    import torch

    path = root / f"{kind}-{step}"
    path.mkdir(parents=True)
    _safetensors(path / "adapter_model.safetensors")
    torch.save({"step": step}, path / "optimizer.pt")
    (path / guard.MARKERS[kind]).write_text(json.dumps({"global_step": step}))
    guard.stamp(path, identity)
    return path


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# --- completeness --------------------------------------------------------------------------------


def _damage_safetensors(p: Path) -> None:
    _truncate(p / "adapter_model.safetensors")


def _damage_header(p: Path) -> None:
    (p / "adapter_model.safetensors").write_bytes(b"\x00\x01")


def _damage_torch(p: Path) -> None:
    _truncate(p / "optimizer.pt", 0.8)


def _damage_json(p: Path) -> None:
    (p / "trainer_state.json").write_text('{"global_step": 4')


def _damage_index(p: Path) -> None:
    (p / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-00002.safetensors"}}))


def _no_marker(p: Path) -> None:
    (p / "trainer_state.json").unlink()


DAMAGE = [
    ("truncated safetensors", _damage_safetensors, "adapter_model.safetensors: truncated"),
    ("no safetensors header", _damage_header, "truncated (no header)"),
    ("truncated torch file", _damage_torch, "optimizer.pt"),
    ("json cut off", _damage_json, "trainer_state.json: unreadable"),
    ("index names a missing shard", _damage_index, "missing shard"),
    ("save not finished", _no_marker, "trainer_state.json is missing"),
]


@pytest.mark.parametrize(("damage", "words"), [d[1:] for d in DAMAGE], ids=[d[0] for d in DAMAGE])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path: Path, damage: Any, words: str) -> None:
    root = tmp_path / "checkpoints"
    previous = _checkpoint(root, 2, A)
    newest = _checkpoint(root, 4, A)
    assert guard.resumable(root, A) == newest
    damage(newest)
    rejected = guard.judge(newest, A)
    assert rejected is not None and not rejected.foreign and words in rejected.why
    assert guard.resumable(root, A) == previous
    moved = guard.set_aside(root, tmp_path, A)
    assert moved == [tmp_path / guard.STALE / guard.INCOMPLETE / "checkpoint-4"]
    assert sorted(p.name for p in root.glob("checkpoint-*")) == ["checkpoint-2"]


def test_ppo_step_dirs_are_judged_by_their_own_marker(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    step = _checkpoint(root, 3, A, kind="step")
    assert guard.resumable(root, A) == step
    (step / "state.json").unlink()
    assert guard.resumable(root, A) is None


# --- identity --------------------------------------------------------------------------------


IDENTITY_CASES: list[tuple[str, StageIdentity | None, StageIdentity | None, bool]] = [
    # (case, stamped with, this attempt's identity, resumed)
    ("same identity", A, A, True),
    ("another run (re-created, new uid)", B, A, False),
    ("another config of this stage", StageIdentity(run_uid="uid-a", config_hash="bbbb"), A, False),
    ("unstamped (written before identities)", None, A, False),
    ("config without identity takes any", B, None, True),
    ("config without identity takes unstamped", None, None, True),
]


@pytest.mark.parametrize(
    ("stamped", "expected", "resumed"), [c[1:] for c in IDENTITY_CASES], ids=[c[0] for c in IDENTITY_CASES]
)
def test_only_checkpoints_of_this_identity_resume(
    tmp_path: Path, stamped: StageIdentity | None, expected: StageIdentity | None, resumed: bool
) -> None:
    root = tmp_path / "checkpoints"
    path = _checkpoint(root, 4, stamped)
    assert (guard.resumable(root, expected) == path) is resumed
    moved = guard.set_aside(root, tmp_path, expected)
    if resumed:
        assert moved == [] and path.is_dir()
    else:  # moved aside, never deleted
        group = f"{stamped.run_uid}-{stamped.config_hash}" if stamped else "unstamped"
        assert moved == [tmp_path / guard.STALE / group / "checkpoint-4"]
        assert (moved[0] / "adapter_model.safetensors").is_file() and not path.exists()


def test_a_checkpoint_whose_stamp_never_landed_is_judged_by_its_directory(tmp_path: Path) -> None:
    """Killed between the save (trainer_state.json) and the stamp: the attempt that wrote it had
    stamped the checkpoints directory when it began."""
    root = tmp_path / "checkpoints"
    assert guard.set_aside(root, tmp_path, A) == []  # an attempt of A begins: the directory is A's
    path = _checkpoint(root, 10, None)
    assert guard.read_stamp(path) is None
    assert guard.resumable(root, A) == path
    assert guard.resumable(root, B) is None
    moved = guard.set_aside(root, tmp_path, B)  # an attempt of B: A's checkpoint goes aside, under A
    assert moved == [tmp_path / guard.STALE / f"{A.run_uid}-{A.config_hash}" / "checkpoint-10"]
    assert guard.read_stamp(root) == B


def test_moving_aside_twice_keeps_both(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    _checkpoint(root, 4, B)
    first = guard.set_aside(root, tmp_path, A)
    _checkpoint(root, 4, B)
    second = guard.set_aside(root, tmp_path, A)
    assert first[0] != second[0] and first[0].is_dir() and second[0].is_dir()


# --- preemptions without progress --------------------------------------------------------------


def test_preemptions_without_progress_become_a_failure_after_the_limit(tmp_path: Path) -> None:
    # (checkpoint saved at, resumed from) per preempted attempt -> failure message or None
    attempts: list[tuple[int | None, int | None, bool]] = [
        (5, None, False),  # progress: 0 -> 5
        (None, 5, False),  # SIGTERM while loading: no new checkpoint (1)
        (5, 5, False),  # stopped at the step it resumed from (2)
        (None, 5, True),  # the third in a row: a failed attempt
        (None, 5, False),  # the count starts again after it
        (7, 5, False),  # progress resets it
        (None, 7, False),
        (None, 7, False),
        (None, 7, True),
    ]
    for saved, resumed_from, fails in attempts:
        message = guard.no_progress_failure(tmp_path, saved, resumed_from)
        assert (message is not None) is fails, (saved, resumed_from)
    assert message is not None and "preempted 3 times in a row without a new checkpoint (last at step 7)" in message
    guard.progress_made(tmp_path)
    assert not (tmp_path / guard.PREEMPTIONS).exists()


# --- the lease ---------------------------------------------------------------------------------


def test_a_second_attempt_is_refused_while_the_first_holds_the_lease(tmp_path: Path) -> None:
    first = Lease(tmp_path, A).acquire()
    with pytest.raises(LeaseHeld) as info:
        Lease(tmp_path, A).acquire(wait=0.2)
    message = str(info.value)
    assert f"host {socket.gethostname()}, pid {os.getpid()}" in message and f"identity {A}" in message
    assert message.startswith("outputDir: ") and info.value.exit_code == EXIT_FAILED
    first.release()
    assert not (tmp_path / LEASE_FILE).exists()
    Lease(tmp_path, A).acquire().release()


def test_an_attempt_waits_for_the_holder_to_release(tmp_path: Path) -> None:
    first = Lease(tmp_path, A).acquire()
    import threading

    threading.Timer(0.5, first.release).start()
    started = time.monotonic()
    second = Lease(tmp_path, A).acquire(wait=10)
    assert 0.4 < time.monotonic() - started < 5
    second.release()


def test_an_expired_lease_is_taken_over(tmp_path: Path) -> None:
    other = {"host": "pod-of-attempt-1", "pid": 7, "token": "t", "identity": str(A), "expires": time.time() - 1}
    (tmp_path / LEASE_FILE).write_text(json.dumps(other))
    Lease(tmp_path, A).acquire().release()


def test_a_live_lease_of_another_host_binds(tmp_path: Path) -> None:
    other = {"host": "pod-of-attempt-1", "pid": 7, "token": "t", "identity": str(A), "expires": time.time() + 60}
    (tmp_path / LEASE_FILE).write_text(json.dumps(other))
    with pytest.raises(LeaseHeld, match="host pod-of-attempt-1, pid 7"):
        Lease(tmp_path, A).acquire()


def test_a_dead_holder_on_this_host_is_taken_over_at_once(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    other = {"host": socket.gethostname(), "pid": dead.pid, "token": "t", "expires": time.time() + 60}
    (tmp_path / LEASE_FILE).write_text(json.dumps(other))
    Lease(tmp_path, A).acquire().release()


def test_the_heartbeat_keeps_the_lease_alive(tmp_path: Path) -> None:
    lease = Lease(tmp_path, A, ttl=0.6).acquire()
    time.sleep(1.5)  # over two lifetimes: renewed meanwhile
    held = json.loads((tmp_path / LEASE_FILE).read_text())
    assert held["token"] == lease.me["token"] and held["expires"] > time.time()
    with pytest.raises(LeaseHeld):
        Lease(tmp_path, A).acquire()
    lease.release()


# --- real stages ---------------------------------------------------------------------------------


def _sft(tmp_path: Path, name: str, work_dir: str, out: Path, identity: StageIdentity | None, **training: Any) -> Path:
    config = write_config(tmp_path / f"{name}.yaml", "sft", work_dir, out, training={"maxSteps": 4, **training})
    document = yaml.safe_load(config.read_text())
    if identity is not None:
        document["identity"] = identity.to_file_dict()
    config.write_text(yaml.safe_dump(document))
    return config


@pytest.mark.timeout(300)
def test_sft_stamps_resumes_its_own_and_starts_fresh_for_another_identity(work_dir: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, result = run_stage_cli("sft", _sft(tmp_path, "a", work_dir, out, A))
    assert code == 0 and result is not None and result.identity == A
    checkpoints = out / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert all(guard.read_stamp(p) == A for p in checkpoints.glob("checkpoint-*"))

    # The same identity again (a retry after a crash in the merge): resumes, trains nothing.
    code, result = run_stage_cli("sft", _sft(tmp_path, "a2", work_dir, out, A))
    assert code == 0 and result is not None and (result.steps, result.resumed_from_step) == (4, 4)

    # A re-created run (new uid), here also with another dataset size: on the old code this
    # resumed checkpoint-4, trained 0 steps and reported success. Now it trains from step 0.
    code, result = run_stage_cli("sft", _sft(tmp_path, "b", work_dir, out, B))
    assert code == 0 and result is not None and result.identity == B
    assert (result.steps, result.planned_steps, result.resumed_from_step) == (4, 4, None)
    assert result.metrics["train_loss"] > 0
    assert all(guard.read_stamp(p) == B for p in checkpoints.glob("checkpoint-*"))
    kept = out / guard.STALE / f"{A.run_uid}-{A.config_hash}"
    assert sorted(p.name for p in kept.iterdir()) == ["checkpoint-2", "checkpoint-4"]


def test_an_attempt_s_identity_ends_with_it(work_dir: str, tmp_path: Path) -> None:
    """A stage run in this process (here one that fails at once, on a model that is not there)
    leaves no identity behind: a checkpoint stamped later without one stays unstamped."""
    config = write_config(tmp_path / "a.yaml", "sft", work_dir, tmp_path / "out", model=str(tmp_path / "missing"))
    document = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**document, "identity": A.to_file_dict()}))
    code, result = run_stage_cli("sft", config)
    assert code != 0 and result is not None and result.identity == A
    assert guard.read_stamp(_checkpoint(tmp_path / "later", 1, None)) is None


@pytest.mark.timeout(300)
def test_sft_resumes_the_previous_checkpoint_when_the_newest_is_truncated(work_dir: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, _ = run_stage_cli("sft", _sft(tmp_path, "a", work_dir, out, A, saveSteps=2))
    assert code == 0
    newest = out / "checkpoints" / "checkpoint-4"
    weights = next(newest.glob("*.safetensors"))
    _truncate(weights)
    code, result = run_stage_cli("sft", _sft(tmp_path, "a", work_dir, out, A, saveSteps=2))
    assert code == 0 and result is not None
    assert (result.steps, result.resumed_from_step) == (4, 2)
    assert (out / guard.STALE / guard.INCOMPLETE / "checkpoint-4").is_dir()
    assert guard.incomplete(out / "checkpoints" / "checkpoint-4") is None  # written again, whole


@pytest.mark.timeout(120)
def test_sft_refuses_an_output_dir_another_attempt_holds(work_dir: str, tmp_path: Path, monkeypatch: Any) -> None:
    from rlhf_trainer.stages import lifecycle

    monkeypatch.setattr(lifecycle, "LEASE_WAIT_SECONDS", 0.2)
    monkeypatch.setenv("RLHF_TERMINATION_LOG", str(tmp_path / "termination"))
    out = tmp_path / "out"
    out.mkdir()
    holder = {"host": "demo-sft-1-master-0", "pid": 1, "token": "t", "identity": str(A), "expires": time.time() + 60}
    (out / LEASE_FILE).write_text(json.dumps(holder))
    code = run_stage_cli("sft", _sft(tmp_path, "a", work_dir, out, A))[0]
    assert code == EXIT_FAILED
    assert read_result(str(out / "result.json")) is None  # the holder's directory: nothing written
    summary = json.loads((tmp_path / "termination").read_text())
    assert "held by another attempt (host demo-sft-1-master-0, pid 1" in summary["message"]
    assert summary["identity"] == A.to_file_dict()
    assert not (out / "checkpoints").exists()


@pytest.mark.timeout(300)
def test_ppo_step_checkpoints_are_stamped_and_resumed_only_by_their_identity(tmp_path: Path) -> None:
    from rlhf_trainer.ppo.engine import PPOEngine
    from rlhf_trainer.ppo.loop import train_loop

    from tests.support.tiny_models import token_share_reward, word_tokenizer

    from .test_ppo_engine import PROMPTS, WORDS, build_model, config

    tokenizer = word_tokenizer(WORDS)
    reward = token_share_reward(tokenizer)

    class Interrupted(Exception):
        pass

    def crash_at_three(step: int, stats: dict[str, float]) -> None:
        if step == 3:
            raise Interrupted

    def engine() -> PPOEngine:
        return PPOEngine(build_model(tokenizer), tokenizer, reward, config(steps=4, save_steps=2))

    checkpoints = tmp_path / "checkpoints"
    try:
        guard.set_identity(A)
        with pytest.raises(Interrupted):
            train_loop(engine(), PROMPTS, tmp_path, seed=5, tensorboard=False, on_step=crash_at_three)
        assert guard.read_stamp(checkpoints / "step-2") == A
        assert guard.incomplete(checkpoints / "step-2") is None
        guard.set_identity(B)  # another run's attempt on the same directory: starts at step 0
        assert train_loop(engine(), PROMPTS, tmp_path, seed=5, tensorboard=False)["resumed_from"] is None
        assert guard.read_stamp(checkpoints / "step-4") == B
        guard.set_identity(A)
        assert guard.resumable(checkpoints) is None  # B's checkpoints only now
    finally:
        guard.set_identity(None)
