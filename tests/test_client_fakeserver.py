"""A minimal real server (real socket, protocol.decode, acks, go) for client
tests, and the sender's tests against it: seq, acks, reconnect + resend,
overflow drops, ping/pong, rejected, server stop.
"""
import socket
import threading
import time

from diskbench import protocol as P
from diskbench.client import sender as sender_mod
from diskbench.client.sender import Sender
from tests.helpers import free_port, wait_until

HELLO = dict(client_version="0.1.0", hostname="h", pid=1, instance_id="fake00000001",
             python_version="3",
             platform="p", directory="/d", fs_type="ext4", chunk_bytes=10 << 20,
             file_bytes=20 << 20, duration_s=2.0, max_files=2, sync_mode=P.SYNC_DIRECT,
             preallocate=False, stats_interval_s=1.0, heartbeat_interval_s=1.0,
             psutil_version=None, expected_rollovers=3.0, calibration_mib_s=100.0)


class FakeServer(object):
    """Accepts clients, records every decoded message, acks each, sends go.

    ``go_after``: hellos (distinct names) before go is sent to everyone.
    ``reject``: a reason to send ``rejected`` instead of go.
    ``ack``: when False, never acknowledge (to test buffering).
    ``ack_upto``: acknowledge this seq every time (a lying or taken-over server).
    ``go_fields``: more fields of go (a run plan, a start instant).
    """

    def __init__(self, go_after=1, reject=None, ack=True, secret=None, port=0,
                 no_ack=(), ack_upto=None, go_fields=None):
        self.go_after, self.reject, self.ack, self.secret = go_after, reject, ack, secret
        self.ack_upto = ack_upto
        self.go_fields = go_fields or {}
        self.no_ack = no_ack        # message types never acknowledged
        self.lock = threading.Lock()
        self.messages = []          # every decoded message, in arrival order
        self.arrived = {}           # (name, seq) -> time.time() it came
        self.recorded = {}          # name -> highest seq recorded
        self.conns = []
        self.hellos = set()
        self.went = set()
        self.errors = []
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", port))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.closed = False
        t = threading.Thread(target=self._accept)
        t.daemon = True
        t.start()

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.lsock.accept()
            except (OSError, socket.error):
                return
            with self.lock:
                self.conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,))
            t.daemon = True
            t.start()

    def _send(self, conn, type_, **fields):
        try:
            conn.sendall(P.encode(P.make(type_, P.S2C, **fields), self.secret))
        except (OSError, socket.error):
            pass

    def _serve(self, conn):
        rfile = conn.makefile("rb")
        while True:
            try:
                line = P.read_line(rfile)
            except (OSError, socket.error, P.ProtocolError):
                return
            if not line:
                return
            try:
                msg = P.decode(line, P.C2S, self.secret)
            except P.ProtocolError as exc:
                self.errors.append(str(exc))
                continue
            with self.lock:
                last = self.recorded.get(msg.name, 0)
                fresh = msg.seq > last
                if fresh:
                    self.recorded[msg.name] = msg.seq
                    self.messages.append(msg)
                    self.arrived[msg.name, msg.seq] = time.time()
                upto = self.recorded[msg.name]
            if self.ack and msg.type not in self.no_ack:
                self._send(conn, P.ACK, upto_seq=upto if self.ack_upto is None
                           else self.ack_upto)
            if msg.type == P.HELLO:
                if self.reject:
                    self._send(conn, P.REJECTED, reason=self.reject, fatal=True)
                    continue
                with self.lock:
                    self.hellos.add((msg.name, conn))
                    names = set(n for n, _ in self.hellos)
                    ready = len(names) >= self.go_after
                    targets = [c for n, c in self.hellos if n not in self.went] \
                        if ready else []
                    self.went.update(names if ready else ())
                for c in targets:
                    self._send(c, P.GO, run_id="fake-run", **self.go_fields)

    def of_type(self, type_, name=None):
        with self.lock:
            return [m for m in self.messages if m.type == type_ and
                    (name is None or m.name == name)]

    def stop_clients(self, reason="stop now"):
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            self._send(c, P.STOP, reason=reason)

    def ping(self, nonce=5):
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            self._send(c, P.PING, nonce=nonce, server_time=time.time())

    def drop_connections(self):
        with self.lock:
            conns, self.conns = list(self.conns), []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except (OSError, socket.error):
                pass
            c.close()

    def close(self):
        self.closed = True
        try:
            self.lsock.close()
        except (OSError, socket.error):
            pass
        self.drop_connections()


