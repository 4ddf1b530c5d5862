"""An acknowledgement means "on disk": a really full --log-dir (a small tmpfs,
root only) under a real server, with a raw protocol peer that checks every ack
against perf.jsonl at the moment it arrives, and real clients.

EIO and EROFS cannot be staged on a live log dir here: a read-only remount of
a filesystem with a file open for writing is refused (EBUSY: the server holds
perf.jsonl open), and this VM has no device-mapper for an error target; so the
recorder itself is tested with those errors injected into its write.
"""
import errno
import json
import os
import signal

import pytest

from diskbench import exitcodes
from diskbench import protocol as P
from diskbench.server import recorder as rec
from tests.faults.test_server_logdir_full import _fill
from tests.faults.test_server_restart import (SERVER_FAST, client_log, real_client)
from tests.helpers import (communicate, free_port, mounted_ext4_loop, mounted_tmpfs,
                           read_jsonl, wait_until)
from tests.test_server_fakes import FakeClient, ServerProc, hello_fields, latency_sets

#: The log dir's filesystem: a few MiB, filled by a filler file mid-run.
TMPFS_MB = 4
#: Perf samples sent while the log dir is full: more than the slack of the
#: pages perf.jsonl and server.log already have (tmpfs allocates 4 KiB pages).
HELD_PERFS = 40
#: The loop-mounted ext4 made to fail (the outside tester's size), and the
#: perf samples acked on it before the failure.
EXT4_MB, SYNCED_PERFS = 64, 40
#: How long a test waits for the server to notice, retry and write (it
#: retries every recorder.RETRY_S; HELD_DRAIN_S at the end).
NOTICE_S = 10 * rec.RETRY_S + rec.HELD_DRAIN_S


@pytest.fixture
def tmpfs(tmpdir):
    for mnt in mounted_tmpfs(tmpdir, TMPFS_MB):
        yield mnt


def _seqs_on_disk(path, name):
    """Seqs of ``name`` in perf.jsonl now (whole lines only), in file order."""
    if not os.path.exists(path):
        return []
    return [msg.seq for msg, _ts in _records(path) if msg.name == name]


def _records(path):
    """(message, recv_ts) of perf.jsonl's whole lines (a fragment after the
    last newline is not on disk yet)."""
    with open(path, "rb") as f:
        return [P.from_record(json.loads(line.decode("utf-8")))
                for line in f.read().split(b"\n")[:-1]]


class Probe(FakeClient):
    """A raw peer that, the moment each ack arrives, checks that every seq it
    acknowledges is in perf.jsonl (``bad`` collects the lies)."""

    def __init__(self, port, name, perf_path, seq=0):
        self.perf_path = perf_path
        self.first = 1                # the seqs from here on must be on disk
        self.acks = []
        self.bad = []
        FakeClient.__init__(self, port, name, seq=seq, on_ack=self._check)

    def _check(self, msg):
        on_disk = set(_seqs_on_disk(self.perf_path, self.name))
        missing = [s for s in range(self.first, msg.upto_seq + 1) if s not in on_disk]
        if missing:
            self.bad.append((msg.upto_seq, missing))
        self.acks.append(msg.upto_seq)

    def acked(self):
        return max(self.acks) if self.acks else 0

    def perfs(self, first, count):
        for i, lats in enumerate(latency_sets(first, count, 5)):
            self.perf(first + i, lats)


def _full_server(procs, tmpfs, flags=()):
    logs = os.path.join(tmpfs, "logs")
    server = ServerProc(procs, logs, ["--clients", "1", "--quiet", "--idle-timeout",
                                      "0.3"] + list(flags))
    return server, logs, os.path.join(logs, rec.PERF_LOG)


def _held_by_a_full_disk(server, tmpfs, perf):
    """(probe, filler): a probe whose first perfs were acked, then HELD_PERFS
    more sent after the log dir was filled, once the server has said it
    cannot write."""
    probe = Probe(server.port, "probe", perf)
    probe.hello()
    probe.wait_for(P.GO)
    probe.start()
    probe.perfs(0, 3)
    probe.wait_acked(probe.seq)
    filler = _fill(tmpfs)
    probe.perfs(3, HELD_PERFS)
    wait_until(lambda: "acknowledging nothing more" in server.stderr(), timeout=NOTICE_S,
               what="the server to say it cannot write")
    return probe, filler


