"""Trust, round 3, the client's side (issue 25): real client processes, real
signals, real listening sockets, a real small tmpfs, the real server.

- Signals: SIGINT, SIGTERM and SIGHUP in each phase (start-up checks,
  calibration, connect retries, a silent server, shutdown) end the client at
  once with CLIENT_INTERRUPTED, no traceback, nothing left on the disk under
  test. The blocking points are made observable without patching: a FIFO
  where the client's probe or calibration file goes blocks its open()
  (/proc/PID/wchan says so); a port nobody listens on; a listener that never
  answers; a SIGSTOPped writer at the end of the run.
- Wrong servers: an unresolvable name, a peer speaking SSH, HTTP or garbage,
  or closing at once, ends the client with one line and CLIENT_SERVER.
- The client's own log on a full tmpfs is said once and costs nothing.
- Verdicts: the client's exit code and the real server's report agree.
"""
import errno
import json
import os
import signal
import socket
import threading
import time

import pytest

from diskbench import exitcodes
from diskbench import protocol as P
from diskbench.client import sender as sender_mod
from diskbench.client import supervisor as sup_mod
from tests.helpers import communicate, free_port, mounted_tmpfs, proc_state, wait_until
from tests.test_client_runs import client_args, of, records, start_server

STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
#: "At once": a stopped client is gone within this (a few main-loop ticks and
#: sender idle ticks, and the interpreter's exit), far below every wait it cut.
AT_ONCE_S = 5 * sup_mod.LOOP_TICK_S + 4 * sender_mod.IDLE_TICK_S + 2.0
#: A test run's --connect-timeout / --stall-timeout: far beyond AT_ONCE_S, so
#: finishing within AT_ONCE_S proves the wait was cut, not waited out.
LONG_S = 120


def client_log(tmpdir, name):
    """The client's log so far ("" before it exists)."""
    try:
        with open(str(tmpdir.join("logs", "client-%s.log" % name))) as f:
            return f.read()
    except (IOError, OSError):
        return ""


def wchan(pid):
    try:
        with open("/proc/%d/wchan" % pid) as f:
            return f.read().strip()
    except (IOError, OSError):
        return ""


def ended_at_once(proc, signum):
    """Send ``signum`` to the client; its stderr, once it ended within AT_ONCE_S."""
    t0 = time.time()
    os.kill(proc.pid, signum)
    out, err = communicate(proc, AT_ONCE_S + 30)
    assert time.time() - t0 <= AT_ONCE_S, "took %.1f s: %s" % (time.time() - t0, err)
    return err


def assert_interrupted(proc, err, data):
    assert proc.returncode == exitcodes.CLIENT_INTERRUPTED, err
    assert "Traceback" not in err, err
    assert os.listdir(data) == []


@pytest.mark.parametrize("signum", STOP_SIGNALS)
@pytest.mark.parametrize("scratch", ["probe", "calibration"])
def test_signal_in_start_up_checks_ends_at_once_and_leaves_no_file(procs, tmpdir,
                                                                   signum, scratch):
    """A stop signal while a start-up check or the calibration is blocked on
    the disk under test ends the client at once with CLIENT_INTERRUPTED, no
    traceback, and its scratch file (the calibration file included) removed."""
    data = str(tmpdir.mkdir("data"))
    proc = procs.start(client_args(tmpdir, free_port(), "early", data, extra=(
        "--connect-timeout", str(LONG_S))))
    name = ".diskbench-probe-%d" % proc.pid if scratch == "probe" else \
        ".diskbench-calibration-%d.tmp" % proc.pid
    os.mkfifo(os.path.join(data, name))  # its open() blocks until a reader comes
    wait_until(lambda: wchan(proc.pid) == "wait_for_partner", 20,
               what="the client blocked opening its %s file" % scratch)
    err = ended_at_once(proc, signum)
    assert_interrupted(proc, err, data)
    assert "interrupted by signal %d during the start-up checks" % signum in err


