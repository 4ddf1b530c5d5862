"""report.html in a real browser: headless Chromium loads it, its DOM has one data series per
client in every chart, and a screenshot is saved (docs/report-screenshot.png under
``make test-browser``). Skipped, with the reason, where Chromium is not installed."""
import os
import re

import pytest

from tests.helpers import REPO, Procs, communicate
from tests.report_runs import Crafted, real_run, run_report

try:
    from shutil import which as _which
except ImportError:  # Python 2.7
    from distutils.spawn import find_executable as _which

CHROMIUM = _which("chromium") or _which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (make test-browser installs it "
    "with apt: apt-get install chromium)")
#: Chromium start + render; generous, it is a cold start on a loaded machine.
BROWSER_TIMEOUT_S = 90
#: Where the screenshot goes (the README shows docs/report-screenshot.png).
SCREENSHOT_ENV = "DISKBENCH_SCREENSHOT"


def _chromium(request, tmpdir, *args):
    """Run headless Chromium to completion; (exit code, stdout, stderr)."""
    browser = Procs(python=CHROMIUM)
    request.addfinalizer(browser.cleanup)
    proc = browser.start(["--headless", "--no-sandbox", "--disable-gpu",
                          "--user-data-dir=%s" % tmpdir.join("chromium-profile")] +
                         list(args))
    out, err = communicate(proc, BROWSER_TIMEOUT_S)
    return proc.returncode, out, err


def _series(dom, chart):
    """{client: [path attributes...]} of the series paths in chart ``chart``."""
    svg = re.search(r'<svg[^>]*data-chart="%s".*?</svg>' % chart, dom, re.S)
    assert svg, "no %s chart in the DOM" % chart
    out = {}
    for attrs in re.findall(r'<path class="series"([^>]*)>', svg.group(0)):
        name = re.search(r'data-client="([^"]*)"', attrs).group(1)
        out.setdefault(name, []).append(attrs)
    return out


def test_report_html_renders_one_series_per_client_in_chromium(procs, tmpdir, request):
    logs = real_run(procs, tmpdir, str(tmpdir.join("logs")), names=("c1", "c2", "c3"))
    page = "file://" + os.path.join(logs, "report.html")
    code, dom, err = _chromium(request, tmpdir, "--dump-dom", page)
    assert code == 0, err
    assert "diskbench report" in dom
    for chart in ("throughput", "latency", "cpu", "rss"):
        series = _series(dom, chart)
        assert sorted(series) == ["c1", "c2", "c3"], (chart, sorted(series))
    for name, paths in _series(dom, "throughput").items():
        points = re.search(r' d="([^"]*)"', paths[0]).group(1)
        assert points.count("L") >= 1, (name, points)  # a line, not a lone point
    stats = dict((n, sorted(re.search(r'data-stat="(\w+)"', a).group(1) for a in p))
                 for n, p in _series(dom, "latency").items())
    assert all(v == ["p50", "p99"] for v in stats.values()), stats
    assert 'class="window"' in dom                  # the all-writing period is shaded
    assert 'class="marker rollover"' in dom         # the clients rolled over
    assert dom.count('<tr><td class="t" data-v="c') == 3 * 2   # client + environment rows
    shot = os.environ.get(SCREENSHOT_ENV) or str(tmpdir.join("report.png"))
    shot = os.path.join(REPO, shot) if not os.path.isabs(shot) else shot
    code, out, err = _chromium(request, tmpdir, "--hide-scrollbars",
                               "--window-size=1200,2400", "--screenshot=%s" % shot, page)
    assert code == 0, err
    with open(shot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(shot) > 20000             # a page with charts, not a blank


def test_report_html_with_200_clients_folds_the_legend(procs, tmpdir, request):
    run = Crafted(str(tmpdir.join("many")))
    names = ["node%03d" % i for i in range(200)]
    for i, name in enumerate(names):
        run.client(name, "host%03d" % i, 20 + i % 50, 0.002 + (i % 7) / 1000.0,
                   intervals=3)
    code, out, err = run_report(procs, run.save())
    assert code == 0, err
    code, dom, err = _chromium(request, tmpdir, "--dump-dom",
                               "file://" + os.path.join(run.log_dir, "report.html"))
    assert code == 0, err
    assert sorted(_series(dom, "throughput")) == names
    assert "200 clients: hover a line for its name" in dom
    assert '<p class="legend"><span>' not in dom     # no 200-entry legend
    widths = set(re.findall(r'stroke-width="([0-9.]+)"', dom))
    assert widths == set(["0.50"]), widths           # thin lines
