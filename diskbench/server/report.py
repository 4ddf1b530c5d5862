"""report.json (machine) and report.txt (human) from a registry snapshot.

Pure arithmetic on a ``registry.RunView``: no clock, no network; both files are
written atomically (a temp file in the same directory, then ``os.rename``).
Every key and header carries its unit: ``_mib`` (2**20 bytes), ``_mib_s``,
``_ms``, ``_s``, ``_ts`` (seconds since the epoch), ``_percent``.

Total on anything the protocol accepted: each figure is computed guarded, and
one that cannot be computed, or is not finite, is null in report.json ("-" in
report.txt) with a sentence in run.server_warnings; report.json is written
with ``allow_nan=False`` (strict JSON); every line of report.txt passes
through ``protocol.safe_text`` (no client text can forge a line); a section
that cannot be rendered says so in one line instead of stopping the report.
"""
from __future__ import division

import json
import math
import os
import textwrap

from diskbench import metrics, plan, protocol
from diskbench.metrics import count, times, utc
from diskbench.compat import as_bytes
from diskbench.fsutil import atomic_write
from diskbench.server import readback
from diskbench import states as st

REPORT_JSON = "report.json"
REPORT_TXT = "report.txt"
REPORT_FORMAT = 3
#: The report proper, in the order they are written (report.write); the other
#: files (diskbench.report.write_all) are views of it.
REPORT_FILES = (REPORT_JSON, REPORT_TXT)
#: A writer using more than this much of one core is flagged CPU-bound.
CPU_BOUND_PERCENT = 90.0
#: Percentiles reported for chunk latency and for per-interval throughput.
PCTS = (50, 95, 99)
#: The text report shows each client's throughput over time in this many slices
#: (report.json also has every perf interval, ``throughput_timeline``).
TIMELINE_SLICES = 10

METHOD = (
    "MiB = 2^20 bytes. A client's %(wall)s MiB/s (its mean) = bytes / time of the "
    "client's perf intervals (its writer's wall time, client clock); its %(calls)s "
    "MiB/s = bytes / the time spent inside its write (+fsync) calls only, what the "
    "device gave while it was being written (higher: the time between calls is left "
    "out); per-interval min/%(pcts)s/max "
    "are nearest-rank over those intervals; throughput over time splits the client's "
    "writing span into equal slices (intervals straddling an edge pro-rated). Chunk latency (one timed write, plus fsync "
    "in fsync mode) percentiles come from the client's log-bucket histograms merged "
    "across all its intervals (within ~2.2%%), never from averages. The aggregate "
    "(%(aggregate)s) is "
    "the sum of all clients' bytes in the period when every client that started was "
    "writing (latest first start to earliest last end, intervals straddling an edge "
    "pro-rated), divided by that period, on the server's clock: each client's times "
    "are moved by its clock offset, measured NTP-style from the server's pings (the "
    "pong with the shortest round trip) or, for a client that answered none, the "
    "largest client-send minus server-receive time of its messages. "
    "CPU%% and RSS are of each client's writer process (100%% = one core). To compare "
    "with your own fio run, see docs/MEASURING.md, 'Comparing with your own fio run'.")

#: Most "could not be computed" warnings kept (one bad client must not bury the rest).
WARNINGS_MAX = 20
def _throughput_keys():
    return ("mean", "in_write_calls", "min") + tuple("p%d" % p for p in PCTS) + ("max",)


class _Guard(object):
    """Computes figures; one that raises is None, with a warning (kept once)."""

    def __init__(self, warnings):
        self.warnings = warnings
        self.count = 0

    def __call__(self, what, func, *args):
        try:
            return func(*args)
        except Exception as exc:  # noqa: B902 - any accepted data must give a report
            self.warn("%s could not be computed (%s: %s); shown as unknown" % (
                what, type(exc).__name__, exc))
            return None

    def warn(self, text):
        self.count += 1
        if self.count <= WARNINGS_MAX:
            self.warnings.append(protocol.safe_text(text))
        elif self.count == WARNINGS_MAX + 1:
            self.warnings.append("more figures could not be computed (not listed)")