def test_full_log_dir_acks_nothing_not_on_disk_and_freed_space_writes_then_acks(
        procs, tmpfs):
    """An ack is sent only for records in perf.jsonl: while the log dir is full
    nothing more is acked (said at once on stderr), and once
    space returns the held records are written in order, each once, then acked."""
    server, logs, perf = _full_server(procs, tmpfs)
    probe, filler = _held_by_a_full_disk(server, tmpfs, perf)
    last = probe.seq
    held_at = probe.acked()
    assert held_at < last, "every record was acked although the log dir is full"
    assert not probe.bad, "acks for records not in perf.jsonl: %r" % probe.bad[:3]
    assert server.stderr().count("acknowledging nothing more") == 1
    os.unlink(filler)                      # space again: held records go, then acks
    probe.wait_acked(last, timeout=NOTICE_S)
    assert "can be written again" in server.stderr()
    probe.stop(nbytes=0)
    probe.send(P.BYE)
    probe.wait_acked(probe.seq - 1)
    probe.close()
    assert server.wait_exit(NOTICE_S) == exitcodes.OK, server.stderr()
    assert not probe.bad, "acks for records not in perf.jsonl: %r" % probe.bad[:3]
    seqs = _seqs_on_disk(perf, "probe")
    assert seqs == list(range(1, probe.seq + 1)), "not every seq once, in order"
    warning = " ".join(server.report()["run"]["server_warnings"])
    assert "No space left on device" in warning
    assert "nothing was acknowledged until it was on disk" in warning
    assert "records held meanwhile were written in order" in warning
    assert "Traceback" not in server.stderr()


@pytest.fixture
def ext4(tmpdir):
    for fs in mounted_ext4_loop(tmpdir, EXT4_MB):
        yield fs


def test_acked_records_are_on_the_device_when_the_log_dir_filesystem_fails(
        procs, ext4):
    """The outside tester's case: the log dir on an ext4 mounted
    errors=remount-ro, a filesystem error mid-run (ext4's trigger), the
    server SIGKILLed, the filesystem mounted again: every record ever
    acknowledged is in perf.jsonl (fdatasync before each ack), those sent
    after the error were never acknowledged, and the server said it."""
    logs = os.path.join(ext4.path, "logs")
    perf = os.path.join(logs, rec.PERF_LOG)
    server = ServerProc(procs, logs, ["--clients", "1", "--quiet", "--idle-timeout",
                                      "0.3"])
    probe = Probe(server.port, "probe", perf)
    probe.hello()
    probe.wait_for(P.GO)
    probe.start()
    for first in range(0, SYNCED_PERFS, 5):     # several batches, each acked
        probe.perfs(first, 5)
        probe.wait_acked(probe.seq)
    acked = probe.acked()
    ext4.fail()
    probe.perfs(SYNCED_PERFS, HELD_PERFS)
    wait_until(lambda: "acknowledging nothing more" in server.stderr(), timeout=NOTICE_S,
               what="the server to say it cannot write")
    os.kill(server.proc.pid, signal.SIGKILL)
    server.wait_exit()
    probe.close()
    late = probe.acked()
    assert late < probe.seq, "records acknowledged after the filesystem failed"
    ext4.remount()
    on_disk = set(_seqs_on_disk(perf, "probe"))
    lost = sorted(set(range(1, late + 1)) - on_disk)
    assert not lost, "acknowledged, not on the device: %d of %d (seqs %s...)" % (
        len(lost), late, lost[:5])
    assert acked >= SYNCED_PERFS


def _why_twice(perf, undelivered, twice, server, client_log_text):
    """What a failure needs to be understood: the seqs on disk and kept, with
    their types, and the ends of the server's stderr and the client's log."""
    on_disk = [(m.seq, m.type, ts) for m, ts in _records(perf) if m.seq in twice]
    kept = [(obj.get("seq"), obj.get("type")) for obj in read_jsonl(undelivered)
            if obj.get("seq") in twice]
    return "on disk: %r\nkept: %r\nserver stderr: %s\nclient log: %s" % (
        on_disk, kept, server.stderr()[-1500:], client_log_text[-2500:])


