"""Units and statistics shared by client and server.

Throughput is always MiB/s (2**20 bytes per second). Latencies go into a
log-bucket histogram that can be merged across intervals and clients, so
p50/p95/p99 are computed from all samples, never by averaging averages.
Figures are said one way everywhere: ``utc`` for times, ``count``/``times``
for counts.
"""
import math
import time

MIB = 1 << 20  # bytes in a MiB; every "mib" in a name means this


def utc(ts):
    """Epoch seconds as '2026-11-23 10:00:00.123Z' (or '-'): the one timestamp
    format of server.log, the console and the report."""
    if ts is None:
        return "-"
    try:   # round once, to the millisecond: 05.9996 is 06.000, never 05.000
        ms = int(round(ts * 1000))
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms // 1000)) + (
            ".%03dZ" % (ms % 1000))
    except (ValueError, OverflowError, OSError):  # 2.7: before 1900; any: huge
        return "epoch %+.3f s (no calendar date)" % ts


def mib(nbytes):
    """Bytes to MiB."""
    return nbytes / float(MIB)


def mib_per_s(nbytes, seconds):
    """MiB/s, or None when no time passed or the figure is not finite (never a
    division by zero, never inf)."""
    if seconds is None or seconds <= 0:
        return None
    try:
        rate = nbytes / float(MIB) / seconds
    except (ArithmeticError, ValueError):
        return None
    return rate if is_finite(rate) else None


def is_finite(value):
    """True for a number that is neither NaN nor infinite."""
    return not (math.isnan(value) or math.isinf(value))


def clock_ahead(current, sent_ts, recv_ts):
    """Update the estimate of how far a sender's clock is ahead of ours.

    Each message gives sent - received = offset - delay <= offset, so the
    largest seen is the best estimate (exact within the fastest delivery); a
    message held back (resent after an outage) can only lower it.
    """
    sample = sent_ts - recv_ts
    return sample if current is None or sample > current else current


#: Units a clock offset is said in (describe_offset), largest first.
_OFFSET_UNITS = ((365.25 * 86400, "years"), (86400.0, "days"), (3600.0, "hours"),
                 (60.0, "minutes"), (1.0, "s"))


def describe_offset(offset):
    """A clock offset (client minus server, seconds) in words, to be followed
    by what it is against ("the server's"): '56.0 years behind', '3.2 s ahead of'."""
    size = abs(offset)
    for unit, word in _OFFSET_UNITS:
        if size >= unit or unit == 1.0:
            return "%.1f %s %s" % (size / unit, word, "ahead of" if offset > 0 else "behind")


#: "MiB/s now" is over the intervals of the last this many seconds.
NOW_WINDOW_S = 5.0


def recent_mib_s(samples, now, window=NOW_WINDOW_S):
    """MiB/s "now": bytes over the time of the intervals seen in the last
    ``window`` seconds, from (seen at, length s, bytes) samples; 0.0 when none
    (a stalled or gone writer). The server's console and the client's progress
    line both say it."""
    nbytes = seconds = 0
    for seen, length, count in samples:
        if seen is not None and now - seen <= window and length > 0:
            nbytes += count
            seconds += length
    return mib(nbytes) / seconds if seconds > 0 else 0.0


#: The two throughput figures of a client and the run's aggregate, named once
#: (report.txt, report.html, the client's closing line): over the perf
#: intervals' wall time; over the time inside write (+fsync) calls only; the
#: run's sum over the period when all clients wrote, on the server's clock.
WALL_LABEL = "throughput (wall)"
IN_CALLS_LABEL = "in write+fsync calls"
AGGREGATE_LABEL = "wall clock, all clients writing"


