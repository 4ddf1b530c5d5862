"""The server's live console: the in-place table on a real terminal (tmux), the
plain progress lines in a pipe, rollovers only with --verbose, one timestamp
format in server.log and on the console."""
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from diskbench import exitcodes, protocol
from diskbench.server import console as console_mod
from diskbench.server import registry as reg
from tests.helpers import REPO, free_port, wait_until
from tests.test_server_fakes import FakeClient, ServerProc

#: The UTC timestamp every console and server.log line starts with.
STAMP_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z ")
#: Seconds between two perf messages of a fake client (pacing, not a wait).
SEND_PACE_S = 0.02
#: The fake clients' perf interval: 4 chunks of 1 MiB in 1 s -> 4 MiB/s each.
CHUNKS_PER_PERF = 4
PANE = (160, 50)
#: tmux commands are quick; this bounds each one.
TMUX_CMD_TIMEOUT_S = 10


def _which(name):
    for folder in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/bin"]:
        path = os.path.join(folder, name)
        if os.access(path, os.X_OK):
            return path
    return None


TMUX = _which("tmux")


class Streamer(object):
    """A fake client that says hello, waits for go, starts, then sends perf
    (+ a heartbeat and a rollover now and then) until told to stop or die."""

    def __init__(self, port, name):
        self.client = FakeClient(port, name)
        self.halt = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run)
        self.thread.daemon = True

    def begin(self):
        self.thread.start()
        return self

    def _run(self):
        c = self.client
        try:
            c.hello(duration_s=600.0)
            c.wait_for(protocol.GO, timeout=30)
            c.start()
            i = 0
            while not self.halt.is_set():
                c.perf(i, [0.002] * CHUNKS_PER_PERF)
                if i % 5 == 0:
                    c.send(protocol.HEARTBEAT, writer_pid=os.getpid(), writer_alive=True,
                           bytes_written=(i + 1) * CHUNKS_PER_PERF << 20,
                           chunks_written=(i + 1) * CHUNKS_PER_PERF, progress_age_s=0.1)
                if i % 4 == 3:
                    c.send(protocol.ROLLOVER, file_index=i // 4, file_bytes=4 << 20,
                           close_s=0.01)
                i += 1
                self.sent = i
                self.halt.wait(SEND_PACE_S)
        except (IOError, OSError):
            pass  # killed on purpose

    def finish(self):
        """Stop streaming, send stop + bye."""
        self.halt.set()
        self.thread.join(10)
        c = self.client
        c.stop(nbytes=self.sent * CHUNKS_PER_PERF << 20)
        c.send(protocol.BYE)
        c.wait_acked(c.seq)
        c.close()

    def kill(self):
        """Vanish without stop: the connection just closes."""
        self.halt.set()
        self.thread.join(10)
        self.client.close()


