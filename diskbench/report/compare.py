"""Compare runs: the first is the baseline, each other run is set beside it.

A run is a log dir (its report.json, or rebuilt from perf.jsonl when the
server wrote none) or a report.json file (``load_run``, the one loading
call). Clients are matched to the baseline's by name; those left over by host
when the host names one client on each side.

Like for like: each client's plan (chunk, file size, duration, sync mode,
allocation) is shown in every run, and a client whose plan differs from the
baseline's is marked and left out of the like-for-like aggregate (a bigger
chunk is faster on the same disk: that is not a result). Each run's exit code,
states and interruption come first. With three runs or more each client's
run-to-run spread of MiB/s is given: a change within the spread of repeated
tries is noise, not a result.
"""
from __future__ import absolute_import, division

import os

from diskbench.metrics import count
from diskbench.report import htmlout, readers, rerender
from diskbench.report import build as build_mod
from diskbench.report import figures as figures_mod
from diskbench.report import text as text_mod

COMPARE_HTML = "compare.html"
#: Run keys in the tables: A is the baseline.
RUN_KEYS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: At most this many runs (one letter each).
RUNS_MAX = len(RUN_KEYS)
#: The plan settings compared (report.json client keys, how the table says them):
#: the workload, the same set the report ranks clients by (figures.WORKLOAD).
PLAN_KEYS = figures_mod.WORKLOAD
#: A setting not known (an entry without figures) is its name and '?'.
PLAN_UNKNOWN = figures_mod.WORKLOAD_UNKNOWN
#: The settings in words (the plans section's title).
PLAN_WORDS = "chunk, file, duration, sync mode, allocation, verify"
#: A change or spread across runs whose plans differ is not a result: said so.
UNLIKE = "unlike"
#: What the like-for-like aggregate is (under the aggregate table).
LIKE_FOR_LIKE = ("like for like: the sum of the MiB/s, in each run's all-writing period, of "
                 "the clients in every run with the same plan in every run")
#: Said when no client of a run matched one of the baseline's (%s: the run keys).
NONE_MATCHED = ("no client of run %s matched one of the baseline's: clients are matched by "
                "name, then by host when the host has one unmatched client in each run; "
                "default names (HOSTNAME-PID-RANDOM) differ from run to run, and a host with "
                "two clients cannot tell them apart: start each client with the same --name "
                "in every run to compare them")
#: compare.html's chart: a bar group per client, at most this many clients.
CHART_CLIENTS_MAX = 60


def load_run(path, warn):
    """The report dict of RUN (dir or report.json); raises rerender.Unreadable."""
    if os.path.isdir(path):
        rep_path = os.path.join(path, build_mod.REPORT_JSON)
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
            hosts.setdefault(e.get("host"), []).append(e)
        return dict((h, v[0]) for h, v in hosts.items() if len(v) == 1)
    hosts_a, hosts_b = unique_hosts(left_a), unique_hosts(left_b)
    for e in left_a:
        other = hosts_b.get(e.get("host")) if hosts_a.get(e.get("host")) is e else None
        if other is not None:
            pairs.append((e, other, "host"))
            left_b.remove(other)
        else:
            pairs.append((e, None, ""))
    pairs += [(None, e, "") for e in left_b]
    return pairs


def plan_of(entry):
    """The plan a client ran, as a tuple of PLAN_KEYS values (None: no entry)."""
    if entry is None:
        return None
    return figures_mod.workload_of(entry)


def plan_text(plan):
    """'chunk 10 MiB, file 100 MiB, 60 s, direct, prealloc no' ('-': no plan)."""
    if plan is None:
        return "-"
    return ", ".join(plan_text_one(key, value) for (key, _), value in zip(PLAN_KEYS, plan))


def plans_text(plans, keys):
    """A client's plan in every run: 'the same in A, B: ...' or run by run."""
    present = [(k, p) for k, p in zip(keys, plans) if p is not None]
    missing = [k for k, p in zip(keys, plans) if p is None]
    gone = "; not in %s" % ", ".join(missing) if missing else ""
    if len(set(p for _, p in present)) == 1:
        return "%s in %s%s" % (plan_text(present[0][1]), ", ".join(k for k, _ in present),
                               gone)
    return "; ".join("%s %s" % (k, plan_text(p)) for k, p in present) + gone


