"""One read of a Master pod's log (`timestamps=true`) turned into progress events. Pure.

The position that always advances: the kubelet stamps every line with an RFC3339Nano time; the
position is the exact time of the last line consumed and how many lines at that very time were
consumed (lines printed together can share a stamp). A read starts at the position's whole
second (the API server passes `sinceTime` on in whole seconds), and everything up to the
position is skipped here, so a read that overlaps the last one never counts a line twice and a
line is never lost to rounding.

Whatever the bytes, `take` returns events a consumer can use (rlhf_api.progress.read), the new
position, and what it dropped, in words; it never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rlhf_api import progress
from rlhf_api.progress_status import TimedEvent

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")
_NS = 1_000_000_000
_EPOCH = 0.0
_LATEST = datetime(9999, 1, 1, tzinfo=UTC).timestamp()


@dataclass(frozen=True, order=True)
class Position:
    """The last line consumed: its exact time (ns since the epoch) and how many lines stamped
    with that very time were consumed."""

    ns: int
    seen: int = 1

    @property
    def moment(self) -> datetime:
        return datetime.fromtimestamp(self.ns // _NS, UTC).replace(microsecond=(self.ns % _NS) // 1000)


def stamp_ns(text: str) -> int | None:
    """An RFC3339(Nano) time as ns since the epoch; None if it is not one."""
    match = _STAMP.match(text)
    if match is None:
        return None
    base, fraction, zone = match.groups()
    try:
        seconds = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone)).timestamp()
    except (ValueError, OverflowError):
        return None
    if not _EPOCH <= seconds < _LATEST:  # a datetime could not hold it back (Position.moment)
        return None
    return int(seconds) * _NS + int((fraction or "0").ljust(9, "0"))


def position_of(moment: datetime | None) -> Position | None:
    """A position just after `moment` (the status' lastProgressTime after a restart)."""
    if moment is None:
        return None
    return Position(int(moment.timestamp()) * _NS + moment.microsecond * 1000)


def since_time(position: Position) -> str:
    """sinceTime in whole seconds, rounded down: the read may overlap, never miss."""
    return position.moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Taken:
    """What one read gave: new events (in log order), where reading stands, what was dropped."""

    events: list[TimedEvent] = field(default_factory=list)
    position: Position | None = None
    dropped: list[str] = field(default_factory=list)
    first_new: Position | None = None  # the first line this read found new
    overlap: bool = False  # the read held a line already consumed: nothing between was missed
    cut: Position | None = None  # a line cut by the read's byte limit (read whole by a later read)
    start: Position | None = None  # where this read started from

    @property
    def gap(self) -> str | None:
        """Output between the position read from and this read's first new line that no read
        returned (a tail-limited read after a burst), in words."""
        if self.overlap or self.first_new is None or self.start is None:
            return None
        if self.first_new.ns - self.start.ns < 1_000_000:
            return None  # within the millisecond a restart resumes from (lastProgressTime): the same line
        return f"output from {self.start.moment.isoformat()} to {self.first_new.moment.isoformat()}"


def take(text: str, after: Position | None, full: bool, skip_cut: bool = False) -> Taken:
    """The new lines of a read (`full`: it stopped at its byte limit, so its last line may be cut;
    `skip_cut`: the read was of the newest line alone, so a cut line cannot be read whole)."""
    found = Taken(position=after, start=after)
    lines = text.split("\n")
    tail = lines.pop()  # "" after the last newline; else a line the byte limit cut (or no newline at all)
    if tail and not full:
        lines.append(tail)  # the log ended without a newline: a whole line
        tail = ""
    at_position = 0  # lines stamped with exactly after.ns met in this read
    for line in lines:
        stamp, _, rest = line.partition(" ")
        ns = stamp_ns(stamp)
        if ns is None:
            continue  # no readable stamp: not a line the kubelet wrote
        if after is not None and ns <= after.ns:
            found.overlap = True
            if ns == after.ns:
                at_position += 1
                if at_position <= after.seen:
                    continue
            else:
                continue
        current = found.position
        found.position = Position(ns, current.seen + 1 if current is not None and current.ns == ns else 1)
        if found.first_new is None:
            found.first_new = found.position
        read = progress.read(rest)
        found.dropped.extend(read.dropped)
        if read.event is not None:
            found.events.append(TimedEvent(found.position.moment, read.event))
    if tail:
        ns = stamp_ns(tail.partition(" ")[0])
        if ns is not None and (after is None or ns > after.ns):
            found.cut = Position(ns)
            if skip_cut and found.first_new is None:
                # The newest line alone is larger than one read: skip it, or it pins the reader.
                found.position = found.cut
                found.dropped.append(f"a line of more than {len(tail.encode()) // 1024} KiB (one read's limit)")
    return found


def step_above_total(events: list[TimedEvent], total: int | None) -> tuple[list[str], int | None]:
    """Steps above their stage's total (its max_steps, or the total known before), in words, and
    the total known after these events. The status shows the total (progress_status.fold)."""
    flagged: list[str] = []
    for item in events:
        position = progress.step_of(item.event)
        if position is None:
            continue
        step, this_total = position
        total = this_total or total
        if total is not None and step > total:
            flagged.append(f"step {step} above the total {total} (shown as {total})")
    return flagged, total