def _finite(obj, guard, where=("report",)):
    """``obj`` with every float that is NaN or infinite replaced by None (and a
    warning): report.json is strict JSON. Copies only the containers on the
    way to such a float (at 5,000 clients a whole copy of the report was
    hundreds of MB); ``where`` is the path, spelled out only for a warning."""
    if isinstance(obj, float):
        if math.isnan(obj) or math.isinf(obj):
            guard.warn("%s was not a finite number; shown as unknown" % _path(where))
            return None
        return obj
    if isinstance(obj, dict):
        items, out = obj.items(), obj
    elif isinstance(obj, (list, tuple)):
        items, out = enumerate(obj), obj
    else:
        return obj
    for key, value in items:
        clean = _finite(value, guard, (where, key))
        if clean is not value:
            if out is obj:
                out = dict(obj) if isinstance(obj, dict) else list(obj)
            out[key] = clean
    return out


class Deferred(object):
    """A list of report.json that is made only where it is read: each client's
    two per-interval timelines (``throughput_timeline`` here, ``latency_timeline``
    from diskbench.report.series). Held as dicts for every client at once they
    took hundreds of MB (5,000 clients x 60 intervals: 600,000 dicts) only to be
    encoded; json_chunks makes one while it encodes that client, then drops it.
    Reading it in process: ``list(entry["throughput_timeline"])``."""

    __slots__ = ("make", "args")

    def __init__(self, make, *args):
        self.make, self.args = make, args

    def __iter__(self):
        return iter(self.make(*self.args))

    def __repr__(self):
        return "Deferred(%s)" % getattr(self.make, "__name__", self.make)


def deferred(g, what, make, *args):
    """``make(*args)`` as a Deferred, computed once now under the guard ``g`` so
    that a failure is a warning in its place (and [], as any figure). A list
    holding a float that is not finite is kept as it is: build's _finite then
    nulls it and says where, as for any figure."""
    made = g(what, make, *args) or []
    if not made or _finite(made, _Guard([])) is not made:
        return made
    return Deferred(make, *args)


def _path(where):
    """"report.clients[3].cpu" from the nested (parent, key) pairs of _finite."""
    parts = []
    while len(where) == 2:
        where, key = where
        parts.append("[%d]" % key if isinstance(key, int) else ".%s" % key)
    return where[0] + "".join(reversed(parts))


# --- small helpers --------------------------------------------------------------------
def _mean(values):
    return sum(values) / len(values) if values else None


def _ms(seconds):
    return None if seconds is None else seconds * 1000.0


def interval_rates(intervals):
    """MiB/s of each perf interval of positive length (a rate that cannot be a
    number is left out)."""
    rates = [metrics.mib_per_s(n, b - a) for a, b, n in intervals if b > a]
    return [r for r in rates if r is not None]


def mean_rate(intervals):
    """Bytes over the summed interval time, in MiB/s (None without time)."""
    return metrics.mib_per_s(sum(n for _, _, n in intervals),
                             sum(b - a for a, b, _ in intervals if b > a))


def bytes_within(intervals, lo, hi):
    """Bytes written in [lo, hi], pro-rating intervals that straddle an edge."""
    total = 0.0
    for a, b, n in intervals:
        if b <= a:
            if lo <= a <= hi:
                total += n
            continue
        overlap = min(b, hi) - max(a, lo)
        if overlap > 0:
            total += n * overlap / (b - a)
    return total


def timeline(intervals):
    """Every perf interval as {t_s: seconds since the first began, length_s, mib_s}."""
    ordered = sorted(iv for iv in intervals if iv[1] > iv[0])
    if not ordered:
        return []
    t0 = ordered[0][0]
    return [dict(t_s=round(a - t0, 3), length_s=round(b - a, 3),
                 mib_s=metrics.mib_per_s(n, b - a)) for a, b, n in ordered]


def slices(intervals, count=TIMELINE_SLICES):
    """MiB/s in ``count`` equal slices of the writing span (intervals that
    straddle a slice edge pro-rated): the shape of the run at a glance."""
    span = writing_span(intervals)
    if span is None or span[1] <= span[0]:
        return []
    lo, width = span[0], (span[1] - span[0]) / float(count)
    return [metrics.mib_per_s(bytes_within(intervals, lo + i * width,
                                           lo + (i + 1) * width), width)
            for i in range(count)]


def writing_span(intervals):
    """(first start, last end) of a client's perf intervals, or None."""
    if not intervals:
        return None
    return min(a for a, _, _ in intervals), max(b for _, b, _ in intervals)


