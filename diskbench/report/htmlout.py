"""report.html: one self-contained page (inline SVG and CSS, a few lines of plain JS).

No network, no framework: it opens from a laptop's file browser years later.
Every text that came from a client is escaped. Charts put all clients on the
server's clock (see series.py) with time 0 at the run's start.
"""
from __future__ import absolute_import, division

import array
import math

from diskbench import metrics
from diskbench.report import series as series_mod
from diskbench.report import figures as figures_mod
from diskbench.report import text as text_mod

try:  # Python 3
    from html import escape as _escape
except ImportError:  # pragma: no cover - Python 2.7
    from cgi import escape as _escape

REPORT_HTML = "report.html"
#: Chart size in SVG units (the page scales it to its width).
CHART_W, CHART_H = 960, 280
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 64, 16, 12, 36
#: More clients than this: no legend (hover a line for its name; the table has colours).
LEGEND_MAX = 16
#: A line is at most this many points; longer runs show groups of intervals.
MAX_POINTS = 400
#: At most this many rollover ticks per chart (beyond it they are left out, and said so).
MAX_MARKERS = 3000


def esc(text):
    """HTML-escape any value (quotes too: it also goes into attributes)."""
    return _escape("%s" % ("-" if text is None else text), True)


def colour(index):
    """A distinct colour per client (golden-angle hues)."""
    return "hsl(%d,70%%,%d%%)" % (int(index * 137.508) % 360, 38 + (index % 3) * 8)


def nice_step(span, ticks=5):
    if span <= 0:
        return 1.0
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 5, 10):
        if raw <= mult * power:
            return mult * power
    return 10 * power


def tick_label(value):
    return ("%.0f" % value) if abs(value) >= 10 or value == int(value) else ("%.2g" % value)


def reduce_points(points, how):
    """At most MAX_POINTS (x, y): consecutive points grouped, x of the last,
    y by ``how`` ('mean' or 'max')."""
    if len(points) <= MAX_POINTS:
        return points
    size = int(math.ceil(len(points) / MAX_POINTS))
    out = []
    for i in range(0, len(points), size):
        group = [p for p in points[i:i + size] if p[1] is not None]
        if not group:
            continue
        ys = [p[1] for p in group]
        out.append((group[-1][0], max(ys) if how == "max" else sum(ys) / len(ys)))
    return out


def pack(points):
    """(x, y) points as one array of doubles, a y of None as NaN (never a real
    y: the protocol's numbers are finite): every client's lines are held until
    the chart is drawn, so they are kept packed, not as tuples. Exact: every x
    and y is a float or an int well within 2**53."""
    flat = array.array("d")
    for x, y in points:
        flat.extend((x, _NAN if y is None else y))
    return flat


def unpack(flat):
    """``pack``'s points back, one at a time."""
    for i in range(0, len(flat), 2):
        y = flat[i + 1]
        yield flat[i], None if y != y else y


_NAN = float("nan")


