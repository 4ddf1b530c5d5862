"""Client side of "nothing lost across a server outage": real processes, real TCP.

- The real server is killed with SIGKILL mid-run and a new one is started on
  the same port and --log-dir a few seconds later: the client never stops
  measuring, reconnects, resends, and every seq reaches a server at least once
  (exactly once in the report is the restarted server's resume, tested on the
  server side).
- The server goes away for good: the client finishes its duration, tries for
  --deliver-timeout, then exits CLIENT_SERVER naming how many messages were
  not delivered, and those lines are saved next to its log.
"""
import os
import re
import signal
import time

from diskbench import exitcodes
from diskbench import protocol as P
from tests.helpers import communicate, free_port, read_jsonl, wait_until
from tests.test_client_runs import client_args, client_log, of, records, start_server


def data_indexes(data):
    """File indexes of the data files that exist now."""
    out = []
    for name in os.listdir(data):
        m = re.match(r"diskbench-.*-(\d+)\.dat$", name)
        if m:
            out.append(int(m.group(1)))
    return out


def test_server_killed_and_restarted_midrun_client_loses_nothing(procs, tmpdir):
    slog = str(tmpdir.join("server-logs"))
    data = str(tmpdir.mkdir("data"))
    port = free_port()
    server, _ = start_server(procs, slog, "--clients", "1", "--port", str(port))
    client = procs.start(client_args(tmpdir, port, "survivor", data, duration=9,
                                     extra=["--deliver-timeout", "20"]))
    wait_until(lambda: len(of(records(slog), P.PERF)) >= 2, 20, what="perf recorded")
    start = of(records(slog), P.START)[0]
    top_before = max(data_indexes(data) or [0])
    server.kill()  # SIGKILL: no goodbye, acks stop, socket reset
    server.wait()
    t_down = time.time()
    wait_until(lambda: "connection to server lost" in client_log(tmpdir, "survivor"), 5,
               what="the client to notice the outage")
    # A real outage of a few seconds, during which the writer keeps rolling files.
    wait_until(lambda: max(data_indexes(data) or [0]) >= top_before + 2 and
               time.time() - t_down >= 2.5, 15, what="writer progress during the outage")
    assert client.poll() is None
    t_up = time.time()
    start_server(procs, slog, "--clients", "1", "--port", str(port))
    out, err = communicate(client, 60)
    assert client.returncode == exitcodes.OK, err
    assert "Traceback" not in err
    assert os.listdir(data) == []
    text = client_log(tmpdir, "survivor")
    assert "reconnected to server 127.0.0.1:%d" % port in text
    msgs = [m for m in records(slog) if m.name == "survivor"]
    stop = wait_until(lambda: of(msgs, P.STOP), 1, what="stop recorded")[0]
    assert stop.reason == P.STOP_DURATION and stop.dropped_messages == 0
    # Every seq the client used reached a server at least once: nothing lost.
    seqs = set(m.seq for m in msgs)
    assert seqs == set(range(1, max(seqs) + 1)), sorted(set(range(1, max(seqs) + 1))
                                                        - seqs)
    assert of(msgs, P.BYE)[-1].seq == max(seqs)
    # The measurement went on while no server was there: perf samples taken
    # during the outage were delivered afterwards ...
    during = [m for m in of(msgs, P.PERF) if t_down <= m.t_start <= t_up]
    assert len(during) >= 3, (t_down, t_up, [m.t_start for m in of(msgs, P.PERF)])
    assert all(m.bytes > 0 for m in during)
    # ... and the writer's byte counter kept rising through it (heartbeats).
    beats = sorted((m.ts, m.bytes_written) for m in of(msgs, P.HEARTBEAT)
                   if t_down <= m.ts <= t_up)
    assert len(beats) >= 3 and beats[-1][1] > beats[0][1]
    assert all(b[1] <= c[1] for b, c in zip(beats, beats[1:]))
    assert set(m.writer_pid for m in of(msgs, P.HEARTBEAT)) == set([start.writer_pid])