def aggregate(spans):
    """The all-writing aggregate from {name: (intervals)} of clients that started."""
    spans = dict((name, iv) for name, iv in spans.items() if writing_span(iv))
    out = dict(client_count=len(spans), period_start_ts=None, period_end_ts=None,
               period_s=None, throughput_mib_s=None, per_client_mib_s={},
               first_done=None, last_done=None, done_spread_s=None, period_note=None)
    if not spans:
        out["period_note"] = "no client reported any write interval"
        return out
    edges = dict((name, writing_span(iv)) for name, iv in spans.items())
    starter = max(edges, key=lambda n: (edges[n][0], n))
    ender = min(edges, key=lambda n: (edges[n][1], n))
    lo, hi = edges[starter][0], edges[ender][1]
    done = sorted((edges[n][1], n) for n in edges)
    out.update(first_done=dict(client=done[0][1], at_ts=done[0][0]),
               last_done=dict(client=done[-1][1], at_ts=done[-1][0]),
               done_spread_s=done[-1][0] - done[0][0])
    if hi <= lo:
        out["period_note"] = ("the clients never all wrote at the same time: %s stopped "
                       "writing at %s, before %s started at %s" % (
                           ender, utc(hi), starter, utc(lo)))
        return out
    period = hi - lo
    per_client = dict((n, metrics.mib_per_s(bytes_within(iv, lo, hi), period))
                      for n, iv in spans.items())
    out.update(period_start_ts=lo, period_end_ts=hi, period_s=period,
               per_client_mib_s=per_client,
               throughput_mib_s=sum(v for v in per_client.values() if v is not None)
               if all(v is not None for v in per_client.values()) else None,
               period_note="all %d clients were writing from %s (when %s started) to %s "
                    "(when %s ended)" % (len(spans), utc(lo), starter, utc(hi), ender))
    return out


def rank(means):
    """(slowest, fastest, slowest/fastest) of {name: mean MiB/s}: the names of
    the lowest and highest known mean (ties: the first name), the ratio None
    when the fastest is 0; (None, None, None) without a known mean."""
    rated = sorted((m, n) for n, m in means.items() if m is not None)
    if not rated:
        return None, None, None
    low, high = rated[0], sorted(rated, key=lambda r: (-r[0], r[1]))[0]
    return low[1], high[1], (low[0] / high[0] if high[0] > 0 else None)


def chunk_size_latency_key():
    """by_chunk_size's latency key: the highest of PCTS ('latency_p99_ms')."""
    return "latency_p%d_ms" % PCTS[-1]


def by_chunk_size(clients, hists):
    """Like for like: the clients that wrote, grouped by chunk size (MiB), each
    group with its count, the mean/min/max of its clients' mean MiB/s, its
    slowest and fastest and their ratio (the spread across hosts at that size),
    and the p99 chunk latency of its clients' histograms merged. Clients are
    ranked only within a size: a bigger chunk is faster on the same disk.
    ``clients``: report entries; ``hists``: {name: LatencyHistogram}."""
    groups = {}
    for e in clients:
        mean = (e.get("throughput_mib_s") or {}).get("mean")
        if mean is None or e.get("chunk_mib") is None:
            continue
        groups.setdefault(e["chunk_mib"], {})[e["client"]] = mean
    out = []
    for size in sorted(groups):
        means = groups[size]
        merged = metrics.LatencyHistogram()
        for name in means:
            if hists.get(name) is not None:
                merged.merge(hists[name])
        slowest, fastest, ratio = rank(means)
        if len(means) < 2:
            ratio = None     # one client: nothing to rank it against
        out.append(dict(chunk_mib=size, client_count=len(means),
                        mean_mib_s=_mean(list(means.values())),
                        min_mib_s=min(means.values()), max_mib_s=max(means.values()),
                        slowest=slowest, fastest=fastest, slowest_to_fastest_ratio=ratio,
                        **{chunk_size_latency_key(): _ms(merged.percentile(PCTS[-1]))}))
    return out


# --- building ----------------------------------------------------------------------
def _throughput(intervals, io_s):
    """The client's throughput figures; ``mean`` (wall: bytes over its perf
    intervals' time) and ``in_write_calls`` (bytes over the time inside write
    (+fsync) calls) are what the client's closing line says, by those names."""
    rates = interval_rates(intervals)
    return dict(
        [("mean", mean_rate(intervals)), ("min", min(rates) if rates else None),
         ("max", max(rates) if rates else None),
         ("in_write_calls", metrics.mib_per_s(sum(n for _, _, n in intervals), io_s))] +
        [("p%d" % p, metrics.percentile(rates, p)) for p in PCTS])


def _pcts_text(figures, fmt="%.1f"):
    """'p50 1.0 p95 2.0 p99 3.0': the PCTS of ``figures`` in words."""
    return " ".join("p%d %s" % (p, _f(figures["p%d" % p], fmt)) for p in PCTS)


