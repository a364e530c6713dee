"""report.html as a browser shows it: headless Chromium renders the verdict and the counts.

Chromium is the Debian package ``chromium``. Without it the test is skipped on a workstation,
but fails in CI (the ``CI`` environment variable set), where ``.ci/run`` installs it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from llmproto_conformance._reports import write_reports
from test_reports import synthetic_report

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def _chromium() -> str:
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: .ci/run must `apt-get install -y chromium`")
        pytest.skip("chromium is not installed (apt-get install -y chromium); CI requires it")
    return found


def _browse(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    page = write_reports(synthetic_report(), tmp_path / "reports")["html"]
    command = [_chromium(), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args,
               page.as_uri()]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=True)


def test_chromium_renders_the_verdict_and_the_counts(tmp_path: Path) -> None:
    """The DOM Chromium builds from report.html holds the verdict, the summary and the checks."""
    dom = _browse(tmp_path, "--dump-dom").stdout
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
    assert "FAIL 1 MUST check failed, 1 expected failure passed" in text
    assert "all levels 2 2 1 1 1 1" in text  # passed failed non-strict unsupported info expected
    assert "MUST 2 2 0 1 0 1" in text
    assert "SHOULD 0 0 1 0 0 0" in text
    assert "<script" not in dom.lower()  # the hostile bodies stayed text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    for check_id in ("selftest-fail", "selftest-should", "selftest-figures", "selftest-stale"):
        assert f'id="check-{check_id}"' in dom


def test_chromium_takes_a_screenshot_of_the_page(tmp_path: Path) -> None:
    """The page renders to a PNG (the look is checked by eye; this shows it renders at all)."""
    shot = tmp_path / "report.png"
    _browse(tmp_path, "--window-size=1200,1600", f"--screenshot={shot}")
    body = shot.read_bytes()
    assert b"\x89PNG\r\n\x1a\n" == body[:8]
    assert len(body) > 20_000  # a page with text and colour, not a blank canvas