@pytest.mark.parametrize("signum", STOP_SIGNALS)
def test_signal_during_connect_retries_ends_at_once(procs, tmpdir, signum):
    """A stop signal while the client retries a refused connection (for a
    long --connect-timeout) ends it at once with CLIENT_INTERRUPTED; the
    refusal was said in one line, not one per retry."""
    data = str(tmpdir.mkdir("data"))
    proc = procs.start(client_args(tmpdir, free_port(), "retry", data, extra=(
        "--connect-timeout", str(LONG_S))))
    wait_until(lambda: "retrying quietly" in client_log(tmpdir, "retry"), 30,
               what="the client retrying a refused connection")
    err = ended_at_once(proc, signum)
    assert_interrupted(proc, err, data)
    assert err.count("cannot connect to the server") == 1, err
    assert "interrupted by signal %d while connecting" % signum in err


class Peer(object):
    """A real listening socket that answers each connection with ``answer``
    (bytes; None: says nothing and keeps the connection open; b"": closes at
    once), as an SSH, HTTP or other foreign server would."""

    def __init__(self, answer):
        self.answer, self.conns, self.accepted = answer, [], 0
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        t = threading.Thread(target=self._serve)
        t.daemon = True
        t.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.lsock.accept()
            except (OSError, socket.error):
                return
            self.accepted += 1
            if self.answer is None:
                self.conns.append(conn)
                continue
            try:
                conn.sendall(self.answer)
            except (OSError, socket.error):
                pass
            conn.close()

    def close(self):
        self.lsock.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def peer(request):
    p = Peer(request.param)
    yield p
    p.close()


@pytest.mark.parametrize("peer", [None], indirect=True)
@pytest.mark.parametrize("signum", STOP_SIGNALS)
def test_signal_while_a_server_never_answers_ends_at_once(procs, tmpdir, peer, signum):
    """A stop signal while the client waits on a server that accepted and
    never answers ends it at once (CLIENT_INTERRUPTED), not after
    --deliver-timeout: there is nothing measured to deliver."""
    data = str(tmpdir.mkdir("data"))
    proc = procs.start(client_args(tmpdir, peer.port, "mute", data, extra=(
        "--connect-timeout", str(LONG_S), "--deliver-timeout", str(LONG_S))))
    wait_until(lambda: "connected to server" in client_log(tmpdir, "mute"), 30,
               what="the client connected")
    err = ended_at_once(proc, signum)
    assert_interrupted(proc, err, data)


@pytest.mark.parametrize("signum", STOP_SIGNALS)
def test_signal_during_shutdown_ends_at_once_and_leaves_no_file(procs, tmpdir, signum):
    """A stop signal while the client waits for a writer that does not stop
    (SIGSTOPped) at the end of its run cuts the wait short: CLIENT_INTERRUPTED,
    no traceback, no data file left, and the real server's verdict is the same
    (failed: interrupted by a signal)."""
    slog = str(tmpdir.join("server-logs"))
    data = str(tmpdir.mkdir("data"))
    server, port = start_server(procs, slog, "--clients", "1")
    proc = procs.start(client_args(tmpdir, port, "late", data, duration=2, extra=(
        "--stall-timeout", str(LONG_S))))
    pids = wait_until(lambda: sup_children(tmpdir, "late"), 30, what="children")
    wait_until(lambda: os.listdir(data), 10, what="a data file")
    os.kill(pids[0], signal.SIGSTOP)
    wait_until(lambda: "stopping the writer" in client_log(tmpdir, "late"), 30,
               what="the client stopping its children")
    err = ended_at_once(proc, signum)
    assert_interrupted(proc, err, data)
    communicate(server, 60)
    client = report_client(slog, "late")
    assert client["state"] == "failed" and "signal" in client["state_why"], client


