"""Headless Chromium (the Debian package) for rendering test pages: DOM after load, screenshots.

Flags from DESIGN/env notes: no sandbox (root in CI), no GPU, no network chatter, a fresh
profile per call. A proxy that points nowhere makes any page fetch from the network fail, so
a page that still renders everything is self-contained.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--proxy-server=http://127.0.0.1:9",  # nothing listens there: no fetch from the network can succeed
    "--proxy-bypass-list=<-loopback>",
]


def run(page: Path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def dump_dom(page: Path) -> str:
    """The DOM after the load event (scripts in the page have run)."""
    proc = run(page, "--virtual-time-budget=10000", "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def screenshot(page: Path, target: Path, width: int = 1280, height: int = 4000) -> Path:
    proc = run(page, f"--window-size={width},{height}", f"--screenshot={target}")
    assert proc.returncode == 0 and target.is_file(), proc.stderr[-2000:]
    return target