def make_sender(port, buffer_max=sender_mod.BUFFER_MAX, name="c1", secret=None,
                log=None):
    return Sender("127.0.0.1", port, name, dict(HELLO), secret=secret,
                  buffer_max=buffer_max, log=log)


def test_sender_hello_go_ack_and_seq():
    srv = FakeServer()
    s = make_sender(srv.port)
    try:
        s.start()
        assert s.wait_connected(5)
        assert s.go.wait(5) and s.run_id == "fake-run"
        s.send(P.NOTE, text="one")
        s.send(P.NOTE, text="two")
        wait_until(lambda: s.pending() == 0, 5, what="all acked")
        assert [m.seq for m in srv.messages] == [1, 2, 3]
        assert [m.type for m in srv.messages] == [P.HELLO, P.NOTE, P.NOTE]
    finally:
        assert s.close(2)
        srv.close()


def test_sender_reconnects_and_resends_unacked_in_order():
    srv = FakeServer(ack=False)
    s = make_sender(srv.port)
    try:
        s.start()
        assert s.go.wait(5)
        for i in range(5):
            s.send(P.NOTE, text="n%d" % i)
        wait_until(lambda: len(srv.messages) == 6, 5, what="6 messages")
        srv.ack = True
        srv.drop_connections()  # nothing was acknowledged: everything is resent
        s.send(P.NOTE, text="after")
        wait_until(lambda: s.pending() == 0, 10, what="resend acked")
        assert s.connects >= 2
        # the server recorded each seq once, in order, nothing lost
        assert [m.seq for m in srv.messages] == list(range(1, 8))
    finally:
        s.close(2)
        srv.close()


def test_sender_overflow_drops_oldest_perf_never_rollover():
    srv = FakeServer(ack=False)
    s = make_sender(srv.port, buffer_max=4)
    try:
        perf = dict(t_start=1.0, t_end=2.0, bytes=1, chunks=1, io_s=0.1, lat_min_s=0.1,
                    lat_max_s=0.1, lat_hist=[[1, 1]], sync_mode=P.SYNC_DIRECT,
                    file_index=0)
        s.send(P.PERF, **perf)                                 # seq 2
        s.send(P.ROLLOVER, file_index=0, file_bytes=1, close_s=0.1)  # seq 3
        s.send(P.PERF, **perf)                                 # seq 4
        s.send(P.HEARTBEAT, writer_pid=2, writer_alive=True, bytes_written=1,
               chunks_written=1, progress_age_s=0.0)           # seq 5 -> drop seq 2
        s.send(P.ERROR, source="writer", reason="x", errno=None, fatal=True)  # drop 4
        kept = [(seq, t) for seq, t, _ in s.buffer]
        assert kept == [(1, P.HELLO), (3, P.ROLLOVER), (5, P.HEARTBEAT), (6, P.ERROR)]
        assert s.dropped == 2
    finally:
        s.close(0)
        srv.close()


def test_sender_answers_ping_and_sees_server_stop():
    srv = FakeServer()
    s = make_sender(srv.port)
    try:
        s.start()
        assert s.go.wait(5)
        srv.ping(nonce=42)
        pongs = wait_until(lambda: srv.of_type(P.PONG), 5, what="pong")
        assert pongs[0].nonce == 42
        srv.stop_clients("enough")
        wait_until(lambda: s.server_stop == "enough", 5, what="server stop seen")
    finally:
        s.close(2)
        srv.close()