def _latency(hist):
    return dict(
        [("min", _ms(hist.min)), ("mean", _ms(hist.mean()))] +
        [("p%d" % p, _ms(hist.percentile(p))) for p in PCTS] +
        [("max", _ms(hist.max)), ("sample_count", hist.count)])


def shortfalls(clients):
    """One warning per client whose own stop summary says it made more perf
    samples than the server holds, beyond every message it says it dropped
    (so a shortfall here is certain: records lost between the client and
    perf.jsonl, or refused). ``clients``: registry client snapshots."""
    out = []
    for c in clients:
        made = c.stop.data.get("perf_samples") if c.stop is not None else None
        if made is None:
            continue
        held = len(c.intervals)
        missing = made - c.stop.dropped_messages - held
        if missing > 0:
            out.append("client %s: its stop summary says it made %d perf samples "
                       "(%d messages dropped by the client), the server holds %d: at "
                       "least %d missing (never received, refused, or lost from "
                       "perf.jsonl); its figures here are short" % (
                           c.name, made, c.stop.dropped_messages, held, missing))
    return out


def client_entry(c, guard=None):
    """The report of one client (``c`` is a registry client snapshot)."""
    g = guard or _Guard([])
    h = c.hello
    who = "client %s: " % c.name
    cpu_mean = g(who + "writer CPU mean", _mean, c.cpu_samples)
    hb = None
    if c.last_heartbeat:
        hb_ts, beat = c.last_heartbeat
        hb = dict(at_ts=hb_ts, utc=utc(hb_ts), writer_was_alive=beat.writer_alive,
                  progress_mib=metrics.mib(beat.bytes_written),
                  progress_age_s=beat.progress_age_s)
    summary = c.stop
    return dict(
        client=c.name, host=h.hostname, client_pid=h.pid, peer=c.peer,
        target_dir=h.directory, fs=h.fs_type, python=h.python_version,
        os=h.platform, diskbench_version=h.client_version, psutil=h.psutil_version,
        # what the writer really does (start) over what was planned (hello)
        sync=(c.start or h).sync_mode, preallocated=(c.start or h).preallocate,
        # MiB of the writer's buffer in huge pages (None: unknown); see payload.py
        buffer_huge_page_mib=_map(metrics.mib, c.start.buffer_huge_bytes)
        if c.start else None,
        # the run plan (plan.py) as run, and where each setting came from:
        # the client's command line, the server's plan, or the default
        chunk_mib=metrics.mib(c.plan["chunk_bytes"]),
        file_mib=metrics.mib(c.plan["file_bytes"]),
        data_file_max_count=h.max_files, planned_run_s=c.plan["duration_s"],
        plan_source=dict(c.plan_sources), join_order=c.join_order,
        # the synchronized start: the instant its go carried (server clock; None:
        # started at once) and its first write put on the server's clock
        start_at_ts=c.start_at, first_write_ts=first_write_ts(c),
        state=c.state, state_why=c.reason,
        clock_offset_s=c.offset()[0],      # client clock minus server clock
        clock_offset_source=c.offset()[1],
        rtt_ms=_ms(c.rtt_s),
        clock_drift_s=None if c.offset_low is None else c.offset_high - c.offset_low,
        joined_ts=c.first_ts, started_ts=c.start_ts, stopped_ts=c.stop_ts,
        last_message_ts=c.last_ts,
        written_mib=metrics.mib(c.perf_bytes),
        client_summary_written_mib=metrics.mib(summary.bytes_written) if summary else None,
        client_summary_elapsed_s=summary.elapsed_s if summary else None,
        client_summary_perf_count=summary.data.get("perf_samples") if summary else None,
        perf_interval_count=len(c.intervals), chunk_count=c.perf_chunks,
        io_time_s=c.io_s,
        rollover_count=len(c.close_times),
        rollover_close_ms=dict(mean=_ms(_mean(c.close_times)),
                               max=_ms(max(c.close_times) if c.close_times else None)),
        throughput_tenths_mib_s=g(who + "throughput over time", slices, c.intervals)
        or [],
        # made again, one client at a time, when report.json is encoded
        throughput_timeline=deferred(g, who + "throughput timeline", timeline, c.intervals),
        throughput_mib_s=g(who + "throughput", _throughput, c.intervals, c.io_s) or dict(
            (k, None) for k in _throughput_keys()),
        latency_ms=g(who + "chunk latency", _latency, c.hist) or dict(
            [(k, None) for k in ("min", "mean", "max") + tuple(
                "p%d" % p for p in PCTS)] + [("sample_count", c.hist.count)]),
        writer_cpu_percent=dict(mean=cpu_mean,
                                max=max(c.cpu_samples) if c.cpu_samples else None,
                                sample_count=len(c.cpu_samples)),
        cpu_bound=bool(cpu_mean is not None and cpu_mean > CPU_BOUND_PERCENT),
        writer_rss_mib=dict(mean=_map(metrics.mib, _mean(c.rss_samples)),
                            max=_map(metrics.mib, max(c.rss_samples) if c.rss_samples
                                     else None)),
        last_heartbeat=hb,
        dropped_message_count=summary.dropped_messages if summary else None,
        duplicate_message_count=c.duplicates, reconnect_count=c.reconnects,
        went_away_count=c.went_away_count,
        # another connection spoke under its name while its own was open; seqs
        # refused for jumping further ahead than it could have sent
        takeover_count=c.takeovers, seq_jump_count=c.seq_jumps,
        error_list=[dict(origin=e.source, what=e.reason, os_errno=e.errno,
                         is_fatal=e.fatal) for e in c.errors],
        notices=list(c.notes),
        errors_and_notices_not_kept_count=c.texts_dropped,
        # --verify: what was read back, kept apart from the write figures (None: off)
        verification=g(who + "read-back", readback.client_entry, c, _latency))


