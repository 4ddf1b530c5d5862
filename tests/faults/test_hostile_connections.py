"""Hostile connections against the real server: slowloris and 1000 garbage
connections while three real clients run, and each connection/input limit."""
from __future__ import print_function

import random
import socket
import threading
import time

from diskbench import exitcodes
from diskbench import protocol as P
from diskbench.server import registry as reg
from tests.faults.test_server_restart import (SERVER_FAST, assert_every_seq_once,
                                              real_client)
from tests.helpers import communicate, connect, wait_until
from tests.test_server_fakes import FakeClient, ServerProc

GARBAGE_CONNECTIONS = 1000
SLOWLORIS = 20


def _garbage(rng, i):
    kind = i % 5
    if kind == 0:
        return bytes(bytearray(rng.randrange(256) for _ in range(rng.randint(1, 200))))
    if kind == 1:
        return b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    if kind == 2:
        return (b'{"v":%d,"type":"hello","name":"x","seq":1,"ts":1,"data":{}}\n'
                % P.PROTOCOL_VERSION)
    if kind == 3:
        return b"[" * rng.randint(1, 3000) + b"\n"
    return b'{"v":99}\n'


def test_slowloris_and_1000_garbage_connections_do_not_cost_real_clients_a_sample(
        procs, tmpdir):
    logs = str(tmpdir.join("server-logs"))
    server = ServerProc(procs, logs, ["--clients", "3", "--hello-timeout", "1.5"] +
                       SERVER_FAST)
    names = ["g1", "g2", "g3"]
    clients = dict((n, real_client(procs, tmpdir, server.port, n)) for n in names)
    # slowloris: half stall after a few bytes, half trickle a byte every 0.2 s
    stop = threading.Event()
    lorises = [connect(server.port) for _ in range(SLOWLORIS)]
    for sock in lorises:
        sock.sendall(b'{"v":1,"ty')

    def trickle(socks):
        while not stop.is_set():
            for sock in socks:
                try:
                    sock.sendall(b" ")
                except (socket.error, OSError):
                    pass
            stop.wait(0.2)
    t = threading.Thread(target=trickle, args=(lorises[::2],))
    t.daemon = True
    t.start()
    rng = random.Random(7)
    refused_by_us = 0
    for i in range(GARBAGE_CONNECTIONS):
        try:
            sock = connect(server.port)
            sock.sendall(_garbage(rng, i))
            sock.close()
        except (socket.error, OSError):
            refused_by_us += 1   # reset by the server (a limit): still counted there
    for name, proc in clients.items():
        out, err = communicate(proc, 90)
        assert proc.returncode == 0, (name, err[-2000:])
    assert server.wait_exit(30) == exitcodes.OK, server.stderr()
    stop.set()
    for sock in lorises:
        sock.close()
    # the slowloris connections were all cut at the hello deadline
    rep = server.report()
    rejected = rep["rejected_messages"]
    assert rejected.get("hello-timeout", 0) >= SLOWLORIS, rejected
    assert rep["rejected_count"] >= GARBAGE_CONNECTIONS, rejected
    for kind in ("not-json", "bad-version", "missing-field"):
        assert rejected.get(kind, 0) > 0, (kind, rejected)
    # every connection was served (counted), refused by a connection limit
    # (counted by kind; a burst of 1000 from one address can hit
    # --max-per-address), or failed on our side (timeout or reset)
    limited = (rejected.get(reg.REJECT_TOO_MANY_CONNECTIONS, 0) +
               rejected.get(reg.REJECT_TOO_MANY_FROM_ADDRESS, 0))
    assert rep["run"]["connection_count"] + limited + refused_by_us >= \
        GARBAGE_CONNECTIONS + SLOWLORIS, (rep["run"]["connection_count"], limited,
                                          refused_by_us)
    per = assert_every_seq_once(server.records(), names)
    by_name = dict((c["client"], c) for c in rep["clients"])
    for name in names:
        perfs = [m for m in per[name] if m.type == P.PERF]
        stop_msg = [m for m in per[name] if m.type == P.STOP][0]
        assert by_name[name]["state"] == "finished"
        assert by_name[name]["perf_interval_count"] == len(perfs) > 0
        assert sum(m.bytes for m in perfs) == stop_msg.bytes_written
        assert stop_msg.dropped_messages == 0
    assert sorted(by_name) == names              # no garbage became a client
    log = server.server_log()
    assert "no hello within --hello-timeout 1.5 s" in log
    assert "Traceback" not in log + server.stderr()
    print("hostile: %d garbage connections, %d slowloris, rejected %s" % (
        GARBAGE_CONNECTIONS, SLOWLORIS, sorted(rejected.items())))


def _idle_server(procs, tmpdir, *flags):
    return ServerProc(procs, str(tmpdir.join("logs")), ["--quiet"] + list(flags))


def _closed(sock):
    """True once the server closed ``sock`` (recv gives end of stream or an error)."""
    sock.settimeout(0.05)
    try:
        return sock.recv(1) == b""
    except socket.timeout:
        return False
    except (socket.error, OSError):
        return True