def test_sender_sends_nothing_after_its_bye():
    """A ping that crosses the bye is not answered: bye is the client's last seq."""
    srv = FakeServer(no_ack=(P.BYE,))
    s = make_sender(srv.port)
    try:
        s.start()
        assert s.go.wait(5)
        bye = s.send(P.BYE)
        wait_until(lambda: srv.of_type(P.BYE), 5, what="bye received")
        srv.ping(nonce=7)
        srv.stop_clients("after the ping")   # read in order: the ping was handled first
        wait_until(lambda: s.server_stop, 5, what="server stop seen")
        assert s.send(P.NOTE, text="late") is None
        assert s.next_seq == bye.seq + 1 and s.buffer[-1][1] == P.BYE
    finally:
        s.close(0)
        srv.close()


def test_sender_rejected_stops_reconnecting():
    srv = FakeServer(reject="wrong secret")
    s = make_sender(srv.port)
    try:
        s.start()
        wait_until(lambda: s.rejected == "wrong secret", 5, what="rejected")
        assert not s.go.is_set()
    finally:
        s.close(0)
        srv.close()


def test_sender_hmac_secret_round_trip():
    srv = FakeServer(secret="s3cret")
    s = make_sender(srv.port, secret="s3cret")
    try:
        s.start()
        assert s.go.wait(5)
        assert srv.errors == []
    finally:
        s.close(2)
        srv.close()


PERF = dict(t_start=1.0, t_end=2.0, bytes=1, chunks=1, io_s=0.1, lat_min_s=0.1,
            lat_max_s=0.1, lat_hist=[[1, 1]], sync_mode=P.SYNC_DIRECT, file_index=0)


class ListLog(object):
    """A stand-in logger that keeps (level, text)."""

    def __init__(self):
        self.lines = []

    def __getattr__(self, level):
        return lambda fmt, *args: self.lines.append((level, fmt % args))


def test_sender_overflow_during_outage_then_delivers_survivors_in_order():
    """No server at first (nothing listens on the port): the buffer overflows,
    the oldest perf samples go first, never rollover/error/stop; when a server
    appears on that port every kept message arrives once, in seq order."""
    port = free_port()
    log = ListLog()
    s = make_sender(port, buffer_max=8, log=log)
    srv = None
    try:
        s.start()
        sent = []                                        # (seq, type) as sent
        for i in range(12):
            s.send(P.PERF, **PERF)
            if i % 4 == 3:
                s.send(P.ROLLOVER, file_index=i, file_bytes=1, close_s=0.1)
        s.send(P.HEARTBEAT, writer_pid=2, writer_alive=True, bytes_written=1,
               chunks_written=1, progress_age_s=0.0)
        s.send(P.ERROR, source="writer", reason="late", errno=None, fatal=True)
        # as the supervisor does: make room first, so the summary counts every drop
        s.send(P.STOP, reason=P.STOP_DURATION, bytes_written=1, chunks_written=1,
               rollovers=3, elapsed_s=1.0, io_s=0.5, dropped_messages=s.make_room(1))
        sent = [(seq, t) for seq, t, _ in s.buffer]
        assert len(sent) == 8 and s.dropped == 19 - 8
        # kept: hello, every rollover, error, stop, and the newest perf (seq 15)
        # and heartbeat: all 12 perf samples but the newest went before it
        assert sent == [(1, P.HELLO), (6, P.ROLLOVER), (11, P.ROLLOVER), (15, P.PERF),
                        (16, P.ROLLOVER), (17, P.HEARTBEAT), (18, P.ERROR), (19, P.STOP)]
        warnings = [t for lvl, t in log.lines if lvl == "warning"]
        assert "dropped perf seq 2, 1 dropped so far" in warnings[0]
        wait_until(lambda: s.last_error, 5, what="a refused connect attempt")
        assert s.connects == 0  # really nothing to connect to
        srv = FakeServer(port=port)
        wait_until(lambda: s.pending() == 0, 10, what="delivery after the outage")
        got = [(m.seq, m.type) for m in srv.messages]
        assert got == sent  # each kept message once, in order, nothing else
        assert srv.of_type(P.STOP)[0].dropped_messages == 11
    finally:
        s.close(0)
        if srv is not None:
            srv.close()