def first_write_ts(c):
    """When ``c`` wrote its first chunk, on the server's clock (None: unknown)."""
    if c.started_at is None:
        return None
    return c.started_at - (c.offset()[0] or 0.0)


def synchronized_start(clients):
    """The clients that got the common start instant: how close their first
    writes were to it and to each other (server clock), or None."""
    firsts = [(c.start_at, first_write_ts(c)) for c in clients if c.start_at is not None]
    known = [w for _, w in firsts if w is not None]
    if not firsts:
        return None
    at = firsts[0][0]
    return dict(start_at_ts=at, start_at_utc=utc(at), client_count=len(firsts),
                first_write_known_count=len(known),
                first_write_spread_ms=_ms(max(known) - min(known)) if known else None,
                first_write_late_max_ms=_ms(max(abs(w - at) for w in known))
                if known else None)


def on_server_clock(c):
    """A client's perf intervals moved onto the server's clock by its
    estimated offset (see registry.Client.clock_offset_s), so a client whose
    clock is off neither shrinks the all-writing period nor leads first/last
    done."""
    return OnServerClock(c.intervals, c.offset()[0] or 0.0)


class OnServerClock(object):
    """``on_server_clock``'s (t_start, t_end, bytes) intervals, moved as they
    are read: the aggregate holds every client's at once, and as lists of
    tuples they took 40 MB at 5,000 clients x 60 intervals."""

    __slots__ = ("intervals", "offset")

    def __init__(self, intervals, offset):
        self.intervals, self.offset = intervals, offset

    def __len__(self):
        return len(self.intervals)

    def __iter__(self):
        offset = self.offset
        for a, b, n in self.intervals:
            yield a - offset, b - offset, n


def _map(func, value):
    return None if value is None else func(value)


def _client_or_stub(c, g):
    entry = g("client %s: its report" % c.name, client_entry, c, g)
    if entry is None:  # only what cannot fail
        entry = dict(client=c.name, state=c.state, state_why=c.reason,
                     written_mib=None, rollover_count=len(c.close_times),
                     chunk_count=c.perf_chunks, perf_interval_count=len(c.intervals),
                     cpu_bound=False, unreportable=True)
    return entry


def _totals(view, clients):
    merged = metrics.LatencyHistogram()
    for c in view.clients:
        merged.merge(c.hist)
    states = [c.state for c in view.clients]
    written = [e["written_mib"] for e in clients]
    return dict(
        client_count=len(clients),
        finished_count=states.count(st.FINISHED), failed_count=states.count(st.FAILED),
        went_away_count=states.count(st.WENT_AWAY),
        unfinished_count=sum(1 for s in states if s in st.LIVE),
        written_mib=None if None in written else sum(written),
        rollover_count=sum(e["rollover_count"] for e in clients),
        chunk_count=sum(e["chunk_count"] for e in clients),
        perf_interval_count=sum(e["perf_interval_count"] for e in clients),
        latency_ms=dict([("p%d" % p, _ms(merged.percentile(p))) for p in PCTS] +
                        [("max", _ms(merged.max)), ("sample_count", merged.count)]),
        cpu_bound_clients=[e["client"] for e in clients if e["cpu_bound"]])


