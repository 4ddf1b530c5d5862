"""Compare two runs: per-client and aggregate deltas (MiB/s mean, p99 latency, % change).

A run is a log dir (its report.json, or rebuilt from perf.jsonl when the
server wrote none) or a report.json file. Clients are matched by name; those
left over are matched by host when the host names one client on each side.
"""
from __future__ import absolute_import, division

import os

from diskbench.report import htmlout, readers, rerender
from diskbench.server import report as report_mod

COMPARE_HTML = "compare.html"


def load_run(path, warn):
    """The report dict of RUN (dir or report.json); raises rerender.Unreadable."""
    if os.path.isdir(path):
        rep_path = os.path.join(path, report_mod.REPORT_JSON)
        if not os.path.exists(rep_path):
            return rerender.load(path, warn)[0]
    else:
        rep_path = path
    return readers.load_report(rep_path, warn)   # validated like the wire


def delta(a, b):
    """(b - a, percent change) with None where unknown (percent also when a is 0)."""
    if a is None or b is None:
        return None, None
    return b - a, ((b - a) / a * 100.0 if a else None)


def match(clients_a, clients_b):
    """[(entry a or None, entry b or None, 'name'|'host'|'')] over both runs."""
    by_name_b = dict((e["client"], e) for e in clients_b)
    pairs, left_a, used_b = [], [], set()
    for e in clients_a:
        other = by_name_b.get(e["client"])
        if other is not None:
            pairs.append((e, other, "name"))
            used_b.add(e["client"])
        else:
            left_a.append(e)
    left_b = [e for e in clients_b if e["client"] not in used_b]

    def unique_hosts(entries):
        hosts = {}
        for e in entries:
            hosts.setdefault(e["host"], []).append(e)
        return dict((h, v[0]) for h, v in hosts.items() if len(v) == 1)
    hosts_a, hosts_b = unique_hosts(left_a), unique_hosts(left_b)
    for e in left_a:
        other = hosts_b.get(e["host"]) if hosts_a.get(e["host"]) is e else None
        if other is not None:
            pairs.append((e, other, "host"))
            left_b.remove(other)
        else:
            pairs.append((e, None, ""))
    pairs += [(None, e, "") for e in left_b]
    return pairs


def compare(rep_a, rep_b):
    """{'clients': [row dicts], 'aggregate': [row dicts]} with deltas."""
    rows = []
    for a, b, how in match(rep_a["clients"], rep_b["clients"]):
        row = dict(client_a=a and a["client"], client_b=b and b["client"], matched_by=how,
                   host=(a or b)["host"])
        for key, get in (("mib_s", lambda e: e["throughput_mib_s"]["mean"]),
                         ("p99_ms", lambda e: e["latency_ms"]["p99"])):
            va, vb = (get(a) if a else None), (get(b) if b else None)
            d, pct = delta(va, vb)
            row.update([(key + "_a", va), (key + "_b", vb), (key + "_delta", d),
                        (key + "_change_percent", pct)])
        rows.append(row)
    agg = []
    for label, get in (
            ("aggregate MiB/s (all writing)", lambda r: r["aggregate"]["throughput_mib_s"]),
            ("total written MiB", lambda r: r["totals"]["written_mib"]),
            ("chunk latency p99 ms (all clients)", lambda r: r["totals"]["latency_ms"]["p99"]),
            ("clients", lambda r: r["totals"]["client_count"])):
        va, vb = get(rep_a), get(rep_b)
        d, pct = delta(va, vb)
        agg.append(dict(what=label, a=va, b=vb, delta=d, change_percent=pct))
    return dict(clients=rows, aggregate=agg)


def _f(value, fmt="%.1f"):
    return "-" if value is None else fmt % value


def _pct(value):
    return "-" if value is None else "%+.1f%%" % value


def render_text(result, label_a, label_b):
    lines = ["compare A=%s  B=%s" % (label_a, label_b), "",
             "%-36s %10s %10s %10s %8s" % ("aggregate", "A", "B", "B-A", "change")]
    for r in result["aggregate"]:
        lines.append("%-36s %10s %10s %10s %8s" % (
            r["what"], _f(r["a"]), _f(r["b"]), _f(r["delta"], "%+.1f"),
            _pct(r["change_percent"])))
    fmt = "%-28s %-5s %9s %9s %9s %8s  %8s %8s %8s %8s"
    lines += ["", fmt % ("client (A / B)", "match", "MiB/s A", "MiB/s B", "B-A", "change",
                         "p99 A", "p99 B", "B-A", "change")]
    for r in result["clients"]:
        name = r["client_a"] if r["client_a"] == r["client_b"] else "%s / %s" % (
            r["client_a"] or "-", r["client_b"] or "-")
        lines.append(fmt % (
            report_mod._cut(name, 28), r["matched_by"] or "none",
            _f(r["mib_s_a"]), _f(r["mib_s_b"]), _f(r["mib_s_delta"], "%+.1f"),
            _pct(r["mib_s_change_percent"]), _f(r["p99_ms_a"], "%.2f"),
            _f(r["p99_ms_b"], "%.2f"), _f(r["p99_ms_delta"], "%+.2f"),
            _pct(r["p99_ms_change_percent"])))
    return "\n".join(report_mod.fit(lines)) + "\n"


def render_html(result, label_a, label_b):
    esc = htmlout.esc
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>diskbench compare</title><style>%s</style></head><body>" % htmlout._CSS,
             "<h1>diskbench compare</h1><p>A = %s<br>B = %s</p>" % (esc(label_a),
                                                                   esc(label_b)),
             "<h2>Aggregate</h2>"]
    rows = [[htmlout._cell(r["what"], text=True), htmlout._cell(r["a"]),
             htmlout._cell(r["b"]), htmlout._cell(r["delta"], "%+.1f"),
             htmlout._cell(r["change_percent"], "%+.1f%%")] for r in result["aggregate"]]
    parts.append(htmlout._table([("", True), ("A", False), ("B", False), ("B-A", False),
                                 ("change", False)], rows, cls="plain"))
    rows = [[htmlout._cell(r["client_a"], text=True), htmlout._cell(r["client_b"], text=True),
             htmlout._cell(r["matched_by"] or "none", text=True),
             htmlout._cell(r["mib_s_a"]), htmlout._cell(r["mib_s_b"]),
             htmlout._cell(r["mib_s_delta"], "%+.1f"),
             htmlout._cell(r["mib_s_change_percent"], "%+.1f%%"),
             htmlout._cell(r["p99_ms_a"], "%.2f"), htmlout._cell(r["p99_ms_b"], "%.2f"),
             htmlout._cell(r["p99_ms_delta"], "%+.2f"),
             htmlout._cell(r["p99_ms_change_percent"], "%+.1f%%")]
            for r in result["clients"]]
    parts.append("<h2>Clients</h2>")
    parts.append(htmlout._table(
        [("client A", True), ("client B", True), ("matched by", True), ("MiB/s A", False),
         ("MiB/s B", False), ("B-A", False), ("change", False), ("p99 ms A", False),
         ("p99 ms B", False), ("B-A", False), ("change", False)], rows))
    parts.append("<script>%s</script></body></html>" % htmlout._JS)
    return "\n".join(parts) + "\n"
