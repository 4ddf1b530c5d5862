"""Issue 25, "waits are bounded by the server, not by the peer": the server's
--max-duration caps what any client may be planned to write (a longer plan
is refused at hello), and a client that goes on talking past its planned end
(a lying or broken one) is asked to stop OVERRUN_GRACE_S after it, then
failed as long again later, so a run ends within master.run_end_bound_s of
the server's flags after its last go.

Real server processes over real TCP: a fake client that keeps sending perf
past its plan (tests/test_server_fakes.py), a real client for the refusal.
The graces are made small in the server (PatchedServer) and here alike.
"""
import signal
import time

import pytest

from diskbench import exitcodes, protocol
from diskbench import states as st
from diskbench.server import go, liveness, master
from tests.faults.test_server_restart import real_client
from tests.helpers import PatchedServer, communicate
from tests.test_server_fakes import FakeClient, ServerProc

#: The server's graces in these tests (s): OVERRUN_GRACE_S above the check's
#: 1 s step, so an early stop (the grace ignored) cannot pass for a late one.
_SMALL = dict(OVERRUN_GRACE_S=3.0, SUMMARY_GRACE_S=1.0)
_PATCH = "from diskbench.server import liveness as _l\n" + "\n".join(
    "_l.%s = %r" % kv for kv in sorted(_SMALL.items()))
#: The liar's planned duration, and the server's cap (its flag).
PLANNED_S = 2.0
FLAGS = ["--max-duration", "2", "--idle-timeout", "0.3", "--heartbeat-timeout", "2",
         "--max-clients", "4", "--read-timeout", "3600"]


def _small(monkeypatch):
    for key, value in _SMALL.items():
        monkeypatch.setattr(liveness, key, value)


def _client(rep, name):
    return [c for c in rep["clients"] if c["client"] == name][0]


def _talk_past_the_plan(server, peer, obey_after=None, limit=60.0):
    """``peer`` says hello (PLANNED_S), starts, and sends perf every 0.3 s
    until the server exits (or ``limit``): a lying client. With
    ``obey_after``, it sends its stop summary (reason server) and bye that
    long after the server's stop came. Returns (time of the go, time of the
    server's stop or None, time the server exited or None)."""
    peer.hello(duration_s=PLANNED_S)
    peer.wait_for(protocol.GO)
    t_go = time.time()
    peer.start()
    t_stop = t_exit = None
    i = 0
    while time.time() - t_go < limit:
        if server.proc.poll() is not None:
            t_exit = time.time()
            break
        if t_stop is None and peer.got(protocol.STOP):
            t_stop = time.time()
        if obey_after is not None and t_stop is not None and \
                time.time() - t_stop >= obey_after:
            peer.stop(reason=protocol.STOP_SERVER)
            peer.send(protocol.BYE)
            peer.wait_acked(peer.seq)
            return t_go, t_stop, None
        if not peer.closed_by_server:
            try:
                peer.perf(i, [0.001], t0=time.time() - 1.0)
            except (IOError, OSError):
                pass
        i += 1
        time.sleep(0.3)
    return t_go, t_stop, t_exit