def test_full_log_dir_at_the_end_client_exits_13_keeping_every_unacked_record(
        procs, tmpdir, tmpfs):
    """A real client whose records the server cannot write exits 13
    (CLIENT_SERVER) with them in its undelivered file: perf.jsonl and that file
    together hold every seq exactly once; the server's exit code is not 0 and
    its report says what is not on disk (on stdout: no report file fits)."""
    port = free_port()
    server, logs, perf = _full_server(procs, tmpfs, ["--port", str(port)])
    client = real_client(procs, tmpdir, port, "c1", duration=4,
                         extra=["--deliver-timeout", "3"])
    wait_until(lambda: len(_seqs_on_disk(perf, "c1")) >= 6, timeout=40,
               what="the client's first reports on disk")
    _fill(tmpfs)
    out, err = communicate(client, 60)
    assert client.returncode == exitcodes.CLIENT_SERVER, err[-2000:]
    log = client_log(tmpdir, "c1")
    assert "did not acknowledge" in log
    undelivered = str(tmpdir.join("client-logs", "client-c1.undelivered.jsonl"))
    kept = [P.decode(json.dumps(obj).encode(), P.C2S).seq
            for obj in read_jsonl(undelivered)]
    assert kept, "the client kept nothing although the server acked nothing more"
    assert server.wait_exit(NOTICE_S + 10) == exitcodes.SERVER_INCOMPLETE, server.stderr()
    written = _seqs_on_disk(perf, "c1")
    both = sorted(written + kept)
    assert both == list(range(1, max(both) + 1)), "not every seq exactly once: %r\n%s" % (
        sorted(set(written) & set(kept)) or sorted(set(range(1, max(both) + 1)) -
                                                   set(both)),
        _why_twice(perf, undelivered, set(written) & set(kept), server, log))
    kept_msgs = [P.decode(json.dumps(obj).encode(), P.C2S) for obj in read_jsonl(undelivered)]
    stop = [m for m in kept_msgs if m.type == P.STOP][0]
    perfs = [m for m, _ in _records(perf) if m.name == "c1" and m.type == P.PERF] + \
        [m for m in kept_msgs if m.type == P.PERF]
    assert stop.perf_samples == len(perfs) and stop.dropped_messages == 0
    text = " ".join(server.stdout().split())   # (the report text is wrapped)
    assert "records received are not in %s" % perf in text
    assert "every client finished" not in text and "exit code 5" in text
    assert "Traceback" not in server.stderr() + err


def test_acked_records_survive_sigkill_on_a_full_log_dir_and_restart(procs, tmpfs):
    """After a SIGKILL while the log dir is full and a restart on it (space
    back), every record ever acknowledged is in perf.jsonl, and the resent
    rest is recorded once: every seq exactly once."""
    port = free_port()
    flags = ["--port", str(port)]
    server, logs, perf = _full_server(procs, tmpfs, flags)
    probe, filler = _held_by_a_full_disk(server, tmpfs, perf)
    os.kill(server.proc.pid, signal.SIGKILL)
    server.wait_exit()
    acked = probe.acked()
    probe.close()
    assert not probe.bad, "acks for records not in perf.jsonl: %r" % probe.bad[:3]
    os.unlink(filler)
    again = ServerProc(procs, logs, ["--clients", "1", "--quiet", "--idle-timeout",
                                     "0.3"] + flags)
    assert set(range(1, acked + 1)) <= set(_seqs_on_disk(perf, "probe"))
    late = Probe(again.port, "probe", perf, seq=acked)   # resends what was not acked
    late.send_msg(P.make(P.HELLO, name="probe", seq=1, **hello_fields()))
    late.perfs(acked - 2, probe.seq - acked)   # (perf i is seq i + 3: after hello, start)
    late.stop(nbytes=0)
    late.send(P.BYE)
    late.wait_acked(late.seq - 1, timeout=NOTICE_S)
    late.close()
    assert again.wait_exit(NOTICE_S) == exitcodes.OK, again.stderr()
    assert not late.bad, "acks for records not in perf.jsonl: %r" % late.bad[:3]
    assert _seqs_on_disk(perf, "probe") == list(range(1, late.seq + 1))