def test_sender_never_drops_what_must_arrive_even_over_the_limit():
    port = free_port()
    s = make_sender(port, buffer_max=3)
    try:
        for i in range(5):
            s.send(P.ROLLOVER, file_index=i, file_bytes=1, close_s=0.1)
        assert s.dropped == 0 and s.pending() == 6  # over the limit, all kept
        s.send(P.PERF, **PERF)                      # the only droppable one goes
        assert s.dropped == 1 and s.pending() == 6
    finally:
        s.close(0)


def test_sender_backoff_is_capped_and_keeps_trying(monkeypatch):
    """With nothing listening the I/O thread retries at growing, capped waits
    and never gives up; a server appearing later gets the hello."""
    monkeypatch.setattr(sender_mod, "BACKOFF_FIRST_S", 0.01)
    monkeypatch.setattr(sender_mod, "BACKOFF_MAX_S", 0.05)
    port = free_port()
    attempts = []
    s = make_sender(port)
    real = s._connect

    def counting():
        attempts.append(time.time())
        return real()
    s._connect = counting
    srv = None
    try:
        s.start()
        wait_until(lambda: len(attempts) >= 12, 10, what="a dozen connect attempts")
        gaps = [b - a for a, b in zip(attempts, attempts[1:])]
        assert max(gaps[6:]) < 1.0  # capped (0.05 s + connect time), not growing
        srv = FakeServer(port=port)
        assert s.go.wait(10)
        assert srv.of_type(P.HELLO)
    finally:
        s.close(0)
        if srv is not None:
            srv.close()


def test_sender_backs_off_from_a_server_that_accepts_and_closes(monkeypatch):
    """A listener that accepts and closes at once (a broken or overloaded
    server) is not hammered: the backoff only resets when the server speaks,
    and the link never counts as up. (SILENT_CLOSES_MAX is raised here: by
    default such a peer is refused as not diskbench, test_trust_client.)"""
    monkeypatch.setattr(sender_mod, "SILENT_CLOSES_MAX", 100)
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    accepted = []

    def slam():
        while True:
            try:
                conn, _ = lsock.accept()
            except (OSError, socket.error):
                return
            accepted.append(time.time())
            conn.close()
    t = threading.Thread(target=slam)
    t.daemon = True
    t.start()
    s = make_sender(lsock.getsockname()[1])
    try:
        t0 = time.time()
        s.start()
        wait_until(lambda: len(accepted) >= 5, 10, what="5 connections")
        assert s.disconnected_for() >= time.time() - t0 - 0.01  # never counted as up
        # 0.1 + 0.2 + 0.4 + 0.8 s (less up to 25% jitter) between the first five
        assert accepted[4] - accepted[0] >= 0.75 * 1.5
    finally:
        s.close(0)
        lsock.close()


def test_sender_close_does_not_wait_for_the_bye_ack():
    """A server that has the stop summary may exit before acking the bye: the
    results are delivered, so closing neither waits long nor fails."""
    srv = FakeServer(no_ack=(P.BYE,))
    s = make_sender(srv.port)
    try:
        s.start()
        assert s.go.wait(5)
        s.send(P.STOP, reason=P.STOP_DURATION, bytes_written=1, chunks_written=1,
               rollovers=3, elapsed_s=1.0, io_s=0.5, dropped_messages=0)
        s.send(P.BYE)
        wait_until(lambda: srv.of_type(P.BYE), 5, what="bye received")
        t0 = time.time()
        assert s.close(10)
        assert time.time() - t0 < 1.0
        assert s.unacked_lines() and s.pending() == 1  # the bye, never acked
    finally:
        s.close(0)
        srv.close()


class _Phase(object):
    """An rng whose ``random`` gives ``value``: a known phase, so known offsets."""

    def __init__(self, value):
        self.value = value

    def random(self):
        return self.value


HEARTBEAT = dict(writer_pid=2, writer_alive=True, bytes_written=1, chunks_written=1,
                 progress_age_s=0.0)


