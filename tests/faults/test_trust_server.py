"""The server's belief in its peers (issue 25, the server's bullets).

Real server processes over real TCP: raw protocol peers that lie about their
clocks beside real clients, a server with a fault injected into its handling
of one client, ...
"""
import itertools
import math
import os
import signal
import subprocess
import time

import pytest

from diskbench import exitcodes, plan, protocol
from diskbench import states as st
from diskbench.server import liveness
from tests.faults.test_server_restart import CLIENT_FAST, real_client
from tests.helpers import PatchedServer, communicate, wait_until
from tests.test_server_fakes import LISTEN_RE, FakeClient, ServerProc

FAST = ["--idle-timeout", "0.3", "--shutdown-grace", "0.5"]
#: 56 years, the clock of a host whose RTC battery died (it reads 1970).
YEARS_56 = 56 * 365.25 * 86400


def _logs(tmpdir):
    return str(tmpdir.join("logs"))


def _client(rep, name):
    return [c for c in rep["clients"] if c["client"] == name][0]


def _skewed(client, skew):
    """Every message ``client`` builds carries its clock ``skew`` s off ours."""
    real_build = client.build

    def build(type_, **fields):
        msg = real_build(type_, **fields)
        msg.ts = time.time() + skew
        return msg
    client.build = build
    return client


def _answer_ping(client, skew):
    """Answer the server's first ping as a client whose clock is ``skew`` off."""
    ping = client.wait_for(protocol.PING)
    return client.send(protocol.PONG, nonce=ping.nonce,
                       client_time=max(0.0, time.time() + skew))


# --- 1. one client's data can never stop the server ---------------------------------
def test_clock_decades_off_gets_a_go_and_the_offset_is_not_used(procs, tmpdir):
    """A peer whose clock reads 1970 (56 years behind) or 3000 years ahead,
    answering pings with that clock, cannot stop the server at the
    synchronized start: each still gets a go (without an offset) and a start,
    the report says its offset was not used and puts its figures on the
    server's clock, and a real client beside them finishes."""
    server = ServerProc(procs, _logs(tmpdir), ["--clients", "3"] + FAST)
    peers = []
    for name, skew in (("y1970", -YEARS_56), ("y5000", 1e11 - 86400 - time.time())):
        peer = _skewed(FakeClient(server.port, name), skew)
        peer.hello()
        pong = _answer_ping(peer, skew)
        peer.wait_acked(pong.seq)
        peers.append((peer, skew))
    client = real_client(procs, tmpdir, server.port, "real", duration=2)
    for peer, skew in peers:
        go = peer.wait_for(protocol.GO, timeout=20)
        assert go.clock_offset_s is None
        peer.send(protocol.START, writer_pid=os.getpid(), sync_mode=protocol.SYNC_DIRECT,
                  preallocate=False, block_bytes=512, started_at=time.time() + skew)
        for i in range(2):
            peer.perf(i, [0.001], t0=time.time() + skew - 2.0)
        peer.stop()
        peer.send(protocol.BYE)
        peer.wait_acked(peer.seq)
    assert communicate(client, 60)[0] is not None and client.returncode == exitcodes.OK
    assert server.wait_exit(30) == exitcodes.OK, server.stderr()
    rep = server.report()
    warnings = " | ".join(rep["run"]["server_warnings"])
    assert "client y1970's clock is 56.0 years behind the server's" in warnings
    assert "offset not used" in warnings and "client y5000's clock" in warnings
    for peer, _skew in peers:
        entry = _client(rep, peer.name)
        assert entry["state"] == st.FINISHED
        assert entry["clock_offset_source"] == "timestamps"
        # its figures on the server's clock: within this run, not decades away
        assert abs(entry["first_write_ts"] - time.time()) < 300, entry