def _fill_then_refuse(server, allowed, kind, flag_text):
    held = [connect(server.port) for _ in range(allowed)]
    wait_until(lambda: server.server_log().count(" from 127.0.0.1") >= allowed,
               what="%d connections accepted" % allowed)
    extra = connect(server.port)
    wait_until(lambda: _closed(extra), what="connection %d refused" % (allowed + 1))
    wait_until(lambda: "(%s)" % kind in server.server_log(), what="the refusal logged")
    assert flag_text in server.server_log()
    for sock in held + [extra]:
        sock.close()
    wait_until(lambda: server.server_log().count("(no hello) closed") >= allowed,
               what="the held connections to close")
    again = FakeClient(server.port, "after")     # room again: a client gets in
    again.hello()
    again.wait_for(P.GO)
    again.close()


def test_max_per_address_refuses_extra_connections_from_one_address(procs, tmpdir):
    server = _idle_server(procs, tmpdir, "--max-per-address", "3")
    _fill_then_refuse(server, 3, "too-many-from-address", "--max-per-address 3")


def test_max_connections_refuses_extra_connections(procs, tmpdir):
    server = _idle_server(procs, tmpdir, "--max-connections", "2")
    _fill_then_refuse(server, 2, "too-many-connections", "--max-connections 2")


def test_max_clients_refuses_a_new_name_with_the_reason(procs, tmpdir):
    server = _idle_server(procs, tmpdir, "--max-clients", "2")
    for name in ("a", "b"):
        c = FakeClient(server.port, name)
        c.hello(pid=100 + ord(name))
        c.wait_for(P.GO)
    third = FakeClient(server.port, "c")
    third.hello()
    refused = third.wait_for(P.REJECTED)
    assert "already has 2 clients" in refused.reason and "--max-clients" in refused.reason
    wait_until(lambda: third.closed_by_server, what="the connection closed")
    wait_until(lambda: "refused hello from 127.0.0.1" in server.server_log(),
               what="the refusal logged")


def test_over_long_line_closes_the_connection(procs, tmpdir):
    server = _idle_server(procs, tmpdir, "--max-line-bytes", "2048")
    sock = connect(server.port)
    sock.sendall(b"x" * 3000 + b"\n")
    wait_until(lambda: _closed(sock), what="the connection closed")
    wait_until(lambda: "(too-long)" in server.server_log(), what="the reason logged")
    assert "line longer than the 2048-byte limit" in server.server_log()


def test_max_line_bytes_cannot_raise_the_protocol_limit(procs, tmpdir):
    code, out, err = procs.run(["-m", "diskbench.server", "--port", "0", "--log-dir",
                                str(tmpdir.join("l")), "--max-line-bytes", "100000"])
    assert code == exitcodes.USAGE and "can only lower" in err


def test_client_silent_after_hello_is_cut_at_the_read_timeout(procs, tmpdir):
    server = _idle_server(procs, tmpdir, "--read-timeout", "1", "--hello-timeout", "5")
    client = FakeClient(server.port, "mute")
    said_hello = time.time()
    client.hello()
    client.wait_for(P.GO)
    wait_until(lambda: client.closed_by_server, timeout=10, what="the server to cut it")
    # by the read timeout (1 s, looked at once a second), not the longer hello one
    assert time.time() - said_hello < 5.0
    wait_until(lambda: "(read-timeout) from 127.0.0.1" in server.server_log(),
               what="the reason logged")


def test_hostile_numbers_are_refused_and_never_recorded(procs, tmpdir):
    import json
    server = _idle_server(procs, tmpdir, "--clients", "1", "--idle-timeout", "0.3")
    client = FakeClient(server.port, "numbers")
    client.hello()
    client.wait_for(P.GO)
    client.start()
    hostile = [("bytes", float("nan")), ("bytes", float("inf")), ("bytes", -1),
               ("bytes", 2 ** 70), ("io_s", float("-inf")), ("t_end", 1e300),
               ("chunks", 1.5), ("lat_hist", [[-1, 5]]), ("lat_hist", [[1, 2 ** 63]])]
    for field, value in hostile:
        obj = json.loads(P.encode(client.build(P.PERF, t_start=1.0, t_end=2.0, bytes=1,
                                               chunks=1, io_s=0.1, lat_min_s=0.1,
                                               lat_max_s=0.1, lat_hist=[[1, 1]],
                                               sync_mode=P.SYNC_DIRECT, file_index=0))
                         .decode("ascii"))
        obj["data"][field] = value
        client.raw(json.dumps(obj).encode("ascii") + b"\n")   # NaN/Infinity as JSON words
    client.stop()
    client.send(P.BYE)
    client.wait_acked(client.seq)
    client.close()
    assert server.wait_exit() == exitcodes.OK, server.stderr()
    rep = server.report()
    assert rep["rejected_count"] == len(hostile), rep["rejected_messages"]
    assert set(rep["rejected_messages"]) <= set(["not-json", "bad-field"])
    assert rep["clients"][0]["perf_interval_count"] == 0
    assert not [m for m, _ in server.records() if m.type == P.PERF]