def test_real_client_outlives_a_sigkill_on_a_full_log_dir_and_every_seq_lands_once(
        procs, tmpdir, tmpfs):
    """A real client writing while the server's log dir is full and the server
    is SIGKILLed: restarted on the same log dir once space is back, the run
    completes (both exit 0) and perf.jsonl holds every seq of the client
    exactly once: nothing acknowledged was lost, nothing held was doubled."""
    port = free_port()
    flags = ["--port", str(port), "--clients", "1"] + SERVER_FAST
    logs = os.path.join(tmpfs, "logs")
    perf = os.path.join(logs, rec.PERF_LOG)
    server = ServerProc(procs, logs, flags)
    client = real_client(procs, tmpdir, port, "k1", duration=8)
    wait_until(lambda: len(_seqs_on_disk(perf, "k1")) >= 6, timeout=40,
               what="the client's first reports on disk")
    filler = _fill(tmpfs)
    wait_until(lambda: "acknowledging nothing more" in server.stderr(), timeout=NOTICE_S,
               what="the server to say it cannot write")
    os.kill(server.proc.pid, signal.SIGKILL)
    server.wait_exit()
    before = _seqs_on_disk(perf, "k1")
    os.unlink(filler)
    wait_until(lambda: "connection to server lost" in client_log(tmpdir, "k1"),
               timeout=20, what="the client to notice")
    again = ServerProc(procs, logs, flags)
    out, err = communicate(client, 60)
    assert client.returncode == exitcodes.OK, err[-2000:]
    assert again.wait_exit(30) == exitcodes.OK, again.stderr()
    seqs = _seqs_on_disk(perf, "k1")
    assert sorted(seqs) == list(range(1, max(seqs) + 1)) and len(seqs) == len(set(seqs))
    assert seqs[:len(before)] == before
    kept = [m for m, _ in _records(perf) if m.name == "k1"]
    assert kept[-1].type == P.BYE
    stop = [m for m in kept if m.type == P.STOP][0]
    assert stop.perf_samples == len([m for m in kept if m.type == P.PERF])
    assert not any("client k1:" in w for w in again.report()["run"]["server_warnings"])


def test_report_warns_when_a_client_summary_says_it_sent_more_than_the_server_holds(
        procs, tmpdir):
    """A client's stop summary that counts more perf samples than the server
    holds (beyond what it dropped) is a warning naming that client, in the
    headline, and the exit code is SERVER_INCOMPLETE, never 'every client
    finished'."""
    logs = str(tmpdir.join("logs"))
    server = ServerProc(procs, logs, ["--clients", "1", "--quiet", "--idle-timeout",
                                      "0.3"])
    client = FakeClient(server.port, "short")
    client.hello()
    client.wait_for(P.GO)
    client.start()
    for i, lats in enumerate(latency_sets(3, 3, 4)):
        client.perf(i, lats)
    client.send(P.STOP, reason=P.STOP_DURATION, bytes_written=12 << 20,
                chunks_written=12, rollovers=0, elapsed_s=5.0, io_s=1.0,
                dropped_messages=1, perf_samples=6)
    client.send(P.BYE)
    client.wait_acked(client.seq - 1)
    client.close()
    assert server.wait_exit() == exitcodes.SERVER_INCOMPLETE, server.stderr()
    rep = server.report()
    warning = [w for w in rep["run"]["server_warnings"] if "client short:" in w]
    assert len(warning) == 1 and "made 6 perf samples" in warning[0]
    assert "the server holds 3: at least 2 missing" in warning[0]
    assert rep["clients"][0]["client_summary_perf_count"] == 6
    head = server.report_text().split("\n\n")[0]
    assert "client short:" in head and "every client finished" not in head