def test_signal_during_shutdown_does_not_wait_for_a_frozen_server(procs, tmpdir):
    """A stop signal while stopping also cuts the wait for the server's acks
    (here a frozen server, SIGSTOP): exit 16 at once, not --deliver-timeout
    later, and nothing left on the disk under test."""
    slog = str(tmpdir.join("server-logs"))
    data = str(tmpdir.mkdir("data"))
    server, port = start_server(procs, slog, "--clients", "1")
    proc = procs.start(client_args(tmpdir, port, "late", data, duration=2, extra=(
        "--stall-timeout", str(LONG_S), "--deliver-timeout", str(LONG_S))))
    pids = wait_until(lambda: sup_children(tmpdir, "late"), 30, what="children")
    wait_until(lambda: os.listdir(data), 10, what="a data file")
    os.kill(pids[0], signal.SIGSTOP)
    wait_until(lambda: "stopping the writer" in client_log(tmpdir, "late"), 30,
               what="the client stopping its children")
    os.kill(server.pid, signal.SIGSTOP)
    try:
        err = ended_at_once(proc, signal.SIGTERM)
    finally:
        os.kill(server.pid, signal.SIGCONT)
    assert_interrupted(proc, err, data)


def sup_children(tmpdir, name):
    import re
    m = re.search(r"children started: writer pid (\d+)", client_log(tmpdir, name))
    return [int(m.group(1))] if m else None


def report_client(slog, name):
    with open(os.path.join(slog, "report.json")) as f:
        report = json.load(f)
    return [c for c in report["clients"] if c["client"] == name][0]


# --- wrong servers: one line, at once ------------------------------------------------
FOREIGN = [
    b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n",
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n",
    b"\x00\x01\xfe\xffgarbage without a newline",
    b'{"jsonrpc": "2.0", "id": 1, "result": "not ours"}\n',
    b"",  # accepts and closes at once
]


@pytest.mark.parametrize("peer", FOREIGN, indirect=True, ids=["ssh", "http", "binary",
                                                              "json", "close"])
def test_a_peer_that_is_not_diskbench_is_named_in_one_line_at_once(procs, tmpdir, peer):
    """A port that does not speak diskbench (an SSH banner, an HTTP response,
    binary garbage, another JSON protocol, a close right after accept) ends
    the client with CLIENT_SERVER and one line "HOST:PORT is not a diskbench
    server" after its first answer (a silent close: after SILENT_CLOSES_MAX
    of them), not after --connect-timeout or a flood of warnings."""
    data = str(tmpdir.mkdir("data"))
    t0 = time.time()
    proc = procs.start(client_args(tmpdir, peer.port, "lost", data, extra=(
        "--connect-timeout", str(LONG_S))))
    out, err = communicate(proc, LONG_S)
    took = time.time() - t0
    assert proc.returncode == exitcodes.CLIENT_SERVER, err
    line = "127.0.0.1:%d is not a diskbench server" % peer.port
    assert err.count(line) == 1, err
    assert "Traceback" not in err
    warnings = [ln for ln in err.splitlines() if "WARNING" in ln or "ERROR" in ln]
    assert len(warnings) == 1, err
    assert took < 15, "took %.1f s" % took  # start-up + calibration + at most 3 backoffs
    assert peer.accepted == (sender_mod.SILENT_CLOSES_MAX if not peer.answer else 1)
    assert os.listdir(data) == []


def test_an_unresolvable_server_name_fails_at_once_in_one_line(procs, tmpdir):
    """A server host name that does not resolve ends the client at once
    (not after --connect-timeout) with one line naming the fix, exit 13."""
    data = str(tmpdir.mkdir("data"))
    args = client_args(tmpdir, 1, "nohost", data, extra=("--connect-timeout", str(LONG_S)))
    args[args.index("127.0.0.1:1")] = "no-such-host.invalid:7070"
    t0 = time.time()
    proc = procs.start(args)
    out, err = communicate(proc, LONG_S)
    assert proc.returncode == exitcodes.CLIENT_SERVER, err
    assert time.time() - t0 < 15
    lines = [ln for ln in err.splitlines() if "ERROR" in ln or "WARNING" in ln]
    assert len(lines) == 1 and "cannot resolve the server's host name " \
        "no-such-host.invalid" in lines[0] and "fix --server" in lines[0], err


