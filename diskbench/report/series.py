"""Time series of a run, read from LOG_DIR/perf.jsonl (the single source for them).

The registry keeps only what the run's totals need (one merged latency
histogram per client); every message the server accepted is in perf.jsonl
with its receive time, so charts and timeseries.csv are built from there,
both at the end of a run and by ``python -m diskbench.report LOG_DIR``.

Clocks: a client stamps its intervals and messages with its own wall clock.
Every client is put on the server's clock by the offset its report entry
gives (``clock_offset_s``: from pings, else from message timestamps; see
clientstate.Client.offset), set by ``attach``: the charts, timeseries.csv and
the aggregate use one offset per client.
"""
from __future__ import absolute_import, division

import array
import os

from diskbench import metrics, protocol
from diskbench.report import build as build_mod
from diskbench.seqset import SeqSet

PERF_LOG = "perf.jsonl"
#: Bad lines of perf.jsonl named one by one in the warnings; the rest are counted
#: in one more warning (a damaged file must not print thousands of lines).
SKIPPED_NAMED = 5
#: Read this much at a time of a line too long to be a record (never held whole).
_SKIP_BYTES = 1 << 20


class PerfPoint(object):
    """One perf interval of a series, read as ``p["t_start"]`` like a dict.
    Made when read (``PerfPoints``), never held for every interval at once."""

    __slots__ = ("t_start", "t_end", "bytes", "chunks", "p50_s", "p99_s", "recv_ts")

    def __init__(self, t_start, t_end, nbytes, chunks, p50_s, p99_s, recv_ts):
        self.t_start, self.t_end, self.bytes, self.chunks = t_start, t_end, nbytes, chunks
        self.p50_s, self.p99_s, self.recv_ts = p50_s, p99_s, recv_ts

    def __getitem__(self, key):
        return getattr(self, key)


#: A percentile the interval did not have (its histogram was empty), as
#: PerfPoints packs it: every figure on the wire is finite, so NaN is free.
_NONE = float("nan")
_WIDTH = len(PerfPoint.__slots__)


class PerfPoints(object):
    """A client's perf intervals packed in one array of doubles, PerfPoint
    after PerfPoint, each made when read (indexing, iteration). As objects
    they were a big fleet's largest allocation at the end of a run: some 240
    bytes each with the decoded figures they held, 56 here (docs/SCALING.md).
    Byte and chunk counts stay exact up to 2**53."""

    __slots__ = ("values",)

    def __init__(self):
        self.values = array.array("d")

    def append(self, t_start, t_end, nbytes, chunks, p50_s, p99_s, recv_ts):
        self.values.extend((t_start, t_end, nbytes, chunks, _NONE if p50_s is None else
                            p50_s, _NONE if p99_s is None else p99_s, recv_ts))

    def __len__(self):
        return len(self.values) // _WIDTH

    def __getitem__(self, index):
        count = len(self)
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError("perf interval %d of %d" % (index, count))
        return self._point(index * _WIDTH)

    def __iter__(self):
        for start in range(0, len(self.values), _WIDTH):
            yield self._point(start)

    def _point(self, start):
        t_start, t_end, nbytes, chunks, p50, p99, recv_ts = self.values[start:start + _WIDTH]
        return PerfPoint(t_start, t_end, int(nbytes), int(chunks), None if p50 != p50 else
                         p50, None if p99 != p99 else p99, recv_ts)

    def sort(self):
        """In (t_start, t_end) order (kept as it is when already so)."""
        v, rows = self.values, range(0, len(self.values), _WIDTH)
        keys = [(v[i], v[i + 1]) for i in rows]
        if all(a <= b for a, b in zip(keys, keys[1:])):
            return
        packed = array.array("d")
        for _key, start in sorted(zip(keys, rows)):
            packed.extend(v[start:start + _WIDTH])
        self.values = packed


