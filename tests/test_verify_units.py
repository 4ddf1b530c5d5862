"""Block stamps and read-back, in-process: what a stamp says after any
sequence of stamps, how each kind of bad block is told, that read-back time
never enters a write figure, and what the report and headline say."""
import mmap
import os
import random

from diskbench import protocol as P
from diskbench import stamp
from diskbench.client import writer as W
from diskbench.client.payload import Payload
from diskbench.report import readback
from tests.test_client_writer import CHUNK, FakeOps, StopAfter, cfg, of

RUN, WRITER = 0x1122334455667788, 0x0102030405060708


def _stamped(size=CHUNK):
    buf = mmap.mmap(-1, size)
    buf[:] = os.urandom(size)
    return buf, stamp.Stamper(buf, 0, size, RUN, WRITER)


def _blocks(buf):
    return [buf[i:i + stamp.BLOCK] for i in range(0, len(buf), stamp.BLOCK)]


def test_stamp_every_block_says_its_place_after_any_sequence_of_stamps():
    """After any sequence of stamps (file and chunk indexes of every size, in
    any order), every block of the buffer passes its checks and classifies OK
    exactly at its own place, and no two blocks of the run are alike."""
    buf, stamper = _stamped()
    rng = random.Random(29)
    seen = set()
    places = [(0, 0), (0, 1), (1, 0), (255, 256), (2 ** 32 - 1, 2 ** 32 - 1), (3, 65536)]
    places += [(rng.randrange(2 ** 32), rng.randrange(2 ** 32)) for _ in range(20)]
    for file_index, chunk in places:
        stamper.stamp(file_index, chunk)
        expected = stamp.Expected(RUN, WRITER, file_index, CHUNK)
        for i, block in enumerate(_blocks(buf)):
            assert stamp.classify(block, expected, chunk * CHUNK + i * stamp.BLOCK) == \
                stamp.OK, (file_index, chunk, i)
            seen.add(block)
    assert len(seen) == len(places) * (CHUNK // stamp.BLOCK)


def test_stamp_each_kind_of_bad_block_is_told():
    """A flipped bit anywhere outside the per-chunk fields is corrupt; a
    valid block at another place of its file, or of a later file, is
    misplaced; one of an earlier file, another run or another writer is
    stale; zeros or a short read are missing."""
    buf, stamper = _stamped()
    stamper.stamp(5, 2)
    block = buf[3 * stamp.BLOCK:4 * stamp.BLOCK]
    at = 2 * CHUNK + 3 * stamp.BLOCK
    mine = stamp.Expected(RUN, WRITER, 5, CHUNK)
    for pos in list(range(0, stamp.FIELDS_AT)) + list(range(stamp.FIELD_CHECK_AT, 64)) + [
            1000, stamp.BLOCK - 1]:
        broken = bytearray(block)
        broken[pos] ^= 0x10
        assert stamp.classify(bytes(broken), mine, at) == stamp.CORRUPT, pos
    assert stamp.classify(block, mine, at + stamp.BLOCK) == stamp.MISPLACED
    assert stamp.classify(block, mine, at - CHUNK) == stamp.MISPLACED
    assert stamp.classify(block, stamp.Expected(RUN, WRITER, 4, CHUNK), at) == \
        stamp.MISPLACED
    assert stamp.classify(block, stamp.Expected(RUN, WRITER, 6, CHUNK), at) == stamp.STALE
    assert stamp.classify(block, stamp.Expected(RUN + 1, WRITER, 5, CHUNK), at) == stamp.STALE
    assert stamp.classify(block, stamp.Expected(RUN, WRITER + 1, 5, CHUNK), at) == stamp.STALE
    assert stamp.classify(b"\0" * stamp.BLOCK, mine, at) == stamp.MISSING
    assert stamp.classify(block[:512], mine, at) == stamp.MISSING
    assert stamp.classify(block, mine, at) == stamp.OK


class _SlowReadBack(object):
    """A read-back that takes READ_S on the writer's clock."""
    READ_S = 50.0

    def __init__(self, clock):
        self.clock, self.files = clock, []

    def check_file(self, path, file_index, size, direct=True):
        self.files.append((file_index, size, direct))
        self.clock.now += self.READ_S


class _Clock(object):
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        self.now += 0.001
        return self.now


def test_writer_read_back_time_is_in_no_write_figure(tmpdir):
    """Read-back happens between two perf intervals: the interval before it is
    sent first and a new one starts after it, so no perf interval (nor any
    chunk's time) contains read-back time; every file written is read back,
    each once, with its size, before it is deleted or at the end."""
    clock = _Clock()
    slow = _SlowReadBack(clock)
    ops, sent = FakeOps([]), []
    payload = Payload(CHUNK)
    w = W.Writer(cfg(tmpdir, file_bytes=2 * CHUNK, max_files=2, duration_s=1e6), payload,
                 sent.append, StopAfter(9), ops=ops, timer=clock, clock=clock,
                 wall=lambda: clock.now, readback=slow)
    try:
        w.run()
    finally:
        payload.close()
    perfs = of(sent, P.PERF)
    assert sum(p["bytes"] for p in perfs) == 9 * CHUNK
    assert all(p["t_end"] - p["t_start"] < _SlowReadBack.READ_S for p in perfs)
    assert [f[0] for f in slow.files] == list(range(5))
    assert [f[1] for f in slow.files] == [2 * CHUNK] * 4 + [CHUNK]
    assert ops.events.count("unlink") == 5


def _entry(**verification):
    v = dict(requested_by="server", file_count=2, read_mib=2048.0, expected_mib=2048.0,
             read_time_s=1.0, read_mib_s=2048.0, read_latency_ms={}, read_modes=["o_direct"],
             bad_block_count=0, bad_blocks_by_kind=dict((k, 0) for k in P.BAD_KINDS),
             bad_block_list=[])
    v.update(verification)
    return v


def test_report_headline_says_data_verified_and_the_bad_blocks_by_kind():
    """The headline says how much data was verified on how many clients and
    the bad blocks (0, or the counts by kind and whose); nothing when no
    client verified."""
    rep = dict(clients=[dict(client="a", verification=_entry()),
                        dict(client="b", verification=_entry(read_mib=1024.0))])
    assert readback.headline(rep) == ["data verified: 3.0 GiB on 2 clients, 0 bad blocks"]
    kinds = dict((k, 0) for k in P.BAD_KINDS)
    kinds.update(corrupt=1, missing=2)
    rep["clients"][1]["verification"] = _entry(bad_block_count=3, bad_blocks_by_kind=kinds)
    assert readback.headline(rep) == [
        "data verified: 4.0 GiB on 2 clients, 3 bad blocks (1 corrupt, 2 missing) on b: "
        "THE DATA DID NOT COME BACK"]
    assert readback.headline(dict(clients=[dict(client="a", verification=None)])) == []


def test_registry_and_console_show_verification_progress_and_a_bad_client_fails():
    """The live console's summary line says what was read back so far and the
    bad blocks (nothing when no client verifies); a client whose read-back
    found a bad block is failed at its stop, though it ran its duration, and
    the registry names it for the server's exit code."""
    from diskbench.server import console as console_mod
    from diskbench.server import registry as reg
    from diskbench import states as st
    from tests.test_server_console import _Clock, _feed
    clock = _Clock()
    registry = reg.Registry(clock=clock, plan_given={"verify": True})
    quiet = reg.Registry(clock=clock)
    for r in (registry, quiet):
        _feed(r, "a", 1, 5000.0, 2, 10.0)
        _feed(r, "b", 1, 5000.0, 2, 10.0)
    assert console_mod.Summary(quiet.progress_view(), 5010.0).verified_text() == ""
    assert "read back" not in console_mod.Summary(quiet.progress_view(), 5010.0).line()
    assert all(c.verify and c.verify_source == "server" for c in registry.clients.values())

    def readback(name, seq, **bad):
        fields = dict(file_index=seq, file_bytes=100 << 20, bytes=100 << 20, chunks=1,
                      io_s=0.1, lat_min_s=0.1, lat_max_s=0.1, lat_hist=[[300, 1]],
                      read_mode=P.READ_DIRECT, corrupt=0, misplaced=0, stale=0, missing=0)
        fields.update(bad)
        registry.accept(P.make(P.READBACK, name=name, seq=seq, **fields), 5005.0, hash(name))
    readback("a", 10)
    readback("b", 10)
    readback("b", 11, stale=2)
    line = console_mod.Summary(registry.progress_view(), 5010.0).line()
    assert line.endswith("; read back 3 files, 300.0 MiB, 2 bad blocks (DATA DID NOT COME "
                         "BACK)"), line
    for name in ("a", "b"):
        registry.accept(P.make(P.STOP, name=name, seq=20, reason=P.STOP_DURATION,
                               bytes_written=1, chunks_written=1, rollovers=0,
                               elapsed_s=1.0, io_s=0.5, dropped_messages=0),
                        5011.0, hash(name))
    assert registry.clients["a"].state == st.FINISHED
    assert registry.clients["b"].state == st.FAILED
    assert registry.clients["b"].reason == \
        "its data did not come back: 2 bad blocks read back (2 stale)"
    assert registry.bad_data() == ["b"]

