"""The I/O threads' own rules (diskbench/server/ioloop.py): a peer that does
not read stalls nobody else, back-pressure stops reading rather than
buffering, descriptors beyond 1023 are served, and an unexpected error in an
I/O thread fails that connection's client, is logged, and the loop goes on.

Real server processes over real TCP; faults are injected into the server
process itself (code run before its main)."""
import os
import socket
import threading
import time

import pytest

from diskbench import protocol
from diskbench.pollio import Poller
from diskbench.server import handler as handler_mod
from tests.helpers import PatchedServer, wait_until
from tests.test_server_fakes import FakeClient, ServerProc, hello_fields

FAST = ["--idle-timeout", "0.3", "--shutdown-grace", "0.5", "--quiet"]
#: How late an ack may be for a connection beside a peer that does not read:
#: the recorder gives such a peer handler.RECORDER_SEND_STALL_S (50 ms) once,
#: never the whole SEND_STALL_S; the rest is a loaded test machine's slack.
ACK_BOUND_S = handler_mod.SEND_STALL_S

#: A send buffer that stays full this long: the server has stopped reading.
STUCK_S = 3.0


def _logs(tmpdir):
    return str(tmpdir.join("logs"))


def _heartbeat(client):
    return client.send(protocol.HEARTBEAT, writer_pid=os.getpid(), writer_alive=True,
                       bytes_written=0, chunks_written=0, progress_age_s=0.1)


def _finish(clients):
    for client in clients:
        stop = client.stop()
        client.send(protocol.BYE)
        client.wait_acked(stop.seq + 1)
        client.close()


_SMALL_SNDBUF = """
import socket
from diskbench.server import handler as _h
_setup = _h.Handler.setup
def setup(self):   # a few acks fill the buffer: no megabytes of them to wait for
    self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    _setup(self)
_h.Handler.setup = setup
"""


def test_loop_peer_not_reading_does_not_stall_the_others(procs, tmpdir):
    """A peer that never reads its acks (small socket buffers at both ends,
    a heartbeat acked per round) is closed by the send-stall rule; meanwhile another client's
    every message is acknowledged within ACK_BOUND_S, and it finishes."""
    server = ServerProc(PatchedServer(procs, _SMALL_SNDBUF), _logs(tmpdir),
                        ["--clients", "2"] + FAST)
    ok = FakeClient(server.port, "ok")
    deaf = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)   # before connect
    deaf.connect(("127.0.0.1", server.port))
    seq = [0]

    def line(type_, **fields):
        seq[0] += 1
        return protocol.encode(protocol.make(type_, protocol.C2S, name="deaf",
                                             seq=seq[0], **fields))
    deaf.sendall(line(protocol.HELLO, **hello_fields(pid=os.getpid() + 1)))
    ok.begin()
    deaf.settimeout(ACK_BOUND_S)
    closed = False
    deadline = time.time() + 120
    while not closed and time.time() < deadline:
        try:   # a heartbeat per round, each acked in a batch of its own, none read
            deaf.sendall(line(protocol.HEARTBEAT, writer_pid=1, writer_alive=True,
                              bytes_written=0, chunks_written=0, progress_age_s=0.1))
        except (socket.error, OSError):
            closed = True
        sent = time.time()
        ok.wait_acked(_heartbeat(ok).seq, timeout=ACK_BOUND_S)
        assert time.time() - sent < ACK_BOUND_S
    assert closed, "the server never closed a peer that does not read"
    wait_until(lambda: "send failed" in server.server_log(), timeout=10,
               what="the deaf peer's closing in server.log")
    deaf.close()
    _finish([ok])
    server.wait_exit(30)
    assert [c["state"] for c in server.report()["clients"]
            if c["client"] == "ok"] == ["finished"]


_SLOW_RECORDER = """
import os, threading
from diskbench.server import recorder as _rec
_rec.QUEUE_MAX = 50
_rec.BATCH_MAX = 10
_gate = threading.Event()
_write = _rec.Recorder._write_batch
def _write_batch(self, batch):
    if not _gate.is_set():    # held until the test creates the gate file
        while not os.path.exists(%r):
            _gate.wait(0.05)
        _gate.set()
    return _write(self, batch)
_rec.Recorder._write_batch = _write_batch
"""


def test_loop_back_pressure_stops_reading_rather_than_buffering(procs, tmpdir):
    """While the recorder's queue is full (recorder.QUEUE_MAX, patched down)
    the I/O thread takes the connection out of its poller ("stopped reading"
    in server.log) instead of reading and buffering its lines: the peer's
    sends then block; once the recorder writes again every message is
    recorded once and acknowledged."""
    gate = str(tmpdir.join("gate"))
    server = ServerProc(PatchedServer(procs, _SLOW_RECORDER % gate), _logs(tmpdir),
                        ["--clients", "1"] + FAST)
    client = FakeClient(server.port, "flood")
    # its reader thread must outwait the gated recorder (connect's timeout ended it)
    client.sock.settimeout(None)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    # not went away while unread: 3 heartbeats take longer than the test's waits
    client.hello(heartbeat_interval_s=10 * STUCK_S)
    # A thread floods with blocking sends (the fake client's reader thread shares
    # the socket: on 2.7 a non-blocking socket ended that reader). The server has
    # stopped reading once no message has gone out for STUCK_S.
    stop, sent = threading.Event(), []

    def flood():
        while not stop.is_set():
            msg = client.build(protocol.HEARTBEAT, writer_pid=os.getpid(),
                               writer_alive=True, bytes_written=0, chunks_written=0,
                               progress_age_s=0.1)
            client.sock.sendall(protocol.encode(msg))
            sent.append(msg)

    flooder = threading.Thread(target=flood)
    flooder.daemon = True
    flooder.start()
    count, since = -1, time.time()
    deadline = since + 60
    while time.time() < deadline:   # until the server reads no more
        if len(sent) != count:
            count, since = len(sent), time.time()
        elif time.time() - since >= STUCK_S:
            break
        stop.wait(0.05)
    else:
        pytest.fail("the server went on reading a connection whose records cannot "
                    "be queued")
    stop.set()
    with open(gate, "w"):
        pass
    flooder.join(60)
    assert not flooder.is_alive(), "the server never read the rest once it could queue"
    last = sent[-1]
    client.wait_acked(last.seq, timeout=60)
    client.wait_for(protocol.GO)
    _finish([client])
    assert server.wait_exit(30) == 0, server.stderr()
    seqs = sorted(m.seq for m, _ts in server.records() if m.name == "flood")
    assert seqs == list(range(1, last.seq + 3)), seqs[-5:]   # each once, stop and bye
    assert "stopped reading" in server.server_log()