def plan_changes(base, other):
    """What differs between two plans, in words ('chunk 10 MiB -> chunk 20 MiB')."""
    out = []
    for (key, _), a, b in zip(PLAN_KEYS, base, other):
        if a != b:
            out.append("%s -> %s" % (plan_text_one(key, a), plan_text_one(key, b)))
    return out


def plan_text_one(key, value):
    """One plan setting (a PLAN_KEYS key) in words: 'chunk 10 MiB', 'prealloc no'."""
    return figures_mod.setting_text(key, value)


def _states(rep):
    """'3 finished, 1 went away' of a report's clients."""
    counts = {}
    for e in rep["clients"]:
        label = text_mod.state_label(e)
        counts[label] = counts.get(label, 0) + 1
    return ", ".join("%d %s" % (n, s) for s, n in sorted(counts.items())) or "no clients"


def run_facts(key, rep, path):
    """What a reader must know of a run before its figures."""
    run = rep["run"]
    return dict(key=key, path=path, label=run.get("label"), exit_code=run.get("exit_code"),
                exit_meaning=run.get("exit_meaning"), interrupted_by=run.get("interrupted_by"),
                client_count=len(rep["clients"]), states=_states(rep),
                start_utc=run.get("start_utc"), run_duration_s=run.get("run_duration_s"),
                rerendered=bool(rep.get("rerendered")))


def spread_percent(values):
    """(max - min) / mean of the known values, in percent (None below two)."""
    known = [v for v in values if v is not None]
    if len(known) < 2:
        return None
    mean = sum(known) / len(known)
    return (max(known) - min(known)) / mean * 100.0 if mean else None


def _change(base, value):
    return delta(base, value)[1]


def compare_runs(reps, paths):
    """Set each report of ``reps`` beside the first (the baseline): the runs'
    facts, a row per client (its plan and figures in each run), the aggregate
    like for like and of all clients."""
    base = reps[0]
    rows, by_base = [], {}
    for e in base["clients"]:
        row = dict(entries=[e] + [None] * (len(reps) - 1), matched_by=["name"] +
                   [""] * (len(reps) - 1))
        by_base[e["client"]] = row
        rows.append(row)
    for i, rep in enumerate(reps[1:], 1):
        for a, b, how in match(base["clients"], rep["clients"]):
            if a is not None and b is not None:
                by_base[a["client"]]["entries"][i] = b
                by_base[a["client"]]["matched_by"][i] = how
            elif b is not None:
                row = dict(entries=[None] * len(reps), matched_by=[""] * len(reps))
                row["entries"][i], row["matched_by"][i] = b, ""
                rows.append(row)
    for row in rows:
        entries = row["entries"]
        row["names"] = [e and e["client"] for e in entries]
        row["client"] = next(n for n in row["names"] if n is not None)
        row["host"] = next(e.get("host") for e in entries if e is not None)
        row["plans"] = [plan_of(e) for e in entries]
        present = [p for p in row["plans"] if p is not None]
        row["plan_differs"] = len(set(present)) > 1
        row["changes"] = [] if row["plans"][0] is None else sorted(set(
            c for p in row["plans"][1:] if p is not None
            for c in plan_changes(row["plans"][0], p)))
        row["in_every_run"] = None not in entries
        # per run: whether its plan is the baseline's
        row["like"] = [p is not None and p == row["plans"][0] for p in row["plans"]]
        row["comparable"] = row["in_every_run"] and not row["plan_differs"]
        # (an entry whose figures could not be computed has none: unknown)
        for key, get in (("mib_s", lambda e: (e.get("throughput_mib_s") or {}).get("mean")),
                         ("p99_ms", lambda e: (e.get("latency_ms") or {}).get("p99"))):
            values = [get(e) if e is not None else None for e in entries]
            row[key] = values
            # a run whose plan differs from the baseline's gives no change, and a
            # client whose plan differs between runs no spread: unlike plans
            row[key + "_change_percent"] = [None] + [
                _change(values[0], v) if row["like"][i] else None
                for i, v in enumerate(values[1:], 1)]
            row[key + "_spread_percent"] = None if row["plan_differs"] else \
                spread_percent(values)
        del row["entries"]
    like = [r for r in rows if r["comparable"]]
    left_out = [r for r in rows if not r["comparable"]]
    agg = [_agg_row("MiB/s like for like (%s)" % count(len(like), "client"),
                    [_like_sum(rep, [r["names"][i] for r in like])
                     for i, rep in enumerate(reps)], True)]
    whole = not left_out
    for label, get in (
            ("aggregate MiB/s, all clients", lambda r: r["aggregate"]["throughput_mib_s"]),
            ("written MiB, all clients", lambda r: r["totals"]["written_mib"]),
            ("chunk latency p99 ms, all clients", lambda r: r["totals"]["latency_ms"]["p99"]),
            ("clients", lambda r: r["totals"]["client_count"])):
        agg.append(_agg_row(label, [get(rep) for rep in reps], whole or label == "clients"))
    unmatched = [RUN_KEYS[i] for i in range(1, len(reps))
                 if base["clients"] and reps[i]["clients"] and
                 not any(r["matched_by"][i] for r in rows)]
    return dict(runs=[run_facts(RUN_KEYS[i], rep, path)
                      for i, (rep, path) in enumerate(zip(reps, paths))],
                clients=rows, aggregate=agg,
                none_matched=NONE_MATCHED % ", ".join(unmatched) if unmatched else None,
                left_out=[dict(client=r["client"], why=_why_left_out(r)) for r in left_out])