class ClientSeries(object):
    """One client's time series (client-clock times; ``offset_s`` maps to the server's)."""

    def __init__(self, name):
        self.name = name
        self.offset_s = None          # client clock - server clock (set by attach)
        self.perf = PerfPoints()      # PerfPoint each (t_start, t_end, bytes, chunks, p50_s,
                                      # p99_s, recv_ts)
        self.stats = []               # (client ts, cpu %, rss bytes)
        self.rollovers = []           # (client ts, file index)
        self.readbacks = []           # --verify: (client ts, file index, bytes, io_s)
        self.stop_ts = None           # client ts of its stop summary

    def server_t(self, client_ts):
        """A client-clock time on the server's clock (as is when no offset is known)."""
        return client_ts - (self.offset_s or 0.0)


def read_records(log_dir, warn=None, tally=None):
    """[(Message, recv_ts)] from LOG_DIR/perf.jsonl, read-only.

    Every line is validated by the wire's rules (protocol.parse_record): the
    file may come back truncated, damaged, hostile or another version's. A
    torn last line or a bad line is skipped; the first SKIPPED_NAMED are each
    passed to ``warn``, then one warning counts them all. ``tally`` (a dict)
    gets "records" and "skipped". A missing file gives []. Unlike
    recorder.read_back the file is never cut.
    """
    return list(iter_records(log_dir, warn, tally))


def iter_records(log_dir, warn=None, tally=None):
    """``read_records`` one record at a time, as they are consumed: the end of
    a run of thousands of clients must not hold the whole file as objects.
    The file is opened now (IOError here, not later)."""
    path = os.path.join(log_dir, PERF_LOG)
    if tally is None:
        tally = {}
    tally.update(records=0, skipped=0)
    if not os.path.exists(path):
        return iter(())
    return _records(open(path, "rb"), path, warn or (lambda text: None), tally)


def _lines(f):
    """(line number, line or None when longer than a record may be) of file ``f``;
    an over-long line is read past in pieces, never held whole."""
    number = 0
    while True:
        line = f.readline(protocol.MAX_RECORD_BYTES + 1)
        if not line:
            return
        number += 1
        if len(line) > protocol.MAX_RECORD_BYTES and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):
                line = f.readline(_SKIP_BYTES)
            yield number, None
        else:
            yield number, line


def _records(f, path, warn, tally):
    def skip(text):
        tally["skipped"] += 1
        if tally["skipped"] <= SKIPPED_NAMED:
            warn(text)
    with f:
        for number, line in _lines(f):
            if line is None:
                skip("%s line %d skipped: over %d bytes, not a record" % (
                    path, number, protocol.MAX_RECORD_BYTES))
                continue
            if not line.endswith(b"\n"):
                skip("%s: a torn last line of %d bytes was skipped (the server "
                     "stopped while writing it)" % (path, len(line)))
                break
            if not line.strip():
                continue
            try:
                record = protocol.parse_record(line)
            except protocol.ProtocolError as exc:
                skip("%s line %d skipped: not a record (%s)" % (
                    path, number, protocol.clean_text("%s" % exc, 120)))
                continue
            tally["records"] += 1
            yield record
    if tally["skipped"] > SKIPPED_NAMED:
        warn("%s: %d bad lines skipped in all (the first %d are named above), %d "
             "records read" % (path, tally["skipped"], SKIPPED_NAMED, tally["records"]))


def build(records):
    """{client name: ClientSeries} from (Message, recv_ts) records, in record order."""
    builder = Builder()
    for msg, recv_ts in records:
        builder.add(msg, recv_ts)
    return builder.finish()


