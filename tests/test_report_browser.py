"""The HTML report renders in a real headless Chromium: tables present, every plot decoded."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from fincocktail.report.render import write_report
from test_report import synthetic

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not __import__("os").environ.get("CI"),
    reason="chromium not installed (apt-get install chromium); CI installs it and never skips",
)


def _chromium(tmp_path, *args) -> subprocess.CompletedProcess:
    assert CHROMIUM, "chromium must be installed in CI"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


def _rendered(tmp_path, url) -> tuple[int, int, int]:
    dom = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", url).stdout
    body = re.search(r"<body([^>]*)>", dom).group(1)
    return tuple(int(re.search(rf'data-{k}="(\d+)"', body).group(1)) for k in ("plots", "plots-rendered", "table-rows"))


def test_report_renders_in_chromium(tmp_path):
    html_path, _ = write_report(synthetic(tmp_path), tmp_path / "out")
    url = html_path.resolve().as_uri()
    plots, rendered, rows = _rendered(tmp_path, url)
    assert plots == 5 and rendered == plots
    assert rows >= 3 + 6  # main table rows + cocktail-effect rows at least

    shot = tmp_path / "shot.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,2400", url)
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)
    assert img.shape[0] >= 2000 and img.shape[1] >= 1100
    assert float(np.std(img[..., :3])) > 0.05  # not a blank page


def test_broken_plot_is_detected(tmp_path):
    html_path, _ = write_report(synthetic(tmp_path), tmp_path / "out")
    page = html_path.read_text()
    broken = page.replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAA", 1)
    bad = tmp_path / "broken.html"
    bad.write_text(broken)
    plots, rendered, _ = _rendered(tmp_path, bad.resolve().as_uri())
    assert rendered == plots - 1


def test_findings_come_first_in_the_browser(tmp_path):
    from test_findings import study

    html_path, _ = write_report(study(tmp_path, {"cocktail": 0.15, "math": -0.15}), tmp_path / "out")
    dom = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", html_path.resolve().as_uri()).stdout
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert re.search(r'data-first-section="Findings', body), body
    assert int(re.search(r'data-findings-rows="(\d+)"', body).group(1)) >= 5  # (a) x2, (b) x2, (c), (d)
    assert "supported" in dom and "contradicted" in dom
