"""matplotlib figures as PNG bytes: one per panel, and the stage timeline. Agg, no display."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence
from typing import Any

from .panels import Panel, label
from .scalars import ReportDependencyMissing

WIDTH, HEIGHT, DPI = 5.2, 3.0, 100


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as error:
        raise ReportDependencyMissing(
            "rlhf report needs the report extra (matplotlib, tensorboard): pip install 'rlhf-operator[report]'"
        ) from error
    matplotlib.use("Agg")  # files only: never open a window, work without a display
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def panel_png(panel: Panel, stage: str) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH, HEIGHT))
    if panel.band is not None:
        mean, std = panel.band
        stds = dict(zip(std.steps, std.values, strict=True))
        steps = [s for s in mean.steps if s in stds]
        values = dict(zip(mean.steps, mean.values, strict=True))
        low = [values[s] - stds[s] for s in steps]
        high = [values[s] + stds[s] for s in steps]
        ax.fill_between(steps, low, high, alpha=0.2, label="± std")
    for series in panel.series:
        one_point = len(series.steps) == 1
        ax.plot(
            series.steps,
            series.values,
            marker="o" if one_point or len(series.steps) <= 12 else None,
            markersize=4,
            linewidth=1.5,
            label=label(series, panel),
        )
    if panel.log_scale and all(v > 0 for s in panel.series for v in s.values):
        ax.set_yscale("log")
    ax.set_title(f"{stage}: {panel.title}", fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if len(panel.series) > 1 or panel.band is not None:
        ax.legend(fontsize=8)
    return _png(fig)


def timeline_png(bars: Sequence[tuple[str, dt.datetime, dt.datetime, str]]) -> bytes:
    """Horizontal bars (stage, start, end, phase), first stage on top."""
    plt = _pyplot()
    import matplotlib.dates as mdates

    colors = {"Succeeded": "tab:green", "Failed": "tab:red", "Running": "tab:blue", "Suspended": "tab:gray"}
    fig, ax = plt.subplots(figsize=(WIDTH * 1.6, 0.6 + 0.45 * max(1, len(bars))))
    for row, (_, start, end, phase) in enumerate(bars):
        width = mdates.date2num(end) - mdates.date2num(start)
        ax.barh(row, width, left=mdates.date2num(start), color=colors.get(phase, "tab:orange"), height=0.6)
        seconds = (end - start).total_seconds()
        ax.text(mdates.date2num(end), row, f"  {seconds:.0f}s", va="center", fontsize=8)
    ax.set_yticks(range(len(bars)), [b[0] for b in bars])
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.set_xlabel("time (UTC)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Stage timeline", fontsize=10)
    return _png(fig)