#: run.json's key for the report facts (``facts``): what the server knew at the
#: end that perf.jsonl cannot say, so a re-render states every fact.
FACTS_KEY = "report_facts"
#: Per client, the registry.Client attributes kept in the facts: its plan as
#: sent in go and where each setting came from, the start instant, its state
#: and why, and what only the connections saw.
CLIENT_FACTS = ("peer", "plan", "plan_sources", "start_at", "join_order", "state",
                "reason", "duplicates", "reconnects", "went_away_count", "takeovers",
                "seq_jumps", "notes", "texts_dropped")
#: Of the run (registry.RunView attributes).
VIEW_FACTS = ("expected_clients", "connections", "rejected", "restored")


def facts(view, run_start_ts, run_end_ts, **build_args):
    """What ``build(view, run_start_ts, run_end_ts, **build_args)`` states that
    perf.jsonl cannot give back, as JSON-ready data (run.json's FACTS_KEY)."""
    return dict(start_ts=run_start_ts, end_ts=run_end_ts, build=build_args,
                run=dict((k, getattr(view, k)) for k in VIEW_FACTS),
                clients=dict((c.name, dict((k, getattr(c, k)) for k in CLIENT_FACTS))
                             for c in view.clients))


def apply_facts(view, recorded):
    """Put ``facts`` read back onto ``view`` (rebuilt from perf.jsonl): returns
    (run start, run end, build's keyword arguments). Raises KeyError,
    TypeError or ValueError on facts of the wrong shape."""
    for key in VIEW_FACTS:
        setattr(view, key, recorded["run"][key])
    by_name = recorded["clients"]
    for c in view.clients:
        known = by_name.get(c.name)
        if isinstance(known, dict):
            for key in CLIENT_FACTS:
                setattr(c, key, known[key])
    build_args = dict((str(k), v) for k, v in recorded["build"].items())
    return float(recorded["start_ts"]), float(recorded["end_ts"]), build_args


def build(view, run_start_ts, run_end_ts, run_label="", interrupted_by=None,
          exit_code=None, exit_meaning=None, warnings=(), server_cpu=None):
    """The whole report as a JSON-ready dict; never raises on accepted data.
    ``server_cpu``: the server's own CPU use (interpreter.CpuGauge.summary),
    None when unknown (a report re-rendered without one)."""
    warnings = list(warnings)
    g = _Guard(warnings)
    clients = [_client_or_stub(c, g) for c in sorted(view.clients, key=lambda c: c.name)]
    totals = g("the totals", _totals, view, clients) or dict(
        client_count=len(clients), finished_count=None, failed_count=None,
        went_away_count=None, unfinished_count=None, written_mib=None,
        rollover_count=None, chunk_count=None, perf_interval_count=None,
        latency_ms=dict([("p%d" % p, None) for p in PCTS] +
                        [("max", None), ("sample_count", None)]),
        cpu_bound_clients=[])
    agg = g("the aggregate", aggregate,
            dict((c.name, on_server_clock(c)) for c in view.clients))
    if agg is None:
        agg = aggregate({})
        agg["period_note"] = "could not be computed (see the server warnings)"
    sizes = g("the figures by chunk size", by_chunk_size, clients,
              dict((c.name, c.hist) for c in view.clients)) or []
    rep = dict(
        report_format=REPORT_FORMAT,
        method=METHOD % dict(pcts="/".join("p%d" % p for p in PCTS),
                             wall=metrics.WALL_LABEL, calls=metrics.IN_CALLS_LABEL,
                             aggregate=metrics.AGGREGATE_LABEL),
        run=dict(label=run_label, start_ts=run_start_ts, start_utc=utc(run_start_ts),
                 end_ts=run_end_ts, end_utc=utc(run_end_ts),
                 run_duration_s=run_end_ts - run_start_ts,
                 expected_client_count=view.expected_clients,
                 connection_count=view.connections, interrupted_by=interrupted_by,
                 exit_code=exit_code, exit_meaning=exit_meaning,
                 records_restored_count=view.restored,
                 synchronized_start=g("the synchronized start", synchronized_start,
                                      view.clients),
                 server_cpu=server_cpu, server_warnings=warnings),
        clients=clients, totals=totals, aggregate=agg, by_chunk_size=sizes,
        rejected_messages=dict(view.rejected), rerendered=None,
        rejected_count=sum(view.rejected.values()))
    rep = _finite(rep, g)
    rep["run"]["server_warnings"] = warnings  # with what _finite found
    return rep


# --- text ------------------------------------------------------------------------
#: report.txt and the server's closing lines fit this many columns.
TEXT_WIDTH = 120
#: Widest client name / host shown in the table (longer ones end in "~").
NAME_COLUMN_MAX = 25
HOST_COLUMN_MAX = 24


