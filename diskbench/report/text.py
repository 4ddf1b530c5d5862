"""report.txt, and what the server prints at the end of a run: the answer
first (the headline, the client table, the figures by workload), then each
client's details and the totals.

Reads a built report (build.py) only. Every line of report.txt passes
through ``protocol.safe_text`` (no client text can forge a line) and is fit
to TEXT_WIDTH; a section that cannot be rendered says so in one line instead
of stopping the report.
"""
from __future__ import division

import textwrap

from diskbench import metrics, plan, protocol
from diskbench import states as st
from diskbench.metrics import count, times, utc
from diskbench.report import readback
from diskbench.report import figures as figures_mod

#: report.txt and the server's closing lines fit this many columns.
TEXT_WIDTH = 120
#: Widest client name / host shown in the table (longer ones end in "~").
NAME_COLUMN_MAX = 25
HOST_COLUMN_MAX = 24


def _f(value, fmt="%.1f"):
    return "-" if value is None else fmt % value


def cut(text, width):
    text = "%s" % text
    return text if len(text) <= width else text[:width - 1] + "~"


def state_label(entry):
    """A client's state as the table shows it ('unfinished' for a live state at the end)."""
    return "unfinished" if entry["state"] in st.LIVE else entry["state"]


def aggregate_without(agg):
    """'; without NAME: why' for each client left out of the aggregate (its
    clock jumped: figures.clock_jumped), or ''."""
    return "".join("; without %s: %s" % (e["client"], e["why"])
                   for e in agg.get("excluded") or ())


def headline(rep):
    """The answer first: run length, clients by state, aggregate, slowest/fastest."""
    run, agg, clients = rep["run"], rep["aggregate"], rep["clients"]
    counts = {}
    for e in clients:
        counts[state_label(e)] = counts.get(state_label(e), 0) + 1
    order = [st.FINISHED, "unfinished", st.WENT_AWAY, st.FAILED]
    states = ", ".join("%d %s" % (counts[s], s) for s in order if counts.get(s))
    lines = ["diskbench report %s: %.1f s from %s%s" % (
        run["label"], run["run_duration_s"], run["start_utc"],
        ", INTERRUPTED by %s" % run["interrupted_by"] if run["interrupted_by"] else ""),
        "exit code %s: %s" % (_f(run["exit_code"], "%d"), run["exit_meaning"]),
        "clients: %d (%s)" % (len(clients), states or "none came")]
    if agg["throughput_mib_s"] is not None:
        lines.append("aggregate: %.1f MiB/s (%s: %s, %.1f s)%s" % (
            agg["throughput_mib_s"], metrics.AGGREGATE_LABEL,
            count(agg["client_count"], "client"), agg["period_s"], aggregate_without(agg)))
    else:
        lines.append("aggregate: - (%s)%s" % (agg["period_note"], aggregate_without(agg)))
    sizes = rep.get("by_chunk_size") or []
    for size in sizes[:HEADLINE_CHUNK_SIZES_MAX]:
        lines.append(chunk_size_line(size))
    if len(sizes) > HEADLINE_CHUNK_SIZES_MAX:
        lines.append("(%s more in 'by workload' below)" % count(
            len(sizes) - HEADLINE_CHUNK_SIZES_MAX, "workload"))
    windows = [size["window_s"] for size in sizes[:HEADLINE_CHUNK_SIZES_MAX]
               if size.get("window_s") is not None]
    if windows:
        lines.append(RANKED_BY % ", ".join("%.1f" % w for w in windows))
    if any(size.get("not_ranked") for size in sizes):
        lines.append(ONLY_FINISHED_RANKED)
    if len(sizes) > 1:
        lines.append(workloads_differ(sizes))
    return lines + readback.headline(rep)


#: The headline ranks clients within each workload, for this many workloads.
HEADLINE_CHUNK_SIZES_MAX = 6
#: Said under the headline when the clients wrote different chunk sizes (and
#: nothing else told their workloads apart).
SIZES_DIFFER = ("the clients wrote different chunk sizes, so they are ranked only within "
                "a size: " + plan.CHUNK_ADVICE)
#: ... and when other settings did (%s: those settings in words).
WORKLOADS_DIFFER = ("the clients ran different workloads (%s), so each is ranked only "
                    "against clients of the same workload: to find a slow host, give every "
                    "client the same plan on the same kind of target (--chunk-mb, --file-mb, "
                    "--verify on the server)")