_INJECT = """
from diskbench.server import registry as _r
_note = _r.Registry._apply_note
def _apply_note(self, client, msg, recv_ts):
    if msg.text == "boom":
        raise ZeroDivisionError("injected")
    return _note(self, client, msg, recv_ts)
_r.Registry._apply_note = _apply_note
_go = _r.Registry._go_fields
def _go_fields(self, client):
    if client.name == "nogo":
        raise ZeroDivisionError("injected")
    return _go(self, client)
_r.Registry._go_fields = _go_fields
_silence = _r.Registry._check_silence
def _check_silence(self, client, now):
    if client.name == "quiet":
        raise ZeroDivisionError("injected")
    return _silence(self, client, now)
_r.Registry._check_silence = _check_silence
_release = _r.Registry.release_go
_raised = []
def release_go(self):
    if not _raised:                     # once: a step of the main loop's tick
        _raised.append(1)
        raise ZeroDivisionError("injected")
    return _release(self)
_r.Registry.release_go = release_go
from diskbench import protocol as _p
from diskbench.server import handler as _h
_send = _h.Handler.send
def send(self, msg, *args, **kwargs):
    if msg.type == _p.GO and self.name == "nosend":
        raise ZeroDivisionError("injected")
    return _send(self, msg, *args, **kwargs)
_h.Handler.send = send
"""


def test_an_error_handling_one_client_fails_that_client_and_the_run_goes_on(procs, tmpdir):
    """An unexpected error while handling one client (in the handler, in the
    go fan-out, in the liveness tick) fails that client alone, is in
    server.log with its traceback, and the run goes on to its report: the
    other clients finish. An error in a step of the main loop's tick (the go
    release, once) is logged and the loop goes on."""
    server = ServerProc(PatchedServer(procs, _INJECT), _logs(tmpdir),
                        ["--clients", "5", "--heartbeat-timeout", "1"] + FAST)
    peers = dict((n, FakeClient(server.port, n))
                 for n in ("ok", "boom", "nogo", "nosend", "quiet"))
    for peer in peers.values():
        peer.hello()
    for name in ("ok", "boom", "quiet"):
        peers[name].wait_for(protocol.GO)
        peers[name].start()
    boom = peers["boom"]
    boom.send(protocol.NOTE, text="boom")
    refusal = boom.wait_for(protocol.REJECTED)
    assert "internal error" in refusal.reason
    ok = peers["ok"]
    for i in range(3):
        ok.perf(i, [0.001])
        ok.send(protocol.HEARTBEAT, writer_pid=os.getpid(), writer_alive=True,
                bytes_written=1 << 20, chunks_written=1, progress_age_s=0.1)
    ok.stop()
    ok.send(protocol.BYE)
    ok.wait_acked(ok.seq)
    assert server.wait_exit(30) == exitcodes.SERVER_INCOMPLETE, server.stderr()
    rep = server.report()
    assert _client(rep, "ok")["state"] == st.FINISHED
    assert "could not send your go" in peers["nosend"].wait_for(protocol.REJECTED).reason
    for name, what in (("boom", "handling its note"), ("nogo", "sending its go"),
                       ("nosend", "sending its go"), ("quiet", "checking its liveness")):
        entry = _client(rep, name)
        assert entry["state"] == st.FAILED and what in entry["state_why"], entry
    text = server.server_log()
    assert text.count("Traceback") >= 5 and "ZeroDivisionError: injected" in text
    assert "internal error in the main loop (go release); the run goes on" in text


#: Hellos with values at the edges of what the protocol carries, each of which
#: once raised in the server's arithmetic: (name, hello fields, what it gets).
_EDGE_HELLOS = [
    # a disk speed of 5e-324 MiB/s: the duration it would need is infinite
    ("crawl", dict(calibration_mib_s=5e-324, fixed=["chunk_bytes", "file_bytes"]),
     protocol.REJECTED),
    # files under 1 MiB: "rollovers per MiB" divided by zero
    ("tiny", dict(chunk_bytes=1000, file_bytes=1000, calibration_mib_s=100.0,
                  fixed=["chunk_bytes", "file_bytes"]), protocol.GO),
]


def test_peer_values_at_the_protocols_edges_never_raise_in_the_server(procs, tmpdir):
    """Values a peer supplies at the edges of their fields (a speed of 5e-324
    MiB/s, files under 1 MiB) are bounded where the server believes them:
    the peer is refused with one line or runs, nothing raises (no traceback
    in server.log), and a client beside them finishes."""
    server = ServerProc(procs, _logs(tmpdir), FAST)
    for name, fields, answer in _EDGE_HELLOS:
        peer = FakeClient(server.port, name)
        peer.hello(**fields)
        got = peer.wait_for(answer)
        if answer == protocol.REJECTED:
            assert "cannot run" in got.reason or "on its disk" in got.reason, got.reason
        else:
            peer.start()
            peer.stop()
            peer.send(protocol.BYE)
            peer.wait_acked(peer.seq)
    assert server.wait_exit(30) == exitcodes.OK, server.stderr()
    assert "Traceback" not in server.server_log()