def _f(value, fmt="%.1f"):
    return "-" if value is None else fmt % value


def _cut(text, width):
    text = "%s" % text
    return text if len(text) <= width else text[:width - 1] + "~"


def state_label(entry):
    """A client's state as the table shows it ('unfinished' for a live state at the end)."""
    return "unfinished" if entry["state"] in st.LIVE else entry["state"]


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
        lines.append("aggregate: %.1f MiB/s (%s: %s, %.1f s)" % (
            agg["throughput_mib_s"], metrics.AGGREGATE_LABEL,
            count(agg["client_count"], "client"), agg["period_s"]))
    else:
        lines.append("aggregate: - (%s)" % agg["period_note"])
    sizes = rep.get("by_chunk_size") or []
    means = dict((e["client"], e["throughput_mib_s"]["mean"]) for e in clients
                 if not e.get("unreportable"))
    for size in sizes[:HEADLINE_CHUNK_SIZES_MAX]:
        lines.append(chunk_size_line(size, means))
    if len(sizes) > HEADLINE_CHUNK_SIZES_MAX:
        lines.append("(%s more in 'by chunk size' below)" % count(
            len(sizes) - HEADLINE_CHUNK_SIZES_MAX, "chunk size"))
    if len(sizes) > 1:
        lines.append(SIZES_DIFFER)
    return lines + readback.headline(rep)


#: The headline ranks clients within each chunk size, for this many sizes.
HEADLINE_CHUNK_SIZES_MAX = 6
#: Said under the headline when the clients wrote different chunk sizes.
SIZES_DIFFER = ("the clients wrote different chunk sizes, so they are ranked only within "
                "a size: " + plan.CHUNK_ADVICE)


def chunk_size_line(size, means):
    """The headline's line for one chunk size of report.json's by_chunk_size."""
    head = "chunk %g MiB, %s: " % (size["chunk_mib"], count(size["client_count"], "client"))
    if size["client_count"] < 2 or size["slowest"] == size["fastest"]:
        return head + "%s %s MiB/s (no other client at this size to rank it against)" % (
            size["slowest"], _f(means.get(size["slowest"])))
    return head + "slowest %s %s MiB/s, fastest %s %s MiB/s (slowest/fastest %s)" % (
        size["slowest"], _f(means.get(size["slowest"])), size["fastest"],
        _f(means.get(size["fastest"])), _f(size["slowest_to_fastest_ratio"], "%.2f"))


def chunk_size_table(rep):
    """report.txt's 'by chunk size' section: what the default plan measures."""
    sizes = rep.get("by_chunk_size") or []
    fmt = "  %9s %8s %11s %9s %9s %16s %9s"   # indented, as every table row is
    lines = ["by chunk size (MiB/s: the mean, min and max of the clients' means)",
             fmt % ("chunk MiB", "clients", "mean MiB/s", "min", "max", "slowest/fastest",
                    "p%d ms" % PCTS[-1])]
    for size in sizes:
        lines.append(fmt % (_f(size["chunk_mib"], "%g"), size["client_count"],
                            _f(size["mean_mib_s"]), _f(size["min_mib_s"]),
                            _f(size["max_mib_s"]), _f(size["slowest_to_fastest_ratio"],
                                                      "%.2f"),
                            _f(size[chunk_size_latency_key()], "%.2f")))
    if not sizes:
        lines.append("(no client reported a write interval)")
    return lines + [""]


