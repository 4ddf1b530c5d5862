"""Fuzz the live server's handler: tens of thousands of mutated and random lines
over real sockets into the real server (decode, dispatch, registry, recorder,
report), then a valid client still gets served and reported in full.

Together with test_fuzz_protocol (100k lines through the decoder) this makes
well over 100k fuzzed lines. Seeded, the same on Python 2.7 and 3.
"""
from __future__ import print_function

import json
import random
import socket

from diskbench import exitcodes
from diskbench import protocol as P
from diskbench.compat import as_bytes
from tests.faults.test_fuzz_protocol import _mutate_bytes, _mutate_json, _random_json
from tests.helpers import connect
from tests.test_protocol import SAMPLE
from tests.test_server_fakes import FakeClient, ServerProc, hello_fields, latency_sets

LINES = 50000
SEED = 20261124
FUZZ_NAME = "fuzzed"
#: Lines that close a connection on purpose (wrong version, over-long, a hello
#: the registry refuses) go on connections of their own, at most this many.
FATAL_MAX = 500


def _base_lines(rng):
    lines = []
    for type_, fields in sorted(SAMPLE[P.C2S].items()):
        if type_ == P.HELLO:
            fields = hello_fields(pid=4242)
        msg = P.make(type_, P.C2S, name=FUZZ_NAME, seq=rng.randint(2, 10 ** 6),
                     ts=1763870000.0, **dict(fields))
        lines.append(P.encode(msg))
    return lines


def _fuzz_line(rng, i, base):
    line = rng.choice(base)
    pick = i % 5
    if pick in (0, 1):
        return _mutate_bytes(rng, line)
    if pick == 2:
        return _mutate_json(rng, line)
    if pick == 3:
        return as_bytes(json.dumps(_random_json(rng)))
    return line  # valid, often with an old seq: a duplicate


def _closes_connection(line):
    """Would the server close the connection after this line (on purpose)?"""
    if len(line) + 1 > P.MAX_LINE_BYTES:
        return True
    try:
        msg = P.decode(line)
    except P.ProtocolError as exc:
        return exc.kind == P.ProtocolError.BAD_VERSION
    hello = hello_fields(pid=4242)
    return msg.type == P.HELLO and msg.name == FUZZ_NAME and (
        msg.hostname, msg.pid) != (hello["hostname"], hello["pid"])  # name in use


class _Conn(object):
    """A fuzz connection bound to FUZZ_NAME by a valid hello (same host and pid)."""

    def __init__(self, port, hello_line):
        self.client = FakeClient(port, FUZZ_NAME)
        self.client.sock.settimeout(None)      # its reader may wait long for acks
        self.client.raw(hello_line)

    def send(self, line):
        try:
            self.client.raw(line + b"\n")
            return True
        except (socket.error, OSError):
            return False


def test_fuzzed_lines_through_the_live_server_handler_never_crash_it(procs, tmpdir):
    rng = random.Random(SEED)
    server = ServerProc(procs, str(tmpdir.join("logs")), [
        "--quiet", "--idle-timeout", "0.5", "--heartbeat-timeout", "300",
        "--max-clients", "50", "--shutdown-grace", "0.5",
        "--rejoin-grace", "0.5"])  # the fuzz connection may end without bye: no wait
    checker = FakeClient(server.port, "checker")   # a real run, kept live meanwhile
    checker.sock.settimeout(None)                   # silent while the fuzz runs
    checker.hello()
    checker.wait_for(P.GO)
    checker.start()
    hello_line = P.encode(P.make(P.HELLO, name=FUZZ_NAME, seq=1, **hello_fields(pid=4242)))
    base = _base_lines(rng)
    conn = _Conn(server.port, hello_line)
    sent = fatal = reconnects = 0
    for i in range(LINES):
        line = _fuzz_line(rng, i, base).rstrip(b"\n")
        if any(_closes_connection(piece) for piece in line.split(b"\n")):
            if fatal >= FATAL_MAX:
                continue
            fatal += 1
            one = connect(server.port)
            try:
                one.sendall(line[:P.MAX_LINE_BYTES * 2] + b"\n")
            except (socket.error, OSError):
                pass
            one.close()
            sent += 1
            continue
        if conn.client.closed_by_server or not conn.send(line):
            reconnects += 1
            conn.client.close()
            conn = _Conn(server.port, hello_line)
            conn.send(line)
        sent += 1 + line.count(b"\n")
    conn.client.close()
    # the server still serves a valid client in full
    lats = latency_sets(3, 3, 4)
    total = 0
    for index, lat in enumerate(lats):
        total += checker.perf(index, lat).bytes
    checker.stop(nbytes=total)
    checker.send(P.BYE)
    checker.wait_acked(checker.seq, timeout=60)
    checker.close()
    code = server.wait_exit(60)
    assert code in (exitcodes.OK, exitcodes.SERVER_INCOMPLETE), server.stderr()
    log = server.server_log()
    for text in (log, server.stderr()):
        assert "Traceback" not in text and "internal error" not in text
    rep = server.report()
    c = dict((e["client"], e) for e in rep["clients"])["checker"]
    assert c["state"] == "finished" and c["perf_interval_count"] == len(lats)
    assert c["written_mib"] == total / float(1 << 20)
    print("handler fuzz: %d lines into the live server (%d on connections of their own, "
          "%d reconnects); %d rejected %s" % (
              sent, fatal, reconnects, rep["rejected_count"],
              sorted(rep["rejected_messages"].items())))
    assert sent >= LINES * 0.95
    assert rep["rejected_count"] > LINES // 3
