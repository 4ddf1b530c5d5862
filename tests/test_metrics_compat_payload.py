"""Units, histograms, the 2/3 compat layer and the write payload."""
import hmac
import os
import random
import zlib

import pytest

from diskbench import compat, linux
from diskbench.client.payload import STAMP_EVERY, Payload
from diskbench.metrics import MIB, LatencyHistogram, mib_per_s, percentile


def test_mib_is_two_to_the_twenty():
    assert MIB == 1048576
    assert mib_per_s(10 * MIB, 2.0) == 5.0
    assert mib_per_s(1, 0) is None


def test_percentile_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 100) == 100
    assert percentile([], 50) is None


def test_histogram_percentiles_close_to_exact():
    hist = LatencyHistogram()
    values = [0.001 * (i + 1) for i in range(1000)]  # 1 ms .. 1 s
    for v in values:
        hist.add(v)
    for pct in (50, 95, 99):
        exact = percentile(values, pct)
        assert abs(hist.percentile(pct) - exact) / exact < 0.05
    assert hist.percentile(100) == 1.0 and hist.percentile(0) == 0.001
    assert hist.count == 1000


def test_histogram_merge_equals_one_big_histogram():
    a, b, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for i in range(500):
        a.add(0.01 + i * 1e-4)
        both.add(0.01 + i * 1e-4)
    for i in range(50):
        b.add(0.5 + i * 1e-3)  # a slow tail that an average of averages would hide
        both.add(0.5 + i * 1e-3)
    a.merge(b)
    assert a.buckets == both.buckets and a.count == both.count
    assert a.percentile(99) == both.percentile(99) > 0.5
    assert a.min == both.min and a.max == both.max


def _hist_state(h):
    return (h.buckets, h.count, h.total, h.min, h.max)


def test_histogram_merge_wire_equals_merge_of_from_wire():
    """The server merges each perf message's wire histogram straight in
    (merge_wire): the same figures as building it and merging (merge)."""
    rng = random.Random(7)
    for exact_only in (True, False):   # as the server gets them; then mixed
        by_merge, by_wire = LatencyHistogram(), LatencyHistogram()
        for _ in range(300):
            pairs = [[rng.randrange(0, 400), rng.choice((0, 1, 3, 10))]
                     for _ in range(rng.randrange(0, 4))]
            lo, hi = sorted((rng.uniform(1e-7, 2.0), rng.uniform(1e-7, 2.0)))
            given = (rng.uniform(0, 5), lo, hi)
            if not exact_only:
                given = rng.choice((given, (None, None, None), (given[0], None, hi)))
            by_merge.merge(LatencyHistogram.from_wire(pairs, *given))
            by_wire.merge_wire(pairs, *given)
            assert _hist_state(by_wire) == _hist_state(by_merge)
        assert by_wire.count and by_wire.min < by_wire.max


def test_histogram_wire_roundtrip():
    hist = LatencyHistogram()
    for v in (1e-7, 0.003, 0.003, 2.0):
        hist.add(v)
    back = LatencyHistogram.from_wire(hist.to_wire(), hist.total, hist.min, hist.max)
    assert back.buckets == hist.buckets and back.count == 4
    assert back.percentile(50) == hist.percentile(50)


def test_metrics_never_overflow_on_any_bucket_or_interval():
    """metrics is total: any bucket index gives a finite value (clamped to
    MAX_BUCKET), and a rate that would be infinite is None, never inf."""
    import math
    for index in (LatencyHistogram.MAX_BUCKET, LatencyHistogram.MAX_BUCKET + 1, 100000,
                  10 ** 9, -5):
        value = LatencyHistogram.bucket_value(index)
        assert not math.isinf(value) and value > 0
    hist = LatencyHistogram.from_wire([[100000, 3], [0, 1]])
    assert hist.percentile(99) == LatencyHistogram.bucket_value(LatencyHistogram.MAX_BUCKET)
    assert mib_per_s(2 ** 62, 5e-324) is None and mib_per_s(MIB, 0.5) == 2.0


def test_compare_digest_fallback_agrees_with_hmac():
    f = compat._compare_digest_fallback
    for a, b in [(b"abc", b"abc"), (b"abc", b"abd"), (b"abc", b"ab"), (b"", b"")]:
        assert f(a, b) == (a == b)
    if hasattr(hmac, "compare_digest"):
        assert compat.compare_digest is hmac.compare_digest