class Chart(object):
    """One SVG line chart: x seconds since run start, y from 0."""

    def __init__(self, name, title, y_label, x_max, line_width):
        self.name, self.title, self.y_label = name, title, y_label
        self.x_max = max(x_max, 1e-9)
        self.lines = []      # (client, colour, pack(points), extra attributes)
        self.shade = None    # (x0, x1, label)
        self.ticks = []      # (x, client, colour, title) short marks at the bottom
        self.vlines = []     # (x, colour, title) full-height dashed marks
        self.line_width = line_width
        self.note = None

    def px(self, x):
        return MARGIN_L + (CHART_W - MARGIN_L - MARGIN_R) * x / self.x_max

    def py(self, y, y_max):
        return CHART_H - MARGIN_B - (CHART_H - MARGIN_T - MARGIN_B) * y / y_max

    def svg(self):
        return "\n".join(self.svg_parts())

    def svg_parts(self):
        """The chart's SVG an element at a time (a fleet's chart is megabytes:
        its text, its elements and its points at once were the report phase's
        peak, +88 MiB on 2.7 at 5,000 clients: docs/SCALING.md)."""
        y_top = None
        for _, _, pts, _ in self.lines:
            for i in range(1, len(pts), 2):
                y = pts[i]
                if y == y and (y_top is None or y > y_top):   # (NaN: no point)
                    y_top = y
        y_max = y_top * 1.05 if y_top is not None and y_top > 0 else 1.0
        yield ('<svg class="chart" data-chart="%s" viewBox="0 0 %d %d" '
               'preserveAspectRatio="none" role="img" aria-label="%s">' % (
                   self.name, CHART_W, CHART_H, esc(self.title)))
        step = nice_step(y_max)
        y = 0.0
        while y <= y_max:
            py = self.py(y, y_max)
            yield ('<line class="grid" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>'
                       '<text class="tick" x="%d" y="%.1f" text-anchor="end">%s</text>' % (
                           MARGIN_L, CHART_W - MARGIN_R, py, py, MARGIN_L - 4, py + 4,
                           tick_label(y)))
            y += step
        step = nice_step(self.x_max, 8)
        x = 0.0
        while x <= self.x_max + 1e-9:
            px = self.px(x)
            yield ('<text class="tick" x="%.1f" y="%d" text-anchor="middle">%s</text>'
                       % (px, CHART_H - MARGIN_B + 14, tick_label(x)))
            x += step
        yield ('<text class="axis" x="%d" y="%d" text-anchor="middle">seconds since the '
                   'run started (server clock)</text>' % ((CHART_W + MARGIN_L) // 2,
                                                          CHART_H - 4))
        yield ('<text class="axis" x="12" y="%d" transform="rotate(-90 12 %d)" '
                   'text-anchor="middle">%s</text>' % (CHART_H // 2, CHART_H // 2,
                                                       esc(self.y_label)))
        if self.shade:
            x0, x1, label = self.shade
            yield ('<rect class="window" x="%.1f" y="%d" width="%.1f" height="%d">'
                       '<title>%s</title></rect>' % (
                           self.px(x0), MARGIN_T, max(self.px(x1) - self.px(x0), 0.5),
                           CHART_H - MARGIN_T - MARGIN_B, esc(label)))
        for client, col, pts, attrs in self.lines:
            d, pen = [], "M"
            for x, y in unpack(pts):
                if y is None:
                    pen = "M"
                    continue
                d.append("%s%.1f %.1f" % (pen, self.px(x), self.py(y, y_max)))
                pen = "L"
            yield ('<path class="series" data-client="%s"%s stroke="%s" '
                       'stroke-width="%.2f" d="%s"><title>%s</title></path>' % (
                           esc(client), attrs, col, self.line_width, " ".join(d) or "M0 0",
                           esc(client)))
        for x, client, col, title in self.ticks[:MAX_MARKERS]:
            px = self.px(x)
            yield ('<line class="marker rollover" data-client="%s" x1="%.1f" x2="%.1f" '
                       'y1="%d" y2="%d" stroke="%s"><title>%s</title></line>' % (
                           esc(client), px, px, CHART_H - MARGIN_B, CHART_H - MARGIN_B - 7,
                           col, esc(title)))
        for x, col, title in self.vlines:
            px = self.px(x)
            yield ('<line class="marker gone" x1="%.1f" x2="%.1f" y1="%d" y2="%d" '
                       'stroke="%s"><title>%s</title></line>' % (
                           px, px, MARGIN_T, CHART_H - MARGIN_B, col, esc(title)))
        yield ("</svg>")
        if len(self.ticks) > MAX_MARKERS:
            self.note = "%d of %d rollover marks shown" % (MAX_MARKERS, len(self.ticks))


def _legend(names, colours):
    if len(names) > LEGEND_MAX:
        return ('<p class="legend">%d clients: hover a line for its name; the table above '
                'shows each client\'s colour.</p>' % len(names))
    return '<p class="legend">%s</p>' % " ".join(
        '<span><i style="background:%s"></i>%s</span>' % (colours[n], esc(n)) for n in names)