@pytest.mark.parametrize("err", [errno.EIO, errno.EROFS, errno.ENOSPC])
def test_recorder_holds_acks_through_a_write_error_and_writes_in_order_after(
        tmpdir, monkeypatch, err):
    """(Unit: EIO/EROFS cannot be staged on a live log dir, see above.) A write
    that fails part-way holds its batch and every later one, unacked; each
    retry goes on from where the last stopped (here: short again, then the
    error), and when the write works again the held bytes are completed (no
    line glued or repeated) and only then acked, in order."""
    monkeypatch.setattr(rec, "RETRY_S", 0.05)
    out = []

    class Sink(object):
        def write(self, text):
            out.append(text)

        def flush(self):
            pass
    r = rec.Recorder(str(tmpdir), stderr=Sink())
    r.open()
    script = [None]            # while broken: [bytes a write takes (0: the error)]

    def write(fd, data):
        if script[0] is None:
            return os.write(fd, data)
        took = script[0].pop(0) if script[0] else 0
        if took:
            return os.write(fd, data[:took])   # a short write, as tmpfs does first
        raise OSError(err, os.strerror(err))
    r.write_fd = write
    r.start()
    acked = []
    r.record(dict(i=0), on_written=lambda: acked.append(0))
    r.drain()
    # the write, then two retries, short each time (the second takes record 1 whole)
    script[0] = [3, 0, len(json.dumps(dict(i=1))) + 4, 0, 0]
    for i in range(1, 4):
        r.record(dict(i=i), on_written=lambda i=i: acked.append(i))
    wait_until(lambda: r.held is not None, what="the write to be held")
    r.record(dict(i=4), on_written=lambda: acked.append(4))
    wait_until(lambda: not script[0], what="two retries")
    assert acked == [0, 1] and r.episodes == 1 and "trying again" in "".join(out)
    script[0] = None
    assert r.drain(10) == 0
    assert acked == [0, 1, 2, 3, 4]
    r.close()
    with open(str(tmpdir.join(rec.PERF_LOG))) as f:
        assert [json.loads(line)["i"] for line in f] == [0, 1, 2, 3, 4]
    assert os.strerror(err) in r.trouble() and r.unwritten == 0


def test_recorder_acks_only_after_fdatasync_and_a_failed_sync_is_rewritten_once(
        tmpdir, monkeypatch):
    """An ack means on the device: every callback runs after perf.jsonl was
    fdatasynced with its records; a failed fdatasync (EIO: the kernel may have
    dropped the pages) acks nothing, cuts the bytes written since the last
    good sync off the file at once (they are not known to be on disk), and
    the retry writes them again: each record once, in order, then acked."""
    monkeypatch.setattr(rec, "RETRY_S", 0.05)
    events = []
    r = rec.Recorder(str(tmpdir), stderr=_Sink())
    r.open()
    path = str(tmpdir.join(rec.PERF_LOG))
    failing = [0]                 # syncs still to fail

    def sync(fd):
        if failing[0]:
            failing[0] -= 1
            events.append(("failed sync", os.path.getsize(path)))
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        rec.SYNC(fd)
        events.append(("sync", os.path.getsize(path)))
    r.sync_fd = sync
    r.start()
    r.record(dict(i=0), on_written=lambda: events.append(("ack", 0)))
    r.drain()
    synced = os.path.getsize(path)
    failing[0] = 2
    for i in range(1, 4):
        r.record(dict(i=i), on_written=lambda i=i: events.append(("ack", i)))
    wait_until(lambda: r.held is not None, what="the failed sync to be held")
    wait_until(lambda: not failing[0], what="a retry that fails too")
    assert [e for e in events if e[0] == "ack"] == [("ack", 0)]
    assert os.path.getsize(path) == synced     # cut back: not a byte unsynced left
    assert r.drain(10) == 0
    r.close()
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")[:-1]
    assert [json.loads(line.decode())["i"] for line in lines] == [0, 1, 2, 3]
    ends = [sum(len(x) + 1 for x in lines[:i + 1]) for i in range(4)]
    assert [e[1] for e in events if e[0] == "ack"] == [0, 1, 2, 3]
    for at, event in enumerate(events):        # each ack after a sync of its record
        if event[0] == "ack":
            since = [e for e in events[:at] if e[0] != "ack"]
            assert since and since[-1][0] == "sync" and \
                since[-1][1] >= ends[event[1]], events
    assert "fdatasync failed: Input/output error" in r.trouble()


class _Sink(object):
    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text += text

    def flush(self):
        pass