def test_connection_refused_is_retried_and_said_once(procs, tmpdir):
    """Connection refused is retried for the whole --connect-timeout (a server
    may be starting: one that appears meanwhile is used) and said in one line,
    not one per retry."""
    data = str(tmpdir.mkdir("data"))
    port = free_port()
    proc = procs.start(client_args(tmpdir, port, "patient", data, duration=1, extra=(
        "--connect-timeout", str(LONG_S))))
    wait_until(lambda: "retrying quietly" in client_log(tmpdir, "patient"), 30,
               what="the client retrying")
    slog = str(tmpdir.join("server-logs"))
    procs.start(["-m", "diskbench.server", "--port", str(port), "--log-dir", slog,
                 "--quiet", "--clients", "1"])
    out, err = communicate(proc, LONG_S)
    assert proc.returncode == exitcodes.OK, err
    assert err.count("cannot connect to the server") == 1, err



# --- the client's own log -------------------------------------------------------------
@pytest.fixture
def small_fs(tmpdir):
    for mnt in mounted_tmpfs(tmpdir, 1):
        yield mnt


def fill(directory):
    """Write a filler file until the filesystem is full (ENOSPC), then pad the
    last page of every other file in it with newlines: tmpfs counts whole pages,
    so a log whose last page has room would take its next lines regardless."""
    _append_until_full(os.path.join(directory, "filler"), b"\0" * 65536)
    for name in os.listdir(directory):
        if name != "filler":
            _append_until_full(os.path.join(directory, name), b"\n")


def _append_until_full(path, block):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        while os.write(fd, block) > 0:
            pass
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)


def assert_every_seq_recorded(slog, name):
    seqs = sorted(m.seq for m in records(slog) if m.name == name)
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert of(records(slog), P.STOP, name) and of(records(slog), P.BYE, name)


@pytest.mark.parametrize("when", ["mid-run", "at start"])
def test_a_full_client_log_dir_is_said_once_and_costs_nothing(procs, tmpdir, small_fs,
                                                             when):
    """A client --log-dir that fills up (mid-run, or already full at the
    start) is said once on stderr: no traceback, the run exits 0 with the
    real server, which recorded every seq and says the client finished."""
    slog = str(tmpdir.join("server-logs"))
    data = str(tmpdir.mkdir("data"))
    server, port = start_server(procs, slog, "--clients", "1")
    args = client_args(tmpdir, port, "quiet", data, duration=2)
    args[args.index("--log-dir") + 1] = small_fs
    if when == "at start":
        fill(small_fs)
    proc = procs.start(args)
    if when == "mid-run":
        wait_until(lambda: of(records(slog), P.START, "quiet"), 30, what="the start")
        fill(small_fs)
    out, err = communicate(proc, 60)
    assert proc.returncode == exitcodes.OK, err
    assert "Traceback" not in err and "Logging error" not in err, err
    assert err.count("cannot write the client log") == 1, err
    communicate(server, 60)
    assert_every_seq_recorded(slog, "quiet")
    assert report_client(slog, "quiet")["state"] == "finished"


def test_an_unusable_client_log_dir_at_start_is_one_line(procs, tmpdir):
    """A --log-dir that cannot be made (a file is in the way) ends the client
    at start with one line naming the fix and CLIENT_DIRECTORY, no traceback."""
    data = str(tmpdir.mkdir("data"))
    blocker = tmpdir.join("not-a-dir")
    blocker.write("x")
    args = client_args(tmpdir, free_port(), "nolog", data)
    args[args.index("--log-dir") + 1] = str(blocker.join("logs"))
    code, out, err = procs.run(args, timeout=60)
    assert code == exitcodes.CLIENT_DIRECTORY, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "use --log-dir with a writable directory" in err


# --- verdicts agree: the client's exit code and the real server's report ----------------
def pipe_bytes_written(pid):
    """Bytes process ``pid`` has written (its heartbeats go up its pipe)."""
    with open("/proc/%d/io" % pid) as f:
        return int([ln for ln in f if ln.startswith("wchar:")][0].split()[1])


