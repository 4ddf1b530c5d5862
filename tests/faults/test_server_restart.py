"""Server killed with SIGKILL mid-run and restarted on the same port and --log-dir
while three real clients write: the resumed run ends with every sequence number of
every client in perf.jsonl exactly once, and report totals equal to the records.

Also: what a restart does with a log dir holding a finished run, and with a torn
last line in perf.jsonl.
"""
import json
import os
import signal

from diskbench import exitcodes
from diskbench import protocol as P
from diskbench.metrics import mib
from tests.helpers import communicate, free_port, wait_until
from tests.test_server_fakes import (FakeClient, ServerProc, hello_fields, latency_sets,
                                     play_full_run)

CLIENT_FAST = ["--stats-interval", "0.5", "--heartbeat-interval", "0.5",
               "--perf-interval", "0.5", "--connect-timeout", "10"]
SERVER_FAST = ["--idle-timeout", "0.5", "--shutdown-grace", "1", "--heartbeat-timeout",
               "8", "--quiet"]


def real_client(procs, tmpdir, port, name, duration=6, extra=(), env=None):
    data = tmpdir.join("data-" + name)
    data.ensure(dir=True)
    return procs.start(["-m", "diskbench.client"] + CLIENT_FAST + [
        "--server", "127.0.0.1:%d" % port, "--name", name, "--chunk-mb", "10",
        "--file-mb", "20", "--duration", str(duration), "--force",
        "--log-dir", str(tmpdir.join("client-logs"))] + list(extra) + [str(data)],
        env=env)


def client_log(tmpdir, name):
    path = str(tmpdir.join("client-logs", "client-%s.log" % name))
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        return f.read()


def assert_start_instant_unknown(rep, text, names):
    """The report (json, and ``text``: its text or html) says the synchronized
    start of ``names`` is unknown: a server restart (or a re-render without
    the server's facts) lost the go that carried it."""
    sync = rep["run"]["synchronized_start"]
    assert sync is not None, "the synchronized start is left out, not said unknown"
    assert sync["unknown_client_count"] == len(names) and sync["client_count"] == 0
    for key in ("start_at_ts", "start_at_utc", "first_write_spread_ms",
                "first_write_late_max_ms"):
        assert sync[key] is None, (key, sync[key])
    for c in rep["clients"]:
        assert c["start_at_known"] is False and c["start_at_ts"] is None, c["client"]
    assert "synchronized start: unknown for %d clients (the go the server gave them is " \
        "not in perf.jsonl" % len(names) in " ".join(text.split()), text[:3000]


def assert_every_seq_once(records, names):
    """perf.jsonl holds 1..max of each client, each exactly once; returns per-client msgs."""
    per = dict((n, []) for n in names)
    for msg, _ts in records:
        per.setdefault(msg.name, []).append(msg)
    for name in names:
        seqs = [m.seq for m in per[name]]
        assert len(seqs) == len(set(seqs)), "%s: duplicate seqs in perf.jsonl" % name
        assert sorted(seqs) == list(range(1, max(seqs) + 1)), (
            "%s: missing seqs %s" % (name, sorted(set(range(1, max(seqs) + 1)) - set(seqs))))
        assert max(per[name], key=lambda m: m.seq).type == P.BYE, name
    return per