def test_a_client_writing_past_its_plan_is_stopped_then_failed_within_the_bound(
        procs, tmpdir, monkeypatch):
    """A client that keeps sending perf past its planned 2 s and ignores the
    server's stop is asked to stop no sooner than OVERRUN_GRACE_S after its
    planned end, failed with a reason that says it overran, and the run ends
    within master.run_end_bound_s of the server's flags (which server.log
    states at start)."""
    _small(monkeypatch)
    server = ServerProc(PatchedServer(procs, _PATCH), str(tmpdir.join("logs")), FLAGS)
    peer = FakeClient(server.port, "liar")
    bound = master.run_end_bound_s(2.0, 4, 2.0, None, 0.3)
    t_go, t_stop, t_exit = _talk_past_the_plan(server, peer, limit=bound + 5.0)
    assert t_stop is not None, "the server never asked the overrunning client to stop"
    assert t_stop - t_go >= PLANNED_S + _SMALL["OVERRUN_GRACE_S"] - 0.2, (
        "stopped %.1f s after the go: before its plan + OVERRUN_GRACE_S" % (t_stop - t_go))
    assert t_exit is not None and t_exit - t_go <= bound, (
        "the run lasted %s s after its go, the bound is %.1f s" % (
            t_exit and round(t_exit - t_go, 1), bound))
    assert server.wait_exit() == exitcodes.SERVER_INCOMPLETE, server.stderr()
    stop = peer.got(protocol.STOP)[0]
    assert "wrote past its planned 2 s by" in stop.reason, stop.reason
    entry = _client(server.report(), "liar")
    assert entry["state"] == st.FAILED, entry
    assert "wrote past its planned 2 s by" in entry["state_why"], entry["state_why"]
    assert "did not stop when the server asked" in entry["state_why"], entry["state_why"]
    assert "wrote past its planned 2 s by" in server.report_text()
    said = "the run ends at most %g s after the last go" % bound
    assert said in server.server_log(), server.server_log()[:2000]
    peer.close()


def test_a_slow_but_obedient_client_past_its_plan_finishes_and_says_it_overran(
        procs, tmpdir, monkeypatch):
    """A client past its plan that obeys the server's stop within
    OVERRUN_GRACE_S (here 1.5 s, more than the check's step) is not failed:
    it finishes, its reason saying it overran and was stopped by the server."""
    _small(monkeypatch)
    server = ServerProc(PatchedServer(procs, _PATCH), str(tmpdir.join("logs")), FLAGS)
    peer = FakeClient(server.port, "late")
    _t_go, t_stop, _t_exit = _talk_past_the_plan(server, peer, obey_after=1.5)
    assert t_stop is not None
    assert server.wait_exit() == exitcodes.OK, server.stderr()
    entry = _client(server.report(), "late")
    assert entry["state"] == st.FINISHED, entry
    assert "wrote past its planned 2 s by" in entry["state_why"], entry["state_why"]
    assert entry["state_why"].endswith("stopped by the server"), entry["state_why"]
    peer.close()


def test_a_client_back_from_went_away_past_its_plan_cannot_dodge_the_stop(
        procs, tmpdir, monkeypatch):
    """A client silent from its planned end (went away when its overrun
    came due) that comes back and talks on is asked to stop within about a
    check of its return, and failed after OVERRUN_GRACE_S: going away does
    not reset or escape its planned end."""
    _small(monkeypatch)
    server = ServerProc(PatchedServer(procs, _PATCH), str(tmpdir.join("logs")),
                        FLAGS + ["--rejoin-grace", "20"])
    peer = FakeClient(server.port, "dodger")
    peer.sock.settimeout(None)   # its reader must outlast the silence below
    peer.hello(duration_s=PLANNED_S)
    peer.wait_for(protocol.GO)
    t_go = time.time()
    peer.start()
    peer.perf(0, [0.001], t0=time.time() - 1.0)
    time.sleep(PLANNED_S + _SMALL["OVERRUN_GRACE_S"] + 2.0)   # silent past its due
    assert not peer.got(protocol.STOP), "a went-away client cannot be sent a stop"
    assert "client dodger went away" in server.server_log()
    back = time.time()
    i = 1
    while not peer.got(protocol.STOP) and time.time() - back < 10:
        peer.perf(i, [0.001], t0=time.time() - 1.0)
        i += 1
        time.sleep(0.2)
    assert peer.got(protocol.STOP), "the client came back past its plan and was never stopped"
    assert time.time() - back <= 2.5, time.time() - back
    while server.proc.poll() is None and time.time() - t_go < 60:
        try:
            peer.perf(i, [0.001], t0=time.time() - 1.0)
        except (IOError, OSError):
            break                      # the server ended the run
        i += 1
        time.sleep(0.3)
    assert server.wait_exit() == exitcodes.SERVER_INCOMPLETE, server.stderr()
    entry = _client(server.report(), "dodger")
    assert entry["state"] == st.FAILED, entry
    assert "did not stop when the server asked" in entry["state_why"], entry["state_why"]
    peer.close()


