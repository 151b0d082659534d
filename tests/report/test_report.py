"""`rlhf report DIR`: the files it writes, what the page holds, and the page rendered in Chromium."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from rlhf_cli import main as cli
from rlhf_cli.report.build import REPORT_HTML, collect, pick_samples, write_report

from . import chromium
from .conftest import make_run

IMG = re.compile(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+" alt="([^"]*)">')


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One report written for the tests that only read it (drawing costs seconds)."""
    return write_report(make_run(tmp_path_factory.mktemp("report") / "quickstart"))


def without_logs(root: Path) -> Path:
    for stage in ("sft", "reward", "ppo"):
        shutil.rmtree(root / stage / "logs")
    return root


def test_report_embeds_every_plot_and_writes_it_beside(report: Path) -> None:
    run_dir = report.parent
    assert report == run_dir / REPORT_HTML
    page = report.read_text()
    pngs = sorted(p.name for p in (run_dir / "plots").glob("*.png"))
    assert pngs == [
        "ppo-entropy.png",
        "ppo-kl-coefficient.png",
        "ppo-kl-to-the-reference.png",
        "ppo-policy-and-value-loss.png",
        "ppo-response-length-tokens.png",
        "ppo-reward-mean-std.png",
        "reward-loss.png",
        "reward-pair-accuracy.png",
        "reward-reward-model-scores.png",
        "sft-entropy.png",
        "sft-learning-rate.png",
        "sft-loss.png",
        "timeline.png",
    ]
    assert all((run_dir / "plots" / p).read_bytes().startswith(b"\x89PNG") for p in pngs)
    assert len(IMG.findall(page)) == len(pngs)  # every plot embedded, as data
    # self-contained: nothing to fetch (no http(s), no src/href to a file)
    assert not re.search(r"""(src|href)=["'](?!data:)""", page) and "http://" not in page and "https://" not in page
    assert "<script" not in page


def test_report_page_has_the_headline_stages_comparison_and_escaped_samples(report: Path) -> None:
    page = report.read_text()
    assert "<title>RLHF run quickstart</title>" in page
    assert "task_accuracy 0.475 → 0.808" in page and "win rate <b>66.7%</b>" in page
    assert "1 wins, 2 ties, 0 losses over 3" in page
    for stage in ("sft", "reward", "ppo"):
        assert f"<td>{stage}</td>" in page
    assert "pair_accuracy=0.992" in page and "1m39s" not in page  # durations: 39s, 56s, 42s
    assert ">39s<" in page and ">56s<" in page and ">42s<" in page
    assert "24 &lt;b&gt;" in page and "24 <b>" not in page  # generations are text, never markup
    # the sample whose answers differ comes first
    assert page.index("What is 26 + 8?") < page.index("What is 82 + 7?")


def test_report_without_report_json_reads_each_stage_result(tmp_path: Path) -> None:
    root = without_logs(make_run(tmp_path / "copied-from-volume", with_report_json=False))
    data = collect(root)
    assert [(r.name, r.phase) for r in data.rows] == [
        ("sft", "Succeeded"),
        ("reward", "Succeeded"),
        ("ppo", "Succeeded"),
    ]
    assert data.notes and "result.json" in data.notes[0]
    assert data.headline is not None and data.headline.text() == "task_accuracy 0.475 -> 0.808"


def test_report_of_a_run_without_comparison_or_logs(tmp_path: Path) -> None:
    root = without_logs(make_run(tmp_path / "r"))
    shutil.rmtree(root / "eval")
    page = write_report(root).read_text()
    assert "No comparison yet" in page and "No TensorBoard scalars in this stage" in page


def test_pick_samples_puts_changed_answers_first(run_dir: Path) -> None:
    from rlhf_api.evaluation import read_samples

    samples = read_samples(run_dir / "eval")
    assert [s.reference for s in pick_samples(samples, 2)] == ["34", "89"]


def test_cli_report(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    without_logs(run_dir)
    assert cli.main(["report", str(run_dir)]) == 0
    assert "report.html" in capsys.readouterr().out and (run_dir / "report.html").is_file()
    assert cli.main(["report", str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err


PROBE = """<script>
window.__errors = [];
window.addEventListener("error", e => window.__errors.push(e.message || ("failed to load " + e.target.src)), true);
window.addEventListener("load", () => {
  const images = [...document.images];
  const drawn = images.filter(i => i.complete && i.naturalWidth > 0).length;
  document.title = `IMAGES ${drawn}/${images.length} ERRORS ${window.__errors.length} ${window.__errors.join("|")}`;
});
</script>"""


@pytest.mark.skipif(not chromium.CHROMIUM.exists(), reason="needs Chromium (/usr/bin/chromium, Debian package)")
def test_report_renders_in_headless_chromium_with_its_plots(report: Path, tmp_path: Path) -> None:
    page = report
    embedded = len(IMG.findall(page.read_text()))
    # A copy with a probe script (the report itself has none): counts decoded images and errors.
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
    dom = chromium.dump_dom(probe)
    title = re.search(r"<title>(.*?)</title>", dom, re.S)
    assert title is not None, dom[:500]
    assert title.group(1).strip() == f"IMAGES {embedded}/{embedded} ERRORS 0"

    # The report as a person opens it: a screenshot shows the plots (matplotlib's line colours).
    import numpy as np
    from PIL import Image

    shot = np.asarray(Image.open(chromium.screenshot(page, tmp_path / "report.png")).convert("RGB")).astype(int)

    def count(rgb: tuple[int, int, int], tolerance: int = 25) -> int:
        return int((np.abs(shot - np.array(rgb)).max(axis=2) < tolerance).sum())

    blue, orange = count((31, 119, 180)), count((255, 127, 14))  # matplotlib's C0 and C1
    assert blue > 2000 and orange > 200, (blue, orange)


def test_the_report_at_the_end_of_a_run_never_fails_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rlhf_api.status import RLHFRunStatus
    from rlhf_cli.report.build import write_report_at_end

    blocked = tmp_path / "run"
    blocked.mkdir()
    (blocked / "plots").write_text("a file where the plots folder goes")
    status = RLHFRunStatus(phase="Succeeded")
    assert write_report_at_end(blocked, status) is None
    assert "no report.html" in capsys.readouterr().err
    assert write_report_at_end(tmp_path / "fine", status) == tmp_path / "fine" / "report.html"