def _uptime_s():
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


@pytest.mark.parametrize("clock", [compat.monotonic, linux.libc_monotonic])
def test_monotonic_never_goes_backwards_and_counts_from_boot_not_the_epoch(clock):
    """Linux's CLOCK_MONOTONIC counts from boot: never more than the uptime, so a
    wall clock (time.time, epoch seconds) in its place fails here."""
    readings = [clock() for _ in range(1000)]
    assert readings == sorted(readings)
    assert 0 < readings[-1] <= _uptime_s() + 1.0, (readings[-1], _uptime_s())
    assert abs(compat.monotonic() - linux.libc_monotonic()) < 1.0


def test_libc_monotonic_read_by_many_threads_at_once_stays_whole_and_in_order():
    """Every thread's readings go forward and lie between the readings taken
    before and after them all: the one buffer the clock fills is never read
    half by one thread and half by another."""
    import threading
    before = linux.libc_monotonic()
    seen = {}

    def read(key):
        seen[key] = [linux.libc_monotonic() for _ in range(20000)]
    threads = [threading.Thread(target=read, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = linux.libc_monotonic()
    for readings in seen.values():
        assert readings == sorted(readings)
        assert before <= readings[0] and readings[-1] <= after


def test_compat_holds_only_python_differences_no_system_calls():
    """compat.py is the 2/3 layer only (psutil's _compat is the model): libc
    through ctypes lives in linux.py, descriptor waits in pollio.py."""
    with open(compat.__file__.replace(".pyc", ".py")) as f:
        source = f.read()
    for word in ("ctypes", "epoll", "select.poll", "getsockopt"):
        assert word not in source, word


def test_posix_fallocate_reserves_blocks(tmp_path):
    path = str(tmp_path / "f")
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        linux.posix_fallocate(fd, 0, 4 * MIB)
        st = os.fstat(fd)
        assert st.st_size == 4 * MIB and st.st_blocks * 512 >= 4 * MIB
    finally:
        os.close(fd)


def test_buffer_from_is_writable_by_os_write(tmp_path):
    payload = Payload(2 * STAMP_EVERY)
    path = str(tmp_path / "f")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        assert os.write(fd, compat.buffer_from(payload.buffer, STAMP_EVERY)) == STAMP_EVERY
    finally:
        os.close(fd)
    with open(path, "rb") as f:
        assert f.read() == bytes(payload.buffer)[STAMP_EVERY:]


def test_payload_chunks_never_identical_and_incompressible():
    payload = Payload(1 * MIB)
    payload.stamp(1)
    first = bytes(payload.buffer)
    payload.stamp(2)
    second = bytes(payload.buffer)
    assert first != second
    blocks1 = set(first[i:i + STAMP_EVERY] for i in range(0, MIB, STAMP_EVERY))
    blocks2 = set(second[i:i + STAMP_EVERY] for i in range(0, MIB, STAMP_EVERY))
    assert not blocks1 & blocks2  # no 4 KiB block repeats: nothing to dedup
    assert len(zlib.compress(second)) / float(len(second)) > 0.99


def test_payload_is_page_aligned_size():
    with pytest.raises(ValueError):
        Payload(1000)


def test_utc_is_total_a_time_no_calendar_holds_is_said_not_raised():
    from diskbench.metrics import utc
    assert utc(0.5) == "1970-01-01 00:00:00.500Z"
    # before 1900: a date on Python 3, refused by 2.7's strftime: said, never raised
    assert utc(-5e9) in ("1811-07-23 15:06:40.000Z", "epoch -5000000000.000 s (no "
                         "calendar date)")
    assert utc(1e18) == "epoch +1000000000000000000.000 s (no calendar date)"


def test_utc_rounds_the_second_with_its_milliseconds():
    """A time within half a millisecond of the next second is that second, never
    the one before (".9996" printed ".000" a whole second early: a console's
    progress stamps then ran backwards)."""
    from diskbench.metrics import utc
    t = 1796619493.0
    assert utc(t + 0.9996) == utc(t + 1.0) == "2026-12-07 04:58:14.000Z"
    assert utc(t + 0.9994) == "2026-12-07 04:58:13.999Z"
    assert utc(t + 0.0004) == "2026-12-07 04:58:13.000Z"
    stamps = [utc(t + i / 10000.0) for i in range(0, 30001, 7)]
    assert stamps == sorted(stamps)    # never backwards
