"""The report page, pure: data in, one self-contained HTML string out.

Everything is inline (CSS, PNGs as data: URIs) and nothing is fetched, so the file opens
offline and can be mailed or attached to a ticket. No JavaScript.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from html import escape

from rlhf_api.evaluation import EvalSample, EvalSummary
from rlhf_api.status import RLHFRunStatus

from .summary import Headline, StageRow, format_duration, format_metrics, format_value


@dataclass(frozen=True)
class Figure:
    title: str
    filename: str  # the PNG written beside the report, relative to the run directory
    png: bytes


@dataclass
class ReportData:
    run_name: str
    root: str
    status: RLHFRunStatus
    rows: list[StageRow]
    headline: Headline | None
    curves: dict[str, list[Figure]]  # stage -> its panels
    timeline: Figure | None
    comparison: EvalSummary | None
    samples: list[EvalSample]
    generated_at: str
    notes: list[str] = field(default_factory=list)  # what could not be shown, and why


CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1180px;
       color: #1d232a; padding: 0 16px; }
h1 { font-size: 24px; margin-bottom: 4px; } h2 { margin-top: 32px; border-bottom: 1px solid #dde; }
.lead { font-size: 16px; } .muted { color: #667; }
.phase { display: inline-block; padding: 1px 8px; border-radius: 9px; color: #fff; font-weight: 600; }
.Succeeded { background: #2e7d32; } .Failed { background: #c62828; } .Running, .Retrying { background: #1565c0; }
.Pending, .Skipped, .Suspended { background: #757575; }
table { border-collapse: collapse; margin: 8px 0; } th, td { border: 1px solid #dde; padding: 4px 8px;
       text-align: left; vertical-align: top; } th { background: #f3f4f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { margin: 0; white-space: pre-wrap; font: 12px/1.35 ui-monospace, monospace; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; } figure { margin: 0; }
figure img { width: 372px; max-width: 100%; border: 1px solid #eee; } figure.wide img { width: 860px; }
.win { color: #2e7d32; font-weight: 600; } .loss { color: #c62828; }
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _img(figure: Figure, wide: bool = False) -> str:
    return (
        f'<figure{" class=wide" if wide else ""}><img src="{data_uri(figure.png)}" alt="{escape(figure.title)}">'
        f"<figcaption class=muted>{escape(figure.filename)}</figcaption></figure>"
    )


def _phase(phase: str) -> str:
    return f'<span class="phase {escape(phase)}">{escape(phase)}</span>'


def _stages_table(rows: list[StageRow]) -> str:
    body = "".join(
        f"<tr><td>{escape(r.name)}</td><td>{_phase(r.phase)}</td><td class=num>{r.attempts}</td>"
        f"<td class=num>{format_duration(r.seconds)}</td><td>{escape(format_metrics(r.metrics))}</td>"
        f"<td>{escape(r.message or '')}</td></tr>"
        for r in rows
    )
    return (
        "<table><tr><th>stage</th><th>status</th><th>attempts</th><th>duration</th>"
        f"<th>key metrics</th><th>message</th></tr>{body}</table>"
    )


def _metrics_table(status: RLHFRunStatus) -> str:
    stages = [s for s in status.stages if s.metrics]
    if not stages:
        return "<p class=muted>No stage reported metrics yet.</p>"
    keys = sorted({k for s in stages for k in s.metrics})
    head = "".join(f"<th>{escape(s.name)}</th>" for s in stages)
    body = "".join(
        f"<tr><td>{escape(k)}</td>"
        + "".join(f"<td class=num>{format_value(s.metrics[k]) if k in s.metrics else ''}</td>" for s in stages)
        + "</tr>"
        for k in keys
    )
    return f"<table><tr><th>metric</th>{head}</tr>{body}</table>"


def _score(value: float | None, digits: str = ".3g") -> str:
    return "-" if value is None else format(value, digits)


def _comparison(summary: EvalSummary, samples: list[EvalSample]) -> str:
    parts = []
    if summary.win_rate is not None:
        parts.append(
            f"<p class=lead>Win rate of the trained model: <b class=win>{summary.win_rate:.1%}</b> "
            f"({summary.wins} wins, {summary.ties} ties, {summary.losses} losses over {summary.prompts} "
            f"held-out prompts, scored by {escape(summary.reward_model or '')}; ties count half).</p>"
        )
    else:
        parts.append(
            f"<p class=lead>{summary.prompts} held-out prompts; no reward model in this run, so no win rate.</p>"
        )
    rows = [("model", summary.baseline.model, summary.candidate.model)]
    rows.append(("reward mean", _score(summary.baseline.reward_mean), _score(summary.candidate.reward_mean)))
    rows.append(("task accuracy", _score(summary.baseline.task_accuracy), _score(summary.candidate.task_accuracy)))
    rows.append(
        ("answer length (tokens)", _score(summary.baseline.response_length), _score(summary.candidate.response_length))
    )
    body = "".join(f"<tr><th>{escape(a)}</th><td>{escape(b)}</td><td>{escape(c)}</td></tr>" for a, b, c in rows)
    parts.append(
        f"<table><tr><th></th><th>before ({escape(summary.stage)}'s starting model)</th>"
        f"<th>after ({escape(summary.stage)})</th></tr>{body}</table>"
        f"<p class=muted>Greedy decoding, at most {summary.max_new_tokens} new tokens; "
        f"every sample is in eval/samples.jsonl.</p>"
    )
    if samples:
        parts.append(_samples_table(samples))
    return "".join(parts)


def _answer(text: str, score: float | None, correct: bool | None) -> str:
    mark = "" if correct is None else (" <span class=win>✓</span>" if correct else " <span class=loss>✗</span>")
    extra = "" if score is None else f"<div class=muted>score {score:.3g}</div>"
    return f"<td><pre>{escape(text)}</pre>{mark}{extra}</td>"


def _samples_table(samples: list[EvalSample]) -> str:
    has_reference = any(s.reference is not None for s in samples)
    reference_head = "<th>reference</th>" if has_reference else ""
    head = f"<tr><th>prompt</th>{reference_head}<th>before</th><th>after</th></tr>"
    body = ""
    for s in samples:
        reference = f"<td><pre>{escape(s.reference or '')}</pre></td>" if has_reference else ""
        body += (
            f"<tr><td><pre>{escape(s.prompt)}</pre></td>{reference}"
            f"{_answer(s.baseline, s.baseline_score, s.baseline_correct)}"
            f"{_answer(s.candidate, s.candidate_score, s.candidate_correct)}</tr>"
        )
    return f"<h3>Sample generations</h3><table>{head}{body}</table>"


def render(data: ReportData) -> str:
    status = data.status
    lead = [_phase(status.phase)]
    if data.headline is not None:
        lead.append(f"<b>{escape(data.headline.text('→'))}</b>")
    if data.comparison is not None and data.comparison.win_rate is not None:
        lead.append(f"win rate <b>{data.comparison.win_rate:.1%}</b>")
    sections = [
        f"<h1>RLHF run {escape(data.run_name)}</h1>",
        f"<p class=lead>{' · '.join(lead)}</p>",
        f"<p class=muted>{escape(status.message or '')}</p>" if status.message else "",
        "<h2>Stages</h2>",
        _stages_table(data.rows),
        "<h2>Timeline</h2>",
        _img(data.timeline, wide=True) if data.timeline else "<p class=muted>No stage has started yet.</p>",
        "<h2>Comparison</h2>",
        _comparison(data.comparison, data.samples)
        if data.comparison is not None
        else "<p class=muted>No comparison yet (eval/summary.json): it runs after the final stage, "
        "or with <code>rlhf compare DIR</code>.</p>",
        "<h2>Training curves</h2>",
    ]
    for stage, figures in data.curves.items():
        sections.append(f"<h3>{escape(stage)}</h3>")
        if figures:
            sections.append('<div class="grid">' + "".join(_img(f) for f in figures) + "</div>")
        else:
            sections.append("<p class=muted>No TensorBoard scalars in this stage's logs/.</p>")
    sections += ["<h2>All metrics</h2>", _metrics_table(status)]
    if data.notes:
        sections.append("<h2>Notes</h2><ul>" + "".join(f"<li>{escape(n)}</li>" for n in data.notes) + "</ul>")
    origin = f"Written by rlhf report at {data.generated_at} from {data.root}."
    sections.append(f"<p class=muted>{escape(origin)}</p>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>RLHF run {escape(data.run_name)}</title><style>{CSS}</style></head>"
        f"<body>{''.join(sections)}</body></html>\n"
    )
