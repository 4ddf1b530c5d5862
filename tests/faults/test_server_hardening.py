"""Server promises under a lying peer, a quiet peer and a paused server (issue 11).

Each test does the damage for real: a real server process over real TCP, real
signals (SIGSTOP/SIGCONT/SIGHUP), a real file-descriptor limit (prlimit).
"""
import os
import signal
import socket
import subprocess
import time

import pytest

from diskbench import exitcodes, protocol
from diskbench.client.procinfo import proc_cpu_seconds
from diskbench.server import listener, registry as reg
from tests.helpers import env_for_child, wait_until
from tests.test_server_fakes import (FakeClient, ServerProc, hello_fields,
                                     play_full_run, run_in_threads)

FAST = ["--idle-timeout", "0.3", "--shutdown-grace", "0.5"]


def _logs(tmpdir):
    return str(tmpdir.join("logs"))


def _client(rep, name):
    return [c for c in rep["clients"] if c["client"] == name][0]


def _beat(client, age=0.1, alive=True):
    return client.send(protocol.HEARTBEAT, writer_pid=os.getpid(), writer_alive=alive,
                       bytes_written=1 << 20, chunks_written=1, progress_age_s=age)


# --- a takeover cannot silently discard a run ------------------------------------------
def test_name_refusal_does_not_disclose_the_owner(procs, tmpdir):
    """A hello under a taken name is refused without naming the owner's pid or host."""
    server = ServerProc(procs, _logs(tmpdir), FAST)
    owner = FakeClient(server.port, "node")
    owner.hello(hostname="secret-host", pid=4242)
    owner.wait_for(protocol.GO)
    thief = FakeClient(server.port, "node")
    thief.hello(hostname="other", pid=1)
    refusal = thief.wait_for(protocol.REJECTED)
    assert "already used" in refusal.reason
    assert "4242" not in refusal.reason and "secret-host" not in refusal.reason


def test_takeover_with_a_seq_jump_cannot_discard_the_real_clients_messages(procs, tmpdir):
    """A peer that claims a running client's name (same host and pid: no secret)
    and jumps its seq far ahead is refused the jump; a smaller jump is recorded,
    and the real client's own later messages are still recorded and acked per
    connection (never an ack beyond what that connection sent)."""
    server = ServerProc(procs, _logs(tmpdir), FAST)
    real = FakeClient(server.port, "node")
    real.begin()
    real.perf(0, [0.001])
    real.wait_acked(3)
    thief = FakeClient(server.port, "node", seq=0)
    thief.hello()                     # same hostname/pid: a takeover of the name
    thief.wait_acked(1)
    thief.seq = 10 ** 9 - 1
    thief.send(protocol.NOTE, text="poison")          # far beyond: refused
    thief.seq = 3 + 500 - 1
    thief.send(protocol.NOTE, text="within reach")    # recorded as seq 503
    thief.wait_acked(503)
    assert all(a.upto_seq in (1, 503) for a in thief.got(protocol.ACK))
    # the real client reconnects and goes on with its own seqs 4..6
    real.close()
    again = FakeClient(server.port, "node", seq=3)
    again.send_msg(protocol.make(protocol.HELLO, protocol.C2S, name="node", seq=1,
                                 **hello_fields()))
    for i in range(1, 3):
        again.perf(i, [0.001])
    again.stop()
    again.wait_acked(6)
    assert max(a.upto_seq for a in again.got(protocol.ACK)) == 6
    assert server.wait_exit(30) == exitcodes.OK
    recorded = [(m.seq, m.type) for m, _ in server.records() if m.name == "node"]
    assert (4, protocol.PERF) in recorded and (5, protocol.PERF) in recorded
    assert (6, protocol.STOP) in recorded and (503, protocol.NOTE) in recorded
    assert 10 ** 9 not in [s for s, _ in recorded]
    c = _client(server.report(), "node")
    assert c["state"] == "finished" and c["perf_interval_count"] == 3
    assert c["takeover_count"] == 2 and c["seq_jump_count"] == 1  # thief, then back
    assert server.report()["rejected_messages"].get(reg.REJECT_SEQ_JUMP) == 1
    assert "further ahead" in server.server_log()


