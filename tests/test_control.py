"""Remote control of a run: the server's control socket driven by the real
``python -m diskbench.server ctl`` command, SIGINT once and twice on the server,
and the client ignoring server messages whose mac fails.

Real server and client processes over real TCP with real files; the control
socket is a real unix socket in the server's --log-dir.
"""
import os
import re
import shutil
import signal
import socket
import stat
import tempfile
import time

import pytest

from diskbench import exitcodes
from diskbench import protocol as P
from diskbench.protocol import ctl as channel
from diskbench.server import control
from tests.faults.test_server_restart import client_log, real_client
from tests.helpers import communicate, ctl_request, wait_until
from tests.test_client_fakeserver import FakeServer
from tests.test_server_fakes import ServerProc

SECRET = "ctl-secret-for-tests"
#: A client that must still be writing when the test acts on it.
LONG_S = 120
#: How long a stopped client may take: the chunk in flight, its summary, the
#: supervisor's loop tick, on a loaded 2-core machine (about 0.2 s when quiet).
STOPS_WITHIN_S = 40
#: --shutdown-grace where a test shows the wait ended early: far longer than
#: any of these tests takes when the feature works.
LONG_GRACE_S = 90
NOBODY = 65534


def _server(procs, log_dir, *flags):
    return ServerProc(procs, log_dir, ["--quiet", "--heartbeat-timeout", "60"] +
                      list(flags))


def ctl(procs, log_dir, *args, **kw):
    """Run the real ctl command; (exit code, stdout, stderr)."""
    code, out, err = procs.run(["-m", "diskbench.server", "ctl", "--log-dir", log_dir] +
                               list(args), timeout=30, env=kw.get("env"))
    assert "Traceback" not in err, err
    return code, out, err


def _started(server, *names):
    """Each started writing and has a perf interval recorded: a byte written
    (a client stopped before its first byte is failed, not finished: a test
    that stopped one at once under load saw exit 5)."""
    log = server.server_log()
    if not all("client %s started writing" % n in log for n in names):
        return False
    measured = set(m.name for m, _ in server.records() if m.type == P.PERF)
    return all(n in measured for n in names)


def _wait_started(server, *names):
    wait_until(lambda: _started(server, *names), 60,
               what="%s to start writing" % ", ".join(names))


def _client(rep, name):
    return [c for c in rep["clients"] if c["client"] == name][0]


def _stop_summary(server, name):
    stops = [m for m, _ in server.records() if m.type == P.STOP and m.name == name]
    return stops[0] if stops else None


def _exit_within(proc, seconds):
    wait_until(lambda: proc.poll() is not None, seconds,
               what="pid %d to exit" % proc.pid)
    return proc.returncode