def _why_left_out(row):
    if row["plan_differs"]:
        return "its plan differs: %s" % "; ".join(row["changes"])
    missing = [RUN_KEYS[i] for i, n in enumerate(row["names"]) if n is None]
    return "not in run %s" % ", ".join(missing)


def _like_sum(rep, names):
    """The sum of ``names``' MiB/s in the all-writing period of ``rep`` (None:
    a name or its figure unknown, or no common period)."""
    per = rep["aggregate"].get("per_client_mib_s") or {}
    values = [per.get(n) for n in names]
    if not names or None in values:
        return None
    return sum(values)


def _agg_row(what, values, compared):
    """An aggregate row: each run's value and, when ``compared`` (only clients
    with the same plan in every run), its change against the baseline."""
    return dict(what=what, values=values, compared=compared,
                delta=[None] + [delta(values[0], v)[0] if compared else None
                                for v in values[1:]],
                change_percent=[None] + [_change(values[0], v) if compared else None
                                         for v in values[1:]])


def compare(rep_a, rep_b):
    """``compare_runs`` of two reports."""
    return compare_runs([rep_a, rep_b], ["A", "B"])


def _f(value, fmt="%.1f"):
    if value is None:
        return "-"
    if isinstance(value, int) and not isinstance(value, bool) and fmt == "%.1f":
        return "%d" % value    # a count stays an integer
    return fmt % value


def _pct(value):
    return "-" if value is None else "%+.1f%%" % value


def _run_lines(result):
    lines = []
    for run in result["runs"]:
        lines.append("run %s%s: %s (%s)" % (
            run["key"], " (baseline)" if run["key"] == RUN_KEYS[0] else "", run["path"],
            run["label"]))
        lines.append("  exit code %s: %s%s; %s: %s; %s s from %s%s" % (
            _f(run["exit_code"], "%d"), run["exit_meaning"] or "-",
            "; INTERRUPTED by %s" % run["interrupted_by"] if run["interrupted_by"] else "",
            count(run["client_count"], "client"), run["states"],
            _f(run["run_duration_s"]), run["start_utc"],
            "; re-rendered" if run["rerendered"] else ""))
    cut = [r["key"] for r in result["runs"] if r["interrupted_by"] or r["exit_code"] != 0]
    if cut:
        lines.append("NOTE: %s %s not end with exit code 0 (interrupted, incomplete or "
                     "unknown): figures of a run cut short are not a result" % (
                         "run" if len(cut) == 1 else "runs", ", ".join(cut) + (
                             " did" if len(cut) == 1 else " do")))
    return lines