def test_deeply_nested_json_is_refused_by_a_small_stack_handler(procs, tmpdir):
    """Handler threads run on a small stack (listener.HANDLER_STACK_BYTES): JSON
    nested as deep as a line allows is refused (not-json), the server goes on
    and a real client is served after it."""
    server = ServerProc(procs, _logs(tmpdir), FAST)
    hostile = FakeClient(server.port, "x")
    for opener in (b"[", b'{"a":'):
        hostile.raw(opener * (60000 // len(opener)) + b"\n")
    wait_until(lambda: "nested too deeply" in server.server_log() or
               "not JSON" in server.server_log(), 10, what="the refusal")
    play_full_run(FakeClient(server.port, "after"), [[0.001]], rollovers=0)
    assert server.wait_exit() == exitcodes.OK
    assert server.report()["rejected_messages"][protocol.ProtocolError.NOT_JSON] == 2
    assert "Traceback" not in server.stderr()


# --- a stuck writer is never finished ---------------------------------------------------
def test_stalled_writer_is_shown_live_and_never_reported_finished(procs, tmpdir):
    """A heartbeat saying the writer made no progress for --stall-timeout marks
    the client stalled (console and report); a stop while stalled is FAILED,
    with the newest beat's figure (the stall's true length)."""
    server = ServerProc(procs, _logs(tmpdir), ["--stall-timeout", "2"] + FAST)
    c = FakeClient(server.port, "stuck")
    c.begin()
    c.perf(0, [0.001])
    _beat(c, age=0.5)
    _beat(c, age=2.5)
    wait_until(lambda: "stuck stalled" in server.stdout(), 10, what="stalled on console")
    _beat(c, age=4.0)  # the reason follows the stall's true length
    c.stop()
    c.wait_acked(c.seq)
    assert server.wait_exit() == exitcodes.SERVER_INCOMPLETE
    entry = _client(server.report(), "stuck")
    assert entry["state"] == "failed"
    assert "stalled" in entry["state_why"] and "no progress for 4.0 s" in entry["state_why"]


def test_stalled_writer_that_progresses_again_is_running(procs, tmpdir):
    """Stalled is a live state: progress again brings the client back to running."""
    server = ServerProc(procs, _logs(tmpdir), ["--stall-timeout", "2"] + FAST)
    c = FakeClient(server.port, "slow")
    c.begin()
    _beat(c, age=3.0)
    _beat(c, age=0.1)
    c.stop()
    c.wait_acked(c.seq)
    assert server.wait_exit() == exitcodes.OK
    assert "slow running: writer progressing again" in server.stdout()
    assert _client(server.report(), "slow")["state"] == "finished"


# --- quiet is not gone: rejoin grace, paused server ----------------------------------------
def test_went_away_client_rejoins_within_grace_and_finishes(procs, tmpdir):
    """The run does not complete while a went-away client may still come back:
    it rejoins within --rejoin-grace, finishes, and nothing it sent is lost."""
    server = ServerProc(procs, _logs(tmpdir), ["--clients", "1", "--rejoin-grace", "30"]
                        + FAST)
    c = FakeClient(server.port, "flaky")
    c.begin()
    c.perf(0, [0.001])
    c.wait_acked(c.seq)
    c.close()                                   # cut without stop: went away
    wait_until(lambda: "flaky went away" in server.stdout(), 10, what="went away")
    time.sleep(1.0)                             # several ticks: must not complete
    assert server.proc.poll() is None, "the run completed while the client could rejoin"
    back = FakeClient(server.port, "flaky", seq=c.seq)
    back.send_msg(protocol.make(protocol.HELLO, protocol.C2S, name="flaky", seq=1,
                                **hello_fields()))
    back.perf(1, [0.001])
    back.stop()
    back.wait_acked(back.seq)
    assert server.wait_exit() == exitcodes.OK
    entry = _client(server.report(), "flaky")
    assert entry["state"] == "finished" and entry["perf_interval_count"] == 2
    assert entry["went_away_count"] == 1


def test_went_away_client_that_never_returns_ends_the_run_after_grace(procs, tmpdir):
    """After --rejoin-grace the run completes, and the report says it waited."""
    server = ServerProc(procs, _logs(tmpdir), ["--clients", "1", "--rejoin-grace", "1.5"]
                        + FAST)
    c = FakeClient(server.port, "gone")
    c.begin()
    c.wait_acked(c.seq)
    c.close()
    t0 = time.time()
    assert server.wait_exit() == exitcodes.SERVER_INCOMPLETE
    assert time.time() - t0 >= 1.5
    rep = server.report()
    assert _client(rep, "gone")["state"] == "went away"
    assert any("--rejoin-grace" in w for w in rep["run"]["server_warnings"])
    assert "--rejoin-grace" in server.report_text()


def test_paused_server_does_not_blame_its_clients(procs, tmpdir):
    """A server stopped (SIGSTOP) for longer than the went-away timeout notices
    its own pause and moves deadlines: the client is not marked went away."""
    server = ServerProc(procs, _logs(tmpdir), ["--clients", "1", "--heartbeat-timeout",
                                               "1", "--rejoin-grace", "0.5"] + FAST)
    c = FakeClient(server.port, "steady")
    c.begin()
    _beat(c)
    c.wait_acked(c.seq)
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(3 * 1.0)                     # the pause itself is the fault
        _beat(c)                                # queued in the kernel meanwhile
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    c.wait_acked(c.seq, timeout=10)
    c.stop()
    c.wait_acked(c.seq)
    assert server.wait_exit() == exitcodes.OK, server.stdout()
    rep = server.report()
    entry = _client(rep, "steady")
    assert entry["state"] == "finished" and entry["went_away_count"] == 0
    assert any("did not run for" in w for w in rep["run"]["server_warnings"])


# --- --clients N never hangs -----------------------------------------------------------------
def test_fewer_clients_than_expected_go_on_after_start_timeout(procs, tmpdir):
    """--clients 3 with two hellos: after --start-timeout those two run, the run
    completes when they are done, console and report say so, exit 5."""
    server = ServerProc(procs, _logs(tmpdir), ["--clients", "3", "--start-timeout", "1"]
                        + FAST)
    names = ("one", "two")
    run_in_threads([lambda n=n: play_full_run(FakeClient(server.port, n), [[0.001]],
                                              rollovers=0) for n in names])
    assert server.wait_exit() == exitcodes.SERVER_INCOMPLETE
    assert "2 of 3 expected clients" in server.stdout()
    rep = server.report()
    assert [_client(rep, n)["state"] for n in names] == ["finished", "finished"]
    assert any("2 of 3" in w for w in rep["run"]["server_warnings"])


def test_require_all_aborts_when_fewer_clients_came(procs, tmpdir):
    """--require-all: fewer hellos than --clients by --start-timeout aborts them
    all with a reason, and nobody starts writing."""
    server = ServerProc(procs, _logs(tmpdir), ["--clients", "3", "--start-timeout", "1",
                                               "--require-all"] + FAST)
    c = FakeClient(server.port, "alone")
    c.hello()
    stop = c.wait_for(protocol.STOP)
    assert "--require-all" in stop.reason and "1 of 3" in stop.reason
    assert not c.got(protocol.GO)
    c.stop(reason=protocol.STOP_SERVER)
    assert server.wait_exit() == exitcodes.SERVER_INCOMPLETE
    entry = _client(server.report(), "alone")
    assert entry["state"] == "failed" and "aborted" in entry["state_why"]


# --- signals, clocks, flags ---------------------------------------------------------------
def test_sighup_writes_the_report_like_sigterm(procs, tmpdir):
    """SIGHUP (an ssh session dropping) ends the run with a report, exit 6."""
    server = ServerProc(procs, _logs(tmpdir), FAST)
    c = FakeClient(server.port, "h")
    c.begin()
    c.wait_acked(c.seq)
    server.proc.send_signal(signal.SIGHUP)
    assert c.wait_for(protocol.STOP)
    assert server.wait_exit() == exitcodes.SERVER_INTERRUPTED
    assert server.report()["run"]["interrupted_by"] == "SIGHUP"
    assert "Traceback" not in server.stderr()


def test_clock_skew_is_detected_and_the_aggregate_uses_the_server_clock(procs, tmpdir):
    """A client whose clock is 5 s ahead is warned about and its intervals are
    moved onto the server's clock: the all-writing period is not halved."""
    server = ServerProc(procs, _logs(tmpdir), ["--clients", "2"] + FAST)
    now = time.time()
    lag = FakeClient(server.port, "ontime")
    ahead = FakeClient(server.port, "ahead")
    for c, skew in ((lag, 0.0), (ahead, 5.0)):
        real_build = c.build

        def build(type_, _real=real_build, _skew=skew, **fields):
            msg = _real(type_, **fields)
            msg.ts = time.time() + _skew
            return msg
        c.build = build
        c.hello()
    for c in (lag, ahead):
        c.wait_for(protocol.GO)
        c.start()
    for i in range(10):
        for c, skew in ((lag, 0.0), (ahead, 5.0)):
            c.perf(i, [0.001], t0=now + skew)
    for c in (lag, ahead):
        c.stop()
        c.wait_acked(c.seq)
    assert server.wait_exit() == exitcodes.OK
    rep = server.report()
    offset = _client(rep, "ahead")["clock_offset_s"]
    assert 4.5 < offset <= 5.0 and abs(_client(rep, "ontime")["clock_offset_s"]) < 0.5
    assert rep["aggregate"]["period_s"] > 9.0     # without the correction: 5 s
    assert any("ahead" in w and "clock" in w for w in rep["run"]["server_warnings"])


@pytest.mark.parametrize("flag,value", [("--heartbeat-timeout", "inf"),
                                        ("--start-timeout", "nan"),
                                        ("--rejoin-grace", "2e9"),
                                        ("--idle-timeout", "-1")])
def test_absurd_durations_are_refused_with_one_line(procs, tmpdir, flag, value):
    """Every wrong flag: exit 2 and one line naming the problem, no traceback."""
    code, out, err = procs.run(["-m", "diskbench.server", "--port", "0", "--log-dir",
                                _logs(tmpdir), flag, value], timeout=30)
    assert code == exitcodes.USAGE
    assert flag in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


# --- fd exhaustion ------------------------------------------------------------------------
@pytest.mark.skipif(not os.path.exists("/usr/bin/prlimit"),
                    reason="needs prlimit (util-linux) to lower a running server's fd limit")
def test_fd_exhaustion_backs_off_logs_once_and_recovers(procs, tmpdir):
    """accept() failing with EMFILE neither spins a core nor goes unlogged: it is
    counted by kind, logged once per burst, and accepting resumes afterwards."""
    server = ServerProc(procs, _logs(tmpdir), ["--max-per-address", "500"] + FAST)
    real = FakeClient(server.port, "survivor")
    real.hello()
    real.wait_for(protocol.GO)
    open_fds = len(os.listdir("/proc/%d/fd" % server.proc.pid))
    limit = open_fds + 5
    subprocess.check_call(["prlimit", "--pid", str(server.proc.pid),
                           "--nofile=%d:%d" % (limit, limit)])
    socks = []
    burst_t0 = time.time()
    try:
        for _ in range(40):
            socks.append(socket.create_connection(("127.0.0.1", server.port), 5))
        wait_until(lambda: "out of file descriptors" in server.server_log(), 10,
                   what="the EMFILE warning")
        cpu0, t0 = proc_cpu_seconds(server.proc.pid), time.time()
        time.sleep(2.0)                         # measuring a spin needs wall time
        busy = (proc_cpu_seconds(server.proc.pid) - cpu0) / (time.time() - t0)
        assert busy < 0.5, "accept loop spins at %.0f%% of a core" % (busy * 100)
    finally:
        for s in socks:
            s.close()
    burst_s = time.time() - burst_t0
    real.start()
    late = FakeClient(server.port, "late")     # accepted again after the burst
    play_full_run(late, [[0.001]], rollovers=0)
    real.stop()
    real.wait_acked(real.seq)
    assert server.wait_exit() == exitcodes.OK
    log = server.server_log()
    # once per burst: a burst ends with a successful accept ("again")
    bursts = log.count("cannot accept connections")
    assert 1 <= bursts <= log.count("accepting connections again")
    failures = server.report()["rejected_messages"][reg.REJECT_FD_EXHAUSTED]
    assert failures >= bursts
    # each failed accept() waits at least ACCEPT_BACKOFF_S: a spinning loop (that
    # the CPU figure above may miss on a loaded machine) fails thousands of times
    assert failures <= burst_s / listener.ACCEPT_BACKOFF_S + 2, (failures, burst_s)


def test_max_connections_beyond_the_fd_limit_is_lowered_and_said(procs, tmpdir):
    """A --max-connections the open-file limit cannot hold is lowered to what it
    can, with a warning naming the fix (ulimit -n)."""
    import resource
    hard = 200

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    log_dir = _logs(tmpdir)
    proc = subprocess.Popen(
        [procs.python, "-m", "diskbench.server", "--port", "0", "--log-dir", log_dir,
         "--max-connections", "5000"], preexec_fn=limit, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=env_for_child())
    try:
        wait_until(lambda: os.path.exists(os.path.join(log_dir, "server.log")) and
                   "limits:" in open(os.path.join(log_dir, "server.log")).read(), 20,
                   what="the server's limits line")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate()
    err = err.decode("utf-8", "replace")
    assert "too low for --max-connections 5000" in err and "ulimit -n" in err
    fit = hard - listener.FD_RESERVE
    assert "%d connections" % fit in open(os.path.join(log_dir, "server.log")).read()
