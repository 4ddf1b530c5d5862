"""The report's arithmetic: a client's throughput from its perf intervals
(mean, per-interval percentiles, slices over time), the all-writing
aggregate, ranking within a chunk size, latency percentiles from merged
histograms, and client times put on the server's clock.

Pure functions of intervals and histograms, apart from the shape of
report.json (build.py) and the words of report.txt (text.py).
"""
from __future__ import division

from diskbench import metrics
from diskbench import states as st
from diskbench.metrics import utc

#: A writer using more than this much of one core is flagged CPU-bound.
CPU_BOUND_PERCENT = 90.0
#: Percentiles reported for chunk latency and for per-interval throughput.
PCTS = (50, 95, 99)
#: The text report shows each client's throughput over time in this many slices
#: (report.json also has every perf interval, ``throughput_timeline``).
TIMELINE_SLICES = 10


def mean_of(values):
    return sum(values) / len(values) if values else None


def ms(seconds):
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
               period_note="%s writing from %s (when %s started) to %s "
                    "(when %s ended)" % ("the 1 client was" if len(spans) == 1 else
                                         "all %d clients were" % len(spans), utc(lo),
                                         starter, utc(hi), ender))
    return out


def rank(means):
    """(slowest, fastest, slowest/fastest) of {name: MiB/s}: the names of the
    lowest and highest known figure (ties: the first name; with two names or
    more, never the same name for both), the ratio None when the fastest is
    0; (None, None, None) without a known figure."""
    rated = sorted((m, n) for n, m in means.items() if m is not None)
    if not rated:
        return None, None, None
    low = rated[0]
    high = sorted(rated[1:] or rated, key=lambda r: (-r[0], r[1]))[0]
    return low[1], high[1], (low[0] / high[0] if high[0] > 0 else None)


def chunk_size_latency_key():
    """by_chunk_size's latency key: the highest of PCTS ('latency_p99_ms')."""
    return "latency_p%d_ms" % PCTS[-1]


#: The workload: every plan setting that changes what a client measures, as
#: (report.json client key, how it is said). Clients are ranked against each
#: other (by_chunk_size) and compared run to run (report/compare.py) only when
#: every one of them is the same: a bigger chunk or file, fsync instead of
#: O_DIRECT (a target that refused O_DIRECT), preallocated files, a read-back
#: (--verify) or a longer run each change the figure, not the host. ``sync``
#: and ``preallocated`` are what the writer really did (its start message).
WORKLOAD = (("chunk_mib", "chunk %g MiB"), ("file_mib", "file %g MiB"),
            ("planned_run_s", "%g s"), ("sync", "%s"), ("preallocated", "prealloc %s"),
            ("verify", "verify %s"))
#: A setting not known (an entry without figures): its name and '?'.
WORKLOAD_UNKNOWN = dict(chunk_mib="chunk ?", file_mib="file ?", planned_run_s="duration ?",
                        sync="sync ?", preallocated="prealloc ?", verify="verify ?")
#: The settings in words, in WORKLOAD's order.
WORKLOAD_WORDS = dict(chunk_mib="chunk size", file_mib="file size",
                      planned_run_s="duration", sync="sync mode",
                      preallocated="allocation", verify="read-back (--verify)")


def workload_setting(entry, key):
    """One WORKLOAD setting of a report.json client entry (None: unknown);
    verify is whether the entry has a ``verification``."""
    if key == "verify":
        return None if "verification" not in entry else entry["verification"] is not None
    return entry.get(key)


def workload_of(entry):
    """A client's workload: the tuple of its WORKLOAD settings."""
    return tuple(workload_setting(entry, key) for key, _ in WORKLOAD)


def setting_text(key, value):
    """One WORKLOAD setting in words: 'chunk 10 MiB', 'prealloc no', 'verify yes'."""
    if value is None:
        return WORKLOAD_UNKNOWN[key]
    return dict(WORKLOAD)[key] % ("yes" if value is True else "no" if value is False
                                  else value)


def workload_text(workload):
    """report.json's ``workload`` object in words: every setting ('-': none)."""
    if not workload:
        return "-"
    return ", ".join(setting_text(key, workload.get(key)) for key, _ in WORKLOAD)


def _sort_key(work):
    return tuple((v is None, v if v is not None else 0) for v in work)


def distinguishing(workloads):
    """The WORKLOAD keys a label must name to tell ``workloads`` apart: the
    chunk size always, and each other setting that differs between two
    workloads of the same chunk size (the default plan's file size follows
    the chunk size: not named)."""
    keys = [WORKLOAD[0][0]]
    for i, (key, _) in enumerate(WORKLOAD[1:], 1):
        seen = {}
        for work in workloads:
            rest = work[:1]
            seen.setdefault(rest, set()).add(work[i])
        if any(len(values) > 1 for values in seen.values()):
            keys.append(key)
    return keys


def workload_label(work, keys):
    """'chunk 10 MiB' or 'chunk 10 MiB, file 400 MiB, fsync': the ``keys`` of ``work``."""
    index = dict((key, i) for i, (key, _) in enumerate(WORKLOAD))
    return ", ".join(setting_text(key, work[index[key]]) for key in keys)