# --- 5. one log dir, one server ------------------------------------------------------
#: Injected into both servers: each waits, after its check that no other
#: server runs on the log dir, until both have checked (the worst instant),
#: or until the test saw one of them exit.
_AT_THE_SAME_INSTANT = """
import os, time
from diskbench.server import control as _c
_check = _c.check_free
def _check_free(log_dir):
    _check(log_dir)
    meet = os.environ["MEET_DIR"]
    open(os.path.join(meet, str(os.getpid())), "w").close()
    deadline = time.time() + float(os.environ["MEET_WAIT_S"])
    while len(os.listdir(meet)) < 2 and not os.path.exists(os.environ["RELEASE"]) \\
            and time.time() < deadline:
        time.sleep(0.001)
_c.check_free = _check_free
"""
#: How long a server waits at that barrier for the other (the test's bound too).
MEET_WAIT_S = 20.0


def test_two_servers_started_together_on_one_log_dir_one_runs_one_exits(procs, tmpdir):
    """Two servers started at the same instant (both released by one barrier)
    on one --log-dir cannot both run on it: one listens, the other exits
    SERVER_LOG_DIR with one line naming the fix. After the one that runs is
    killed with SIGKILL, its claim never blocks a restart, and the restart
    resumes its run."""
    logs = _logs(tmpdir)
    release = str(tmpdir.join("release"))
    env = {"MEET_DIR": str(tmpdir.mkdir("meet")), "RELEASE": release,
           "MEET_WAIT_S": str(MEET_WAIT_S)}
    patched = PatchedServer(procs, _AT_THE_SAME_INSTANT)
    both = [patched.start(["-m", "diskbench.server", "--port", "0", "--host",
                           "127.0.0.1", "--log-dir", logs] + FAST, env=env)
            for _ in range(2)]
    # the loser exits; the winner listens (and runs until killed)
    loser = wait_until(lambda: [p for p in both if p.poll() is not None],
                       timeout=MEET_WAIT_S + 10, what="one of the two servers to exit")[0]
    open(release, "w").close()
    winner = [p for p in both if p is not loser][0]
    _out, err = communicate(loser, 10)
    assert loser.returncode == exitcodes.SERVER_LOG_DIR, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "another server is running with --log-dir" in lines[0] \
        and "Traceback" not in err, err
    assert winner.poll() is None
    peer = FakeClient(_port_of(winner), "c1")
    peer.hello()
    peer.wait_acked(1)
    os.killpg(winner.pid, signal.SIGKILL)
    winner.wait()
    again = ServerProc(procs, logs, FAST)        # not blocked by the dead one's claim
    wait_until(lambda: "resumed run" in again.server_log(), what="the run resumed")
    peer = FakeClient(again.port, "c1", seq=1)
    peer.hello()
    peer.wait_for(protocol.GO)
    peer.start()
    peer.stop()
    peer.send(protocol.BYE)
    peer.wait_acked(peer.seq)
    assert again.wait_exit(30) == exitcodes.OK, again.stderr()
    assert again.report()["clients"][0]["client"] == "c1"


def _port_of(proc):
    """The port a server process says it listens on (its first stdout line)."""
    line = proc.stdout.readline().decode("utf-8", "replace")
    match = LISTEN_RE.search(line)
    assert match, line
    return int(match.group(1))