def test_sender_paced_reports_leave_their_offset_late_never_sooner():
    srv = FakeServer()
    s = make_sender(srv.port)
    try:
        s.start()
        assert s.go.wait(5)
        assert s.pace(5.0, rng=_Phase(0.4)) == (0.4, 0.4)   # window: at most 1 s
        sent = time.time()
        s.send(P.HEARTBEAT, **HEARTBEAT)
        wait_until(lambda: srv.of_type(P.HEARTBEAT), 10, what="the held heartbeat")
        assert time.time() - sent >= 0.4 - 0.01   # not before its offset
        wait_until(lambda: s.pending() == 0, 10, what="its ack")
    finally:
        s.close(2)
        srv.close()


def test_sender_unpaced_message_takes_what_was_held_with_it_in_order(monkeypatch):
    """A held report never delays a stop or an error (or anything not paced),
    and never overtakes it: both go at once, in seq order."""
    monkeypatch.setattr(sender_mod, "SEND_OFFSET_MAX_S", 60.0)
    srv = FakeServer()
    s = make_sender(srv.port)
    try:
        s.start()
        assert s.go.wait(5)
        s.pace(60.0, rng=_Phase(59.0 / 60))      # held for 59 s unless flushed
        s.send(P.HEARTBEAT, **HEARTBEAT)           # seq 2: held
        s.send(P.NOTE, text="not paced")           # seq 3: goes now, with seq 2
        wait_until(lambda: srv.of_type(P.NOTE), 10, what="the note, long before 59 s")
        assert [(m.seq, m.type) for m in srv.messages] == [
            (1, P.HELLO), (2, P.HEARTBEAT), (3, P.NOTE)]
    finally:
        s.close(2)
        srv.close()


def test_sender_end_leaves_its_end_offset_late_after_the_reports_before_it():
    """The go's end spread holds a stop and bye longer than the reports (the
    same phase over the longer window), never sooner, and in seq order."""
    srv = FakeServer()
    s = make_sender(srv.port)
    try:
        s.start()
        assert s.go.wait(5)
        assert s.pace(1.0, end_spread_s=3.0, rng=_Phase(0.5)) == (0.5, 1.5)
        made = time.time()
        s.send(P.HEARTBEAT, **HEARTBEAT)
        s.send(P.STOP, reason=P.STOP_DURATION, bytes_written=1, chunks_written=1,
               rollovers=0, elapsed_s=1.0, io_s=0.5, dropped_messages=0)
        s.send(P.BYE)
        wait_until(lambda: srv.of_type(P.HEARTBEAT), 10, what="the held heartbeat")
        beat = time.time() - made
        wait_until(lambda: srv.of_type(P.BYE), 10, what="the held stop and bye")
        assert 0.5 - 0.01 <= beat < 1.5           # its send offset, not the end's
        assert time.time() - made >= 1.5 - 0.01   # the end offset: never sooner
        assert [m.type for m in srv.messages] == [P.HELLO, P.HEARTBEAT, P.STOP, P.BYE]
    finally:
        s.close(2)
        srv.close()


def test_offsets_share_one_phase_and_the_end_spread_only_widens_the_end():
    assert sender_mod.offsets(0.25, 1.0) == (0.25, 0.25)
    assert sender_mod.offsets(0.25, 10.0) == (0.25, 0.25)   # SEND_OFFSET_MAX_S
    assert sender_mod.offsets(0.25, 0.5, 0.2) == (0.125, 0.125)   # never narrower
    assert sender_mod.offsets(0.5, 1.0, 4.0) == (0.5, 2.0)


def test_paced_types_are_the_periodic_reports_and_first_waits_spread():
    assert set(P.paced_types(P.PACED_REPORT)) == set([
        P.START, P.PERF, P.HEARTBEAT, P.STATS, P.ROLLOVER])
    assert set(P.paced_types(P.PACED_END)) == set([P.STOP, P.BYE])
    from diskbench.client.child import first_wait
    import random
    rng = random.Random(7)
    waits = [first_wait(10.0, 0.5, rng) for _ in range(200)]
    assert all(5.0 <= w < 10.0 for w in waits)
    assert max(waits) - min(waits) > 4.0             # spread over the allowed range
    assert all(0.0 <= first_wait(5.0, rng=rng) < 5.0 for _ in range(50))