def ranked_figures(names, spans, means):
    """(figures {name: MiB/s}, window (start, end) or None, why not ranked or
    None) of the finished clients ``names`` of one workload: each one's MiB/s
    in the window when all of them were writing (server clock; intervals
    straddling an edge pro-rated), so none is faster for having written alone
    while another had not started or had ended; one client: its mean."""
    if not names:
        return {}, None, "no client of this workload finished"
    if len(names) == 1:
        return {names[0]: means[names[0]]}, None, None
    edges = [writing_span(spans.get(n) or []) for n in names]
    if None in edges:
        return {}, None, "a finished client has no write interval"
    lo, hi = max(e[0] for e in edges), min(e[1] for e in edges)
    if hi <= lo:
        return {}, None, ("its finished clients never all wrote at the same time, so no "
                          "window compares them")
    return dict((n, metrics.mib_per_s(bytes_within(spans[n], lo, hi), hi - lo))
                for n in names), (lo, hi), None


def by_chunk_size(clients, hists, spans=None, jumped=()):
    """Like for like: the clients that wrote, grouped by workload (WORKLOAD: the
    chunk size first, then every other setting that changes what is measured),
    smallest chunk first. Only clients that finished are ranked: one killed,
    stalled, failed or gone away wrote part of the run (and the others wrote
    alone after it), so its figure is not comparable; it is listed in
    ``not_ranked`` with its state. The finished ones are ranked by their MiB/s
    in the window when all of them were writing (``ranked_figures``), each
    group with the mean/min/max of those figures, its slowest and fastest and
    their ratio (the spread across hosts), and the p99 chunk latency of its
    ranked clients' histograms merged. ``clients``: report entries;
    ``hists``: {name: LatencyHistogram}; ``spans``: {name: perf intervals on the
    server's clock}; ``jumped``: names left out of cross-client timing
    (clock_jumped), never ranked (listed with ``clock_jumped``)."""
    spans = spans or {}
    groups = {}
    for e in clients:
        mean = (e.get("throughput_mib_s") or {}).get("mean")
        if mean is None or e.get("chunk_mib") is None:
            continue
        groups.setdefault(workload_of(e), []).append(e)
    keys = distinguishing(list(groups))
    out = []
    for work in sorted(groups, key=_sort_key):
        members = groups[work]
        means = dict((e["client"], e["throughput_mib_s"]["mean"]) for e in members)
        ranked = sorted(e["client"] for e in members if e.get("state") == st.FINISHED and
                        e["client"] not in jumped)
        figures, window, why = ranked_figures(ranked, spans, means)
        merged = metrics.LatencyHistogram()
        for name in figures:
            if hists.get(name) is not None:
                merged.merge(hists[name])
        slowest, fastest, ratio = rank(figures)
        if len(figures) < 2:
            ratio = None     # one client: nothing to rank it against
        known = [v for v in figures.values() if v is not None]
        out.append(dict(
            chunk_mib=work[0], workload=dict(zip((k for k, _ in WORKLOAD), work)),
            workload_label=workload_label(work, keys), client_count=len(members),
            ranked_count=len(figures), ranked_mib_s=figures,
            window_start_ts=window and window[0], window_end_ts=window and window[1],
            window_s=window and window[1] - window[0], not_ranked_why=why,
            # the clients that did not finish, or whose clock jumped (finished
            # ones that no window ranks are said by not_ranked_why, never named
            # as unfinished)
            not_ranked=[dict(client=e["client"], state=e["state"],
                             clock_jumped=e["client"] in jumped)
                        for e in sorted(members, key=lambda e: e["client"])
                        if e["client"] not in ranked],
            mean_mib_s=mean_of(known), min_mib_s=min(known) if known else None,
            max_mib_s=max(known) if known else None,
            slowest=slowest, fastest=fastest, slowest_to_fastest_ratio=ratio,
            **{chunk_size_latency_key(): ms(merged.percentile(PCTS[-1]))}))
    return out


def throughput_keys():
    return ("mean", "in_write_calls", "min") + tuple("p%d" % p for p in PCTS) + ("max",)


def throughput(intervals, io_s):
    """The client's throughput figures; ``mean`` (wall: bytes over its perf
    intervals' time) and ``in_write_calls`` (bytes over the time inside write
    (+fsync) calls) are what the client's closing line says, by those names."""
    rates = interval_rates(intervals)
    return dict(
        [("mean", mean_rate(intervals)), ("min", min(rates) if rates else None),
         ("max", max(rates) if rates else None),
         ("in_write_calls", metrics.mib_per_s(sum(n for _, _, n in intervals), io_s))] +
        [("p%d" % p, metrics.percentile(rates, p)) for p in PCTS])


def latency_figures(hist):
    return dict(
        [("min", ms(hist.min)), ("mean", ms(hist.mean()))] +
        [("p%d" % p, ms(hist.percentile(p))) for p in PCTS] +
        [("max", ms(hist.max)), ("sample_count", hist.count)])