class Builder(object):
    """``build`` one record at a time: rerender feeds the registry and the
    series from one read of perf.jsonl, never holding it as a list.

    A repeated seq (a resend the server recorded twice, which it never does, or
    a concatenated file) is counted once, as the registry does.
    """

    def __init__(self):
        self.out = {}
        # {name: SeqSet}: the registry's rule (a set, not a high-water), as ranges,
        # not a set of (name, seq) per message
        self.seen = {}

    def add(self, msg, recv_ts):
        if msg.name is None or msg.seq is None:
            return
        seen = self.seen.get(msg.name)
        if seen is None:
            seen = self.seen[msg.name] = SeqSet()
        if not seen.add(msg.seq):
            return
        s = self.out.get(msg.name)
        if s is None:
            s = self.out[msg.name] = ClientSeries(msg.name)
        if msg.type == protocol.PERF:
            hist = metrics.LatencyHistogram.from_wire(
                msg.lat_hist, total=msg.io_s, lo=msg.lat_min_s, hi=msg.lat_max_s)
            s.perf.append(msg.t_start, msg.t_end, msg.bytes, msg.chunks,
                          hist.percentile(50), hist.percentile(99), recv_ts)
        elif msg.type == protocol.STATS:
            s.stats.append((msg.ts, msg.cpu_percent, msg.rss_bytes))
        elif msg.type == protocol.ROLLOVER:
            s.rollovers.append((msg.ts, msg.file_index))
        elif msg.type == protocol.READBACK:
            s.readbacks.append((msg.ts, msg.file_index, msg.bytes, msg.io_s))
        elif msg.type == protocol.STOP:
            s.stop_ts = msg.ts

    def finish(self):
        """The series, each in time order."""
        for s in self.out.values():
            s.perf.sort()
            s.stats.sort()
            s.rollovers.sort()
            s.readbacks.sort()
        return self.out


def _ms(seconds):
    return None if seconds is None else round(seconds * 1000.0, 4)


def latency_timeline(s):
    """report.json's ``latency_timeline`` of one client: per perf interval, p50/p99 ms
    decoded from that interval's histogram; ``t_s`` as in ``throughput_timeline``."""
    perf = [p for p in s.perf if p["t_end"] > p["t_start"]]
    if not perf:
        return []
    t0 = perf[0]["t_start"]
    return [dict(t_s=round(p["t_start"] - t0, 3), length_s=round(p["t_end"] - p["t_start"], 3),
                 p50_ms=_ms(p["p50_s"]), p99_ms=_ms(p["p99_s"]), chunk_count=p["chunks"])
            for p in perf]


def stats_at(s, client_ts):
    """The latest (cpu %, rss bytes) sampled at or before ``client_ts``, else (None, None)."""
    found = (None, None)
    for ts, cpu, rss in s.stats:
        if ts > client_ts:
            break
        found = (cpu, rss)
    return found


def timeseries_rows(series, run_start_ts):
    """timeseries.csv rows (dicts), one per perf interval of every client, by
    client, made as they are consumed."""
    for name in sorted(series):
        s = series[name]
        for p in s.perf:
            length = p["t_end"] - p["t_start"]
            end = s.server_t(p["t_end"])
            cpu, rss = stats_at(s, p["t_end"])
            yield dict(
                client=name, t_server_ts=round(end, 3),
                t_run_s=round(end - run_start_ts, 3), length_s=round(length, 3),
                mib_s=metrics.mib_per_s(p["bytes"], length), bytes=p["bytes"],
                chunk_count=p["chunks"], latency_p50_ms=_ms(p["p50_s"]),
                latency_p99_ms=_ms(p["p99_s"]), writer_cpu_percent=cpu,
                writer_rss_mib=None if rss is None else metrics.mib(rss))


def all_writing_window(series):
    """(start, end) on the server clock when every client with intervals was writing."""
    spans = [(s.server_t(s.perf[0]["t_start"]), s.server_t(max(p["t_end"] for p in s.perf)))
             for s in series.values() if s.perf]
    if not spans:
        return None
    lo, hi = max(a for a, _ in spans), min(b for _, b in spans)
    return (lo, hi) if hi > lo else None


def attach(rep, series):
    """Add the keys that need per-interval data to a built report (in place).
    ``latency_timeline`` is a build.Deferred: made one client at a time while
    report.json is encoded (never as dicts for every client at once)."""
    for entry in rep.get("clients", ()):
        s = series.get(entry.get("client"))
        if s is not None:
            s.offset_s = entry.get("clock_offset_s")
        entry["latency_timeline"] = build_mod.Deferred(latency_timeline, s) if s else []
    return rep
