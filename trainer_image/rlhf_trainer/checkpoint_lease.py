"""One attempt at a time writes a stage's output directory: a lease file with a heartbeat.

A deleted or failed job's pods may still be saving (up to terminationGracePeriodSeconds) when
the operator starts the next attempt; the operator waits for them to go (reconcile/attempts.py),
and this is the trainer's own guard against two attempts writing one `checkpoints/`.

`<out>/lease.json` names its holder (host = the pod name, pid, a random token), the stage
identity and an expiry. The holder renews it every TTL/3 from a daemon thread; an attempt that
finds a live lease of another holder waits up to `wait` seconds for it to be released or to
expire, then refuses with LeaseHeld, naming the holder. A holder that died without releasing
(SIGKILL, a lost node) blocks for at most TTL; one on this same host whose process is gone is
taken over at once. Expiry compares the holder's clock with the reader's: node clocks that
differ by much less than the TTL (NTP) are assumed.

Taking a lease is write-then-verify (exclusive create, or replace of an expired one and a
read-back): advisory, as a lock on a network volume has to be.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf_api.files import write_text_atomic
from rlhf_api.identity import StageIdentity

from .errors import StageError

LEASE_FILE = "lease.json"
LEASE_TTL_SECONDS = float(os.environ.get("RLHF_LEASE_TTL_SECONDS", "120"))
_POLL_SECONDS = 1.0
_held_here: set[str] = set()  # tokens of the leases this process holds now


class LeaseHeld(StageError):
    """Another live attempt holds the output directory."""

    def __init__(self, output_dir: str, holder: dict[str, Any]) -> None:
        expires = holder.get("expires")
        until = time.strftime("%H:%M:%SZ", time.gmtime(float(expires))) if isinstance(expires, int | float) else "?"
        super().__init__(
            "outputDir",
            f"{output_dir} is held by another attempt (host {holder.get('host')}, pid {holder.get('pid')}, "
            f"identity {holder.get('identity')}, lease until {until}): not writing into it",
        )
        self.holder = holder


def _holder_id() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": secrets.token_hex(8)}


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _live(holder: dict[str, Any], now: float) -> bool:
    """Whether a lease still binds others: not expired, and not left by a dead process here."""
    expires = holder.get("expires")
    if not isinstance(expires, int | float) or expires <= now:
        return False
    if holder.get("host") == socket.gethostname():
        pid = holder.get("pid")
        if holder.get("token") in _held_here:
            return True
        if not isinstance(pid, int) or pid == os.getpid():
            return False  # not held by this process: a previous incarnation with our pid
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True


@dataclass
class Lease:
    output_dir: Path
    identity: StageIdentity | None
    ttl: float = LEASE_TTL_SECONDS
    me: dict[str, Any] = field(default_factory=_holder_id)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def path(self) -> Path:
        return self.output_dir / LEASE_FILE

    def _body(self) -> dict[str, Any]:
        now = time.time()
        identity = str(self.identity) if self.identity is not None else None
        return {**self.me, "identity": identity, "renewed": now, "expires": now + self.ttl}

    def _mine(self, holder: dict[str, Any] | None) -> bool:
        return holder is not None and holder.get("token") == self.me["token"]

    def _try_take(self) -> dict[str, Any] | None:
        """Take the lease if free; None when taken, else the live holder."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        body = json.dumps(self._body())
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read(self.path)
            if holder is not None and _live(holder, time.time()):
                return holder
            write_text_atomic(self.path, body)  # expired or abandoned: replace it
        else:
            with os.fdopen(fd, "w") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
        time.sleep(0.05)  # another taker's replace lands in between: read back who won
        holder = _read(self.path)
        return None if self._mine(holder) else (holder or {"host": "?", "pid": "?"})

    def acquire(self, wait: float = 0.0) -> Lease:
        """Take the lease, waiting up to `wait` seconds for a live holder to go; LeaseHeld otherwise."""
        deadline = time.monotonic() + wait
        while True:
            holder = self._try_take()
            if holder is None:
                break
            if time.monotonic() >= deadline:
                raise LeaseHeld(str(self.output_dir), holder)
            time.sleep(_POLL_SECONDS)
        _held_here.add(self.me["token"])
        self._thread = threading.Thread(target=self._heartbeat, daemon=True, name="checkpoint-lease")
        self._thread.start()
        return self

    def renew(self) -> bool:
        """Extend the lease; False when another attempt took it over (this one lost it)."""
        if not self._mine(_read(self.path)):
            return False
        write_text_atomic(self.path, json.dumps(self._body()))
        return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            # The volume hiccupped: the next beat tries again, the TTL leaves room.
            with contextlib.suppress(OSError):
                self.renew()

    def release(self) -> None:
        self._stop.set()
        _held_here.discard(self.me["token"])
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._mine(_read(self.path)):
            self.path.unlink(missing_ok=True)