def client_table(rep):
    """One row per client: name, host, state, chunk MiB, MiB/s mean, the lowest
    and highest of PCTS in ms (p50, p99), rollovers, CPU%."""
    lo, hi = "p%d" % PCTS[0], "p%d" % PCTS[-1]
    clients = rep["clients"]
    nw = max([len("client")] + [min(len(e["client"]), NAME_COLUMN_MAX) for e in clients])
    hw = max([len("host")] + [min(len("%s" % e.get("host")), HOST_COLUMN_MAX)
                               for e in clients])
    fmt = "%-" + str(nw) + "s  %-" + str(hw) + "s  %-10s %9s %9s %9s %9s %9s %6s"
    lines = [fmt % ("client", "host", "state", "chunk MiB", "MiB/s", lo + " ms", hi + " ms",
                    "rollovers", "CPU%")]
    for e in clients:
        if e.get("unreportable"):
            lines.append(fmt % (_cut(e["client"], nw), "?", state_label(e), "-", "-", "-",
                                "-", e["rollover_count"], "-"))
            continue
        lines.append(fmt % (
            _cut(e["client"], nw), _cut(e["host"], hw), state_label(e),
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
    lines = []
    _section(lines, "the headline", headline, rep)
    # what the server itself says of the run (fell behind, paused, could not
    # write) is read with the headline, not after thousands of table rows
    lines += ["server warning: %s" % w for w in rep["run"].get("server_warnings", ())]
    lines.append("")
    _section(lines, "the client table", client_table, rep)
    lines.append("")
    _section(lines, "the figures by chunk size", chunk_size_table, rep)
    lines += ["details", "=" * 60]
    _section(lines, "the run header", _text_header, rep)
    for e in rep["clients"]:
        _section(lines, "client %s" % e.get("client"), _text_client, e)
    _section(lines, "the totals", _text_totals, rep)
    return "\n".join(fit([protocol.safe_text(line) for line in lines])) + "\n"


def _section(lines, what, func, *args):
    try:
        part = func(*args)
    except Exception as exc:  # noqa: B902 - the rest of the report still matters
        part = ["(%s could not be rendered: %s: %s)" % (what, type(exc).__name__, exc),
                ""]
    lines.extend(part)


def _text_header(rep):
    run = rep["run"]
    lines = ["run: %s -> %s (%s s)%s" % (
        run["start_utc"], run["end_utc"], _f(run["run_duration_s"]),
        ", INTERRUPTED by %s" % run["interrupted_by"] if run["interrupted_by"] else ""),
        "exit code: %s (%s)" % (run["exit_code"], run["exit_meaning"])]
    again = rep.get("rerendered")
    if again:
        lines.append("re-rendered at %s from %s (python -m diskbench.report)" % (
            again["at_utc"], ", ".join(again["from_files"])))
    sync = run.get("synchronized_start")
    if sync:
        lines.append("synchronized start at %s for %d clients: first writes (server "
                     "clock, %d known) within %s ms of each other, at most %s ms off "
                     "the instant" % (sync["start_at_utc"], sync["client_count"],
                                      sync["first_write_known_count"],
                                      _f(sync["first_write_spread_ms"], "%.1f"),
                                      _f(sync["first_write_late_max_ms"], "%.1f")))
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
            utc(e.get("first_write_ts")), "" if e.get("start_at_ts") is None else
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
            TIMELINE_SLICES, " ".join(_f(x, "%.0f") for x in
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
    lines.append("")
    return lines


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
            CPU_BOUND_PERCENT, ", ".join(t["cpu_bound_clients"])))
    lines += ["", "rejected messages: %d" % rep["rejected_count"]]
    lines += ["  %s: %d" % kv for kv in sorted(rep["rejected_messages"].items())]
    lines += ["", "method: " + rep["method"]]
    return lines


# --- writing ---------------------------------------------------------------------
def render_json(rep):
    """report.json's text: strict JSON (no NaN/Infinity: such a figure is null),
    ASCII only (any text escaped, so it always encodes)."""
    return b"".join(json_chunks(rep)).decode("ascii")


class _Encoder(json.JSONEncoder):
    """report.json's encoder: a Deferred is made when its turn comes, through
    the same NaN guard as the rest, and dropped once written."""

    def __init__(self, guard):
        json.JSONEncoder.__init__(self, indent=2, sort_keys=True, ensure_ascii=True,
                                  allow_nan=False)
        self.guard = guard

    def default(self, o):
        if isinstance(o, Deferred):
            return _finite(list(o), self.guard)
        return json.JSONEncoder.default(self, o)


def json_chunks(rep):
    """``render_json`` as bytes, piece by piece as it is encoded: at 5,000
    clients the whole text at once, indented, took 0.5 GB to make."""
    guard = _Guard([])
    for chunk in _Encoder(guard).iterencode(_finite(rep, guard)):
        yield as_bytes(chunk)
    yield b"\n"


def write(log_dir, rep):
    """Try report.json, then report.txt, each on its own (a full disk may take one
    and not the other). Returns ([paths written], [(path, error) failed]); a
    report that cannot even be rendered is a failure of that file, never a crash."""
    written, failed = [], []
    for name, render in zip(REPORT_FILES, (json_chunks, render_text)):
        path = os.path.join(log_dir, name)
        try:
            data = render(rep)
            data = data if name == REPORT_JSON else as_bytes(data)
            atomic_write(path, data)
            written.append(path)
        except Exception as exc:  # noqa: B902 - a bug or a full disk: the other file may still work
            failed.append((path, exc))
    return written, failed