def render_text(result, label_a=None, label_b=None):
    """The comparison in text (the runs' own paths label them)."""
    runs = result["runs"]
    keys = [r["key"] for r in runs]
    lines = ["compare %d runs, %s is the baseline" % (len(runs), keys[0])] + _run_lines(result)
    lines.append("")
    if result.get("none_matched"):
        lines += [result["none_matched"], ""]
    for left in result["left_out"]:
        lines.append("client %s left out of the like-for-like aggregate: %s" % (
            left["client"], left["why"]))
    head = "%-38s" % "aggregate" + "".join(
        " %10s" % k if i == 0 else " %10s %8s" % (k, "vs " + keys[0])
        for i, k in enumerate(keys))
    lines.append(head)
    for r in result["aggregate"]:
        fmt = "%.2f" if "ms" in r["what"] else "%.1f"
        cells = []
        for i, v in enumerate(r["values"]):
            cells.append(" %10s" % _f(v, fmt) if i == 0 else " %10s %8s" % (
                _f(v, fmt), _pct(r["change_percent"][i])))
        lines.append("%-38s" % text_mod.cut(r["what"], 38) + "".join(cells))
        if not r["compared"]:
            lines.append("    (no change given: %s left out, see above)" % count(
                len(result["left_out"]), "client"))
    lines += [LIKE_FOR_LIKE, ""]
    lines += _client_lines(result, "mib_s", "MiB/s mean", "%.1f")
    lines.append("")
    lines += _client_lines(result, "p99_ms", "chunk latency p99 ms", "%.2f")
    lines += ["", "plans (%s); * differs between runs: no change or spread is given "
              "across unlike plans (%s)" % (PLAN_WORDS, UNLIKE)]
    for r in result["clients"]:
        lines.append("%s%s: %s" % ("*" if r["plan_differs"] else " ", r["client"],
                                   plans_text(r["plans"], keys)))
    return "\n".join(text_mod.fit(lines)) + "\n"


def _client_lines(result, key, title, fmt):
    keys = [r["key"] for r in result["runs"]]
    spread = len(keys) > 2
    lines = ["clients, %s%s" % (title, "; spread: (max - min) / mean over the runs, a change "
                                "within it is run-to-run noise" if spread else "")]
    head = "%-28s %-9s" % ("client", "match") + "".join(
        " %9s" % k if i == 0 else " %9s %8s" % (k, "vs " + keys[0])
        for i, k in enumerate(keys)) + (" %8s" % "spread" if spread else "")
    lines.append(head)
    for r in result["clients"]:
        name = shown_name(r)
        match_by = "/".join(sorted(set(m for m in r["matched_by"][1:] if m))) or "none"
        cells = "".join(" %9s" % _f(v, fmt) if i == 0 else " %9s %8s" % (
            _f(v, fmt), _pct(r[key + "_change_percent"][i]) if r["like"][i] or
            r["plans"][i] is None or r["plans"][0] is None else UNLIKE)
            for i, v in enumerate(r[key]))
        lines.append("%s%-27s %-9s" % ("*" if r["plan_differs"] else " ",
                                       text_mod.cut(name, 27), match_by) + cells +
                     (" %8s" % (UNLIKE if r["plan_differs"] else
                                _pct_plain(r[key + "_spread_percent"])) if spread else ""))
    return lines


def shown_name(row):
    """A row's client name, or its names run by run when they differ ('a / b')."""
    if len(set(n for n in row["names"] if n)) == 1:
        return row["client"]
    return " / ".join(n or "-" for n in row["names"])


def _pct_plain(value):
    return "-" if value is None else "%.1f%%" % value