def children(tmpdir, name):
    import re
    m = wait_until(lambda: re.search(r"children started: writer pid (\d+), stats pid "
                                     r"(\d+), heartbeat pid (\d+)",
                                     client_log(tmpdir, name)), 30, what="children")
    return dict(zip(("writer", "stats", "heartbeat"), map(int, m.groups())))


def test_frozen_main_past_its_duration_is_finished_on_both_sides(procs, tmpdir):
    """A client whose main process is frozen (SIGSTOP) past its duration while
    its writer ends on time exits 0, and the real server, given the
    heartbeats that queued meanwhile (writer gone: sampled after its run
    ended), calls it finished too: both say the same true thing."""
    from diskbench.client import writer
    slog = str(tmpdir.join("server-logs"))
    data = str(tmpdir.mkdir("data"))
    # (silence while frozen is not what this tests: a long went-away timeout)
    server, port = start_server(procs, slog, "--clients", "1", "--stall-timeout", "1",
                                "--heartbeat-timeout", str(LONG_S))
    duration = 1.5
    # 300 MiB files: few messages, so the pipes to the frozen main never fill
    client = procs.start(client_args(tmpdir, port, "frozen", data, file_mb=300,
                                     duration=duration, extra=["--force"]))
    wait_until(lambda: of(records(slog), P.START, "frozen"), 30, what="start")
    kids = children(tmpdir, "frozen")
    os.kill(client.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: proc_state(kids["writer"]) == "Z",
                   duration + writer.DURATION_GRACE_S + 10,
                   what="the writer to stop itself while main is frozen")
        beats = pipe_bytes_written(kids["heartbeat"])
        # a heartbeat taken after the writer ended waits in the pipe
        wait_until(lambda: pipe_bytes_written(kids["heartbeat"]) > beats, 10,
                   what="a heartbeat sampled after the writer ended")
    finally:
        os.kill(client.pid, signal.SIGCONT)
    out, err = communicate(client, 60)
    assert client.returncode == exitcodes.OK, err
    communicate(server, 60)
    entry = report_client(slog, "frozen")
    assert entry["state"] == "finished" and entry["went_away_count"] == 0, entry["state_why"]
    assert server.returncode == exitcodes.OK


def test_client_with_secret_and_server_without_agree_on_why(procs, tmpdir):
    """A client with a secret talking to a server without one ends at once
    with CLIENT_SERVER and a line saying the server has no secret (not "lost
    the server (None)" after --connect-timeout), and the real server's report
    fails that client for the same stated reason."""
    slog = str(tmpdir.join("server-logs"))
    data = str(tmpdir.mkdir("data"))
    secret = tmpdir.join("secret")
    secret.write("s3cret-shared")
    server, port = start_server(procs, slog, "--clients", "1")
    t0 = time.time()
    client = procs.start(client_args(tmpdir, port, "signed", data, extra=(
        "--secret-file", str(secret), "--connect-timeout", str(LONG_S))))
    out, err = communicate(client, LONG_S)
    assert client.returncode == exitcodes.CLIENT_SERVER, err
    assert time.time() - t0 < 15
    assert "has no secret" in err and "(None)" not in err, err
    assert "ignored a server message" not in err and "Traceback" not in err, err
    communicate(server, 60)
    entry = report_client(slog, "signed")
    assert entry["state"] == "failed" and "has no secret" in entry["state_why"], entry


