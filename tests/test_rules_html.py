"""report.html shows what report.json says: every client of report.json has
its row in both tables, each column holds the report.json figure its header
names (the cell's data-v, the value the page sorts by), every chart has each
client's line with one point per perf interval or stats sample, every
rollover is marked, and the headline and server warnings are on the page.

The run is crafted (perf.jsonl built from protocol messages) so that every
figure differs from its neighbours (p50 from p99, CPU mean from max, chunk
from file size), and re-rendered as the report command does.
"""
import re

import pytest

from diskbench import metrics, protocol
from diskbench.report import htmlout, rerender
from diskbench.report import text as text_mod
from tests.report_runs import Crafted

#: (name, host, MiB/s, chunk latency s, perf intervals, rollovers, CPU %) of
#: the crafted clients; each also sends a stats sample at EXTRA_CPU/EXTRA_RSS.
CLIENTS = (("alpha", "host-a", 120, 0.002, 4, 2, 20.0),
           ("beta", "host-b", 40, 0.009, 3, 1, 5.0),
           ("gamma", "host-c", 250, 0.004, 5, 3, 35.0))
EXTRA_CPU = 90.0
EXTRA_RSS = 64 * metrics.MIB

#: Clients table: header -> the report.json figure it shows.
CLIENT_COLUMNS = {
    "client": lambda e: e["client"],
    "host": lambda e: e["host"],
    "state": text_mod.state_label,
    "chunk MiB": lambda e: e["chunk_mib"],
    "MiB/s mean": lambda e: e["throughput_mib_s"]["mean"],
    "p50 ms": lambda e: e["latency_ms"]["p50"],
    "p99 ms": lambda e: e["latency_ms"]["p99"],
    "rollovers": lambda e: e["rollover_count"],
    "CPU% mean": lambda e: e["writer_cpu_percent"]["mean"],
    "RSS MiB max": lambda e: e["writer_rss_mib"]["max"],
    "written MiB": lambda e: e["written_mib"],
    "went away": lambda e: e["went_away_count"],
    "why": lambda e: e["state_why"],
}
#: Environment table: header -> the report.json figure it shows.
ENV_COLUMNS = {
    "client": lambda e: e["client"],
    "host": lambda e: e["host"],
    "directory": lambda e: e["target_dir"],
    "fs": lambda e: e["fs"],
    "python": lambda e: e["python"],
    "os": lambda e: e["os"],
    "sync": lambda e: e["sync"],
    "preallocated": lambda e: "yes" if e["preallocated"] else "no",
    "huge-page buffer MiB": lambda e: e["buffer_huge_page_mib"],
    "chunk MiB": lambda e: e["chunk_mib"],
    "file MiB": lambda e: e["file_mib"],
    "clock offset s": lambda e: e["clock_offset_s"],
    "diskbench": lambda e: e["diskbench_version"],
    "psutil": lambda e: e["psutil"],
    "errors and notes": lambda e: "; ".join(
        [x["what"] for x in e["error_list"]] + list(e["notices"])),
}
_UNESCAPE = (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#x27;", "'"),
             ("&amp;", "&"))


def _unescape(text):
    for a, b in _UNESCAPE:
        text = text.replace(a, b)
    return text


def _crafted(log_dir):
    run = Crafted(log_dir)
    for name, host, mib_s, lat, intervals, rollovers, cpu in CLIENTS:
        run.client(name, host, mib_s, lat, intervals=intervals, rollovers=rollovers,
                   cpu=cpu, stop=False)
        t = run.start_ts + intervals + 1.5
        run.add(name, protocol.STATS, t, writer_pid=42, cpu_percent=EXTRA_CPU,
                rss_bytes=EXTRA_RSS, source="proc", interval_s=1.0)
        run.add(name, protocol.NOTE, t, text="note of %s" % name)
        run.add(name, protocol.ERROR, t, source="writer", reason="slow disk on %s" % name,
                errno=None, fatal=False)
        run.add(name, protocol.STOP, t + 0.5, reason=protocol.STOP_DURATION,
                bytes_written=1, chunks_written=1, rollovers=rollovers,
                elapsed_s=float(intervals), io_s=1.0, dropped_messages=0)
    return run.save()


@pytest.fixture(scope="module")
def page(tmpdir_factory):
    log_dir = _crafted(str(tmpdir_factory.mktemp("html").join("run")))
    rep, series = rerender.load(log_dir, None)
    assert rep["run"]["server_warnings"]     # a re-render says why it is one
    return rep, htmlout.render(rep, series)


def _table_after(html, heading):
    """(headers, rows of data-v values) of the first table after <h2>heading</h2>."""
    part = html.split("<h2>%s</h2>" % heading, 1)[1].split("</table>", 1)[0]
    head, body = part.split("</thead>", 1)
    headers = [_unescape(h) for h in re.findall(r"<th[^>]*>(.*?)</th>", head)]
    rows = [[_unescape(v) for v in re.findall(r'<td[^>]*data-v="([^"]*)"', row)]
            for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]
    return headers, rows


def _same(shown, value):
    if value is None:   # a number's cell sorts by "", a text's shows "-"
        return shown in ("", "-")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(shown) == pytest.approx(value, rel=1e-9)
    return shown == "%s" % value


@pytest.mark.parametrize("heading,columns", [("Clients", CLIENT_COLUMNS),
                                             ("Environment", ENV_COLUMNS)])