#: Said under the ranked workloads (%s: the window of each, s).
RANKED_BY = ("ranked by MiB/s in the window all finished clients of a workload wrote (%s s), "
             "not by the table's whole-run mean")
#: Said when a client of a workload did not finish.
ONLY_FINISHED_RANKED = (
    "only clients that finished are ranked: one that did not (killed, stalled, failed, "
    "went away) wrote only part of the run, and the others wrote alone after it")
#: Clients named as not ranked in a headline line, at most.
NOT_RANKED_NAMED_MAX = 3


def workloads_differ(sizes):
    """The headline's line under several workloads: what tells them apart."""
    named = set(k for size in sizes for k, v in size.get("workload", {}).items()
                if len(set(z.get("workload", {}).get(k) for z in sizes)) > 1)
    if not named - set(["chunk_mib", "file_mib"]) and \
            len(set(z["chunk_mib"] for z in sizes)) == len(sizes):
        return SIZES_DIFFER
    return WORKLOADS_DIFFER % ", ".join(
        figures_mod.WORKLOAD_WORDS[k] for k, _ in figures_mod.WORKLOAD if k in named)


def chunk_size_line(size):
    """The headline's line for one workload of report.json's by_chunk_size."""
    head = "%s, %s: " % (size.get("workload_label") or "chunk %g MiB" % size["chunk_mib"],
                         count(size["client_count"], "client"))
    figures = size.get("ranked_mib_s") or {}
    if size["slowest"] is not None and size["slowest"] != size["fastest"]:
        body = "slowest %s %s MiB/s, fastest %s %s MiB/s (slowest/fastest %s)" % (
            size["slowest"], _f(figures.get(size["slowest"])), size["fastest"],
            _f(figures.get(size["fastest"])), _f(size["slowest_to_fastest_ratio"], "%.2f"))
    elif size["slowest"] is not None:
        body = "%s %s MiB/s (%s)" % (
            size["slowest"], _f(figures.get(size["slowest"])),
            "no other client of this workload to rank it against"
            if size["client_count"] < 2 else "the only one that finished: nothing to rank "
            "it against")
    else:
        body = "not ranked: %s" % (size.get("not_ranked_why") or "no figure known")
    jumped = [x["client"] for x in size.get("not_ranked") or () if x.get("clock_jumped")]
    if jumped:
        body += "; not ranked (its clock jumped, see the aggregate): %s" % ", ".join(
            jumped[:NOT_RANKED_NAMED_MAX])
    left = [x for x in size.get("not_ranked") or () if not x.get("clock_jumped")]
    if left:
        body += "; not ranked (did not finish): %s" % ", ".join(
            "%s (%s)" % (x["client"], state_label(x)) for x in left[:NOT_RANKED_NAMED_MAX])
        if len(left) > NOT_RANKED_NAMED_MAX:
            body += " and %d more" % (len(left) - NOT_RANKED_NAMED_MAX)
    return head + body


def chunk_size_table(rep):
    """report.txt's 'by workload' section: the clients ranked like for like."""
    sizes = rep.get("by_chunk_size") or []
    fmt = "  %9s %8s %7s %11s %9s %9s %16s %9s  %s"   # indented, as every table row is
    lines = ["by workload (MiB/s: the mean, min and max of the ranked clients' MiB/s in the "
             "window when all of them wrote; ranked: the clients that finished)",
             fmt % ("chunk MiB", "clients", "ranked", "mean MiB/s", "min", "max",
                    "slowest/fastest", "p%d ms" % figures_mod.PCTS[-1], "workload")]
    for size in sizes:
        lines.append(fmt % (_f(size["chunk_mib"], "%g"), size["client_count"],
                            size.get("ranked_count", "-"),
                            _f(size["mean_mib_s"]), _f(size["min_mib_s"]),
                            _f(size["max_mib_s"]), _f(size["slowest_to_fastest_ratio"],
                                                      "%.2f"),
                            _f(size[figures_mod.chunk_size_latency_key()], "%.2f"),
                            size.get("workload_label") or "-"))
    if not sizes:
        lines.append("(no client reported a write interval)")
    return lines + [""]