def render_html(result, label_a=None, label_b=None):
    esc = htmlout.esc
    runs = result["runs"]
    keys = [r["key"] for r in runs]
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>diskbench compare</title><style>%s</style></head><body>" % htmlout.CSS,
             "<h1>diskbench compare</h1>", '<div class="headline">']
    parts += ["<p>%s</p>" % esc(line) for line in _run_lines(result)]
    if result.get("none_matched"):
        parts.append('<p class="warn">%s</p>' % esc(result["none_matched"]))
    parts += ['<p class="warn">client %s left out of the like-for-like aggregate: %s</p>' % (
        esc(x["client"]), esc(x["why"])) for x in result["left_out"]]
    parts.append("</div><h2>Aggregate</h2>")
    head = [("", True)] + [(h, False) for i, k in enumerate(keys)
                           for h in ((k,) if i == 0 else (k, "vs " + keys[0]))]
    rows = []
    for r in result["aggregate"]:
        cells = [htmlout.cell(r["what"], text=True)]
        for i, v in enumerate(r["values"]):
            cells.append(htmlout.cell(v, "%.2f" if "ms" in r["what"] else "%.1f"))
            if i:
                cells.append(htmlout.cell(r["change_percent"][i], "%+.1f%%"))
        rows.append(cells)
    parts.append(htmlout.table(head, rows, cls="plain"))
    parts.append("<h2>MiB/s per client, run beside run</h2>")
    parts.append(chart_svg(result))
    parts.append('<p class="legend">%s</p>' % " ".join(
        '<span><i style="background:%s"></i>run %s</span>' % (htmlout.colour(i), esc(k))
        for i, k in enumerate(keys)))
    parts.append("<h2>Clients</h2>")
    head = [("client", True), ("plan differs", True)]
    for i, k in enumerate(keys):
        head += [("plan " + k, True), ("MiB/s " + k, False)] + (
            [("vs " + keys[0], False)] if i else []) + [("p99 ms " + k, False)]
    head += [("MiB/s spread", False)]
    rows = []
    for r in result["clients"]:
        cells = [htmlout.cell(shown_name(r), text=True),
                 htmlout.cell("; ".join(r["changes"]) or (
                     "yes" if r["plan_differs"] else ""), text=True)]
        for i in range(len(keys)):
            cells += [htmlout.cell(plan_text(r["plans"][i]), text=True),
                      htmlout.cell(r["mib_s"][i])]
            if i and not r["like"][i] and None not in (r["plans"][0], r["plans"][i]):
                cells.append(htmlout.cell(UNLIKE, text=True))
            elif i:
                cells.append(htmlout.cell(r["mib_s_change_percent"][i], "%+.1f%%"))
            cells.append(htmlout.cell(r["p99_ms"][i], "%.2f"))
        cells.append(htmlout.cell(UNLIKE, text=True) if r["plan_differs"] else
                     htmlout.cell(r["mib_s_spread_percent"], "%.1f%%"))
        rows.append(cells)
    parts.append(htmlout.table(head, rows))
    parts.append("<script>%s</script></body></html>" % htmlout.JS)
    return "\n".join(parts) + "\n"


def chart_svg(result):
    """Inline SVG: for each client a group of bars, one per run (the baseline
    first), of its MiB/s mean; a client whose plan differs is marked '*'."""
    esc = htmlout.esc
    rows = result["clients"][:CHART_CLIENTS_MAX]
    runs = len(result["runs"])
    top = max([v for r in rows for v in r["mib_s"] if v is not None] or [1.0]) * 1.05
    w, h = htmlout.CHART_W, htmlout.CHART_H
    left, bottom, top_m = htmlout.MARGIN_L, htmlout.MARGIN_B + 20, htmlout.MARGIN_T
    group = (w - left - htmlout.MARGIN_R) / float(max(len(rows), 1))
    bar = group * 0.8 / runs
    out = ['<svg class="chart" data-chart="compare" viewBox="0 0 %d %d" '
           'preserveAspectRatio="none" role="img" aria-label="MiB/s per client per run">'
           % (w, h)]
    step = htmlout.nice_step(top)
    y = 0.0
    while y <= top:
        py = h - bottom - (h - bottom - top_m) * y / top
        out.append('<line class="grid" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/><text '
                   'class="tick" x="%d" y="%.1f" text-anchor="end">%s</text>' % (
                       left, w - htmlout.MARGIN_R, py, py, left - 4, py + 4, htmlout.tick_label(y)))
        y += step
    for g, r in enumerate(rows):
        x0 = left + g * group + group * 0.1
        for i, v in enumerate(r["mib_s"]):
            if v is None:
                continue
            bh = (h - bottom - top_m) * v / top
            out.append('<rect class="bar" data-client="%s" data-run="%s" x="%.1f" y="%.1f" '
                       'width="%.1f" height="%.1f" fill="%s"><title>%s run %s: %.1f MiB/s'
                       '</title></rect>' % (
                           esc(r["client"]), RUN_KEYS[i], x0 + i * bar, h - bottom - bh,
                           max(bar - 1, 0.5), bh, htmlout.colour(i), esc(r["client"]),
                           RUN_KEYS[i], v))
        out.append('<text class="tick" x="%.1f" y="%d" text-anchor="middle">%s%s</text>' % (
            x0 + group * 0.4, h - bottom + 14, "*" if r["plan_differs"] else "",
            esc(text_mod.cut(r["client"], 14))))
    out.append('<text class="axis" x="12" y="%d" transform="rotate(-90 12 %d)" '
               'text-anchor="middle">MiB/s mean</text>' % (h // 2, h // 2))
    out.append("</svg>")
    if len(result["clients"]) > CHART_CLIENTS_MAX:
        out.append('<p class="small">the first %d of %d clients shown</p>' % (
            CHART_CLIENTS_MAX, len(result["clients"])))
    return "\n".join(out)
