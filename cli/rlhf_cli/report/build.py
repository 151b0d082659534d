"""Gather a run directory into ReportData and write report.html plus plots/*.png beside it.

The run directory is `<workdir>/<run>/` locally, or a copy of `/workspace/<run>/` from a
cluster volume. The status comes from report.json (`rlhf run` writes it); without one (a
cluster copy), from each stage's result.json.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

from rlhf_api import layout
from rlhf_api.evaluation import EvalSample, read_samples, read_summary
from rlhf_api.files import write_text_atomic
from rlhf_api.result import read_result
from rlhf_api.stages import STAGES
from rlhf_api.status import RLHFRunStatus, StageStatus

from . import html, plots
from .panels import panels
from .scalars import read_scalars
from .summary import headline, stage_rows, stage_span

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
PLOTS_DIR = "plots"
SAMPLES_SHOWN = 12


class NotARunDirectory(ValueError):
    pass


def load_status(root: Path) -> tuple[RLHFRunStatus, list[str]]:
    """The run's status, and notes on what was missing."""
    path = root / REPORT_JSON
    if path.is_file():
        try:
            return RLHFRunStatus.model_validate(json.loads(path.read_text())), []
        except ValueError as error:
            raise NotARunDirectory(f"{path}: not an RLHFRun status: {str(error).splitlines()[0]}") from None
    stages = []
    for name in STAGES:
        result = read_result(layout.result_path(str(root / name)))
        if result is None:
            continue
        stages.append(
            StageStatus(
                name=name,
                phase="Succeeded" if result.status == "succeeded" else "Failed",
                attempts=1,
                start_time=result.started_at,
                completion_time=result.finished_at,
                metrics=dict(result.metrics),
                message=result.message,
            )
        )
    if not stages:
        raise NotARunDirectory(f"{root}: neither {REPORT_JSON} nor any <stage>/result.json: not a run directory")
    failed = any(s.phase == "Failed" for s in stages)
    status = RLHFRunStatus(phase="Failed" if failed else "Succeeded", stages=stages)
    return status, [f"no {REPORT_JSON}: stages, durations and metrics read from each stage's result.json"]


def pick_samples(samples: list[EvalSample], count: int = SAMPLES_SHOWN) -> list[EvalSample]:
    """Prompts where the two models answered differently first: that is what training changed."""
    differing = [s for s in samples if s.baseline != s.candidate]
    same = [s for s in samples if s.baseline == s.candidate]
    return (differing + same)[:count]


def timeline_bars(status: RLHFRunStatus, now: dt.datetime) -> list[tuple[str, dt.datetime, dt.datetime, str]]:
    bars: list[tuple[str, dt.datetime, dt.datetime, str]] = []
    for stage in status.stages:
        span = stage_span(stage, now)
        if span is not None:
            bars.append((stage.name, *span, stage.phase))
    return bars


def collect(root: Path, status: RLHFRunStatus | None = None, now: dt.datetime | None = None) -> html.ReportData:
    """Read everything and draw the figures (PNG bytes); writes nothing."""
    now = now or dt.datetime.now(dt.UTC)
    notes: list[str] = []
    if status is None:
        status, notes = load_status(root)
    curves: dict[str, list[html.Figure]] = {}
    for stage in status.stages:
        if stage.phase == "Skipped":
            continue
        curves[stage.name] = [
            html.Figure(panel.title, f"{PLOTS_DIR}/{stage.name}-{panel.slug}.png", plots.panel_png(panel, stage.name))
            for panel in panels(read_scalars(root / stage.name / layout.LOGS))
        ]
    bars = timeline_bars(status, now)
    timeline = html.Figure("Stage timeline", f"{PLOTS_DIR}/timeline.png", plots.timeline_png(bars)) if bars else None
    eval_dir = root / layout.EVAL
    return html.ReportData(
        run_name=root.name,
        root=str(root),
        status=status,
        rows=stage_rows(status, now),
        headline=headline(status),
        curves=curves,
        timeline=timeline,
        comparison=read_summary(eval_dir),
        samples=pick_samples(read_samples(eval_dir)),
        generated_at=now.strftime("%Y-%m-%d %H:%M:%S UTC"),
        notes=notes,
    )


def write_report(root: str | Path, status: RLHFRunStatus | None = None) -> Path:
    """Write `<root>/report.html` and `<root>/plots/*.png`; returns the HTML's path."""
    root = Path(root).resolve()
    data = collect(root, status)
    plot_dir = root / PLOTS_DIR
    plot_dir.mkdir(parents=True, exist_ok=True)
    figures = [f for figs in data.curves.values() for f in figs] + ([data.timeline] if data.timeline else [])
    for figure in figures:
        (root / figure.filename).write_bytes(figure.png)
    target = root / REPORT_HTML
    write_text_atomic(target, html.render(data))
    return target


def write_report_at_end(root: str | Path, status: RLHFRunStatus) -> Path | None:
    """`rlhf run`'s last step: the report, or a warning on stderr. A run's outcome never depends
    on drawing it (a missing plotting extra, a full disk)."""
    try:
        return write_report(root, status)
    except Exception as error:  # the run is done either way; say why there is no report
        print(f"rlhf: no report.html ({type(error).__name__}: {error}); try `rlhf report {root}`", file=sys.stderr)
        return None