def client_table(rep):
    """One row per client: name, host, state, chunk MiB, MiB/s mean, the lowest
    and highest of PCTS in ms (p50, p99), rollovers, CPU%."""
    lo, hi = "p%d" % figures_mod.PCTS[0], "p%d" % figures_mod.PCTS[-1]
    clients = rep["clients"]
    nw = max([len("client")] + [min(len(e["client"]), NAME_COLUMN_MAX) for e in clients])
    hw = max([len("host")] + [min(len("%s" % e.get("host")), HOST_COLUMN_MAX)
                               for e in clients])
    fmt = "%-" + str(nw) + "s  %-" + str(hw) + "s  %-10s %9s %9s %9s %9s %9s %6s"
    lines = [fmt % ("client", "host", "state", "chunk MiB", "MiB/s", lo + " ms", hi + " ms",
                    "rollovers", "CPU%")]
    for e in clients:
        if e.get("unreportable"):
            lines.append(fmt % (cut(e["client"], nw), "?", state_label(e), "-", "-", "-",
                                "-", e["rollover_count"], "-"))
            continue
        lines.append(fmt % (
            cut(e["client"], nw), cut(e["host"], hw), state_label(e),
            _f(e["chunk_mib"], "%g"), _f(e["throughput_mib_s"]["mean"]), _f(e["latency_ms"][lo], "%.2f"),
            _f(e["latency_ms"][hi], "%.2f"), e["rollover_count"],
            _f(e["writer_cpu_percent"]["mean"], "%.0f")))
    if any(e.get("verification") for e in clients):  # --verify: two more columns
        extra = [("read MiB/s", "bad blocks")] + [readback.table_columns(e) for e in clients]
        lines = [line + " %10s %10s" % cols for line, cols in zip(lines, extra)]
    return lines


def fit(lines, width=TEXT_WIDTH):
    """Wrap every line longer than ``width`` (continuations indented 4 more)."""
    out = []
    for line in lines:
        for part in line.split("\n"):
            if len(part) <= width:
                out.append(part)
                continue
            indent = " " * (len(part) - len(part.lstrip(" ")) + 4)
            out.extend(textwrap.wrap(part, width, subsequent_indent=indent,
                                     break_on_hyphens=False))
    return out


def render_text(rep):
    """report.txt: the answer first (headline, table), then the details. Every
    line passes through protocol.safe_text; a section that cannot be rendered
    is one line saying so."""
    return "".join(text_parts(rep))


def text_parts(rep):
    """``render_text`` a part at a time (each client's details on its own): a
    fleet's whole text, and its lines three times over, were the report
    phase's peak on 2.7 (+76 MiB at 5,000 clients: docs/SCALING.md)."""
    lines = []
    _section(lines, "the headline", headline, rep)
    # what the server itself says of the run (fell behind, paused, could not
    # write) is read with the headline, not after thousands of table rows
    lines += ["server warning: %s" % w for w in rep["run"].get("server_warnings", ())]
    lines.append("")
    _section(lines, "the client table", client_table, rep)
    lines.append("")
    _section(lines, "the figures by workload", chunk_size_table, rep)
    lines += ["details", "=" * 60]
    _section(lines, "the run header", _text_header, rep)
    yield _lines_text(lines)
    for e in rep["clients"]:
        lines = []
        _section(lines, "client %s" % e.get("client"), _text_client, e)
        yield _lines_text(lines)
    lines = []
    _section(lines, "the totals", _text_totals, rep)
    yield _lines_text(lines)


def _lines_text(lines):
    return "".join([line + "\n" for line in fit([protocol.safe_text(line) for line in lines])])


def _section(lines, what, func, *args):
    try:
        part = func(*args)
    except Exception as exc:  # noqa: B902 - the rest of the report still matters
        part = ["(%s could not be rendered: %s: %s)" % (what, type(exc).__name__, exc),
                ""]
    lines.extend(part)


def synchronized_start_line(run):
    """The synchronized start in one line (report.txt, report.html), or None
    when no client was given a start instant. A start instant the server did
    not see (a restart) is said to be unknown, never left out."""
    sync = run.get("synchronized_start")
    if not sync:
        return None
    unknown = sync.get("unknown_client_count") or 0
    why = "unknown for %s (%s)" % (count(unknown, "client"), sync.get("unknown_why") or
                                   "not recorded")
    if not sync["client_count"]:
        return "synchronized start: %s" % why
    return ("synchronized start at %s for %s: first writes (server "
            "clock, %d known) within %s ms of each other, at most %s ms off "
            "the instant%s" % (sync["start_at_utc"], count(sync["client_count"], "client"),
                               sync["first_write_known_count"],
                               _f(sync["first_write_spread_ms"], "%.1f"),
                               _f(sync["first_write_late_max_ms"], "%.1f"),
                               "; " + why if unknown else ""))