# --- ctl list / stop NAME -----------------------------------------------------------
def test_ctl_lists_clients_and_stops_one_reported_as_stopped_by_operator(procs, tmpdir):
    logs = str(tmpdir.join("logs"))
    server = _server(procs, logs, "--clients", "2")
    path = os.path.join(logs, channel.SOCKET_NAME)
    mode = os.lstat(path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    # both write far longer than the test: each stops only when the test says so
    keeper = real_client(procs, tmpdir, server.port, "keeper", duration=LONG_S)
    victim = real_client(procs, tmpdir, server.port, "victim", duration=LONG_S)
    _wait_started(server, "keeper", "victim")

    code, out, err = ctl(procs, logs, "list")
    assert code == exitcodes.OK, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["client", "state", "address", "MiB"]
    rows = dict((line.split()[0], line.split()) for line in lines[1:3])
    assert sorted(rows) == ["keeper", "victim"]
    for row in rows.values():
        assert row[1] == "writing" and row[2].startswith("127.0.0.1:")
    assert lines[-1].endswith(": 2 clients")

    code, out, err = ctl(procs, logs, "stop", "victim")
    assert code == exitcodes.OK, err
    assert "asked client victim to stop" in out
    stopped_at = time.time()
    assert _exit_within(victim, STOPS_WITHIN_S) == exitcodes.CLIENT_INTERRUPTED
    assert time.time() - stopped_at < LONG_S / 2   # long before its own --duration
    # what the victim says and what the server recorded
    assert "stopped by the operator" in client_log(tmpdir, "victim")
    summary = wait_until(lambda: _stop_summary(server, "victim"), 10,
                         what="victim's stop summary")
    assert summary.reason == P.STOP_SERVER and summary.bytes_written > 0

    code, out, err = ctl(procs, logs, "list")
    assert code == exitcodes.OK, err
    row = [line for line in out.splitlines() if line.startswith("victim ")][0]
    assert row.split()[1] == "finished" and row.split()[4] == "0.0"   # MiB/s now
    assert "stopped by the operator (ctl stop) at " in row
    row = [line for line in out.splitlines() if line.startswith("keeper ")][0]
    assert row.split()[1] == "writing"                 # only the one named stopped
    code, _, err = ctl(procs, logs, "stop", "victim")      # already stopped
    assert code == exitcodes.CTL_NO_CLIENT and "victim is finished" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = ctl(procs, logs, "stop", "ghost")
    assert code == exitcodes.CTL_NO_CLIENT and "no client named ghost" in err

    assert keeper.poll() is None
    code, _, err = ctl(procs, logs, "stop", "keeper")
    assert code == exitcodes.OK, err
    assert _exit_within(keeper, STOPS_WITHIN_S) == exitcodes.CLIENT_INTERRUPTED
    # every client finished (stopped by the operator is not a failure): exit 0
    assert server.wait_exit(30) == exitcodes.OK, server.stderr()
    rep = server.report()
    for name in ("victim", "keeper"):
        c = _client(rep, name)
        assert c["state"] == "finished" and "stopped by the operator" in c["state_why"]
        assert c["written_mib"] > 0
    assert "the operator asked client victim to stop" in server.server_log()
    assert not os.path.exists(path)                          # removed at exit
    code, _, err = ctl(procs, logs, "list")
    assert code == exitcodes.CTL_NO_SERVER and "no server is running" in err


def test_ctl_stop_before_go_fails_the_client_it_never_wrote(procs, tmpdir):
    """A client stopped with ctl stop while it waits for go (it joined, the run waits
    for a second) wrote nothing: its verdict is failed, saying so, and the run cannot
    exit 0 "every client finished" (it used to be called finished, exit 0, beside the
    one that ran). The client that came later runs and finishes as usual; a re-render
    says the same."""
    logs = str(tmpdir.join("logs"))
    server = _server(procs, logs, "--clients", "2")
    early = real_client(procs, tmpdir, server.port, "early", duration=2)
    wait_until(lambda: "client early joined" in server.server_log(), 30,
               what="early's hello")
    code, out, err = ctl(procs, logs, "stop", "early")
    assert code == exitcodes.OK, err
    assert _exit_within(early, STOPS_WITHIN_S) == exitcodes.CLIENT_INTERRUPTED
    wait_until(lambda: _stop_summary(server, "early"), 10, what="early's stop summary")
    later = real_client(procs, tmpdir, server.port, "later", duration=2)
    assert _exit_within(later, LONG_S) == exitcodes.OK
    assert server.wait_exit(30) == exitcodes.SERVER_INCOMPLETE, server.stderr()
    rep = server.report()
    c = _client(rep, "early")
    assert c["state"] == "failed" and not c["written_mib"], c
    assert "stopped by the operator (ctl stop) at " in c["state_why"] and \
        "before it wrote anything" in c["state_why"], c["state_why"]
    assert _client(rep, "later")["state"] == "finished"
    os.remove(os.path.join(logs, "report.json"))     # the re-render writes it again
    code, out, err = procs.run(["-m", "diskbench.report", logs], timeout=60)
    assert code == exitcodes.OK, err
    again = _client(server.report(), "early")
    assert (again["state"], again["state_why"]) == (c["state"], c["state_why"])


# --- SIGINT once / ctl end ------------------------------------------------------------
@pytest.mark.parametrize("how", ["SIGINT", "ctl end"])
def test_end_once_every_client_stops_summaries_recorded_exit_6(procs, tmpdir, how):
    """One SIGINT and one ``ctl end`` do the same: every live client is asked to
    stop, their summaries are waited for (not the whole grace), then the report."""
    logs = str(tmpdir.join("logs"))
    grace = LONG_GRACE_S
    server = _server(procs, logs, "--clients", "2", "--shutdown-grace", str(grace))
    clients = dict((n, real_client(procs, tmpdir, server.port, n, duration=LONG_S))
                   for n in ("c1", "c2"))
    _wait_started(server, *clients)
    began = time.time()
    if how == "SIGINT":
        server.proc.send_signal(signal.SIGINT)
    else:
        code, out, err = ctl(procs, logs, "end")
        assert code == exitcodes.OK and "ending the run" in out, err
    for name, proc in clients.items():
        assert _exit_within(proc, STOPS_WITHIN_S) == exitcodes.CLIENT_INTERRUPTED, name
    assert server.wait_exit(grace) == exitcodes.SERVER_INTERRUPTED, server.stderr()
    assert time.time() - began < grace / 2     # the summaries ended the wait
    assert "Traceback" not in server.stderr()
    rep = server.report()
    want = "SIGINT" if how == "SIGINT" else "the operator (ctl end)"
    assert rep["run"]["interrupted_by"] == want
    assert ("operator" in rep["run"]["exit_meaning"]) == (how == "ctl end")
    for name in clients:
        c = _client(rep, name)
        assert c["state"] == "finished", (c["state_why"], c)
        assert _stop_summary(server, name).reason == P.STOP_SERVER
        assert c["written_mib"] > 0
    assert "INTERRUPTED by %s" % want in server.report_text()
    if how == "ctl end":
        assert "the operator ended the run (ctl end)" in server.server_log()


# --- SIGINT twice / ctl end twice -------------------------------------------------------
@pytest.mark.parametrize("how", ["SIGINT", "ctl end"])
def test_second_interrupt_exits_at_once_with_report(procs, tmpdir, how):
    """A client frozen with SIGSTOP cannot answer the stop: after the first
    interrupt the server waits (the grace); the second ends the wait at once."""
    logs = str(tmpdir.join("logs"))
    grace = LONG_GRACE_S
    server = _server(procs, logs, "--clients", "2", "--shutdown-grace", str(grace),
                     "--heartbeat-timeout", "300")   # frozen stays live meanwhile
    polite = real_client(procs, tmpdir, server.port, "polite", duration=LONG_S)
    frozen = real_client(procs, tmpdir, server.port, "frozen", duration=LONG_S)
    _wait_started(server, "polite", "frozen")
    os.kill(frozen.pid, signal.SIGSTOP)      # its main process: the connection's owner

    def interrupt():
        if how == "SIGINT":
            server.proc.send_signal(signal.SIGINT)
        else:
            code, _, err = ctl(procs, logs, "end")
            assert code == exitcodes.OK, err

    interrupt()
    assert _exit_within(polite, STOPS_WITHIN_S) == exitcodes.CLIENT_INTERRUPTED
    wait_until(lambda: _stop_summary(server, "polite"), 10, what="polite's summary")
    assert server.proc.poll() is None        # still waiting for the frozen one
    second = time.time()
    interrupt()
    assert server.wait_exit(grace / 3) == exitcodes.SERVER_INTERRUPTED, server.stderr()
    assert time.time() - second < grace / 3   # not the grace (about 0.3 s when quiet)
    rep = server.report()
    assert _client(rep, "polite")["state"] == "finished"
    f = _client(rep, "frozen")
    assert f["state"] == "running" and "had not finished when" in f["state_why"]
    assert "not waiting for the clients' summaries" in server.server_log()
    os.kill(frozen.pid, signal.SIGCONT)


def test_ctl_told_no_answer_is_never_carried_out_by_a_server_frozen_meanwhile(procs,
                                                                             tmpdir):
    """A server frozen (SIGSTOP) when ctl asks: ctl says it had no answer
    (exit 7, that it will not be carried out later); the server, resumed,
    refuses the request it finds waiting (older than MAX_AGE_S: ctl gave up
    on it) and the client it named keeps writing."""
    from diskbench.server import ctl as ctl_command
    logs = str(tmpdir.join("logs"))
    server = _server(procs, logs, "--clients", "1")
    client = real_client(procs, tmpdir, server.port, "kept", duration=LONG_S)
    _wait_started(server, "kept")
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        code, out, err = procs.run(["-m", "diskbench.server", "ctl", "--log-dir", logs,
                                    "stop", "kept"],
                                   timeout=ctl_command.REPLY_TIMEOUT_S + 30)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    assert code == exitcodes.CTL_NO_SERVER and "will not carry the request out" in err, err
    wait_until(lambda: "refused a stop request signed" in server.server_log(), 30,
               what="the stale request refused")
    assert "the operator asked client kept to stop" not in server.server_log()
    assert client.poll() is None              # still writing
    code, out, err = ctl(procs, logs, "end")
    assert code == exitcodes.OK, err
    assert _exit_within(client, STOPS_WITHIN_S) == exitcodes.CLIENT_INTERRUPTED
    assert server.wait_exit(60) == exitcodes.SERVER_INTERRUPTED


# --- authentication ---------------------------------------------------------------------
def test_ctl_with_a_secret_needs_the_hmac_and_refuses_old_requests(procs, tmpdir):
    secret_file = tmpdir.join("secret")
    secret_file.write(SECRET + "\n")
    logs = str(tmpdir.join("logs"))
    server = _server(procs, logs, "--secret-file", str(secret_file))

    code, _, err = ctl(procs, logs, "list")
    assert code == exitcodes.CTL_REFUSED and "missing mac" in err
    assert "--secret-file" in err and len(err.strip().splitlines()) == 1
    code, _, err = ctl(procs, logs, "end", env={"DISKBENCH_SECRET": "not-" + SECRET})
    assert code == exitcodes.CTL_REFUSED and "wrong mac" in err
    assert server.proc.poll() is None         # the refused end did nothing
    code, out, err = ctl(procs, logs, "list", env={"DISKBENCH_SECRET": SECRET})
    assert code == exitcodes.OK and "no client has said hello yet" in out, err

    # a correctly signed request made long ago (a captured one, replayed)
    old = P.make(P.CTL_END, P.CTL_REQUEST, ts=time.time() - 2 * channel.MAX_AGE_S)
    done = ctl_request(logs, P.encode(old, SECRET))[-1]
    assert done.code == exitcodes.CTL_REFUSED and "replayed" in done.text
    # garbage and an over-long line: refused, and the thread goes on serving
    assert ctl_request(logs, b"{not json\n")[-1].code == exitcodes.USAGE
    assert ctl_request(logs, b"x" * (channel.MAX_REQUEST_BYTES + 10))[-1].code == \
        exitcodes.USAGE
    assert server.proc.poll() is None
    log = wait_until(lambda: "request signed" in server.server_log() and
                     server.server_log(), 10, what="the old request logged")
    assert log.count("control socket: refused a request (bad-mac)") == 2
    age = int(re.search(r"refused a end request signed (\d+) s ago", log).group(1))
    assert 2 * channel.MAX_AGE_S <= age < 3 * channel.MAX_AGE_S

    code, out, err = ctl(procs, logs, "--secret-file", str(secret_file), "end")
    assert code == exitcodes.OK, err
    assert server.wait_exit() == exitcodes.SERVER_INTERRUPTED
    assert server.report()["run"]["interrupted_by"] == "the operator (ctl end)"


# --- who may connect ----------------------------------------------------------------------
@pytest.fixture
def open_dir():
    """A log dir every user can reach (pytest's tmpdir is private to root)."""
    path = tempfile.mkdtemp(prefix="diskbench-ctl-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


#: Imports first: the interpreter's own files may be unreadable to nobody.
_AS_NOBODY = """
import os, sys
from diskbench.server.__main__ import main
os.setgid(%d)
os.setuid(%d)
sys.exit(main(sys.argv[1:]))
""" % (NOBODY, NOBODY)


@pytest.mark.skipif(os.geteuid() != 0, reason="running ctl as another user needs root")
def test_ctl_from_another_user_is_refused_by_mode_and_by_peer_uid(procs, open_dir):
    logs = os.path.join(open_dir, "logs")
    server = _server(procs, logs)
    os.chmod(logs, 0o755)
    path = os.path.join(logs, channel.SOCKET_NAME)
    as_nobody = ["-c", _AS_NOBODY, "ctl", "--log-dir", logs, "end"]

    code, _, err = procs.run(as_nobody, timeout=30)          # mode 0600 stops it
    assert code == exitcodes.CTL_REFUSED and "not allowed to use" in err, err
    assert "Traceback" not in err

    os.chmod(path, 0o666)    # a mistake: the peer's uid is still checked
    code, _, err = procs.run(as_nobody, timeout=30)
    assert code == exitcodes.CTL_REFUSED, err
    assert "serves uid 0 (the server's user) only" in err and "Traceback" not in err
    wait_until(lambda: "refused a request from uid %d" % NOBODY in server.server_log(),
               10, what="the refusal logged")
    assert server.proc.poll() is None                          # not ended

    code, _, err = ctl(procs, logs, "end")                     # its own user: served
    assert code == exitcodes.OK, err
    assert server.wait_exit() == exitcodes.SERVER_INTERRUPTED


# --- no server ------------------------------------------------------------------------------
def test_ctl_without_a_server_and_two_servers_on_one_log_dir(procs, tmpdir):
    logs = str(tmpdir.join("logs"))
    code, _, err = ctl(procs, logs, "list")
    assert code == exitcodes.CTL_NO_SERVER and "no directory" in err
    os.mkdir(logs)
    code, _, err = ctl(procs, logs, "list")
    assert code == exitcodes.CTL_NO_SERVER and "no control.sock there" in err
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # a dead server's socket
    stale.bind(os.path.join(logs, channel.SOCKET_NAME))
    stale.close()
    code, _, err = ctl(procs, logs, "list")
    assert code == exitcodes.CTL_NO_SERVER and "left by a server that ended" in err
    code, _, err = ctl(procs, logs, "stop", "bad\nname")
    assert code == exitcodes.USAGE and len(err.strip().splitlines()) == 1

    server = _server(procs, logs)             # replaces the stale socket
    code, _, err = ctl(procs, logs, "list")
    assert code == exitcodes.OK, err
    code, _, err = procs.run(["-m", "diskbench.server", "--port", "0", "--log-dir", logs],
                             timeout=30)
    assert code == exitcodes.SERVER_LOG_DIR and "another server is running" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    code, _, err = ctl(procs, logs, "end")    # the first one was not disturbed
    assert code == exitcodes.OK, err
    assert server.wait_exit() == exitcodes.SERVER_INTERRUPTED


def test_server_refuses_a_log_dir_whose_control_sock_answers_without_its_lock(procs, tmpdir):
    """A live server that holds no server.lock (an earlier diskbench) is still
    found by its answering control.sock: the second server exits SERVER_LOG_DIR
    with one line, never appends to the same perf.jsonl."""
    logs = str(tmpdir.mkdir("logs"))
    older = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    older.bind(os.path.join(logs, channel.SOCKET_NAME))
    older.listen(1)
    try:
        code, _, err = procs.run(["-m", "diskbench.server", "--port", "0", "--log-dir",
                                  logs], timeout=30)
    finally:
        older.close()
    assert code == exitcodes.SERVER_LOG_DIR, err
    assert "its %s answers" % channel.SOCKET_NAME in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


# --- the client: server messages whose mac fails are ignored ------------------------------
def _perf_count(srv, name):
    return len(srv.of_type(P.PERF, name))


def test_client_ignores_server_stop_with_a_bad_mac_and_obeys_a_good_one(procs, tmpdir):
    srv = FakeServer(secret=SECRET)
    try:
        proc = real_client(procs, tmpdir, srv.port, "signed", duration=LONG_S,
                           env={"DISKBENCH_SECRET": SECRET})
        wait_until(lambda: _perf_count(srv, "signed") >= 1, 30, what="a first perf")
        forged = [P.encode(P.make(P.STOP, P.S2C, reason="forged"), "not-" + SECRET),
                  P.encode(P.make(P.STOP, P.S2C, reason="unsigned"))]
        with srv.lock:
            conns = list(srv.conns)
        for line in forged:
            for conn in conns:
                conn.sendall(line)
        wait_until(lambda: client_log(tmpdir, "signed").count(
            "ignored a server message: stop:") >= 2, 20, what="both forgeries logged")
        log = client_log(tmpdir, "signed")
        assert "stop: wrong mac" in log and "stop: missing mac" in log
        seen = _perf_count(srv, "signed")
        wait_until(lambda: _perf_count(srv, "signed") >= seen + 2, 20,
                   what="the client to keep writing")
        assert proc.poll() is None and not srv.of_type(P.STOP, "signed")

        srv.stop_clients("stop, signed properly")
        out, err = communicate(proc, STOPS_WITHIN_S + 30)
        assert proc.returncode == exitcodes.CLIENT_INTERRUPTED, err[-2000:]
        stops = srv.of_type(P.STOP, "signed")
        assert len(stops) == 1 and stops[0].reason == P.STOP_SERVER
        assert "stop, signed properly" in client_log(tmpdir, "signed")
    finally:
        srv.close()


def test_ctl_with_a_log_dir_deeper_than_a_unix_socket_path(procs, tmpdir):
    """Over 107 bytes the socket is bound and reached through /proc/self/fd."""
    deep = tmpdir
    for _ in range(4):
        deep = deep.join("d" * 30)
    logs = str(deep.join("logs"))
    assert len(os.path.join(logs, channel.SOCKET_NAME)) > channel.SOCKET_PATH_MAX
    server = _server(procs, logs)
    assert stat.S_ISSOCK(os.lstat(os.path.join(logs, channel.SOCKET_NAME)).st_mode)
    code, out, err = ctl(procs, logs, "list")
    assert code == exitcodes.OK and "no client has said hello yet" in out, err
    assert "no control socket" not in server.stderr()
    code, _, err = ctl(procs, logs, "end")
    assert code == exitcodes.OK, err
    assert server.wait_exit() == exitcodes.SERVER_INTERRUPTED


class _FailingOnce(object):
    """A registry whose first progress_view raises, as a bug would."""

    def __init__(self, registry):
        self.registry = registry
        self.calls = 0

    def progress_view(self):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("injected failure")
        return self.registry.progress_view()

    def link(self, name):
        return self.registry.link(name)


def test_control_thread_logs_a_failing_request_and_keeps_serving(procs, tmpdir):
    import logging
    from diskbench.server import registry as reg
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("diskbench.server")
    logger.addHandler(handler)
    logs = str(tmpdir.mkdir("logs"))
    server = control.ControlServer(logs, None, _FailingOnce(reg.Registry()),
                                   lambda name: None, lambda: "ending", "run-x")
    server.open()
    try:
        code, _, err = ctl(procs, logs, "list")
        assert code == exitcodes.INTERNAL and "failed to answer" in err
        assert len(err.strip().splitlines()) == 1
        code, out, err = ctl(procs, logs, "list")      # the same thread, still serving
        assert code == exitcodes.OK and "run run-x: 0 clients" in out, err
        assert server.alive() and server.failures == 1
        failed = [r for r in records if "a request failed" in r.getMessage()]
        assert len(failed) == 1 and failed[0].exc_info is not None
    finally:
        logger.removeHandler(handler)
        server.close()
    assert not os.path.exists(os.path.join(logs, channel.SOCKET_NAME))


#: A same-user flood on the control socket: connections, and how long the
#: first MAX_REQUESTS are held silent (within control.REQUEST_S) meanwhile.
FLOOD_CONNECTIONS = 400


def test_a_flood_on_the_control_socket_is_logged_sparingly(procs, tmpdir):
    """The outside tester's flood (19,932 identical lines in 3 s): every
    request slot held by a silent connection, then hundreds of connections
    refused busy or as garbage: server.log has at most LIMIT_LOG_MAX lines of
    each kind (then every LIMIT_LOG_EVERY-th, with the count), the rule the
    listener uses for its TCP refusals."""
    from diskbench import server as server_pkg
    logs = str(tmpdir.join("logs"))
    server = _server(procs, logs)
    path = channel.socket_path(logs)
    held = []
    for _ in range(control.MAX_REQUESTS):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        held.append(sock)
    answers = []
    for _ in range(FLOOD_CONNECTIONS):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)            # (blocking: a full backlog waits, no EAGAIN)
        sock.settimeout(10)
        try:
            sock.sendall(b"{not json\n")
            answers.append(sock.recv(4096))
        except socket.error:
            answers.append(b"")
        finally:
            sock.close()
    for sock in held:
        sock.close()
    refused = len([a for a in answers if b"refused" in a])
    assert refused > 2 * server_pkg.LIMIT_LOG_MAX + 10, answers[:3]
    code, _, _ = ctl(procs, logs, "end")
    assert code == exitcodes.OK
    server.wait_exit(30)
    lines = [line for line in server.server_log().splitlines()
             if "control socket: refused" in line]
    kinds = set(re.sub(r"\d+", "N", line.split("control socket: ")[1].split(";")[0])
                for line in lines)
    assert len(lines) <= len(kinds) * server_pkg.LIMIT_LOG_MAX, "\n".join(lines[-5:])
    assert refused > len(lines)
    if any("busy" in a.decode("utf-8", "replace") for a in answers):
        assert "refused a connection" in " ".join(lines)


def _non_ascii_log_dir(kind):
    """A --log-dir (as this Python's argv gives it: bytes on 2.7, str on 3)
    under a fresh short directory: ``utf8`` ('logs-\\xe9'), ``deep`` (its socket
    path at most SOCKET_PATH_MAX characters but more bytes, so only a count in
    bytes reaches it through /proc/self/fd), ``not-utf8`` (byte 0xe9 alone)."""
    base = tempfile.mkdtemp(prefix="dbctl-")
    if kind == "not-utf8":
        name = b"logs-\xe9"
    elif kind == "utf8":
        name = u"logs-\xe9".encode("utf-8")
    else:
        chars = channel.SOCKET_PATH_MAX - 7 - len(base) - 2 - len(channel.SOCKET_NAME)
        name = (u"\xe9" * chars).encode("utf-8")
    path = os.path.join(base.encode("ascii"), name)
    sock = os.path.join(path, channel.SOCKET_NAME.encode("ascii"))
    if kind == "deep":
        assert len(sock.decode("utf-8")) <= channel.SOCKET_PATH_MAX < len(sock)
    return base, (path if isinstance(os.sep, bytes) else os.fsdecode(path))


@pytest.mark.parametrize("kind", ["utf8", "deep", "not-utf8"])
def test_ctl_server_and_client_with_a_non_ascii_log_dir(procs, tmpdir, kind):
    """A --log-dir that is not ASCII (on 2.7 argv's bytes): the server binds
    its control socket there, ctl reaches it (list, end), a real client with
    such a log dir of its own runs, and the report is written there."""
    base, logs = _non_ascii_log_dir(kind)
    try:
        server = _server(procs, logs, "--clients", "1")
        assert stat.S_ISSOCK(os.lstat(os.path.join(logs, channel.SOCKET_NAME)).st_mode)
        code, out, err = ctl(procs, logs, "list")
        assert code == exitcodes.OK and "no client has said hello yet" in out, err
        client = real_client(procs, tmpdir, server.port, "nonascii", duration=LONG_S,
                             extra=["--log-dir", logs + "-client"])
        _wait_started(server, "nonascii")
        code, out, err = ctl(procs, logs, "list")
        assert code == exitcodes.OK and "nonascii" in out, err
        code, _, err = ctl(procs, logs, "end")
        assert code == exitcodes.OK, err
        assert server.wait_exit() == exitcodes.SERVER_INTERRUPTED, server.stderr()
        assert _exit_within(client, STOPS_WITHIN_S) == exitcodes.CLIENT_INTERRUPTED
        assert _client(server.report(), "nonascii")["state"] == "finished"
        assert os.path.exists(os.path.join(logs, "report.html"))
        code, _, err = ctl(procs, logs, "list")     # the server is gone: said, no crash
        assert code == exitcodes.CTL_NO_SERVER and len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in server.stderr()
    finally:
        shutil.rmtree(base, ignore_errors=True)