def test_server_sigkill_and_restart_mid_run_loses_and_doubles_nothing(procs, tmpdir):
    logs = str(tmpdir.join("server-logs"))
    port = free_port()
    flags = ["--port", str(port), "--clients", "3"] + SERVER_FAST
    first = ServerProc(procs, logs, flags)
    names = ["r1", "r2", "r3"]
    clients = dict((n, real_client(procs, tmpdir, port, n)) for n in names)

    def perf_seen():
        perfs = [m.name for m, _ in first.records() if m.type == P.PERF]
        return all(perfs.count(n) >= 2 for n in names)
    wait_until(perf_seen, timeout=40, interval=0.1, what="two perf samples per client")
    with open(os.path.join(logs, "run.json")) as f:
        first_run = json.load(f)
    os.kill(first.proc.pid, signal.SIGKILL)
    first.wait_exit()
    before = len(first.records())
    # every client notices, keeps writing and buffers while the server is down
    wait_until(lambda: all("connection to server lost" in client_log(tmpdir, n)
                           for n in names), timeout=20, what="clients to notice")
    # a look at the killed server's run (README: re-render it) does not stop
    # its resume, though it writes report.json into the log dir
    code, out, err = procs.run(["-m", "diskbench.report", logs])
    assert code == exitcodes.OK and os.path.exists(os.path.join(logs, "report.json")), err
    with open(os.path.join(logs, "report.json")) as f:
        rerendered = json.load(f)
    with open(os.path.join(logs, "report.txt")) as f:
        assert_start_instant_unknown(rerendered, f.read(), names)  # go is not in perf.jsonl
    second = ServerProc(procs, logs, flags)
    for name, proc in clients.items():
        out, err = communicate(proc, 60)
        assert proc.returncode == 0, (name, err[-2000:])
    assert second.wait_exit(30) == exitcodes.OK, second.stderr()
    for text in (first.stderr(), second.stderr(), second.server_log()):
        assert "Traceback" not in text and "internal error" not in text

    records = second.records()
    assert len(records) > before
    per = assert_every_seq_once(records, names)
    log = second.server_log()
    assert "resumed run" in log and "with 3 clients, %d records" % before in log
    rep = second.report()
    assert "resumed run" in " ".join(rep["run"]["server_warnings"])
    assert rep["run"]["records_restored_count"] == before
    by_name = dict((c["client"], c) for c in rep["clients"])
    for name in names:
        msgs = per[name]
        perfs = [m for m in msgs if m.type == P.PERF]
        stop = [m for m in msgs if m.type == P.STOP][0]
        c = by_name[name]
        assert c["state"] == "finished", c["state_why"]
        assert stop.dropped_messages == 0
        assert c["perf_interval_count"] == len(perfs)
        assert c["chunk_count"] == sum(m.chunks for m in perfs)
        assert c["written_mib"] == mib(sum(m.bytes for m in perfs))
        assert c["rollover_count"] == len([m for m in msgs if m.type == P.ROLLOVER])
        # the client's own count of what it wrote agrees with what the server holds
        assert sum(m.bytes for m in perfs) == stop.bytes_written
        assert c["reconnect_count"] >= 1 and c["went_away_count"] == 0
    assert rep["totals"]["written_mib"] == mib(sum(
        m.bytes for m, _ in records if m.type == P.PERF))
    # the start instant the killed server's go carried is not known to the
    # second: shown unknown in every file, never left out or "started at once"
    with open(os.path.join(logs, "report.html")) as f:
        html = f.read()
    for text in (second.report_text(), html):
        assert_start_instant_unknown(rep, text, names)
    # the resumed run is the same run: its id and start time, not fresh ones
    assert rep["run"]["label"] == first_run["run_id"] and rep["rerendered"] is None
    assert rep["run"]["start_ts"] == first_run["started_ts"]
    print("restart: %d records before the kill, %d after; per client seqs 1..%s" % (
        before, len(records), ", ".join("%d" % max(m.seq for m in per[n]) for n in names)))


def test_server_refuses_a_log_dir_with_a_finished_run(procs, tmpdir):
    logs = str(tmpdir.join("logs"))
    server = ServerProc(procs, logs, ["--clients", "1", "--idle-timeout", "0.3"])
    client = FakeClient(server.port, "once")
    play_full_run(client, latency_sets(1, 2, 3))
    client.close()
    assert server.wait_exit() == exitcodes.OK
    # re-rendered (its report.json then says so), it is still a finished run
    code, out, err = procs.run(["-m", "diskbench.report", logs])
    assert code == exitcodes.OK, err
    with open(os.path.join(logs, "report.json")) as f:
        assert json.load(f)["rerendered"]
    code, out, err = procs.run(["-m", "diskbench.server", "--port", "0", "--log-dir", logs])
    assert code == exitcodes.SERVER_LOG_DIR
    assert err.count("\n") == 1 and "holds a finished run" in err
    assert "new --log-dir" in err and "Traceback" not in err


def test_server_resume_skips_a_torn_last_line_and_keeps_counting(procs, tmpdir):
    logs = str(tmpdir.join("logs"))
    server = ServerProc(procs, logs, ["--clients", "1"])
    client = FakeClient(server.port, "torn")
    client.hello()
    client.wait_for(P.GO)
    client.start()
    client.perf(0, [0.001, 0.002])
    client.wait_acked(client.seq)
    os.kill(server.proc.pid, signal.SIGKILL)
    server.wait_exit()
    with open(os.path.join(logs, "perf.jsonl"), "ab") as f:
        f.write(b'{"data":{"bytes":1048576,"chu')   # died in the middle of a write
    again = ServerProc(procs, logs, ["--clients", "1", "--idle-timeout", "0.3"])
    wait_until(lambda: "torn last line" in again.stderr(), what="the torn-line warning")
    late = FakeClient(again.port, "torn", seq=client.seq)
    late.send_msg(P.make(P.HELLO, name="torn", seq=1, **hello_fields()))
    late.wait_acked(1)           # acks are per connection: its hello, nothing more
    late.perf(1, [0.003])
    late.stop(nbytes=3 << 20)
    late.send(P.BYE)
    late.wait_acked(late.seq)
    late.close()
    assert again.wait_exit() == exitcodes.OK, again.stderr()
    rep = again.report()
    c = rep["clients"][0]
    assert c["perf_interval_count"] == 2 and c["written_mib"] == 3.0
    assert c["state"] == "finished" and c["reconnect_count"] == 1
    seqs = [m.seq for m, _ in again.records()]
    assert seqs == [1, 2, 3, 4, 5, 6]
    assert any("torn last line" in w for w in rep["run"]["server_warnings"])