def test_a_plan_over_max_duration_is_refused_at_hello(procs, tmpdir):
    """A real client asking for more than the server's --max-duration is
    refused at hello with one line naming the fix, and exits CLIENT_SERVER
    (--force does not lift the cap)."""
    server = ServerProc(procs, str(tmpdir.join("logs")),
                        ["--max-duration", "5", "--idle-timeout", "0.3"])
    client = real_client(procs, tmpdir, server.port, "greedy", duration=10)
    out, err = communicate(client, 60)
    assert client.returncode == exitcodes.CLIENT_SERVER, err
    assert "Traceback" not in err
    assert "cannot run: 10 s is over the server's --max-duration 5 s; use --duration 5 " \
        "or less" in err, err
    server.proc.send_signal(signal.SIGTERM)   # nobody joined: the run would wait
    server.wait_exit()
    rep = server.report()
    assert rep["rejected_messages"] == {"plan": 1} and rep["clients"] == []


def test_the_servers_own_duration_over_max_duration_is_a_usage_error(procs):
    code, out, err = procs.run(["-m", "diskbench.server", "--duration", "100",
                                "--max-duration", "10", "--port", "0"])
    assert code == exitcodes.USAGE, err
    assert "--duration 100 is over --max-duration 10: give a --duration of at most " \
        "10, or raise --max-duration" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


# --- run_end_bound_s's arithmetic ---------------------------------------------------
def test_silence_bound_takes_the_longer_of_rejoin_grace_and_summary_grace():
    step = liveness.LIVENESS_CHECK_S + 2 * master.TICK_S
    # a rejoin grace shorter than a failed client's summary grace: the latter
    assert master.silence_bound_s(2.0, 1.0, 0.5) == pytest.approx(
        2.0 + liveness.SUMMARY_GRACE_S + 0.5 + step)
    assert master.silence_bound_s(2.0, 50.0, 0.0) == pytest.approx(2.0 + 50.0 + step)
    # nothing given: the capped went-away timeout W and 2 W of rejoin grace
    w = liveness.MAX_WENT_AWAY_S
    assert master.silence_bound_s() == pytest.approx(
        w + liveness.REJOIN_GRACE_TIMEOUTS * w + step)


def test_run_end_bound_adds_lead_plan_readback_spread_and_two_graces():
    """With the shipped constants: 1000 clients' start lead (2 + 1 s), 100 s
    written and as long read back, a 5 s end spread, two 60 s graces with
    three 1 s check steps and a 10 s summary, then the silence bound."""
    got = master.run_end_bound_s(100.0, 1000, 5.0, 1.0, 0.5)
    assert got == pytest.approx(3.0 + 200.0 + 5.0 + 133.0 + 16.9)
    assert got == pytest.approx(
        go.START_LEAD_S + 1000 * go.START_LEAD_PER_CLIENT_S +
        100.0 * (1 + liveness.READBACK_ALLOWANCE) + protocol.END_SPREAD_MAX_S +
        2 * liveness.OVERRUN_GRACE_S + 3 * liveness.LIVENESS_CHECK_S +
        liveness.SUMMARY_GRACE_S + master.silence_bound_s(5.0, 1.0, 0.5))
    # each second more of --max-duration is a second written and one read back
    assert master.run_end_bound_s(101.0, 1000, 5.0, 1.0, 0.5) - got == pytest.approx(
        1 + liveness.READBACK_ALLOWANCE)
    # no clients counted: the lead is START_LEAD_S alone
    assert master.run_end_bound_s(100.0, 0, 5.0, 1.0, 0.5) == pytest.approx(got - 1.0)