def _text_header(rep):
    run = rep["run"]
    lines = ["run: %s -> %s (%s s)%s" % (
        run["start_utc"], run["end_utc"], _f(run["run_duration_s"]),
        ", INTERRUPTED by %s" % run["interrupted_by"] if run["interrupted_by"] else ""),
        "exit code: %s (%s)" % (_f(run["exit_code"], "%d"), run["exit_meaning"] or "-")]
    again = rep.get("rerendered")
    if again:
        lines.append("re-rendered at %s from %s (python -m diskbench.report)" % (
            again["at_utc"], ", ".join(again["from_files"])))
    sync = synchronized_start_line(run)
    if sync:
        lines.append(sync)
    cpu = run.get("server_cpu")
    if cpu:
        lines.append("server CPU: %s of one CPU over the run, %s in its busiest %s s, "
                     "%s ms per 1000 accepted messages" % (
                         _f(cpu.get("mean_percent_of_one_cpu"), "%.0f%%"),
                         _f(cpu.get("busiest_percent_of_one_cpu"), "%.0f%%"),
                         _f(cpu.get("window_s"), "%g"),
                         _f(cpu.get("ms_per_1000_messages"), "%.0f")))
    lines.append("")
    return lines


def _plan_sources_text(sources):
    """``chunk from server, file default, duration from client``."""
    if not sources:
        return "sources unknown"
    names = (("chunk_bytes", "chunk"), ("file_bytes", "file"), ("duration_s", "duration"))
    return ", ".join("%s %s" % (label, sources.get(key, "?")) for key, label in names)


def _text_client(e):
    if e.get("unreportable"):
        return ["client %s: %s (%s); its figures could not be computed (see the "
                "server warnings)" % (e["client"], e["state"].upper(), e["state_why"]), ""]
    tp, lat = e["throughput_mib_s"], e["latency_ms"]
    lines = [
        "client %s: %s (%s)" % (e["client"], e["state"].upper(), e["state_why"]),
        "  environment: host %s, dir %s, fs %s, python %s, %s, sync %s, "
        "preallocate %s, buffer in huge pages %s MiB, clock offset %s s (%s), ping "
        "round trip %s ms" % (
            e["host"], e["target_dir"], e["fs"], e["python"], e["os"], e["sync"],
            "yes" if e["preallocated"] else "no", _f(e["buffer_huge_page_mib"], "%g"),
            _f(e["clock_offset_s"], "%+.3f"), e["clock_offset_source"] or "unknown",
            _f(e["rtt_ms"], "%.2f")),
        "  plan: chunk %s MiB, file %s MiB, %s s (%s); joined %s, started %s, "
        "stopped %s" % (
            _f(e["chunk_mib"], "%g"), _f(e["file_mib"], "%g"), _f(e["planned_run_s"], "%g"),
            _plan_sources_text(e.get("plan_source")), utc(e["joined_ts"]),
            utc(e["started_ts"]), utc(e["stopped_ts"])),
        "  first write %s on the server's clock%s" % (
            utc(e.get("first_write_ts")), " (common start unknown: its go is not on "
            "record)" if e.get("start_at_known") is False else
            "" if e.get("start_at_ts") is None else
            " (common start %s, %s ms off it)" % (
                utc(e["start_at_ts"]), _f(None if e.get("first_write_ts") is None else
                                          (e["first_write_ts"] - e["start_at_ts"]) * 1000.0,
                                          "%+.1f"))),
        "  written: %s MiB in %s, %s; %s "
        "(fsync+close mean %s ms, max %s ms)" % (
            _f(e["written_mib"]), count(e["perf_interval_count"], "perf interval"),
            count(e["chunk_count"], "chunk"), count(e["rollover_count"], "rollover"),
            _f(e["rollover_close_ms"]["mean"]),
            _f(e["rollover_close_ms"]["max"])),
        "  %s MiB/s: mean %s | %s %s | per interval min %s %s "
        "max %s" % (metrics.WALL_LABEL, _f(tp["mean"]), metrics.IN_CALLS_LABEL,
                    _f(tp["in_write_calls"]), _f(tp["min"]),
                    _pcts_text(tp), _f(tp["max"])),
        "  throughput over time MiB/s (run in %d equal slices): %s" % (
            figures_mod.TIMELINE_SLICES, " ".join(_f(x, "%.0f") for x in
                                      e["throughput_tenths_mib_s"]) or "-"),
        "  chunk latency ms: %s max %s (%s chunks)" % (
            _pcts_text(lat, "%.2f"), _f(lat["max"], "%.2f"), _f(lat["sample_count"], "%d")),
        "  writer CPU %%: mean %s max %s%s | RSS MiB: mean %s max %s" % (
            _f(e["writer_cpu_percent"]["mean"]), _f(e["writer_cpu_percent"]["max"]),
            "  << CPU-BOUND: the writer, not the disk, may be the limit"
            if e["cpu_bound"] else "",
            _f(e["writer_rss_mib"]["mean"]), _f(e["writer_rss_mib"]["max"]))]
    hb = e["last_heartbeat"]
    lines.append("  last heartbeat: %s" % (
        "%s, writer %s, %.1f MiB" % (hb["utc"], "alive" if hb["writer_was_alive"]
                                     else "NOT ALIVE", hb["progress_mib"])
        if hb else "none"))
    lines.append("  messages: %s dropped by the client, %s ignored, %s; went away: %s" % (
        _f(e["dropped_message_count"], "%d"), count(e["duplicate_message_count"], "duplicate"),
        count(e["reconnect_count"], "reconnect"), times(e["went_away_count"])))
    lines += readback.client_lines(e)
    for err in e["error_list"]:
        lines.append("  error (%s%s): %s" % (err["origin"], ", fatal" if
                                              err["is_fatal"] else "", err["what"]))
    for note in e["notices"]:  # (O_DIRECT refused, a filesystem of memory, files left ...)
        lines.append("  note: %s" % note)
    lines.append("")
    return lines


