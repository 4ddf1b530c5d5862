"""Unit tests of the writer loop and the start-up check arithmetic, with
injected clocks and system calls (plus a few against real files in tmp)."""
import errno
import os
import zlib

import pytest

from diskbench import plan, protocol as P
from diskbench.client import checks, procinfo
from diskbench.client import writer as W
from diskbench.client.config import ClientConfig
from diskbench.client.payload import Payload
from diskbench.metrics import MIB
from tests.helpers import thp_mode, wait_until

CHUNK = 64 * 1024  # unit tests use small chunks; the CLI refuses < 10 MiB


def cfg(tmpdir, **over):
    c = dict(directory=str(tmpdir), name="t", chunk_bytes=CHUNK, file_bytes=4 * CHUNK,
             duration_s=60.0, perf_interval_s=1000.0, max_files=2,
             sync_mode=P.SYNC_DIRECT, preallocate=False, keep_data=False,
             block_bytes=4096)
    c.update(over)
    return ClientConfig(**c)


class StopAfter(object):
    """should_stop(): True after ``n`` calls (one call per chunk)."""

    def __init__(self, n):
        self.n = n

    def __call__(self):
        self.n -= 1
        return self.n < 0


class FakeOps(object):
    """In-memory system calls recording every event in order."""

    def __init__(self, events, short=None, refuse_direct=False, fail_write=None):
        self.events = events
        self.short = short                  # max bytes per write
        self.refuse_direct = refuse_direct
        self.fail_write = fail_write        # errno to raise on the first write
        self.files = {}                     # fd -> path
        self.sizes = {}                     # path -> bytes written
        self.existing = set()
        self.max_existing = 0
        self.opened = []                    # (path, direct)
        self._fd = 100

    def open(self, path, direct):
        self.events.append("open")
        if direct and self.refuse_direct:
            raise OSError(errno.EINVAL, "Invalid argument")
        self._fd += 1
        self.files[self._fd] = path
        self.sizes[path] = 0
        self.existing.add(path)
        self.max_existing = max(self.max_existing, len(self.existing))
        self.opened.append((path, direct))
        return self._fd

    def write(self, fd, buf):
        self.events.append("write")
        if self.fail_write:
            raise OSError(self.fail_write, os.strerror(self.fail_write))
        n = len(buf) if self.short is None else min(len(buf), self.short)
        self.sizes[self.files[fd]] += n
        return n

    def fsync(self, fd):
        self.events.append("fsync")

    def close(self, fd):
        self.events.append("close")

    def unlink(self, path):
        self.events.append("unlink")
        self.existing.discard(path)

    def fallocate(self, fd, offset, length):
        self.events.append("fallocate")


def run_writer(tmpdir, chunks, ops, timer=None, **over):
    sent = []
    events = getattr(ops, "events", [])

    def send(item):
        events.append("send")
        sent.append(item)

    payload = Payload(CHUNK)
    kwargs = {} if timer is None else dict(timer=timer)
    w = W.Writer(cfg(tmpdir, **over), payload, send, StopAfter(chunks), ops=ops, **kwargs)
    try:
        w.run()
    finally:
        payload.close()
    return w, sent


def of(sent, type_):
    return [fields for t, fields in sent if t == type_]