# --- 3. two processes are never one client ------------------------------------------
def _unshare_works():
    try:
        return subprocess.call(["unshare", "--pid", "--uts", "--fork", "--mount-proc",
                                "sh", "-c", "hostname same"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE) == 0
    except OSError:
        return False


needs_unshare = pytest.mark.skipif(
    not _unshare_works(), reason="needs unshare with PID and UTS namespaces (root)")


def _contained_client(procs, tmpdir, port, index, name=None):
    """A real client as pid 1 of its own PID namespace, on host 'same' (its own
    UTS namespace): what two containers from one image look like."""
    data = tmpdir.join("data-%d" % index)
    data.ensure(dir=True)
    argv = [procs.python, "-m", "diskbench.client"] + CLIENT_FAST + [
        "--server", "127.0.0.1:%d" % port, "--chunk-mb", "10", "--file-mb", "20",
        "--duration", "2", "--force", "--log-dir", str(tmpdir.join("client-logs-%d"
                                                                   % index))]
    argv += ["--name", name] if name else []
    argv += [str(data)]
    script = "hostname same && exec \"$@\""
    return procs.start(["-c", "import os, sys; os.execvp('unshare', sys.argv[1:])",
                        "unshare", "--pid", "--uts", "--fork", "--mount-proc", "sh", "-c",
                        script, "sh"] + argv)


@needs_unshare
def test_two_containers_with_one_host_name_and_pid_1_are_two_clients(procs, tmpdir):
    """Two real clients in their own PID and UTS namespaces, both host 'same'
    and both pid 1, with default names, are never merged: the report shows two
    clients, each with its own data, both finished."""
    server = ServerProc(procs, _logs(tmpdir), ["--clients", "2"] + FAST)
    clients = [_contained_client(procs, tmpdir, server.port, i) for i in range(2)]
    for proc in clients:
        communicate(proc, 90)
        assert proc.returncode == exitcodes.OK
    assert server.wait_exit(30) == exitcodes.OK, server.stderr()
    rep = server.report()
    assert len(rep["clients"]) == 2, [c["client"] for c in rep["clients"]]
    for entry in rep["clients"]:
        assert entry["client"].startswith("same-1-") and entry["host"] == "same"
        assert entry["state"] == st.FINISHED and entry["written_mib"] > 0
        assert entry["reconnect_count"] == 0 and entry["takeover_count"] == 0
    starts = [m for m, _ts in server.records() if m.type == protocol.START]
    assert len(starts) == 2 and len(set(m.name for m in starts)) == 2


@needs_unshare
def test_a_second_process_under_a_taken_name_is_refused_with_one_line(procs, tmpdir):
    """Two real clients with the same --name, the same host name and the same
    pid (1, in their own namespaces): the second is refused with one line
    naming the fix and exits CLIENT_SERVER; the first's run is its own."""
    server = ServerProc(procs, _logs(tmpdir), ["--clients", "1"] + FAST)
    first = _contained_client(procs, tmpdir, server.port, 0, name="twin")
    wait_until(lambda: "client twin joined" in server.server_log(), timeout=60,
               what="the first twin's hello")
    second = _contained_client(procs, tmpdir, server.port, 1, name="twin")
    _out, err = communicate(second, 60)
    assert second.returncode == exitcodes.CLIENT_SERVER, err
    said = [ln for ln in err.splitlines() if "already used in this run" in ln]
    assert len(said) == 1 and "--name" in said[0] and "Traceback" not in err, err
    communicate(first, 90)
    assert first.returncode == exitcodes.OK
    assert server.wait_exit(30) == exitcodes.OK, server.stderr()
    rep = server.report()
    assert [c["client"] for c in rep["clients"]] == ["twin"]
    assert rep["clients"][0]["reconnect_count"] == 0
    assert rep["clients"][0]["takeover_count"] == 0


# --- 2. waits are bounded by the server, not by the peer ------------------------------
#: The caps, patched down in the server (and here, for the bound it computes).
_SMALL_CAPS = dict(MAX_WENT_AWAY_S=2.0, SUMMARY_GRACE_S=1.0)
_CAPS = "\n".join("_l.%s = %r" % kv for kv in sorted(_SMALL_CAPS.items()))


def test_a_huge_announced_interval_cannot_stretch_the_run_past_its_bound(
        procs, tmpdir, monkeypatch):
    """A client announcing a heartbeat interval of 1e9 s and then going
    silent (its connection open) is went away within the server's cap
    (MAX_WENT_AWAY_S), and the run ends within master.silence_bound_s of the
    server's flags after its last message."""
    for key, value in _SMALL_CAPS.items():
        monkeypatch.setattr(liveness, key, value)
    from diskbench.server import master
    flags = ["--idle-timeout", "0.3", "--read-timeout", "3600"]
    server = ServerProc(PatchedServer(procs, "from diskbench.server import liveness as _l\n"
                                 + _CAPS), _logs(tmpdir), flags)
    peer = FakeClient(server.port, "sloth")
    # (the longest plan --max-duration allows: a longer one is refused at hello)
    peer.begin(heartbeat_interval_s=1e9, duration_s=plan.MAX_RUN_S, stats_interval_s=1e9)
    peer.perf(0, [0.001])
    peer.wait_acked(peer.seq)
    last = time.time()
    bound = master.silence_bound_s(idle_timeout=0.3)
    wait_until(lambda: "run complete" in server.server_log(), timeout=bound + 10,
               what="the run to complete")
    took = time.time() - last
    assert took <= bound, (took, bound)
    assert server.wait_exit() == exitcodes.SERVER_INCOMPLETE, server.stderr()
    entry = _client(server.report(), "sloth")
    assert entry["state"] == st.WENT_AWAY and "MAX_WENT_AWAY_S" in entry["state_why"]


# --- 4. dedup state degrades, never cliffs --------------------------------------------
#: A small seq list (gaps: dropped messages) and the resends an outage brings.
_SEQS = [1, 2, 4, 5, 7]
_RESENDS = [4, 7, 2]


def test_every_permutation_and_resend_of_seqs_records_each_seq_once(monkeypatch):
    """Dedup is by set, whatever the order: every permutation of a small seq
    list with resends records each seq exactly once; at a cap as small as 2
    ranges a client's in-order seqs with gaps are every one recorded, and no
    order ever records a seq twice."""
    from diskbench import seqset
    for cap in (seqset.MAX_RANGES, 2):
        monkeypatch.setattr(seqset, "MAX_RANGES", cap)
        count = 0
        for order in itertools.permutations(_SEQS + _RESENDS):
            seen = seqset.SeqSet()
            recorded = [s for s in order if seen.add(s)]
            assert len(recorded) == len(set(recorded)), (cap, order)
            if cap > len(_SEQS):
                assert sorted(recorded) == _SEQS, order
            assert len(seen) <= max(cap, 2)
            count += 1
        assert count == math.factorial(len(_SEQS + _RESENDS))
        seen = seqset.SeqSet()
        gappy = list(range(1, 200, 2))          # a drop between every two messages
        assert all(seen.add(s) for s in gappy) and len(seen) <= max(cap, 2)


def test_a_client_past_the_seq_sets_cap_is_recorded_and_finishes(procs, tmpdir):
    """A client whose seqs have more gaps (dropped messages) than the seq set's
    cap (seqset.MAX_RANGES, patched down to 4 in the real server) still has
    every later message recorded and acknowledged, finishes (never "went
    away"), and the report says the dedup state reached its cap. A bye
    refused for a seq jump is no bye: a connection closed after it closed
    without one."""
    server = ServerProc(PatchedServer(procs, "from diskbench import seqset\n"
                                 "seqset.MAX_RANGES = 4\n"), _logs(tmpdir),
                        ["--clients", "2"] + FAST)
    liar = FakeClient(server.port, "liar")
    liar.hello()
    peer = FakeClient(server.port, "gappy")
    peer.begin()
    liar.wait_for(protocol.GO)
    sent = [1, 2]
    for i in range(12):
        peer.seq += 1                          # a message it dropped
        sent.append(peer.perf(i, [0.001]).seq)
    sent.append(peer.stop().seq)
    sent.append(peer.send(protocol.BYE).seq)
    peer.wait_acked(peer.seq)
    liar.seq += 10 ** 6                        # far beyond: refused
    liar.send(protocol.BYE)
    wait_until(lambda: "seq-jump" in server.server_log(), what="the refused bye")
    liar.close()
    assert server.wait_exit(30) == exitcodes.SERVER_INCOMPLETE, server.stderr()
    rep = server.report()
    assert _client(rep, "gappy")["state"] == st.FINISHED
    recorded = sorted(m.seq for m, _ts in server.records() if m.name == "gappy")
    assert recorded == sent
    assert any("gappy's seqs have more than 4 gaps" in w
               for w in rep["run"]["server_warnings"])
    liar_entry = _client(rep, "liar")
    assert liar_entry["state"] == st.WENT_AWAY
    assert "without stop" in liar_entry["state_why"], liar_entry["state_why"]