def first_write_ts(c):
    """When ``c`` wrote its first chunk, on the server's clock (None: unknown)."""
    if c.started_at is None:
        return None
    return c.started_at - (c.offset()[0] or 0.0)


#: Why a client's start instant is not known (synchronized_start's unknown_why).
START_UNKNOWN_WHY = ("the go the server gave them is not in perf.jsonl and the server that "
                     "gave it did not see the end of the run (it restarted, or was killed)")


def synchronized_start(clients):
    """The clients that got the common start instant: how close their first
    writes were to it and to each other (server clock), or None when no client
    got one. Clients whose go is not known (start_at_unknown: a server restart)
    are counted apart, never taken for clients that started at once: with
    none known, every figure of it is None (unknown)."""
    firsts = [(c.start_at, first_write_ts(c)) for c in clients
              if c.start_at is not None and not c.start_at_unknown]
    unknown = sum(1 for c in clients if c.start_at_unknown)
    known = [w for _, w in firsts if w is not None]
    if not firsts and not unknown:
        return None
    at = firsts[0][0] if firsts else None
    return dict(start_at_ts=at, start_at_utc=None if at is None else utc(at),
                client_count=len(firsts), first_write_known_count=len(known),
                first_write_spread_ms=ms(max(known) - min(known)) if known else None,
                first_write_late_max_ms=ms(max(abs(w - at) for w in known))
                if known else None,
                unknown_client_count=unknown,
                unknown_why=START_UNKNOWN_WHY if unknown else None)


#: A client whose clock moved against the server's during the run by more than
#: this (a jump: a resumed VM, a clock stepped under the one diskbench keeps) is
#: left out of every figure timed across clients (the all-writing aggregate, its
#: window, first/last done, the ranking window): one offset cannot put both sides
#: of the jump on the server's clock. Its own figures, timed on its monotonic
#: clock, stand. Or CLOCK_JUMP_SPAN_FRACTION of its writing span, when that is
#: more: a slow drift over a day's run moves its intervals by less than the
#: run-to-run noise.
CLOCK_JUMP_MIN_S = 1.0
CLOCK_JUMP_SPAN_FRACTION = 0.01


def clock_jump_s(c):
    """(how far ``c``'s clock moved against the server's during the run, as far
    as the server saw (s, 0.0: not at all), the length of its writing span on
    its own clock): the spread of its pong offsets; its messages' send times
    ahead of its pong offset by more than the round trip (a send time is never
    ahead of the true offset: a jump forward after the pongs); a perf interval
    beginning before the one before it ended (the writer's are back to back: a
    jump back). One pass over its intervals."""
    moved = 0.0
    if c.offset_low is not None and c.offset_high is not None:
        moved = max(moved, c.offset_high - c.offset_low)
    if c.ping_offset_s is not None and c.clock_offset_s is not None:
        moved = max(moved, c.clock_offset_s - c.ping_offset_s - (c.rtt_s or 0.0))
    prev_end = lo = hi = None
    for a, b, _ in c.intervals:
        if prev_end is not None:
            moved = max(moved, prev_end - a)
            lo, hi = min(lo, a), max(hi, b)
        else:
            lo, hi = a, b
        prev_end = b
    return moved, (hi - lo if lo is not None else 0.0)


def clock_jumps(clients):
    """{name: (jump in s, why in words)} of the clients left out of
    cross-client timing: their clock moved more than CLOCK_JUMP_MIN_S (or
    CLOCK_JUMP_SPAN_FRACTION of their writing span)."""
    out = {}
    for c in clients:
        said = clock_jumped(c)
        if said:
            out[c.name] = said
    return out


def clock_jumped(c):
    """(jump in s, why in words) when ``c`` is left out of cross-client
    timing (CLOCK_JUMP_MIN_S), else None."""
    jump, span = clock_jump_s(c)
    if jump <= max(CLOCK_JUMP_MIN_S, CLOCK_JUMP_SPAN_FRACTION * span):
        return None
    return jump, ("its clock jumped %.1f s against the server's during the run, so "
                  "its intervals cannot be put on the server's clock; its own "
                  "figures stand" % jump)


def on_server_clock(c):
    """A client's perf intervals moved onto the server's clock by its
    estimated offset (see clientstate.Client.clock_offset_s), so a client whose
    clock is off neither shrinks the all-writing period nor leads first/last
    done."""
    return OnServerClock(c.intervals, c.offset()[0] or 0.0)


class OnServerClock(object):
    """``on_server_clock``'s (t_start, t_end, bytes) intervals, moved as they
    are read: the aggregate holds every client's at once, so none is copied
    into a list of tuples."""

    __slots__ = ("intervals", "offset")

    def __init__(self, intervals, offset):
        self.intervals, self.offset = intervals, offset

    def __len__(self):
        return len(self.intervals)

    def __iter__(self):
        offset = self.offset
        for a, b, n in self.intervals:
            yield a - offset, b - offset, n