def test_writer_short_writes_are_continued(tmpdir):
    ops = FakeOps([], short=CHUNK // 4 + 4096)
    w, sent = run_writer(tmpdir, 3, ops, file_bytes=100 * CHUNK)
    assert w.bytes == 3 * CHUNK
    assert ops.sizes[ops.opened[0][0]] == 3 * CHUNK
    assert ops.events.count("write") == 3 * 4  # 4 writes per chunk, none counted full
    assert of(sent, P.PERF)[0]["bytes"] == 3 * CHUNK


def test_writer_short_write_against_a_real_file_keeps_every_byte(tmpdir):
    path = str(tmpdir.join("f"))
    payload = Payload(CHUNK)
    payload.stamp(7)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)

    class Halving(W.OsOps):
        write = staticmethod(lambda fd, buf: os.write(fd, bytes(bytearray(buf[:max(
            4096, len(buf) // 2)]))))
    try:
        W.write_chunk(fd, payload.buffer, CHUNK, True, Halving(), W.monotonic)
    finally:
        os.close(fd)
    with open(path, "rb") as f:
        assert f.read() == bytes(payload.buffer)
    payload.close()


def test_writer_unaligned_remainder_under_o_direct_is_enospc(tmpdir):
    calls = []

    class Ops(W.OsOps):
        @staticmethod
        def write(fd, buf):
            calls.append(len(buf))
            if len(calls) == 1:
                return 1000  # short and unaligned
            raise OSError(errno.EINVAL, "Invalid argument")
    payload = Payload(CHUNK)
    with pytest.raises(OSError) as info:
        W.write_chunk(1, payload.buffer, CHUNK, False, Ops(), W.monotonic)
    assert info.value.errno == errno.ENOSPC and "unaligned" in str(info.value)
    payload.close()


def test_writer_timed_region_holds_only_write_and_fsync(tmpdir):
    events = []

    def timer():
        events.append("timer")
        return float(events.count("timer"))
    ops = FakeOps(events)
    run_writer(tmpdir, 6, ops, timer=timer, sync_mode=P.SYNC_FSYNC, perf_interval_s=0.0)
    assert "send" in events  # perf samples were built and sent (outside)
    inside, timing = [], False
    for e in events:
        if e == "timer":
            if timing:
                assert inside in (["write", "fsync"], ["fsync", "close"]), inside
            inside, timing = [], not timing
        elif timing:
            inside.append(e)
    # every chunk, every rollover, and the final fsync + close of the last file
    assert events.count("timer") == 2 * (6 + 6 // 4 + 1)


def test_writer_falls_back_to_fsync_and_labels_it_when_o_direct_refused(tmpdir):
    ops = FakeOps([], refuse_direct=True)
    w, sent = run_writer(tmpdir, 3, ops)
    assert [d for _, d in ops.opened] == [False]
    assert ops.events.count("fsync") == 3 + 1  # one per chunk + the final close
    assert of(sent, P.START)[0]["sync_mode"] == P.SYNC_FSYNC
    assert all(p["sync_mode"] == P.SYNC_FSYNC for p in of(sent, P.PERF))
    assert "O_DIRECT refused" in of(sent, P.NOTE)[0]["text"]


def test_fake_no_odirect_env_refuses_in_one_place(tmpdir, monkeypatch):
    monkeypatch.setenv(W.FAKE_NO_ODIRECT_ENV, "1")
    with pytest.raises(OSError) as info:
        W.open_data_file(str(tmpdir.join("x")), True)
    assert info.value.errno == errno.EINVAL
    ok, why = checks.probe_direct(str(tmpdir))
    assert not ok and why == os.strerror(errno.EINVAL)
    assert os.listdir(str(tmpdir)) == []


def test_writer_rollover_counts_and_keeps_at_most_max_files(tmpdir):
    ops = FakeOps([])
    w, sent = run_writer(tmpdir, 10, ops, file_bytes=3 * CHUNK, max_files=2)
    rolls = of(sent, P.ROLLOVER)
    assert [r["file_index"] for r in rolls] == [0, 1, 2]  # 10 chunks / 3 per file
    assert all(r["file_bytes"] == 3 * CHUNK for r in rolls)
    assert ops.max_existing == 2
    assert len(ops.opened) == 4 and ops.existing == set()  # all removed at exit


def test_writer_real_files_rollover_and_keep_data(tmpdir):
    w, sent = run_writer(tmpdir, 7, W.OsOps(), file_bytes=2 * CHUNK, max_files=2,
                         keep_data=True)
    names = sorted(os.listdir(str(tmpdir)))
    assert len(of(sent, P.ROLLOVER)) == 3
    assert names == [W.data_file_name("t", os.getpid(), i) for i in (2, 3)]
    assert os.path.getsize(str(tmpdir.join(names[0]))) == 2 * CHUNK


def test_writer_last_chunk_of_a_file_is_cut_to_the_file_size(tmpdir):
    ops = FakeOps([])
    w, sent = run_writer(tmpdir, 2, ops, file_bytes=CHUNK + CHUNK // 2)
    assert of(sent, P.ROLLOVER)[0]["file_bytes"] == CHUNK + CHUNK // 2


def test_writer_disk_error_is_reported_with_errno_and_files_removed(tmpdir):
    ops = FakeOps([], fail_write=errno.ENOSPC)
    payload = Payload(CHUNK)
    w = W.Writer(cfg(tmpdir), payload, lambda item: None, StopAfter(5), ops=ops)
    with pytest.raises(W.DiskError) as info:
        w.run()
    assert info.value.errno == errno.ENOSPC
    assert "ENOSPC" in info.value.reason and os.strerror(errno.ENOSPC) in info.value.reason
    assert ops.existing == set()
    payload.close()


def test_writer_preallocates_each_file_when_asked(tmpdir):
    ops = FakeOps([])
    w, sent = run_writer(tmpdir, 5, ops, preallocate=True, file_bytes=2 * CHUNK)
    assert ops.events.count("fallocate") == len(ops.opened) == 3
    assert of(sent, P.START)[0]["preallocate"] is True


# --- start-up check arithmetic ----------------------------------------------------
def test_rollover_rule_message_numbers_match_the_documented_example():
    msg = plan.rollover_rule(850.0, 10, 5000, 10)
    assert msg.startswith("at 850 MiB/s, 10 s gives ~1.7 rollovers of 5000 MiB files")
    assert "use --duration >= 12 or --file-mb <= 4250" in msg


def test_rollover_rule_never_rounds_up():
    assert plan.expected_rollovers(100.0, 10, 500) == 2.0
    assert plan.rollover_rule(100.0, 10, 500, 10) is None
    msg = plan.rollover_rule(99.9, 10, 500, 10)
    assert "~1.9 rollovers" in msg  # 1.998 must not print as 2.0


def test_rollover_rule_omits_impossible_file_size_fix():
    msg = plan.rollover_rule(10.0, 1, 100, 10)  # would need --file-mb <= 5 < chunk
    assert "--file-mb <=" not in msg and "--duration >= 20" in msg


def test_check_space_names_the_numbers(tmpdir):
    with pytest.raises(checks.CheckFailed) as info:
        checks.check_space(str(tmpdir), 100 * MIB, 2, free=50 * MIB)
    assert info.value.code == 11
    assert "need 264 MiB, 50 MiB are free" in info.value.message


def test_fs_type_uses_the_longest_mount_prefix(tmpdir):
    mounts = tmpdir.join("mounts")
    mounts.write("/dev/vda / ext4 rw 0 0\ntmpfs /mnt/fast tmpfs rw 0 0\n"
                 "nfs:/x /mnt/fast/deep\\040dir nfs rw 0 0\n")
    assert checks.fs_type("/mnt/fast/a", str(mounts)) == "tmpfs"
    assert checks.fs_type("/mnt/fast/deep dir/z", str(mounts)) == "nfs"
    assert checks.fs_type("/mnt/fastx", str(mounts)) == "ext4"


def test_calibration_writes_like_the_writer_and_removes_its_file(tmpdir):
    mib_s = checks.calibrate(str(tmpdir), 1 * MIB, P.SYNC_FSYNC, max_chunks=2)
    assert mib_s > 0
    assert os.listdir(str(tmpdir)) == []


def test_calibration_times_the_rollover_flush_too(tmpdir):
    """Injected clock: each write 'takes' 1 s, the final fsync + close 2 s; the
    rate counts both (2 MiB in 4 s), and the flush comes after the last write."""
    now = [0.0]

    class Ops(W.OsOps):
        def __init__(self):
            self.events = []

        def write(self, fd, buf):
            self.events.append("write")
            now[0] += 1.0
            return len(buf)

        def fsync(self, fd):
            self.events.append("fsync")
            now[0] += 2.0

    ops = Ops()
    mib_s = checks.calibrate(str(tmpdir), 1 * MIB, P.SYNC_DIRECT, max_chunks=2,
                             max_s=100.0, clock=lambda: now[0], ops=ops)
    assert ops.events == ["write", "write", "fsync"]
    assert mib_s == 2.0 / 4.0
    assert os.listdir(str(tmpdir)) == []


BUSY_CHILD = ("import sys; big = bytearray(96 << 20); big[::4096] = b'x' * (len(big) // 4096)\n"
              "sys.stdout.write('ready\\n'); sys.stdout.flush()\nwhile True: pass")
IDLE_CHILD = "import sys, time; sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(600)"
BUSY_CPU_S = 0.3  # the window: until the busy child has used this much CPU


def test_proc_cpu_sampler_reads_the_given_pid(procs):
    """Two other processes, one spinning with 96 MiB touched and one asleep: each
    sampler reports its own pid's CPU and RSS, not the test's or the other's."""
    busy, idle = procs.start(["-c", BUSY_CHILD]), procs.start(["-c", IDLE_CHILD])
    for child in (busy, idle):
        assert child.stdout.readline().strip() == b"ready"
    samplers = [procinfo.CpuSampler(p.pid, use_psutil=False) for p in (busy, idle)]
    assert all(s.source == procinfo.SOURCE_PROC for s in samplers)
    start = procinfo.proc_cpu_seconds(busy.pid)
    wait_until(lambda: procinfo.proc_cpu_seconds(busy.pid) - start >= BUSY_CPU_S,
               timeout=30, what="the busy child to use CPU")
    (busy_cpu, busy_rss), (idle_cpu, idle_rss) = [s.sample() for s in samplers]
    assert busy_cpu > 0 and idle_cpu * 4 < busy_cpu, (busy_cpu, idle_cpu)
    assert busy_rss > idle_rss + 64 * MIB, (busy_rss, idle_rss)
    assert procinfo.is_alive(busy.pid) and procinfo.is_alive(idle.pid)
    busy.kill()
    busy.wait()
    assert not procinfo.is_alive(busy.pid) and samplers[0].sample() is None


def test_payload_stamp_is_the_counter_in_every_block_whatever_came_before():
    import struct
    p = Payload(CHUNK)
    orig = bytes(p.buffer)
    pieces = []

    def replay(n):  # the same random fill again, piece by piece
        start = sum(pieces)
        pieces.append(n)
        return orig[start:start + n]

    for history in ([], [255], [7, 65535, 65536], [2 ** 40 + 3]):
        del pieces[:]
        fresh = Payload(CHUNK, random_bytes=replay)
        for n in history:
            fresh.stamp(n)
        fresh.stamp(256)
        data = bytes(fresh.buffer)
        assert all(data[o:o + 8] == struct.pack("<Q", 256) for o in range(0, CHUNK, 4096))
        # outside the 8 stamp bytes, the random fill is untouched
        assert all(data[o + 8:o + 4096] == orig[o + 8:o + 4096]
                   for o in range(0, CHUNK, 4096))
        fresh.close()
    p.close()


def test_payload_consecutive_chunks_share_no_block_and_do_not_compress():
    p = Payload(CHUNK)
    seen = set()
    for n in range(300):  # crosses byte boundaries (255 -> 256)
        p.stamp(n)
        data = bytes(p.buffer)
        blocks = set(data[o:o + 4096] for o in range(0, CHUNK, 4096))
        assert len(blocks) == CHUNK // 4096 and not blocks & seen
        seen |= blocks
    assert len(zlib.compress(bytes(p.buffer))) / float(CHUNK) > 0.99
    p.close()


# --- against real files, with real O_DIRECT ----------------------------------------
def test_payload_buffer_is_huge_page_aligned_and_block_multiple():
    import mmap
    p = Payload(CHUNK)
    assert p.address % mmap.PAGESIZE == 0 and p.address % (2 * MIB) == 0
    assert len(p.buffer) == CHUNK and CHUNK % 4096 == 0  # any logical block <= 4 KiB
    p.close()
    small = Payload(CHUNK, huge_pages=False)  # no huge pages asked: page alignment
    assert small.address % mmap.PAGESIZE == 0 and len(small.buffer) == CHUNK
    small.close()


def test_payload_buffer_gets_huge_pages_where_the_kernel_offers_them():
    """The kernel's own account (smaps AnonHugePages) of the writer's buffer:
    all of it in huge pages when THP is 'always' or 'madvise'."""
    mode = thp_mode()
    if mode not in ("always", "madvise"):
        pytest.skip("transparent huge pages are %s on this kernel" % mode)
    p = Payload(CHUNK)
    try:
        assert p.huge_pages_advised
        assert p.huge_page_bytes() == CHUNK
    finally:
        p.close()


def test_huge_page_bytes_reads_the_mapping_that_holds_the_address(tmpdir):
    smaps = tmpdir.join("smaps")
    smaps.write("7f0000000000-7f0000200000 rw-p 00000000 00:00 0\n"
                "Rss:                2048 kB\n"
                "AnonHugePages:      2048 kB\n"
                "7f0000200000-7f0000c00000 rw-p 00000000 00:00 0 \n"
                "Rss:               10240 kB\n"
                "AnonHugePages:     8192 kB\n"
                "VmFlags: rd wr mr mw me ac hg\n")
    assert procinfo.huge_page_bytes(0x7f0000300000, str(smaps)) == 8192 * 1024
    assert procinfo.huge_page_bytes(0x7f0000000000, str(smaps)) == 2048 * 1024
    assert procinfo.huge_page_bytes(0x10, str(smaps)) is None
    assert procinfo.huge_page_bytes(0x10, str(tmpdir.join("absent"))) is None


def test_o_direct_short_writes_continue_aligned_on_a_real_file(tmpdir):
    """Real O_DIRECT fd; the kernel 'stops' at block-aligned offsets (as it does
    near a full device); every remainder view stays aligned and accepted."""
    path = str(tmpdir.join("direct.dat"))
    try:
        fd = W.open_data_file(path, True)
    except OSError as exc:  # pragma: no cover - a filesystem without O_DIRECT
        pytest.skip("O_DIRECT refused here (%s)" % os.strerror(exc.errno))
    payload = Payload(CHUNK)
    payload.stamp(42)
    sizes = []

    class ShortAligned(W.OsOps):
        @staticmethod
        def write(fd, buf):
            n = len(buf) if len(buf) <= 8192 else (len(buf) // 3) // 4096 * 4096
            sizes.append(n)
            return os.write(fd, W.buffer_from(buf, 0, n) if n < len(buf) else buf)
    try:
        took = W.write_chunk(fd, payload.buffer, CHUNK, False, ShortAligned(),
                             W.monotonic)
        took += W.write_chunk(fd, payload.buffer, CHUNK // 2, False, ShortAligned(),
                              W.monotonic)  # the cut last chunk of a file
    finally:
        os.close(fd)
    assert took > 0 and len(sizes) > 4 and sum(sizes) == CHUNK + CHUNK // 2
    with open(path, "rb") as f:
        data = f.read()
    assert data == bytes(payload.buffer) + bytes(payload.buffer)[:CHUNK // 2]
    payload.close()


def test_o_direct_refused_by_the_real_open_falls_back_labelled_on_real_files(
        tmpdir, monkeypatch):
    monkeypatch.setenv(W.FAKE_NO_ODIRECT_ENV, "1")  # open(O_DIRECT) -> EINVAL
    w, sent = run_writer(tmpdir, 5, W.OsOps(), file_bytes=2 * CHUNK, keep_data=True)
    assert of(sent, P.START)[0]["sync_mode"] == P.SYNC_FSYNC
    assert [p["sync_mode"] for p in of(sent, P.PERF)] == [P.SYNC_FSYNC]
    assert "O_DIRECT refused" in of(sent, P.NOTE)[0]["text"]
    assert w.bytes == 5 * CHUNK and len(of(sent, P.ROLLOVER)) == 2


def test_eintr_during_a_write_is_retried_not_counted(tmpdir):
    calls = []

    class Ops(W.OsOps):
        @staticmethod
        def write(fd, buf):
            calls.append(len(buf))
            if len(calls) in (1, 3):
                raise OSError(errno.EINTR, "Interrupted system call")
            return min(len(buf), CHUNK // 2)
    payload = Payload(CHUNK)
    W.write_chunk(1, payload.buffer, CHUNK, False, Ops(), W.monotonic)
    assert calls == [CHUNK, CHUNK, CHUNK // 2, CHUNK // 2]
    payload.close()


def test_timed_region_is_only_the_io_whatever_the_clock_says(tmpdir):
    """Injected clock advancing 1 s per read; I/O 'takes' 0: the io time is then
    exactly 2 reads per chunk apart, i.e. nothing else was between them."""
    ticks = [0.0]

    def timer():
        ticks[0] += 1.0
        return ticks[0]
    ops = FakeOps([])
    w, sent = run_writer(tmpdir, 8, ops, timer=timer, perf_interval_s=0.0)
    perfs = of(sent, P.PERF)
    assert sum(p["chunks"] for p in perfs) == 8
    assert sum(p["io_s"] for p in perfs) == 8 * 1.0  # t1 - t0 = 1 tick per chunk
    assert [r["close_s"] for r in of(sent, P.ROLLOVER)] == [1.0, 1.0]


@pytest.mark.parametrize("interval", [1000.0, 0.0])
def test_last_partial_file_is_fsynced_inside_the_last_interval(tmpdir, interval):
    """Also when the last chunk ends an interval (interval 0: every chunk does):
    the stop is decided first, so the fsync + close still lands in a sent one."""
    events = []
    ops = FakeOps(events)
    w, sent = run_writer(tmpdir, 5, ops, file_bytes=4 * CHUNK,  # 1 full file + 1 chunk
                         perf_interval_s=interval)
    assert len(of(sent, P.ROLLOVER)) == 1
    last_write = len(events) - 1 - events[::-1].index("write")
    after = events[last_write + 1:]
    # fsync + close of the partial file, then the last perf sample, then cleanup
    assert after[:3] == ["fsync", "close", "send"], after
    assert sum(p["bytes"] for p in of(sent, P.PERF)) == 5 * CHUNK
    assert of(sent, P.PERF)[-1]["chunks"] >= 1
    assert w.last_close_s is not None


def test_nothing_extra_is_fsynced_when_the_stop_falls_on_a_rollover(tmpdir):
    ops = FakeOps([])
    w, sent = run_writer(tmpdir, 4, ops, file_bytes=4 * CHUNK)
    assert ops.events.count("fsync") == 1 and w.last_close_s is None


def test_client_config_has_every_default_once_and_pickles_without_the_secret():
    import pickle
    from diskbench.client import __main__ as client_main
    from diskbench.client import config
    c = ClientConfig(name="n", secret=b"s3cret", chunk_bytes=CHUNK)
    assert c.duration_s == plan.DURATION_S and c.max_files == config.MAX_FILES
    child = pickle.loads(pickle.dumps(c.for_children(), 2))
    assert child.secret is None and child.name == "n" and child.chunk_bytes == CHUNK
    assert c.secret == b"s3cret"  # the supervisor's own copy keeps it
    with pytest.raises(TypeError):
        ClientConfig(chunk_mb=10)  # a misspelt setting is an error, not a silent default
    defaults = client_main.build_parser().parse_args(["dir"])
    # the plan's flags default to None (the server's plan may set them) and
    # then take plan.defaults(), which ClientConfig's defaults are too
    assert client_main._take_plan_defaults(defaults) == []
    assert defaults.chunk_mb * MIB == ClientConfig().chunk_bytes
    assert defaults.file_mb is None and ClientConfig().file_bytes == \
        plan.default_file_bytes(ClientConfig().chunk_bytes)
    for flag, setting in (("duration", "duration_s"), ("perf_interval", "perf_interval_s"),
                          ("stats_interval", "stats_interval_s"),
                          ("heartbeat_interval", "heartbeat_interval_s"),
                          ("max_files", "max_files"), ("stall_timeout", "stall_timeout_s"),
                          ("connect_timeout", "connect_timeout_s"),
                          ("deliver_timeout", "deliver_timeout_s")):
        assert getattr(defaults, flag) == getattr(ClientConfig(), setting), flag


class _GoSender(object):
    """What Supervisor._start_instant reads of the sender: the go and when it came."""

    def __init__(self, go, wall, mono):
        self.go_msg, self.go_wall, self.go_mono = go, wall, mono


def test_start_instant_is_put_on_our_clock_by_the_offset_else_by_the_go_send_time():
    import logging
    from diskbench.client.supervisor import Supervisor
    from diskbench.compat import monotonic
    sup = Supervisor.__new__(Supervisor)
    sup.log = logging.getLogger("test-start-instant")
    start = 1796000000.0                  # the common instant, server clock
    now = monotonic()
    # our clock is 5 s ahead; the go came 1 s before the instant (our clock: start + 4)
    go = P.make(P.GO, P.S2C, ts=start - 1.5, run_id="r", start_at=start, clock_offset_s=5.0)
    sup.sender = _GoSender(go, wall=start + 4.0, mono=now)
    assert sup._start_instant() == pytest.approx(now + 1.0)
    # no offset measured: by when the go was sent (1.5 s before the instant)
    go = P.make(P.GO, P.S2C, ts=start - 1.5, run_id="r", start_at=start)
    sup.sender = _GoSender(go, wall=start + 4.0, mono=now)
    assert sup._start_instant() == pytest.approx(now + 1.5)
    # an instant already past, or beyond belief: at once
    go = P.make(P.GO, P.S2C, ts=start - 1.5, run_id="r", start_at=start, clock_offset_s=0.0)
    sup.sender = _GoSender(go, wall=start + 3.0, mono=now)
    assert sup._start_instant() <= monotonic()