def charts(rep, series):
    """The four charts (throughput, latency, CPU, RSS) as Chart objects."""
    run_start = rep["run"]["start_ts"]
    names = [e["client"] for e in rep["clients"]]
    colours = dict((n, colour(i)) for i, n in enumerate(names))
    width = 1.6 if len(names) <= LEGEND_MAX else max(0.5, 1.6 * LEGEND_MAX / len(names))
    x_max = rep["run"]["run_duration_s"]
    for s in series.values():
        for p in s.perf:
            x_max = max(x_max, s.server_t(p["t_end"]) - run_start)
        for ts, _, _ in s.stats:
            x_max = max(x_max, s.server_t(ts) - run_start)
    tp = Chart("throughput", "Throughput per client", "MiB/s", x_max, width)
    lat = Chart("latency", "Chunk latency per client (p99 solid, p50 dashed)", "ms",
                x_max, width)
    cpu = Chart("cpu", "Writer CPU per client", "CPU % (100 = one core)", x_max, width)
    rss = Chart("rss", "Writer RSS per client", "MiB", x_max, width)
    window = series_mod.all_writing_window(series)
    if window:
        tp.shade = (window[0] - run_start, window[1] - run_start,
                    "all clients writing (server clock)")
    for name in names:
        s, col = series.get(name), colours[name]
        if s is None:
            s = series_mod.ClientSeries(name)
        perf = [p for p in s.perf if p["t_end"] > p["t_start"]]
        mid = [s.server_t((p["t_start"] + p["t_end"]) / 2.0) - run_start for p in perf]
        tp.lines.append((name, col, pack(reduce_points(
            [(x, metrics.mib_per_s(p["bytes"], p["t_end"] - p["t_start"]))
             for x, p in zip(mid, perf)], "mean")), ""))
        lat.lines.append((name, col, pack(reduce_points(
            [(x, None if p["p99_s"] is None else p["p99_s"] * 1000.0)
             for x, p in zip(mid, perf)], "max")), ' data-stat="p99"'))
        lat.lines.append((name, col, pack(reduce_points(
            [(x, None if p["p50_s"] is None else p["p50_s"] * 1000.0)
             for x, p in zip(mid, perf)], "mean")), ' data-stat="p50" stroke-dasharray="4 3"'))
        stats = [(s.server_t(ts) - run_start, c, r) for ts, c, r in s.stats]
        cpu.lines.append((name, col, pack(reduce_points([(x, c) for x, c, _ in stats],
                                                        "mean")), ""))
        rss.lines.append((name, col, pack(reduce_points(
            [(x, metrics.mib(r)) for x, _, r in stats], "max")), ""))
        for ts, index in s.rollovers:
            tp.ticks.append((s.server_t(ts) - run_start, name, col,
                             "%s: rollover of file %d" % (name, index)))
    out = [tp, lat, cpu, rss]
    read = _read_chart(series, names, colours, run_start, x_max, width)
    if read is not None:  # --verify: read-back beside the write throughput
        out.insert(1, read)
    for e in rep["clients"]:
        if e["state"] in ("went away", "failed") and e.get("last_message_ts"):
            x = e["last_message_ts"] - run_start
            title = "%s %s: %s" % (e["client"], e["state"], e["state_why"])
            for chart in out:
                chart.vlines.append((x, "#c00" if e["state"] == "went away" else "#e80",
                                     title))
    return out, colours


