# -*- coding: utf-8 -*-
"""Fuzz the live server with well-formed but lying messages (issue 11).

Every line has a valid envelope from a client that said a proper hello (so it
is taken as bound), but its field values sit at and beyond their bounds (ints
at MAX_INT, 0, -1; floats 1e308, 5e-324; a perf interval ending before it
starts or too short for its bytes; histogram indexes at and beyond
metrics.LatencyHistogram.MAX_BUCKET) and every text field carries hostile
Unicode (lone surrogates, U+2028, NEL, CSI, RLO, NUL, very long strings).
Over 100k lines on several connections into a real server, then SIGTERM: the
server exits with its documented code, every line was either recorded or
refused (none lost), report.json is strict JSON, and server.log, report.txt
and the console hold only well-formed lines. Seeded; the same on 2.7 and 3.
"""
from __future__ import print_function

import json
import os
import random
import signal
import threading
import time

from diskbench import exitcodes, metrics
from diskbench import protocol as P
from tests.faults.test_report_total import strict_json
from tests.faults.test_text_survival import (CONSOLE_LINE, LOG_LINE, REPORT_LINE,
                                             assert_no_forged_line, raw_line)
from tests.test_protocol import SAMPLE
from tests.test_server_fakes import FakeClient, ServerProc, hello_fields

#: Lying lines per run (all connections together), and how they are spread.
MESSAGES = 100000
CONNECTIONS = 4
#: Lines per sendall: pipelined, the server reads them as fast as it can.
BATCH = 400
SEED = 20261130
#: Deadline for the server to take in every line (generous: 2 cores, shared).
DELIVER_TIMEOUT_S = 240

TOP = metrics.LatencyHistogram.MAX_BUCKET
HOSTILE_TEXT = [u"\ud800", u"\udce9", u"caf\udce9", u"a\u2028FORGED", u"\u2029FORGED",
                u"\x85FORGED", u"\x9b[2JFORGED", u"\u202eFORGED", u"\u2066\u2069",
                u"\u200f\u061c", u"\x00FORGED", u"\nFORGED", u"\r", u"\x1b[31m",
                u"\U0001F4BE ok", u"\ufeff", u"plain"]
HOSTILE_HIST = [[[TOP, 1]], [[TOP + 1, 1]], [[100000, 1]], [[10 ** 9, 1]], [[-1, 1]],
                [[0, P.MAX_INT]], [[0, P.MAX_INT + 1]], [],
                [[i, 1] for i in range(P.MAX_HIST_BUCKETS)],
                [[i, 1] for i in range(P.MAX_HIST_BUCKETS + 1)], [[TOP, 1, 1]]]


def _values(field, rng):
    """At-bound and beyond-bound values for one field spec."""
    if isinstance(field, P.Optional):
        return [None] + _values(field.inner, rng)
    if isinstance(field, P.Int):
        return [field.lo, field.hi, field.lo - 1, field.hi + 1, 0, -1, 1, P.MAX_INT,
                P.MAX_INT + 1, 2 ** 63, 2 ** 64 + 1]
    if isinstance(field, P.Num):
        return [field.lo, field.hi, field.hi * (1 + 1e-12), field.lo - 1e-9, 1e308,
                -1e308, 5e-324, -5e-324, 0.0, 1e-300, 1.7976931348623157e308,
                rng.uniform(field.lo, min(field.hi, 1e6))]
    if isinstance(field, P.Bool):
        return [True, False, 0, 1, None]
    if isinstance(field, P.Hist):
        return HOSTILE_HIST
    if field.choices:
        return list(field.choices) + [u"bogus", u"", field.choices[0] + u"\u2028"]
    return HOSTILE_TEXT + [u"x" * field.max_len, u"x" * (field.max_len + 1),
                           u"\u2028" * field.max_len, u"\udce9" * field.max_len,
                           u"".join(rng.choice(HOSTILE_TEXT) for _ in range(8))]


def _inconsistent_perf(rng, data):
    t = data["t_start"]
    pick = rng.randint(0, 5)
    if pick == 0:
        data["t_end"] = t - rng.choice([1e-6, 1.0, 1e9])
    elif pick == 1:
        data["t_end"] = t
    elif pick == 2:
        data.update(t_end=t + 1e-6, bytes=rng.choice([P.MAX_INT, 1 << 40]))
    elif pick == 3:
        data["io_s"] = rng.choice([2.0, 1e9])
    elif pick == 4:
        data.update(lat_min_s=0.5, lat_max_s=0.1)
    else:
        data["lat_hist"] = [[TOP, data["chunks"] + 1]]


TYPES = sorted(set(P.SPECS[P.C2S]) - set([P.HELLO]))