def test_html_tables_have_every_client_and_each_column_its_report_json_figure(
        page, heading, columns):
    """Each table has one row per client of report.json (none missing, none
    extra) and every column's cell holds the report.json figure its header
    names, for every client."""
    rep, html = page
    headers, rows = _table_after(html, heading)
    assert sorted(headers) == sorted(columns)
    assert sorted(r[headers.index("client")] for r in rows) == \
        sorted(e["client"] for e in rep["clients"])
    entries = dict((e["client"], e) for e in rep["clients"])
    for row in rows:
        e = entries[row[headers.index("client")]]
        for header, shown in zip(headers, row):
            want = columns[header](e)
            assert _same(shown, want), (e["client"], header, shown, want)


def test_html_distinct_figures_in_the_crafted_report(page):
    """Precondition of the column test: per client, p50 != p99, CPU mean !=
    CPU max, chunk != file size, and no two clients share a figure."""
    rep, _ = page
    for e in rep["clients"]:
        assert e["latency_ms"]["p50"] != e["latency_ms"]["p99"]
        assert e["writer_cpu_percent"]["mean"] != e["writer_cpu_percent"]["max"]
        assert e["chunk_mib"] != e["file_mib"]
        assert e["notices"] and e["error_list"]
    for key in ("written_mib", "rollover_count"):
        values = [e[key] for e in rep["clients"]]
        assert len(set(values)) == len(values), key


def _paths(html, chart):
    svg = html.split('data-chart="%s"' % chart, 1)[1].split("</svg>", 1)[0]
    return [(_unescape(c), attrs, d) for c, attrs, d in re.findall(
        r'<path class="series" data-client="([^"]*)"([^>]*?) stroke="[^"]*" '
        r'stroke-width="[^"]*" d="([^"]*)"', svg)], svg


def _points(d):
    return len(re.findall(r"[ML]-?\d", d))


def test_html_every_chart_has_each_clients_line_with_every_point(page):
    """Every chart has a line for each client of report.json (latency: p50 and
    p99); the throughput line has a point per perf interval, the CPU and RSS
    lines one per stats sample; each rollover is a mark on its client."""
    rep, html = page
    names = sorted(e["client"] for e in rep["clients"])
    entries = dict((e["client"], e) for e in rep["clients"])
    for chart in ("throughput", "latency", "cpu", "rss"):
        paths, svg = _paths(html, chart)
        per = 2 if chart == "latency" else 1
        assert sorted(c for c, _, _ in paths) == sorted(names * per), chart
        for client, _attrs, d in paths:
            e = entries[client]
            if chart == "throughput":
                assert _points(d) == e["perf_interval_count"], client
            elif chart in ("cpu", "rss"):
                assert _points(d) == e["writer_cpu_percent"]["sample_count"], (chart, client)
        if chart == "latency":
            stats = sorted((c, a.strip().split()[0]) for c, a, _ in paths)
            assert stats == sorted([(n, 'data-stat="p50"') for n in names] +
                                   [(n, 'data-stat="p99"') for n in names])
    _, svg = _paths(html, "throughput")
    marks = re.findall(r'<line class="marker rollover" data-client="([^"]*)"', svg)
    for name in names:
        assert marks.count(name) == entries[name]["rollover_count"], name


def test_html_has_the_headline_and_every_server_warning(page):
    """Each line of the report's headline and each server warning of
    report.json is on the page (escaped)."""
    rep, html = page
    for line in text_mod.headline(rep):
        assert htmlout.esc(line) in html, line
    for warning in rep["run"]["server_warnings"]:
        assert htmlout.esc(warning) in html, warning


def test_a_chart_is_made_an_element_at_a_time_and_scaled_past_its_gaps():
    """A chart's SVG comes an element at a time, each its own piece of the page
    (a fleet's chart is megabytes: never its whole text and elements at once),
    the same text as ``svg()``; its y scale is the highest real point, a gap
    (None) first or anywhere never taken for one."""
    chart = htmlout.Chart("throughput", "t", "MiB/s", 10.0, 1.0)
    chart.lines = [("c%d" % i, "#000", htmlout.pack([(0.0, None), (1.0, 10.0 + i), (2.0, None),
                                                     (3.0, 20.0)]), "")
                   for i in range(3)]
    parts = list(chart.svg_parts())
    assert "\n".join(parts) == chart.svg()
    assert all(part.count("<path") <= 1 for part in parts)
    assert sum(part.count("<path") for part in parts) == 3
    # y_max is 20 * 1.05: the grid labels reach 20, never the empty chart's 1.0
    labels = [part for part in parts if 'class="grid"' in part]
    assert any(">20</text>" in part for part in labels), labels


def test_the_page_takes_each_chart_element_as_its_own_piece(tmpdir):
    """report.html is written piece by piece, a chart's elements each their own."""
    run = Crafted(str(tmpdir.join("pieces")))
    for i in range(3):
        run.client("n%d" % i, "h%d" % i, 100 + i, 0.004, intervals=3)
    rep, series = rerender.load(run.save(), None)
    pieces = list(htmlout.render_pieces(rep, series))
    assert sum(piece.count("<path") for piece in pieces) >= 3 * 2
    assert all(piece.count("<path") <= 1 for piece in pieces)