def _pcts_text(figures, fmt="%.1f"):
    """'p50 1.0 p95 2.0 p99 3.0': the PCTS of ``figures`` in words."""
    return " ".join("p%d %s" % (p, _f(figures["p%d" % p], fmt)) for p in figures_mod.PCTS)


def _text_totals(rep):
    t, agg = rep["totals"], rep["aggregate"]
    lines = [
        "totals: %s (%s finished, %s failed, %s went away, %s unfinished), "
        "%s MiB written, %s rollovers, %s chunks" % (
            count(t["client_count"], "client"), _f(t["finished_count"], "%d"),
            _f(t["failed_count"], "%d"), _f(t["went_away_count"], "%d"),
            _f(t["unfinished_count"], "%d"), _f(t["written_mib"]),
            _f(t["rollover_count"], "%d"), _f(t["chunk_count"], "%d")),
        "  chunk latency ms over all clients: %s max %s" % (
            _pcts_text(t["latency_ms"], "%.2f"), _f(t["latency_ms"]["max"], "%.2f")),
        "",
        "aggregate throughput MiB/s (%s): %s" % (metrics.AGGREGATE_LABEL, _f(
            agg["throughput_mib_s"])),
        "  period: %s" % agg["period_note"]]
    if agg["period_s"]:
        lines.append("  period length %.1f s; per client MiB/s: %s" % (
            agg["period_s"], ", ".join("%s %s" % (n, _f(v)) for n, v in
                                       sorted(agg["per_client_mib_s"].items()))))
    if agg["first_done"]:
        lines.append("  first done: %s at %s; last done: %s at %s (%.1f s later)" % (
            agg["first_done"]["client"], utc(agg["first_done"]["at_ts"]),
            agg["last_done"]["client"], utc(agg["last_done"]["at_ts"]),
            agg["done_spread_s"]))
    if t["cpu_bound_clients"]:
        lines.append("  CPU-bound writers (over %g%% of a core): %s" % (
            figures_mod.CPU_BOUND_PERCENT, ", ".join(t["cpu_bound_clients"])))
    lines += ["", "rejected messages: %d" % rep["rejected_count"]]
    lines += ["  %s: %d" % kv for kv in sorted(rep["rejected_messages"].items())]
    lines += ["", "method: " + rep["method"]]
    return lines