def lying_lines(rng, name, first_seq, count):
    """``count`` wire lines for client ``name``, seq first_seq, first_seq + 1, ..."""
    out = []
    for seq in range(first_seq, first_seq + count):
        type_ = rng.choice(TYPES)
        spec = P.SPECS[P.C2S][type_]
        data = dict(SAMPLE[P.C2S][type_])
        if spec and rng.random() < 0.85:
            for key in rng.sample(sorted(spec), rng.randint(1, min(3, len(spec)))):
                data[key] = rng.choice(_values(spec[key], rng))
        if type_ == P.PERF and rng.random() < 0.3:
            _inconsistent_perf(rng, data)
        envelope_name = name
        ts = 1763870000.0
        lie = rng.random()
        if lie < 0.03:
            envelope_name = name + rng.choice([u"\u2028", u"\udce9", u"\x85", u"\u202e"])
        elif lie < 0.06:
            ts = rng.choice([0, 1e11, 1e11 + 1, -1, 5e-324, 1e308])
        obj = P.Message(P.C2S, type_, data, name=envelope_name, seq=seq, ts=ts).to_obj()
        out.append(json.dumps(obj, ensure_ascii=True).encode("ascii") + b"\n")
    return out


def _hostile_hello(name):
    text = dict((k, rng_text) for k, rng_text in (
        ("hostname", u"h\u2028FORGED\udce9"), ("directory", u"/mnt/caf\udce9\x85FORGED"),
        ("platform", u"\u202eLinux\x9b[2J"), ("python_version", u"3\u2029FORGED"),
        ("fs_type", u"ext4\u2066"), ("client_version", u"0.1\u200f")))
    return raw_line(name, 1, P.HELLO, **hello_fields(**text))


def test_fuzz_lying_messages_through_the_live_server(procs, tmpdir):
    """>= 100k well-formed lying lines on several bound connections: zero
    unhandled exceptions, every line recorded or refused, the server exits 6
    on SIGTERM with a strict-JSON report and no forged line anywhere."""
    rng = random.Random(SEED)
    server = ServerProc(procs, str(tmpdir.join("logs")), [
        "--heartbeat-timeout", "600", "--read-timeout", "600",
        "--max-clients", "50", "--shutdown-grace", "0.5"])
    keeper = FakeClient(server.port, "keeper")   # live all along: the run never completes
    keeper.sock.settimeout(None)
    keeper.hello()
    keeper.wait_for(P.GO)
    keeper.start()
    keeper.wait_acked(keeper.seq)
    per_conn = MESSAGES // CONNECTIONS
    plans = []
    started = time.time()
    for i in range(CONNECTIONS):
        name = "liar-%d" % i
        lines = [_hostile_hello(name)] + lying_lines(rng, name, 2, per_conn)
        last = per_conn + 2
        lines.append(raw_line(name, last, P.NOTE, text=u"the end"))
        plans.append((name, lines, last))
    generated = time.time() - started
    conns = [FakeClient(server.port, name) for name, _, _ in plans]
    for c in conns:
        c.sock.settimeout(None)
    errors = []

    def pump(conn, lines):
        try:
            for at in range(0, len(lines), BATCH):
                conn.raw(b"".join(lines[at:at + BATCH]))
        except Exception as exc:  # noqa: B902 - reported below
            errors.append(exc)

    started = time.time()
    threads = [threading.Thread(target=pump, args=(c, plan[1]))
               for c, plan in zip(conns, plans)]
    for t in threads:
        t.daemon = True
        t.start()
    for t in threads:
        t.join(DELIVER_TIMEOUT_S)
    assert not errors, errors
    for c, (_, _, last) in zip(conns, plans):
        c.wait_acked(last, timeout=DELIVER_TIMEOUT_S)   # every line taken in
    took = time.time() - started
    sent = sum(len(lines) for _, lines, _ in plans)
    os.kill(server.proc.pid, signal.SIGTERM)
    code = server.wait_exit(60)
    assert code == exitcodes.SERVER_INTERRUPTED, server.stderr()
    for text in (server.stderr(), server.server_log()):
        assert "Traceback" not in text and "internal error" not in text
        assert "Logging error" not in text
    with open(os.path.join(server.log_dir, "report.json")) as f:
        rep = strict_json(f.read())
    recorded = sum(1 for msg, _ in server.records() if msg.name.startswith("liar-"))
    print("lying fuzz: %d lines (%d connections) into the live server in %.1f s "
          "(+%.1f s to generate): %d recorded, %d refused %s" % (
              sent, CONNECTIONS, took, generated, recorded, rep["rejected_count"],
              sorted(rep["rejected_messages"].items())))
    assert sent >= MESSAGES
    assert recorded + rep["rejected_count"] == sent      # none lost, none twice
    assert recorded > sent // 10 and rep["rejected_count"] > sent // 3
    assert sorted(e["client"] for e in rep["clients"]) == ["keeper"] + [
        name for name, _, _ in plans]
    assert_no_forged_line(server.server_log(), LOG_LINE, "server.log")
    with open(os.path.join(server.log_dir, "report.txt"), "rb") as f:
        report_text = f.read().decode("utf-8")
    assert "could not be rendered" not in report_text
    assert_no_forged_line(report_text, REPORT_LINE, "report.txt")
    assert_no_forged_line(server.stdout(), CONSOLE_LINE, "the console")