_HIGH_FDS = """
import os, resource
from diskbench.server import master as _m
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(_hard, 8192), _hard))
_bind = _m.Master.bind
_pad = []
def bind(self):     # (the listening socket itself stays low, as in any server)
    address = _bind(self)
    _pad.extend(os.open(os.devnull, os.O_RDONLY) for _ in range(%d))
    return address
_m.Master.bind = bind
"""
#: Descriptors the server opens once it listens: every socket it then
#: accepts is numbered above select's FD_SETSIZE (1024).
PAD_FDS = 1100


def _socket_fds(pid):
    fds = []
    for entry in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, entry)).startswith("socket:"):
                fds.append(int(entry))
        except OSError:
            pass
    return fds


def test_loop_serves_descriptors_beyond_1023(procs, tmpdir):
    """Connections whose descriptors are above 1023 (the server holds
    PAD_FDS others) are served by the I/O threads like any: every message
    recorded and acknowledged, every client finished."""
    server = ServerProc(PatchedServer(procs, _HIGH_FDS % PAD_FDS), _logs(tmpdir),
                        ["--clients", "3"] + FAST)
    clients = [FakeClient(server.port, "high%d" % i) for i in range(3)]
    for client in clients:
        client.hello()
    for client in clients:
        client.wait_for(protocol.GO)
        client.start()
    assert len([fd for fd in _socket_fds(server.proc.pid) if fd >= 1024]) >= 4
    for client in clients:
        client.wait_acked(_heartbeat(client).seq)
    _finish(clients)
    assert server.wait_exit(30) == 0, server.stderr()
    assert [c["state"] for c in server.report()["clients"]] == ["finished"] * 3


@pytest.mark.parametrize("use_epoll", [True, False], ids=["epoll", "poll"])
def test_poller_reports_descriptors_beyond_1023(use_epoll):
    """pollio.Poller (epoll, and poll as the fallback) reports readiness of
    descriptors numbered above 1023, and a modify without READ silences one."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < PAD_FDS + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    pad = [os.open(os.devnull, os.O_RDONLY) for _ in range(PAD_FDS)]
    pairs = [socket.socketpair() for _ in range(3)]
    poller = Poller(use_epoll)
    try:
        assert poller.kind == ("epoll" if use_epoll else "poll")
        for a, _b in pairs:
            assert a.fileno() >= 1024
            poller.register(a.fileno())
        assert poller.poll(0) == []
        pairs[1][1].sendall(b"x")
        pairs[2][1].sendall(b"y")
        ready = dict(poller.poll(5.0))
        assert sorted(ready) == sorted([pairs[1][0].fileno(), pairs[2][0].fileno()])
        assert all(ev & poller.READ for ev in ready.values())
        poller.modify(pairs[2][0].fileno(), False)
        assert [fd for fd, _ in poller.poll(0)] == [pairs[1][0].fileno()]
    finally:
        poller.close()
        for a, b in pairs:
            a.close()
            b.close()
        for fd in pad:
            os.close(fd)


_BOOM = """
from diskbench.server import handler as _h
_received = _h.Handler.received
def received(self, data):
    if self.name == "boom" and _h.in_io_thread():
        raise ZeroDivisionError("injected")
    return _received(self, data)
_h.Handler.received = received
"""


def test_loop_error_fails_that_client_and_the_loop_goes_on(procs, tmpdir):
    """An unexpected error serving one connection in an I/O thread is in
    server.log with its traceback; that connection's client is refused and
    failed, and the loop goes on: the other client, served by the same
    thread, finishes."""
    server = ServerProc(PatchedServer(procs, _BOOM), _logs(tmpdir),
                        ["--clients", "2"] + FAST)
    ok, boom = FakeClient(server.port, "ok"), FakeClient(server.port, "boom")
    ok.hello()
    boom.hello()
    ok.wait_for(protocol.GO)
    ok.start()
    _heartbeat(boom)                       # raises in the I/O thread
    refused = boom.wait_for(protocol.REJECTED)
    assert "internal error" in refused.reason
    wait_until(lambda: boom.closed_by_server, what="boom's connection closed")
    ok.wait_acked(_heartbeat(ok).seq)
    _finish([ok])
    server.wait_exit(30)
    log_text = server.server_log()
    assert "internal error serving connection" in log_text
    assert "ZeroDivisionError: injected" in log_text
    states = dict((c["client"], (c["state"], c.get("state_why") or ""))
                  for c in server.report()["clients"])
    assert states["ok"][0] == "finished"
    assert states["boom"][0] == "failed" and "serving its connection" in states["boom"][1]
