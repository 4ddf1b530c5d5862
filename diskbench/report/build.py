"""report.json: the whole report of a run as one JSON-ready dict, built from a
``clientstate.RunView`` (the server's registry snapshot, or a re-render's
ledger), and its strict-JSON encoding; the run facts a re-render needs
(``facts``, kept in run.json).

No clock, no network: the arithmetic is figures.py's, the words of
report.txt are text.py's. Every key and header carries its unit: ``_mib``
(2**20 bytes), ``_mib_s``, ``_ms``, ``_s``, ``_ts`` (seconds since the
epoch), ``_percent``.

Total on anything the protocol accepted: each figure is computed guarded, and
one that cannot be computed, or is not finite, is null in report.json ("-" in
report.txt) with a sentence in run.server_warnings; report.json is written
with ``allow_nan=False`` (strict JSON).
"""
from __future__ import division

import json
import math

from diskbench import metrics, protocol
from diskbench import states as st
from diskbench.compat import as_bytes, integer_types, string_types
from diskbench.metrics import utc
from diskbench.report import readback
from diskbench.report import figures as figures_mod

REPORT_JSON = "report.json"
REPORT_TXT = "report.txt"
REPORT_FORMAT = 3
#: The report proper, in the order they are written (diskbench.report.write); the other
#: files (diskbench.report.write_all) are views of it.
REPORT_FILES = (REPORT_JSON, REPORT_TXT)

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

#: The bounds of a figure (MiB, MiB/s, ms, s) in report.json, the one source for
#: the writer (``_readable``: a figure outside is null, with a warning) and the
#: reader (readers.FIGURE, SUM): 0, or from FIGURE_MIN (less than a byte in a
#: century, in MiB/s) to FIGURE_MAX (an exbibyte) for a client's figure, to
#: SUM_MAX for a sum over the clients (totals.written_mib, the aggregate). Inside
#: them a delta or ratio of two figures (compare) is a finite float.
FIGURE_MIN = 1e-9
FIGURE_MAX = 1e12
SUM_MAX = 1e15