def percentile(values, pct):
    """Nearest-rank percentile of a list of numbers (None for an empty list)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = int(math.ceil(pct / 100.0 * len(ordered)))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


class LatencyHistogram(object):
    """Counts of latencies in log-spaced buckets, plus exact count/sum/min/max.

    Bucket ``i`` holds values in [LOWEST * GROWTH**i, LOWEST * GROWTH**(i+1));
    with GROWTH = 2**(1/16) a percentile is within ~2.2% of the true value.
    Values below LOWEST go to bucket 0. The wire form is a sparse list of
    [bucket, count] pairs (protocol.Hist).
    """

    LOWEST = 1e-6           # 1 microsecond
    GROWTH = 2 ** (1 / 16.0)
    _LOG_GROWTH = math.log(GROWTH)
    MAX_BUCKET = 16 * 40    # 2**40 microseconds: about 12 days

    def __init__(self):
        self.buckets = {}
        self.count = 0
        self.total = 0.0
        self.min = None
        self.max = None

    @classmethod
    def bucket_of(cls, value):
        if value <= cls.LOWEST:
            return 0
        index = int(math.log(value / cls.LOWEST) / cls._LOG_GROWTH)
        return min(index, cls.MAX_BUCKET)

    @classmethod
    def bucket_value(cls, index):
        """A representative value of a bucket: its geometric middle. The index
        is clamped to 0..MAX_BUCKET, so the value is always a finite float."""
        index = min(max(index, 0), cls.MAX_BUCKET)
        return cls.LOWEST * cls.GROWTH ** (index + 0.5)

    def add(self, value):
        index = self.bucket_of(value)
        self.buckets[index] = self.buckets.get(index, 0) + 1
        self.count += 1
        self.total += value
        self.min = value if self.min is None else min(self.min, value)
        self.max = value if self.max is None else max(self.max, value)

    def merge(self, other):
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n
        self.count += other.count
        self.total += other.total
        for attr, pick in (("min", min), ("max", max)):
            mine, theirs = getattr(self, attr), getattr(other, attr)
            if theirs is not None:
                setattr(self, attr, theirs if mine is None else pick(mine, theirs))

    def merge_wire(self, pairs, total=None, lo=None, hi=None):
        """``merge(from_wire(pairs, total, lo, hi))`` without building the
        other histogram: the server does it for every perf message."""
        if total is None or lo is None or hi is None:
            return self.merge(self.from_wire(pairs, total, lo, hi))
        buckets = self.buckets
        count = 0
        for index, n in pairs:
            if n:
                buckets[index] = buckets.get(index, 0) + n
                count += n
        if count:
            self.count += count
            self.total += total
            self.min = lo if self.min is None or lo < self.min else self.min
            self.max = hi if self.max is None or hi > self.max else self.max

    def mean(self):
        return self.total / self.count if self.count else None

    def percentile(self, pct):
        """The value below which ``pct`` percent of samples lie (None if empty).

        Clamped to the exact min and max, so p0/p100 are exact.
        """
        if not self.count:
            return None
        if pct <= 0:
            return self.min
        target = max(1, int(math.ceil(pct / 100.0 * self.count)))
        if target >= self.count:
            return self.max
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= target:
                value = self.bucket_value(index)
                return min(max(value, self.min), self.max)
        return self.max  # pragma: no cover - counts add up to self.count

    def to_wire(self):
        return [[i, n] for i, n in sorted(self.buckets.items())]

    @classmethod
    def from_wire(cls, pairs, total=None, lo=None, hi=None):
        """Rebuild from wire pairs; exact sum/min/max when the sender gave them."""
        hist = cls()
        for index, n in pairs:
            if n:
                hist.buckets[index] = hist.buckets.get(index, 0) + n
                hist.count += n
        if hist.count:
            hist.total = total if total is not None else sum(
                cls.bucket_value(i) * n for i, n in hist.buckets.items())
            hist.min = lo if lo is not None else cls.bucket_value(min(hist.buckets))
            hist.max = hi if hi is not None else cls.bucket_value(max(hist.buckets))
        return hist


def count(number, noun, plural=None):
    """'1 client', '2 clients': ``number`` and ``noun`` agreeing (``plural``,
    default noun + 's'); ``times`` says how often ('went away once')."""
    return "%d %s" % (number, noun if number == 1 else (plural or noun + "s"))


def times(number):
    """'once', '2 times' (and 'never' for 0): how often something happened."""
    return "never" if number == 0 else "once" if number == 1 else "%d times" % number