# --- a real terminal: tmux --------------------------------------------------------
class Pane(object):
    """One tmux session (own socket) running the real server (or ``module``)
    in a PANE-sized terminal; the tmux server is killed at cleanup."""

    def __init__(self, tmpdir, server_args, module="diskbench.server"):
        self.sock = str(tmpdir.join("tmux.sock"))
        cmd = "cd %s && exec env PYTHONPATH=%s %s -m %s %s" % (
            _q(REPO), _q(REPO), _q(sys.executable), module,
            " ".join(_q(a) for a in server_args))
        self.tmux("new-session", "-d", "-s", "t", "-x", str(PANE[0]), "-y", str(PANE[1]),
                  cmd, ";", "set-option", "-t", "t", "remain-on-exit", "on")
        self.pid = int(self.tmux("display-message", "-p", "-t", "t", "#{pane_pid}"))

    def tmux(self, *args):
        proc = subprocess.Popen([TMUX, "-S", self.sock] + list(args),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        timer = threading.Timer(TMUX_CMD_TIMEOUT_S, proc.kill)
        timer.start()
        try:
            out, err = proc.communicate()
        finally:
            timer.cancel()
        assert proc.returncode == 0, "tmux %s: %s" % (args[0], err)
        return out.decode("utf-8", "replace").strip()

    def lines(self):
        return self.tmux("capture-pane", "-p", "-t", "t").split("\n")

    def text(self):
        return "\n".join(self.lines())

    def dead(self):
        return self.tmux("display-message", "-p", "-t", "t", "#{pane_dead}") == "1"

    def close(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
        except OSError:
            pass
        subprocess.call([TMUX, "-S", self.sock, "kill-server"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _q(text):
    return "'%s'" % text.replace("'", "'\\''")


def _rows(lines, names):
    """{name: [(index, line)]} of the table rows of each client."""
    out = dict((n, []) for n in names)
    for i, line in enumerate(lines):
        for n in names:
            if line.startswith(n + " "):
                out[n].append((i, line))
    return out


def _total_mib(line):
    return float(line.split()[3])


@pytest.fixture
def pane_factory(tmpdir):
    made = []

    def make(server_args):
        pane = Pane(tmpdir, server_args)
        made.append(pane)
        return pane
    yield make
    for pane in made:
        pane.close()


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed (apt-get install tmux)")
def test_live_table_updates_in_place_and_shows_went_away(pane_factory, tmpdir):
    names = ["alpha", "bravo", "charlie"]
    port = free_port()
    pane = pane_factory(["--port", str(port), "--host", "127.0.0.1", "--clients", "3",
                         "--log-dir", str(tmpdir.join("logs")), "--heartbeat-timeout",
                         "30", "--rejoin-grace", "0.5", "--idle-timeout", "0.3"])
    wait_until(lambda: "listening on 127.0.0.1:%d" % port in pane.text(), timeout=20,
               what="the server's listening line in the pane")
    streamers = [Streamer(port, n).begin() for n in names]
    try:
        def all_writing():
            rows = _rows(pane.lines(), names)
            return all(len(r) == 1 and " writing " in r[0][1] and _total_mib(r[0][1]) > 0
                       for r in rows.values()) and rows
        wait_until(all_writing, timeout=20, what="three writing rows in the table")
        # Events settle (joined/started are drawn under the table), then compare.
        wait_until(lambda: pane.text().count("started writing") == 3,
                   what="the three start events under the table")
        before = pane.lines()
        sent_before = sum(s.sent for s in streamers)
        rows_before = _rows(before, names)

        def moved():
            now = pane.lines()
            rows = _rows(now, names)
            if all(len(rows[n]) == 1 and _total_mib(rows[n][0][1]) >
                   _total_mib(rows_before[n][0][1]) for n in names):
                return now
        after = wait_until(moved, timeout=15, what="every client's total MiB to grow")
        rows_after = _rows(after, names)
        sent = sum(s.sent for s in streamers) - sent_before
        # Dozens of messages arrived, yet every client is still one line, on the
        # same screen row, and the screen holds no more lines than before.
        assert sent > PANE[1], "too few messages between the captures to tell"
        for n in names:
            assert rows_after[n][0][0] == rows_before[n][0][0], (n, before, after)
        used = lambda ls: len([line for line in ls if line.strip()])  # noqa: E731
        assert used(after) == used(before), "\n".join(after)
        assert "rollover #" not in "\n".join(after)   # rollovers: server.log only
        assert not [line for line in after if line.count("alpha ") > 1]

        # A client that vanishes turns to "went away" in its row, and a warning stays.
        streamers[2].kill()

        def gone():
            text = pane.lines()
            row = _rows(text, names)["charlie"]
            return len(row) == 1 and " went away " in row[0][1] and \
                "! client charlie went away" in "\n".join(text)
        wait_until(gone, timeout=15, what="charlie shown as went away")
        for s in streamers[:2]:
            s.finish()
        wait_until(pane.dead, timeout=30, what="the server to finish the run")
        final = pane.text()
        assert "report written" in final
        rows = _rows(pane.lines(), names)
        assert " finished " in rows["alpha"][0][1] and " went away " in \
            rows["charlie"][0][1]
    finally:
        for s in streamers:
            s.halt.set()


# --- not a terminal: plain lines ----------------------------------------------------
@pytest.mark.parametrize("verbose", [False, True])
def test_pipe_gets_plain_progress_lines_and_rollovers_only_when_verbose(procs, tmpdir,
                                                                         verbose):
    interval = 0.5
    server = ServerProc(procs, str(tmpdir.join("logs")), [
        "--clients", "2", "--idle-timeout", "0.3", "--progress-interval", str(interval)]
        + (["--verbose"] if verbose else []))
    streamers = [Streamer(server.port, n).begin() for n in ("one", "two")]
    progress = lambda: [line for line in server.stdout().splitlines()  # noqa: E731
                        if " progress: " in line]
    wait_until(lambda: len([p for p in progress() if "(2 writing)" in p]) >= 3,
               timeout=20, what="three progress lines with both clients writing")
    for s in streamers:
        s.finish()
    assert server.wait_exit() == exitcodes.OK
    out = server.stdout()
    assert "\x1b" not in out                         # no ANSI in a pipe
    lines = progress()
    writing = [p for p in lines if "(2 writing)" in p][-1]
    assert re.search(r"2 clients \(2 writing\), [0-9.]+ MiB/s now, [0-9.]+ [MG]iB "
                     r"written, [0-9.]+ s elapsed, \S+ s remaining", writing), writing
    stamps = [_stamp(p) for p in lines]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert gaps and min(gaps) >= interval * 0.9, gaps   # not one line per message
    sent = sum(s.sent for s in streamers)
    assert len(lines) < sent / 4.0
    log = server.server_log()
    rolled = len(re.findall(r"client (one|two) rollover #", log))
    assert rolled >= 2
    shown_rolls = len(re.findall(r"client (one|two) rollover #", out))
    assert shown_rolls == (rolled if verbose else 0)
    for text in (log, out):
        stamped = [line for line in text.splitlines() if line[:2] == "20"]
        assert stamped and all(STAMP_RE.match(line) for line in stamped), stamped[:3]
    assert all(STAMP_RE.match(line) for line in log.splitlines())
    assert "client one joined" in out and "client two finished" in out
    # the report phase is said before it starts (thousands of clients: minutes)
    said = re.search(r"writing the report: 2 clients, (\d+) messages\n", out)
    assert said and int(said.group(1)) >= sent, out[-2000:]
    assert out.index(said.group(0)) < out.index("report written")


def _stamp(line):
    """Epoch seconds of a console line's UTC stamp."""
    import calendar
    head = line[:23]
    whole = calendar.timegm(time.strptime(head[:19], "%Y-%m-%d %H:%M:%S"))
    return whole + int(head[20:23]) / 1000.0


def test_quiet_prints_only_the_listening_line(procs, tmpdir):
    server = ServerProc(procs, str(tmpdir.join("logs")), [
        "--clients", "1", "--idle-timeout", "0.3", "--progress-interval", "0.2",
        "--quiet", "--verbose"])
    s = Streamer(server.port, "hush").begin()
    wait_until(lambda: s.sent >= 20, what="messages streamed")
    s.finish()
    assert server.wait_exit() == exitcodes.OK
    assert len(server.stdout().splitlines()) == 1, server.stdout()
    assert "rollover #" in server.server_log()


def test_forced_tty_mode_draws_ansi_and_keeps_warnings_visible(procs, tmpdir):
    """DISKBENCH_CONSOLE=tty draws the live table even into a pipe (for a
    terminal isatty() does not recognise); start-timeout with fewer clients and
    a server pause stay listed under the table."""
    server = ServerProc(procs, str(tmpdir.join("logs")), [
        "--clients", "2", "--start-timeout", "0.5", "--idle-timeout", "0.3"],
        env={console_mod.MODE_ENV: "tty", "COLUMNS": "200", "LINES": "40"})
    s = Streamer(server.port, "forced").begin()
    wait_until(lambda: "\x1b[" in server.stdout() and "forced " in server.stdout() and
               "! --start-timeout 0.5 s passed with 1 of 2" in server.stdout(),
               timeout=20, what="a drawn table with the start-timeout warning")
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(master_pause_s())                # the pause itself is the fault
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    wait_until(lambda: "! the server itself did not run for" in server.stdout(),
               what="the pause warning under the table")
    s.finish()
    assert server.wait_exit() == exitcodes.SERVER_INCOMPLETE
    out = server.stdout()
    assert "\x1b[2K" in out and " progress: " not in out
    # the final table stays on screen, the end-of-run lines follow it
    last_row = out.rindex("\x1b[2Kforced ")
    assert last_row < out.index("report written")
    assert " finished " in out[last_row:].split("\n")[0]


def master_pause_s():
    from diskbench.server import master
    return master.PAUSE_GAP_S + 0.5


# --- the view itself, from a real registry ------------------------------------------
class _Clock(object):
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _feed(registry, name, seq_start, recv_ts, perfs, mib_per_s, duration=60.0):
    hello = protocol.make(protocol.HELLO, name=name, seq=1, **_hello(duration))
    registry.hello(hello, recv_ts, conn_id=hash(name), peer="p", sender=lambda m: None)
    registry.accept(protocol.make(protocol.START, name=name, seq=2,
                                  writer_pid=1, sync_mode=protocol.SYNC_DIRECT,
                                  preallocate=False, block_bytes=512), recv_ts, hash(name))
    for i in range(perfs):
        registry.accept(protocol.make(
            protocol.PERF, name=name, seq=3 + i, t_start=recv_ts + i, t_end=recv_ts + i + 1,
            bytes=int(mib_per_s * (1 << 20)), chunks=1, io_s=0.5, lat_min_s=0.5,
            lat_max_s=0.5, lat_hist=_hist(), sync_mode=protocol.SYNC_DIRECT,
            file_index=0), recv_ts + i, hash(name))


def _hist():
    from diskbench import metrics
    hist = metrics.LatencyHistogram()
    hist.add(0.5)
    return hist.to_wire()


def _hello(duration):
    from tests.test_server_fakes import hello_fields
    return hello_fields(duration_s=duration)


def test_compact_view_keeps_slowest_fastest_and_every_bad_client():
    clock = _Clock()
    registry = reg.Registry(clock=clock)
    for i in range(40):
        _feed(registry, "n%02d" % i, 1, 5000.0, 3, 10 + i)
    registry.connection_closed("n07", hash("n07"), False)     # went away
    registry.connection_closed("n30", hash("n30"), False)
    summary = console_mod.Summary(registry.progress_view(), 5010.0)
    lines = console_mod.table_lines(summary, 120, 24)
    assert len(lines) <= 23 and all(len(line) <= 120 for line in lines)
    shown_names = [line.split()[0] for line in lines[2:] if line.startswith("n")]
    assert set(shown_names) == set(["n00", "n01", "n02", "n37", "n38", "n39", "n07",
                                    "n30"]), lines
    assert "38 writing" in lines[0] and "2 went away" in lines[0]
    assert any("! client n07 went away" in line for line in lines)
    # A roomy terminal with few clients lists every client.
    small = reg.Registry(clock=clock)
    for i in range(3):
        _feed(small, "m%d" % i, 1, 5000.0, 2, 10)
    lines = console_mod.table_lines(console_mod.Summary(small.progress_view(), 5010.0),
                                    120, 50)
    assert [line.split()[0] for line in lines[2:5]] == ["m0", "m1", "m2"]


def test_rate_now_elapsed_and_remaining():
    clock = _Clock()
    registry = reg.Registry(clock=clock)
    _feed(registry, "a", 1, 5000.0, 4, 100.0, duration=60.0)
    _feed(registry, "b", 1, 5010.0, 4, 50.0, duration=30.0)
    summary = console_mod.Summary(registry.progress_view(), 5020.0)
    rates = dict((c.name, r) for c, r in summary.rows)
    assert abs(rates["a"] - 100.0) < 1e-6 and abs(rates["b"] - 50.0) < 1e-6
    assert abs(summary.rate - 150.0) < 1e-6
    assert summary.elapsed == 20.0 and summary.remaining == 40.0   # a: 5000 + 60
    # Nothing new for longer than the window: "now" is 0 (a stalled writer).
    clock.now += console_mod.RATE_WINDOW_S + 0.1
    later = console_mod.Summary(registry.progress_view(), 5026.0)
    assert later.rate == 0.0
    assert "0.0 MiB/s now" in later.line() and "2 writing" in later.line()


def test_a_recovered_client_keeps_its_warning():
    clock = _Clock()
    registry = reg.Registry(clock=clock)
    _feed(registry, "w", 1, 5000.0, 2, 10.0)
    history = {}
    registry.connection_closed("w", hash("w"), False)
    gone = console_mod.Summary(registry.progress_view(), 5010.0, history=history)
    assert gone.warnings() == ["client w went away: connection closed without stop"]
    hello = protocol.make(protocol.HELLO, name="w", seq=50, **_hello(60.0))
    registry.hello(hello, 5011.0, conn_id=7, peer="p", sender=lambda m: None)
    back = console_mod.Summary(registry.progress_view(), 5012.0, history=history)
    assert back.warnings() == ["client w now writing; earlier went away: connection "
                               "closed without stop"]


def test_a_name_the_console_cannot_encode_is_escaped_not_a_traceback(procs, tmpdir):
    """2.7 into a pipe (or any ASCII-only console) cannot print 'caf\\xe9': the
    events, progress lines and final table escape it instead of crashing."""
    server = ServerProc(procs, str(tmpdir.join("logs")), [
        "--clients", "1", "--idle-timeout", "0.3", "--progress-interval", "0.2"],
        env={"PYTHONIOENCODING": "ascii", "LC_ALL": "C"})
    s = Streamer(server.port, u"caf\xe9\u2603").begin()
    wait_until(lambda: " progress: " in server.stdout() and s.sent > 10,
               what="a progress line while it streams")
    s.finish()
    assert server.wait_exit() == exitcodes.OK, server.stderr()
    out = server.stdout()
    assert "Traceback" not in server.stderr()
    assert u"client caf\\xe9\\u2603 joined" in out
    assert u"caf\\xe9\\u2603 " in out.split("report written")[1]   # the final table


def test_a_console_nobody_reads_never_stops_the_server(procs, tmpdir):
    """stdout is a pipe nobody reads (a paused pager, a launcher that stopped
    draining it): once it is full the server still records, acknowledges and
    completes; console lines beyond the outbox are dropped, server.log has all."""
    from tests.helpers import free_port
    log_dir = str(tmpdir.join("logs"))
    port = free_port()
    server = procs.start(["-m", "diskbench.server", "--port", str(port), "--host",
                          "127.0.0.1", "--log-dir", log_dir, "--verbose",
                          "--idle-timeout", "0.3"])          # stdout: never read
    log_path = os.path.join(log_dir, "server.log")
    wait_until(lambda: os.path.exists(log_path) and "listening on" in open(log_path).read(),
               20, what="the server to listen")
    c = FakeClient(port, "chatty")
    c.hello()
    c.wait_for(protocol.GO)
    c.start()
    rollovers = 3000            # ~100 bytes each on the console: far over a 64 KiB pipe
    for i in range(rollovers):
        c.send(protocol.ROLLOVER, file_index=i, file_bytes=1 << 20, close_s=0.001)
    c.wait_acked(c.seq, timeout=30)
    c.stop(rollovers=rollovers)
    c.wait_acked(c.seq, timeout=30)
    wait_until(lambda: server.poll() is not None, 30, what="the server to exit")
    assert server.returncode == exitcodes.OK
    with open(log_path) as f:
        assert f.read().count("client chatty rollover #") == rollovers