#: Most "could not be computed" warnings kept (one bad client must not bury the rest).
WARNINGS_MAX = 20


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
    way to such a float (a whole copy of a big fleet's report is large);
    ``where`` is the path, spelled out only for a warning."""
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
    are a big fleet's largest allocation (docs/SCALING.md) only to be encoded;
    json_chunks makes one while it encodes that client, then drops it.
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


def shortfalls(clients):
    """One warning per client whose own stop summary says it made more perf
    samples than the server holds, beyond every message it says it dropped
    (so a shortfall here is certain: records lost between the client and
    perf.jsonl, or refused). ``clients``: clientstate.Client snapshots."""
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


def unmeasured(clients):
    """One line per client whose stop summary counts more bytes written than
    its perf intervals hold, with every perf sample it made received: what
    its writer wrote after its last report (it died or was killed before
    sending it) is on its disk but in no figure. Said, not an error of the
    server's (the client's state says why its writer ended)."""
    out = []
    for c in clients:
        stop = c.stop
        if stop is None or stop.dropped_messages or stop.data.get(
                "perf_samples") not in (None, len(c.intervals)):
            continue
        extra = stop.bytes_written - c.perf_bytes
        if extra > 0:
            out.append("client %s: its stop summary says its writer wrote %.1f MiB, its "
                       "perf samples measured %.1f MiB: the last %.1f MiB were written "
                       "after its last sample and are in no figure here" % (
                           c.name, metrics.mib(stop.bytes_written),
                           metrics.mib(c.perf_bytes), metrics.mib(extra)))
    return out


def client_entry(c, guard=None):
    """The report of one client (``c`` is a clientstate.Client snapshot)."""
    g = guard or _Guard([])
    h = c.hello
    who = "client %s: " % c.name
    cpu_mean = g(who + "writer CPU mean", figures_mod.mean_of, c.cpu_samples)
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
        # started at once, or not known: start_at_known) and its first write put
        # on the server's clock
        start_at_ts=None if c.start_at_unknown else c.start_at,
        start_at_known=not c.start_at_unknown,
        first_write_ts=figures_mod.first_write_ts(c),
        state=c.state, state_why=c.reason,
        clock_offset_s=c.offset()[0],      # client clock minus server clock
        clock_offset_source=c.offset()[1],
        rtt_ms=figures_mod.ms(c.rtt_s),
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
        rollover_close_ms=dict(mean=figures_mod.ms(figures_mod.mean_of(c.close_times)),
                               max=figures_mod.ms(max(c.close_times) if c.close_times else None)),
        throughput_tenths_mib_s=g(who + "throughput over time", figures_mod.slices, c.intervals)
        or [],
        # made again, one client at a time, when report.json is encoded
        throughput_timeline=deferred(g, who + "throughput timeline", figures_mod.timeline,
                                     c.intervals),
        throughput_mib_s=g(who + "throughput", figures_mod.throughput, c.intervals, c.io_s) or dict(
            (k, None) for k in figures_mod.throughput_keys()),
        latency_ms=g(who + "chunk latency", figures_mod.latency_figures, c.hist) or dict(
            [(k, None) for k in ("min", "mean", "max") + tuple(
                "p%d" % p for p in figures_mod.PCTS)] + [("sample_count", c.hist.count)]),
        writer_cpu_percent=dict(mean=cpu_mean,
                                max=max(c.cpu_samples) if c.cpu_samples else None,
                                sample_count=len(c.cpu_samples)),
        cpu_bound=bool(cpu_mean is not None and cpu_mean > figures_mod.CPU_BOUND_PERCENT),
        writer_rss_mib=dict(mean=_map(metrics.mib, figures_mod.mean_of(c.rss_samples)),
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
        verification=g(who + "read-back", readback.client_entry, c, figures_mod.latency_figures))


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
        latency_ms=dict([("p%d" % p, figures_mod.ms(merged.percentile(p)))
                         for p in figures_mod.PCTS] +
                        [("max", figures_mod.ms(merged.max)), ("sample_count", merged.count)]),
        cpu_bound_clients=[e["client"] for e in clients if e["cpu_bound"]])


#: run.json's key for the report facts (``facts``): what the server knew at the
#: end that perf.jsonl cannot say, so a re-render states every fact.
FACTS_KEY = "report_facts"
#: Per client, the clientstate.Client attributes kept in the facts: its plan as
#: sent in go and where each setting came from, the start instant, its state
#: and why, and what only the connections saw.
CLIENT_FACTS = ("peer", "plan", "plan_sources", "start_at", "start_at_unknown",
                "join_order", "state",
                "reason", "duplicates", "reconnects", "went_away_count", "takeovers",
                "seq_jumps", "notes", "texts_dropped")
#: Of the run (clientstate.RunView attributes).
VIEW_FACTS = ("expected_clients", "connections", "rejected", "restored")


def facts(view, run_start_ts, run_end_ts, **build_args):
    """What ``build(view, run_start_ts, run_end_ts, **build_args)`` states that
    perf.jsonl cannot give back, as JSON-ready data (run.json's FACTS_KEY)."""
    return dict(start_ts=run_start_ts, end_ts=run_end_ts, build=build_args,
                run=dict((k, getattr(view, k)) for k in VIEW_FACTS),
                # what the server held of each client: a re-render from a
                # perf.jsonl that lost some says so (rerender._from_facts)
                records=dict((c.name, c.messages) for c in view.clients),
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
        latency_ms=dict([("p%d" % p, None) for p in figures_mod.PCTS] +
                        [("max", None), ("sample_count", None)]),
        cpu_bound_clients=[])
    jumped = g("the clock jumps", figures_mod.clock_jumps, view.clients) or {}
    timed = [c for c in view.clients if c.name not in jumped]
    agg = g("the aggregate", figures_mod.aggregate,
            dict((c.name, figures_mod.on_server_clock(c)) for c in timed))
    if agg is None:
        agg = figures_mod.aggregate({})
        agg["period_note"] = "could not be computed (see the server warnings)"
    # left out of every figure timed across clients, and said (clock_jumped)
    agg["excluded"] = [dict(client=name, clock_jump_s=jumped[name][0],
                            why=jumped[name][1]) for name in sorted(jumped)]
    sizes = g("the figures by workload", figures_mod.by_chunk_size, clients,
              dict((c.name, c.hist) for c in view.clients),
              dict((c.name, figures_mod.on_server_clock(c)) for c in timed),
              sorted(jumped)) or []
    rep = dict(
        report_format=REPORT_FORMAT,
        method=METHOD % dict(pcts="/".join("p%d" % p for p in figures_mod.PCTS),
                             wall=metrics.WALL_LABEL, calls=metrics.IN_CALLS_LABEL,
                             aggregate=metrics.AGGREGATE_LABEL),
        run=dict(label=run_label, start_ts=run_start_ts, start_utc=utc(run_start_ts),
                 end_ts=run_end_ts, end_utc=utc(run_end_ts),
                 run_duration_s=run_end_ts - run_start_ts,
                 expected_client_count=view.expected_clients,
                 connection_count=view.connections, interrupted_by=interrupted_by,
                 exit_code=exit_code, exit_meaning=exit_meaning,
                 records_restored_count=view.restored,
                 synchronized_start=g("the synchronized start", figures_mod.synchronized_start,
                                      view.clients),
                 server_cpu=server_cpu, server_warnings=warnings),
        clients=clients, totals=totals, aggregate=agg, by_chunk_size=sizes,
        rejected_messages=dict(view.rejected), rerendered=None,
        rejected_count=sum(view.rejected.values()))
    rep = _finite(rep, g)
    _readable(rep, g)
    rep["run"]["server_warnings"] = warnings  # with what _finite found
    return rep


def _readable(rep, guard):
    """Null (with a warning) every figure of ``rep`` that report.json's reader
    (readers.CLIENT_FIELDS, RUN_FIELDS: compare, a re-render) would refuse, so
    the report a run gets from accepted data can always be read back: a lying
    or broken client's figure beyond FIGURE_MAX, or above 0 but below
    FIGURE_MIN, is unknown, not a report its own compare calls damaged."""
    from diskbench.report import readers   # (readers imports this module)
    for path, field in readers.RUN_FIELDS:
        _bound(rep, path, field, guard, "report")
    for e in rep.get("clients") or ():
        for path, field in readers.CLIENT_FIELDS:
            _bound(e, path, field, guard, "client %s" % e.get("client"))
    per = (rep.get("aggregate") or {}).get("per_client_mib_s") or {}
    for name in per:
        _bound(per, (name,), readers.FIGURE, guard, "aggregate.per_client_mib_s")


def _bound(obj, path, field, guard, where):
    for key in path[:-1]:
        obj = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(obj, dict) or path[-1] not in obj:
        return
    value = obj[path[-1]]
    if isinstance(value, bool) or not isinstance(value, (float,) + integer_types):
        return              # a figure only: names and text are the wire's own
    try:
        field.check(value)
    except (TypeError, ValueError):
        obj[path[-1]] = None
        guard.warn("%s: %s = %r is not %s, what a report can hold; shown as unknown" % (
            where, ".".join(path), value, field.describe()))


# --- report.json's text --------------------------------------------------------
def render_json(rep):
    """report.json's text: strict JSON (no NaN/Infinity: such a figure is null),
    ASCII only (any text escaped, so it always encodes)."""
    return b"".join(json_chunks(rep)).decode("ascii")


#: report.json's layout: objects indented two spaces a level, keys sorted, as
#: before; but a list of plain values (numbers, text, true/false, null) and an
#: object of at most ONE_LINE_KEYS_MAX of them go on one line. Each client's
#: per-interval timelines are most of a fleet's file: one line per interval
#: instead of one per number (5,000 clients x 40 s: 59 -> 22 MB, encoded in
#: 2.9 s instead of 14 on 2.7: docs/SCALING.md).
ONE_LINE_KEYS_MAX = 12
#: json_chunks yields about this many bytes at a time (one write each).
JSON_CHUNK_BYTES = 1 << 16

_PLAIN = (float, type(None)) + integer_types + string_types   # bool is an int
#: A one-line list or object: the standard encoder without indent or sorted
#: keys, which is the C one on 2.7 and 3 alike (keys are sorted here).
_LINE = json.JSONEncoder(separators=(", ", ": "), ensure_ascii=True, allow_nan=False)


class _JsonWriter(object):
    """report.json's text in parts (ONE_LINE_KEYS_MAX). Strict JSON: a float
    that is not finite is null with a warning naming where, as ``_finite``
    does, found by the encoder's own refusal (no walk of the report first).
    A Deferred is made when its turn comes and dropped once written."""

    def __init__(self, guard):
        self.guard = guard
        self.keys = {}                # key -> its text, quoted, with ": "

    def parts(self, obj, where, level):
        """Yield ``obj``'s text, a member (or a one-line run of them) at a time."""
        line = self.one_line(obj, where)
        if line is not None:
            yield line
            return
        if isinstance(obj, dict):
            opening, closing, keys = "{", "}", sorted(obj)
            members = [(self.key(k), obj[k], k) for k in keys]
        elif isinstance(obj, (list, tuple, Deferred)):
            opening, closing = "[", "]"
            members = [("", value, i) for i, value in enumerate(obj)]
        else:
            raise TypeError("%r is not JSON serializable" % (obj,))
        if not members:
            yield opening + closing
            return
        pad = "\n" + "  " * (level + 1)
        yield opening
        for index, (key, value, name) in enumerate(members):
            yield (pad if index == 0 else "," + pad) + key
            line = self.one_line(value, (where, name))
            if line is not None:
                yield line
            else:
                for part in self.parts(value, (where, name), level + 1):
                    yield part
        yield "\n" + "  " * level + closing

    def one_line(self, obj, where):
        """``obj``'s text if it is a plain value, a list of them or an object
        of at most ONE_LINE_KEYS_MAX; else None."""
        if obj is None or isinstance(obj, _PLAIN):
            return self.plain(obj, where)
        if isinstance(obj, dict):
            if len(obj) > ONE_LINE_KEYS_MAX:
                return None
            keys = sorted(obj)
            values = [obj[k] for k in keys]
        elif isinstance(obj, (list, tuple)):
            keys, values = None, obj
        else:
            return None
        texts = []
        for value in values:
            if isinstance(value, string_types):
                texts = None          # text may hold ", ": each value on its own
            elif not (value is None or isinstance(value, _PLAIN)):
                return None
        try:
            if keys is None:
                return _LINE.encode(list(values))
            if texts is not None:     # numbers only: one encode, then split
                texts = _LINE.encode(values)[1:-1].split(", ") if values else []
            else:
                texts = [_LINE.encode(value) for value in values]
        except ValueError:            # a float that is not finite
            return self.one_line(_finite(obj, self.guard, where), where)
        return "{" + ", ".join([self.key(k) + text for k, text in zip(keys, texts)]) + "}"

    def plain(self, value, where):
        try:
            return _LINE.encode(value)
        except ValueError:
            return _LINE.encode(_finite(value, self.guard, where))

    def key(self, key):
        text = self.keys.get(key)
        if text is None:
            name = key if isinstance(key, string_types) else _LINE.encode(key)
            text = self.keys[key] = _LINE.encode(name) + ": "
        return text


def json_chunks(rep):
    """``render_json`` as bytes, about JSON_CHUNK_BYTES at a time, as it is
    encoded: a big fleet's whole text at once is never made."""
    pending, size = [], 0
    for part in _JsonWriter(_Guard([])).parts(rep, ("report",), 0):
        pending.append(part)
        size += len(part)
        if size >= JSON_CHUNK_BYTES:
            yield as_bytes("".join(pending))
            pending, size = [], 0
    pending.append("\n")
    yield as_bytes("".join(pending))