def _read_chart(series, names, colours, run_start, x_max, width):
    """--verify: read MiB/s of each file read back, at the time it was sent
    (None when no client read any back)."""
    if not any(s.readbacks for s in series.values()):
        return None
    read = Chart("read", "Read-back throughput per client (--verify)", "MiB/s", x_max,
                 width)
    for name in names:
        s = series.get(name)
        points = [] if s is None else [
            (s.server_t(ts) - run_start, metrics.mib_per_s(nbytes, io_s))
            for ts, _, nbytes, io_s in s.readbacks]
        read.lines.append((name, colours[name], pack(reduce_points(points, "mean")), ""))
    return read


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.6em}
.headline p{margin:.2em 0}.headline .agg{font-size:1.2em;font-weight:bold}
.scroll{max-height:32em;overflow:auto;border:1px solid #ddd}
table{border-collapse:collapse;font-size:13px}th,td{padding:2px 8px;text-align:right;
white-space:nowrap}th{background:#f3f3f3;position:sticky;top:0;cursor:pointer}
td.t,th.t{text-align:left}tr:nth-child(even){background:#fafafa}
i{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:middle}
.legend span{margin-right:1em;white-space:nowrap}
svg.chart{width:100%;height:auto;border:1px solid #eee}
.chart .series{fill:none;stroke-linejoin:round}.chart .grid{stroke:#eee}
.chart .tick,.chart .axis{font-size:11px;fill:#555}.chart .window{fill:#4a90d9;opacity:.12}
.chart .marker.gone{stroke-dasharray:5 4;stroke-width:1.5}
.warn{color:#a00}.small{font-size:12px;color:#555}
"""

JS = """
document.querySelectorAll('table.sortable th').forEach(function(th, col){
  th.addEventListener('click', function(){
    var body = th.closest('table').tBodies[0], rows = Array.prototype.slice.call(body.rows);
    var dir = th.getAttribute('data-dir') === 'asc' ? -1 : 1;
    th.setAttribute('data-dir', dir === 1 ? 'asc' : 'desc');
    rows.sort(function(a, b){
      var x = a.cells[col].getAttribute('data-v'), y = b.cells[col].getAttribute('data-v');
      var nx = parseFloat(x), ny = parseFloat(y);
      if (!isNaN(nx) && !isNaN(ny)) return (nx - ny) * dir;
      return (x < y ? -1 : x > y ? 1 : 0) * dir;
    });
    rows.forEach(function(r){ body.appendChild(r); });
  });
});
"""


def cell(value, fmt="%.1f", text=False):
    if text:
        return '<td class="t" data-v="%s">%s</td>' % (esc(value), esc(value))
    shown = "-" if value is None else fmt % value
    return '<td data-v="%s">%s</td>' % ("" if value is None else value, shown)


def table(headers, rows, cls="sortable"):
    out = ['<div class="scroll"><table class="%s"><thead><tr>' % cls]
    out += ['<th class="t">%s</th>' % esc(h) if t else '<th>%s</th>' % esc(h)
            for h, t in headers]
    out.append("</tr></thead><tbody>")
    out += ["<tr>%s</tr>" % "".join(r) for r in rows]
    out.append("</tbody></table></div>")
    return "\n".join(out)


def render(rep, series):
    """The page as text."""
    return "".join(render_pieces(rep, series))


def render_pieces(rep, series):
    """The page piece by piece (each ending in a newline), as it is made: the
    charts' text, the page and its bytes are never all held at once."""
    for part in _parts(rep, series):
        yield part + "\n"


def _parts(rep, series):
    cs, colours = charts(rep, series)
    run = rep["run"]
    head = text_mod.headline(rep)
    for part in ("<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                 "<title>diskbench report %s</title>" % esc(run["label"]),
                 "<style>%s</style></head><body>" % CSS,
                 "<h1>diskbench report %s</h1>" % esc(run["label"]),
                 '<div class="headline">'):
        yield part
    for line in head:
        yield '<p%s>%s</p>' % (' class="agg"' if line.startswith("aggregate") else "",
                               esc(line))
    for w in run.get("server_warnings", ()):
        yield '<p class="warn">server warning: %s</p>' % esc(w)
    sync = text_mod.synchronized_start_line(run)
    if sync:
        yield '<p class="small">%s</p>' % esc(sync)
    yield "</div>"
    for part in _clients_table(rep, colours):
        yield part
    for part in _chunk_size_table(rep):
        yield part
    names = [e["client"] for e in rep["clients"]]
    captions = {
        "throughput": "MiB/s of each perf interval; shaded: every client writing; ticks at "
                      "the bottom: rollovers; dashed red: went away, orange: failed.",
        "read": "--verify: MiB/s of each data file read back (bytes / time in its timed "
                "reads), when it was read; apart from the write figures.",
        "latency": "p50 and p99 of each interval's chunk latency histogram.",
        "cpu": "CPU% of each client's writer process, per stats sample.",
        "rss": "Resident memory of each client's writer process, per stats sample."}
    for chart in cs:
        yield "<h2>%s</h2>" % esc(chart.title)
        for part in chart.svg_parts():
            yield part
        yield _legend(names, colours)
        yield '<p class="small">%s%s</p>' % (
            esc(captions[chart.name]), (" " + esc(chart.note)) if chart.note else "")
    for part in _environment_table(rep):
        yield part
    yield "<h2>Method</h2><p>%s</p>" % esc(rep["method"])
    yield ('<p class="small">clock offset: how far the client\'s clock is '
           "ahead of the server's, estimated from the fastest delivered message "
           "(within the network delay). report.json, clients.csv and timeseries.csv hold "
           "the figures behind this page.</p>")
    yield "<script>%s</script></body></html>" % JS


def _clients_table(rep, colours):
    rows = []
    verified = any(e.get("verification") for e in rep["clients"])
    for e in rep["clients"]:
        rows.append([
            '<td class="t" data-v="%s"><i style="background:%s"></i>%s</td>' % (
                esc(e["client"]), colours[e["client"]], esc(e["client"])),
            cell(e["host"], text=True), cell(text_mod.state_label(e), text=True),
            cell(e.get("chunk_mib"), "%g"), cell(e["throughput_mib_s"]["mean"]), cell(e["latency_ms"]["p50"], "%.2f"),
            cell(e["latency_ms"]["p99"], "%.2f"), cell(e["rollover_count"], "%d"),
            cell(e["writer_cpu_percent"]["mean"], "%.0f"),
            cell(e["writer_rss_mib"]["max"], "%.0f"), cell(e["written_mib"], "%.0f"),
            cell(e["went_away_count"], "%d"), cell(e["state_why"], text=True)])
        if verified:  # --verify: read MiB/s and bad blocks, before "why"
            v = e.get("verification") or {}
            rows[-1][-1:-1] = [cell(v.get("read_mib_s")), cell(v.get("bad_block_count"), "%d")]
    extra = [("read MiB/s", False), ("bad blocks", False)] if verified else []
    return ["<h2>Clients</h2>", '<p class="small">Click a column to sort.</p>',
            table([("client", True), ("host", True), ("state", True),
                    ("chunk MiB", False), ("MiB/s mean", False), ("p50 ms", False), ("p99 ms", False),
                    ("rollovers", False), ("CPU% mean", False), ("RSS MiB max", False),
                    ("written MiB", False), ("went away", False)] + extra +
                   [("why", True)], rows)]


def _chunk_size_table(rep):
    """report.json's by_chunk_size: the clients compared like for like."""
    rows = [[cell(z["chunk_mib"], "%g"), cell(z.get("workload_label"), text=True),
             cell(z["client_count"], "%d"), cell(z.get("ranked_count"), "%d"),
             cell(z["mean_mib_s"]), cell(z["min_mib_s"]), cell(z["max_mib_s"]),
             cell(z["slowest"], text=True), cell(z["fastest"], text=True),
             cell(z["slowest_to_fastest_ratio"], "%.2f"), cell(z[figures_mod.chunk_size_latency_key()], "%.2f"),
             cell(", ".join("%s (%s)" % (x["client"], text_mod.state_label(x))
                            for x in z.get("not_ranked") or ()), text=True),
             cell(figures_mod.workload_text(z.get("workload")), text=True)]
            for z in rep.get("by_chunk_size") or []]
    return ["<h2>By workload</h2>",
            '<p class="small">Clients are ranked only against clients of the same workload '
            "(every plan setting that changes what is measured), and only those that "
            "finished. MiB/s: the mean, min and max of the ranked clients' MiB/s in the "
            "window when all of them wrote; p%d: of their chunk latency histograms "
            "merged.</p>" % figures_mod.PCTS[-1],
            table([("chunk MiB", False), ("workload", True), ("clients", False),
                   ("ranked", False), ("mean MiB/s", False),
                    ("min MiB/s", False), ("max MiB/s", False), ("slowest", True),
                    ("fastest", True), ("slowest/fastest", False),
                    ("p%d ms" % figures_mod.PCTS[-1], False), ("not ranked", True),
                   ("settings", True)], rows, cls="plain")]


def _environment_table(rep):
    env = []
    for e in rep["clients"]:
        env.append([cell(e[k], text=True) for k in (
            "client", "host", "target_dir", "fs", "python", "os", "sync")] + [
            cell("yes" if e["preallocated"] else "no", text=True),
            cell(e["buffer_huge_page_mib"], "%g"), cell(e["chunk_mib"], "%g"),
            cell(e["file_mib"], "%g"), cell(e.get("clock_offset_s"), "%.3f"),
            cell(e["diskbench_version"], text=True), cell(e["psutil"], text=True),
            cell("; ".join([x["what"] for x in e["error_list"]] + list(e["notices"])),
                  text=True)])
    return ["<h2>Environment</h2>", table([(h, t) for h, t in (
        ("client", True), ("host", True), ("directory", True), ("fs", True),
        ("python", True), ("os", True), ("sync", True), ("preallocated", True),
        ("huge-page buffer MiB", False), ("chunk MiB", False), ("file MiB", False),
        ("clock offset s", False), ("diskbench", True), ("psutil", True),
        ("errors and notes", True))], env)]