def test_hung_writer_stall_figure_is_true_on_both_sides(procs, tmpdir):
    """A writer hung (SIGSTOP) until the end fails the client (exit 17) and
    the real server's report agrees (failed, stalled); the stall's length
    both give is the true one (at least --stall-timeout), never "0 s"
    because the writer's stuck chunk finished once it was signalled."""
    import re
    stall_s = 1.0
    slog = str(tmpdir.join("server-logs"))
    data = str(tmpdir.mkdir("data"))
    server, port = start_server(procs, slog, "--clients", "1", "--stall-timeout",
                                str(stall_s))
    # big files: the SIGSTOP lands in a chunk's write (not a rollover's close),
    # the write that completes once the writer is signalled at the end
    client = procs.start(client_args(tmpdir, port, "hung", data, file_mb=400, duration=4,
                                     extra=("--stall-timeout", str(stall_s), "--force")))
    wait_until(lambda: of(records(slog), P.START, "hung"), 30, what="start")
    kids = children(tmpdir, "hung")
    os.kill(kids["writer"], signal.SIGSTOP)
    out, err = communicate(client, 60)
    assert client.returncode == exitcodes.CLIENT_WRITER_STALLED, err
    said = re.search(r"stop \(error\): the writer \(pid \d+\) stalled: no progress for "
                     r"([\d.]+) s", err)
    assert said and float(said.group(1)) >= stall_s, err
    communicate(server, 60)
    entry = report_client(slog, "hung")
    assert entry["state"] == "failed" and "stalled" in entry["state_why"], entry
    figures = [float(x) for x in re.findall(r"no progress for ([\d.]+) s",
                                            entry["state_why"])]
    assert figures and min(figures) >= stall_s, entry["state_why"]


def test_writer_stalled_when_the_run_ends_fails_on_both_sides(procs, tmpdir):
    """A writer stalled (SIGSTOP) when the run ends that then obeys the stop
    command (resumed meanwhile) fails the client, exit 17, as the real
    server, whose heartbeats showed the stall, fails it: never 0 beside a
    failed verdict."""
    slog = str(tmpdir.join("server-logs"))
    data = str(tmpdir.mkdir("data"))
    server, port = start_server(procs, slog, "--clients", "1", "--stall-timeout", "1")
    # the client's stall timeout is also how long a stalled writer gets to obey
    # the stop command: long enough to resume it first
    client = procs.start(client_args(tmpdir, port, "late", data, duration=4, extra=(
        "--stall-timeout", "3")))
    wait_until(lambda: of(records(slog), P.START, "late"), 30, what="start")
    kids = children(tmpdir, "late")
    os.kill(kids["writer"], signal.SIGSTOP)
    wait_until(lambda: "stopping the writer" in client_log(tmpdir, "late"), 30,
               what="the run's end")
    os.kill(kids["writer"], signal.SIGCONT)  # it obeys the stop command now
    out, err = communicate(client, 60)
    assert "sending signal" not in err, err  # (not killed: it obeyed)
    assert client.returncode == exitcodes.CLIENT_WRITER_STALLED, err
    assert "stalled: no progress for" in err and "when the run ended" in err, err
    communicate(server, 60)
    entry = report_client(slog, "late")
    assert entry["state"] == "failed" and "stall" in entry["state_why"], entry


@pytest.mark.parametrize("role", ["heartbeat", "stats"])
def test_a_stopped_helper_child_never_makes_a_running_client_gone_away(procs, tmpdir, role):
    """The heartbeat or stats process frozen (SIGSTOP) mid-run: the main
    process beats for the heartbeat process when it is late (said in the
    report), and keeps beating while it waits for the frozen child at the
    end (AUX_STOP_TIMEOUT_S, far beyond the server's went-away timeout of
    3 heartbeat intervals), so the server never takes the silence for a
    client gone away: finished on both sides, its stop summary delivered."""
    slog = str(tmpdir.join("server-logs"))
    data = str(tmpdir.mkdir("data"))
    server, port = start_server(procs, slog, "--clients", "1")
    duration = 2 * sup_mod.BEAT_LATE_MIN_S
    client = procs.start(client_args(tmpdir, port, "frozen", data, duration=duration))
    wait_until(lambda: of(records(slog), P.START, "frozen"), 30, what="start")
    kids = children(tmpdir, "frozen")
    os.kill(kids[role], signal.SIGSTOP)
    try:
        out, err = communicate(client, 60)
    finally:
        try:
            os.kill(kids[role], signal.SIGCONT)
        except OSError:
            pass
    assert client.returncode == exitcodes.OK, err
    assert "did not stop; sending signal %d" % signal.SIGTERM in err, err
    communicate(server, 60)
    entry = report_client(slog, "frozen")
    assert entry["state"] == "finished" and entry["went_away_count"] == 0, entry
    assert not os.path.exists(str(tmpdir.join("logs", "undelivered.jsonl")))
    beat_note = "the heartbeat process (pid %d) sent no beat" % kids["heartbeat"]
    said = json.dumps(entry)
    assert (beat_note in said) == (role == "heartbeat"), said
    assert "the %s process (pid %d) did not stop when told" % (role, kids[role]) in said


