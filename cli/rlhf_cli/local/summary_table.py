"""The end-of-run summary: a table of stages (status, attempts, duration, key metrics), the
headline before/after and the comparison's win rate."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rlhf_api import layout
from rlhf_api.evaluation import read_summary
from rlhf_api.status import RLHFRunStatus

from ..report.summary import format_duration, format_metrics, headline, stage_rows

PHASE_STYLE = {"Succeeded": "green", "Failed": "red", "Suspended": "yellow", "Skipped": "dim"}


def summary(status: RLHFRunStatus, root: Path, now: dt.datetime | None = None) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column, justify in (("stage", "left"), ("status", "left"), ("attempts", "right"), ("duration", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    table.add_column("key metrics", overflow="fold")
    for row in stage_rows(status, now or dt.datetime.now(dt.UTC)):
        table.add_row(
            row.name,
            Text(row.phase, style=PHASE_STYLE.get(row.phase, "")),
            str(row.attempts),
            format_duration(row.seconds),
            format_metrics(row.metrics) or "-",
        )
    lines: list[RenderableType] = [table]
    found = headline(status)
    if found is not None:
        lines.append(Text.assemble(("headline ", "bold"), found.text()))
    comparison = read_summary(layout.eval_dir(str(root)))
    if comparison is not None and comparison.win_rate is not None:
        counts = f"{comparison.wins} wins, {comparison.ties} ties, {comparison.losses} losses"
        lines.append(
            Text.assemble(
                ("win rate ", "bold"),
                f"{comparison.win_rate:.1%} of {comparison.prompts} held-out prompts ({counts}); "
                f"samples in {Path(layout.eval_dir(str(root)))}",
            )
        )
    return Group(*lines)
