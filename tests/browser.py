"""Headless Chromium for the page tests. `.ci/run` installs Chromium and sets
SPINEBENCH_REQUIRE_BROWSER=1, so in CI a missing browser fails these tests instead of skipping
them."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: The flags this machine needs (without the background-networking ones, Chromium's own
#: connections are refused here and it stalls).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
#: A script that writes the page's scroll and client widths into the DOM once it has laid out.
PROBE = (
    "<script>window.addEventListener('load', function () {"
    " var d = document.documentElement, p = document.createElement('pre');"
    " p.id = 'probe'; p.textContent = d.scrollWidth + ' ' + d.clientWidth;"
    " document.body.appendChild(p); });</script>"
)


def require_chromium() -> str:
    """Chromium's path; skips without one, unless CI requires the browser."""
    if CHROMIUM is None:
        if os.environ.get("SPINEBENCH_REQUIRE_BROWSER"):
            pytest.fail("chromium is required here (SPINEBENCH_REQUIRE_BROWSER) but not installed")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return CHROMIUM


def chromium(*args: str, width: int = 1400, height: int = 1000, timeout: int = 120) -> str:
    """Run headless Chromium with a fresh profile; its stdout."""
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [
                require_chromium(),
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def dump_dom(url: str, budget_ms: int = 5000, **kwargs) -> str:
    """The DOM after the page's scripts ran for ``budget_ms`` of virtual time."""
    return chromium(f"--virtual-time-budget={budget_ms}", "--dump-dom", url, **kwargs)


def page_text(url: str, budget_ms: int = 20000, **kwargs) -> str:
    """The text a reader sees once a single-page app has rendered: the dumped DOM without its
    scripts, styles and tags, whitespace collapsed (markup may split a sentence)."""
    dom = dump_dom(url, budget_ms, **kwargs)
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())


def widths(page: Path, width: int = 1400) -> tuple[int, int]:
    """(scrollWidth, clientWidth) of a page's document at a window ``width`` pixels wide."""
    probed = page.with_name(f".probe-{page.name}")
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    try:
        dom = dump_dom(probed.as_uri(), width=width)
    finally:
        probed.unlink()
    found = re.search(r'<pre id="probe">(\d+) (\d+)</pre>', dom)
    assert found, dom[-2000:]
    return int(found[1]), int(found[2])