def test_a_stopped_helper_child_at_a_stop_before_the_end_beats_no_dead_writer(procs,
                                                                               tmpdir):
    """Stopped early (ctl stop) with its stats process frozen: once its writer
    has stopped, the main process beats no more (a beat of a writer gone,
    before the planned end, is a stall: the client would be failed for
    stopping while stalled); the frozen child gets one heartbeat interval,
    then SIGTERM, and the stop summary comes before the server's went-away
    timeout: finished, "stopped by the operator"."""
    from tests.test_control import ctl
    slog = str(tmpdir.join("server-logs"))
    data = str(tmpdir.mkdir("data"))
    server, port = start_server(procs, slog, "--clients", "1")
    client = procs.start(client_args(tmpdir, port, "early", data, duration=LONG_S))
    wait_until(lambda: of(records(slog), P.START, "early"), 30, what="start")
    kids = children(tmpdir, "early")
    os.kill(kids["stats"], signal.SIGSTOP)
    code, out, err = ctl(procs, slog, "stop", "early")
    assert code == exitcodes.OK, err
    try:
        out, err = communicate(client, 60)
    finally:
        try:
            os.kill(kids["stats"], signal.SIGCONT)
        except OSError:
            pass
    assert client.returncode == exitcodes.CLIENT_INTERRUPTED, err
    communicate(server, 60)
    entry = report_client(slog, "early")
    assert entry["state"] == "finished", entry["state_why"]
    assert entry["went_away_count"] == 0, entry
    assert "stopped by the operator" in entry["state_why"], entry["state_why"]
    beats = [m for m in of(records(slog), P.HEARTBEAT, "early") if not m.writer_alive]
    assert not beats, beats


def test_a_writer_waited_for_at_the_end_keeps_its_client_heard(procs, tmpdir):
    """A writer hung (SIGSTOP) since its start, for less than the client's
    --stall-timeout when the run ends, is waited for (CHILD_STOP_TIMEOUT_S,
    many went-away timeouts of the server): meanwhile the main process beats
    for the stopped heartbeat process, with the writer's true progress age,
    so the server sees a stall, never a client gone away, and fails it when
    it stops (exit 17 on the client): one verdict on both sides."""
    from diskbench.server import liveness
    slog = str(tmpdir.join("server-logs"))
    data = str(tmpdir.mkdir("data"))
    server, port = start_server(procs, slog, "--clients", "1", "--stall-timeout", "1")
    beat_s = 0.5                                   # client_args' --heartbeat-interval
    duration = 4
    assert sup_mod.CHILD_STOP_TIMEOUT_S > 4 * liveness.HEARTBEAT_LIVENESS * beat_s
    client = procs.start(client_args(tmpdir, port, "hung", data, file_mb=400,
                                     duration=duration, extra=(
                                         "--stall-timeout", str(2 * duration), "--force")))
    wait_until(lambda: of(records(slog), P.START, "hung"), 30, what="start")
    kids = children(tmpdir, "hung")
    os.kill(kids["writer"], signal.SIGSTOP)
    out, err = communicate(client, 60)
    assert "did not stop; sending signal %d" % signal.SIGTERM in err, err
    assert client.returncode == exitcodes.CLIENT_WRITER_STALLED, err
    communicate(server, 60)
    entry = report_client(slog, "hung")
    assert entry["state"] == "failed" and "stall" in entry["state_why"], entry
    assert entry["went_away_count"] == 0, entry