def test_server_gone_for_good_client_finishes_saves_and_exits_13(procs, tmpdir):
    slog = str(tmpdir.join("server-logs"))
    data = str(tmpdir.mkdir("data"))
    server, port = start_server(procs, slog, "--clients", "1")
    client = procs.start(client_args(tmpdir, port, "alone", data, duration=4,
                                     extra=["--deliver-timeout", "1.5"]))
    wait_until(lambda: of(records(slog), P.PERF), 20, what="perf recorded")
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    t_down = time.time()
    out, err = communicate(client, 60)
    assert client.returncode == exitcodes.CLIENT_SERVER, err
    assert "Traceback" not in err
    assert os.listdir(data) == []
    m = re.search(r"the server did not acknowledge (\d+) messages within 1.5 s after the "
                  r"stop .*they are saved, one JSON message per line, in (\S+?); "
                  r"(the server may still hold|none of them was ever sent)", err,
                  re.M)
    assert m, err
    count, path = int(m.group(1)), m.group(2)
    assert path == str(tmpdir.join("logs", "client-alone.undelivered.jsonl"))
    assert "stop (duration): ran the configured 4 s" in err  # measurement completed
    assert "exit code %d" % exitcodes.CLIENT_SERVER in client_log(tmpdir, "alone")
    saved = [P.decode(P.canonical(obj), P.C2S) for obj in read_jsonl(path)]
    assert len(saved) == count
    # What the server never acknowledged is all there, in seq order: the
    # outage's perf samples, the stop summary and the bye.
    seqs = [s.seq for s in saved]
    assert seqs == sorted(seqs)
    assert [s.type for s in saved[-2:]] == [P.STOP, P.BYE]
    assert saved[-2].reason == P.STOP_DURATION and saved[-2].bytes_written > 0
    assert [s for s in of(saved, P.PERF) if s.t_start >= t_down]
    # Together with what the dead server had recorded, nothing is missing.
    recorded = set(r.seq for r in records(slog) if r.name == "alone")
    assert recorded | set(seqs) >= set(range(1, max(seqs) + 1))


#: How long the frozen server's client tries to deliver after its run.
FROZEN_DELIVER_S = 1.5
UNDELIVERED_RE = re.compile(
    r"the server did not acknowledge (\d+) messages within [\d.]+ s after the stop .*"
    r"they are saved, one JSON message per line, in (\S+?); the server may still hold "
    r"some of the (\d+) of them that were sent but not acknowledged \(seq (\d+) to "
    r"(\d+); (\d+) never sent\).*keep a line only if perf.jsonl has no record of "
    r"client frozen with that seq \(dedup by name and seq\)$", re.M)


def test_server_frozen_past_deliver_timeout_client_says_the_server_may_hold_them(
        procs, tmpdir):
    """A server SIGSTOPped past the client's --deliver-timeout: the client
    exits 13 and saves what was not acknowledged, saying truthfully that the
    server may still hold those it sent (which seqs) and how to merge (by name
    and seq). Resumed, the server does write some of them: exactly those the
    client said were sent, and the merge it describes leaves each seq once."""
    slog = str(tmpdir.join("server-logs"))
    data = str(tmpdir.mkdir("data"))
    server, port = start_server(procs, slog, "--clients", "1", "--heartbeat-timeout", "60")
    client = procs.start(client_args(tmpdir, port, "frozen", data, duration=3, extra=[
        "--deliver-timeout", str(FROZEN_DELIVER_S)]))
    wait_until(lambda: of(records(slog), P.PERF, "frozen"), 20, what="perf recorded")
    os.kill(server.pid, signal.SIGSTOP)
    try:
        out, err = communicate(client, 60)
    finally:
        os.kill(server.pid, signal.SIGCONT)
    assert client.returncode == exitcodes.CLIENT_SERVER, err
    assert "Traceback" not in err
    m = UNDELIVERED_RE.search(err)
    assert m, err
    total, path, nsent, first, last, unsent = (
        int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4)), int(m.group(5)),
        int(m.group(6)))
    assert nsent + unsent == total and nsent > 0
    saved = [P.decode(P.canonical(obj), P.C2S) for obj in read_jsonl(path)]
    assert len(saved) == total
    sent = [s.seq for s in saved if s.seq <= last]
    assert len(sent) == nsent and sent[0] == first
    # the resumed server reads what sat in its socket and records it: those
    # messages are in perf.jsonl and in the undelivered file alike
    communicate(server, 60)
    held = set(r.seq for r in records(slog) if r.name == "frozen")
    both = held & set(s.seq for s in saved)
    assert both, "the server wrote none of the sent messages: the test staged nothing"
    assert both <= set(sent), "the server holds one the client said it never sent"
    merged = sorted(held | set(s.seq for s in saved if s.seq not in held))
    assert merged == list(range(1, max(merged) + 1))   # each seq once, none missing
