"""The server's interpreter tuning for thousands of clients (issue 13).

- the server process and every thread it starts run on one CPU by default
  (--cpu auto), on the one named by --cpu N, on every allowed one with
  --cpu all; a bad --cpu is one line and exit USAGE;
- interpreter.tune stops CPython's automatic full collections and sets the
  GIL switch interval; interpreter.restore undoes both and the CPU pinning;
- FullCollector runs a full collection after as many closed connections as
  are open (at least its minimum), from the main loop of a real Master;
- the server runs with glibc's per-thread malloc cache off (it re-executes
  itself, same pid), unless GLIBC_TUNABLES already sets it;
- a server on Python 2.7 asked for more clients than it was measured to
  serve says so, on stderr and in server.log (never on Python 3).
- CpuGauge measures the server's CPU use per window and over the run; the
  first window past CPU_BUSY is said once, live and in the report, and the
  report gives the CPU per accepted message (a real server's own figures).

GO fan-out from the main loop (Master._tick's release_go) is proved by
tests/test_server_integration.py::test_server_clients_n_holds_go_until_n_hellos
and ::test_server_report_counts_match_what_three_concurrent_clients_sent.
"""
import gc
import json
import os
import socket
import sys
import threading

import pytest

from diskbench import compat, exitcodes, linux
from diskbench.server import __main__ as server_main
from diskbench.server import interpreter
from diskbench.server.master import TICK_S, Master
from diskbench.server.recorder import FALL_BEHIND_S, PERF_LOG
from tests.helpers import LogLines, connect, wait_until
from tests.test_server_fakes import FakeClient, ServerProc, play_full_run

FAST = ["--idle-timeout", "0.3", "--shutdown-grace", "0.5"]
#: A FullCollector's minimum in the in-process run: a few closed connections.
SMALL_MIN_CLOSED = 3


def _allowed_or_skip():
    allowed = linux.get_affinity()
    if not allowed or len(allowed) < 2:
        pytest.skip("needs 2 CPUs to tell one from all; this process may use %s"
                    % (allowed or "an unknown set"))
    return allowed


def _cpu_list(text):
    """Cpus_allowed_list of /proc/*/status ("0-2,5") as a sorted list."""
    out = []
    for part in text.strip().split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def _thread_cpus(pid):
    """{tid: [CPUs it may run on]} for every thread of ``pid``."""
    out = {}
    task_dir = "/proc/%d/task" % pid
    for tid in os.listdir(task_dir):
        try:
            with open(os.path.join(task_dir, tid, "status")) as f:
                for line in f:
                    if line.startswith("Cpus_allowed_list:"):
                        out[int(tid)] = _cpu_list(line.split(":", 1)[1])
        except (IOError, OSError):
            pass                      # a thread that just ended
    return out


def _server_with_a_handler_thread(procs, tmpdir, flags):
    """A real server with one client connected and acked (its handler thread
    exists): (server, client)."""
    server = ServerProc(procs, str(tmpdir.join("logs")), ["--clients", "2"] + FAST + flags)
    client = FakeClient(server.port, "pinned")
    client.hello()
    client.wait_acked(1)
    return server, client


@pytest.mark.parametrize("flag", [None, interpreter.CPU_ALL, "last"])
def test_server_and_its_threads_run_on_the_cpus_cpu_says(procs, tmpdir, flag):
    allowed = _allowed_or_skip()
    flags = []
    if flag == "last":
        flags = ["--cpu", "%d" % allowed[-1]]
    elif flag is not None:
        flags = ["--cpu", flag]
    server, client = _server_with_a_handler_thread(procs, tmpdir, flags)
    threads = _thread_cpus(server.proc.pid)
    # main, tcp-server, recorder, control and this client's handler at least
    assert len(threads) >= 5, threads
    main = threads[server.proc.pid]
    log = server.server_log()
    if flag == interpreter.CPU_ALL:
        assert main == allowed
        assert "(--cpu)" not in log
    else:
        assert len(main) == 1 and main[0] in allowed, main
        if flag == "last":
            assert main == [allowed[-1]]
        assert "running on CPU %d (--cpu)" % main[0] in log
    assert all(cpus == main for cpus in threads.values()), threads
    client.close()


@pytest.mark.parametrize("value, says", [
    ("x", "use auto, all or CPU numbers like 1 or 0,2, not 'x'"),
    ("-1", "use auto, all or CPU numbers like 1 or 0,2, not '-1'"),
    ("0,,1", "use auto, all or CPU numbers like 1 or 0,2"),
    ("4096", "CPU 4096: this process may only run on CPU "),
])
def test_bad_cpu_is_one_line_naming_the_fix_and_exit_usage(procs, tmpdir, value, says):
    code, out, err = procs.run(["-m", "diskbench.server", "--cpu", value, "--port", "0",
                                "--log-dir", str(tmpdir.join("logs"))], timeout=10)
    assert code == exitcodes.USAGE, (code, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "--cpu" in lines[0] and says in lines[0], lines[0]
    assert not os.path.exists(str(tmpdir.join("logs")))


def _full_collections_while_allocating(count):
    """How many full (oldest-generation) collections CPython started by
    itself while ``count`` new container objects stayed alive (Python 3)."""
    full = []

    def note(phase, info):
        if phase == "start" and info.get("generation") == 2:
            full.append(1)
    gc.callbacks.append(note)
    try:
        kept = [[] for _ in range(count)]
    finally:
        gc.callbacks.remove(note)
    del kept
    return len(full)


def test_tune_stops_automatic_full_collections_and_restore_undoes_all_three():
    allowed = linux.get_affinity()
    thresholds = gc.get_threshold()
    get_switch = getattr(sys, "getswitchinterval", None)
    switch = get_switch() if get_switch else None
    # enough objects kept alive that CPython starts full collections by
    # itself with its own thresholds (1.5 times as many as the process has)
    count = max(len(gc.get_objects()), thresholds[0] * thresholds[1] * (thresholds[2] + 1))
    count = count * 3 // 2
    try:
        if hasattr(gc, "callbacks"):
            assert _full_collections_while_allocating(count) >= 1  # the control
        before, cpus = interpreter.tune(interpreter.CPU_AUTO)
        try:
            assert gc.get_threshold() == thresholds[:2] + (interpreter.GC_FULL_NEVER,)
            if hasattr(gc, "callbacks"):
                assert _full_collections_while_allocating(count) == 0
            if switch is not None:
                assert sys.getswitchinterval() == pytest.approx(interpreter.SWITCH_INTERVAL_S)
            if allowed and len(allowed) >= 2:
                assert len(cpus) == 1 and cpus[0] in allowed
                assert linux.get_affinity() == cpus
            else:
                assert cpus is None
        finally:
            interpreter.restore(before)
        assert gc.get_threshold() == thresholds
        if switch is not None:
            assert sys.getswitchinterval() == pytest.approx(switch)
        assert linux.get_affinity() == allowed
    finally:                          # never leave the test process tuned
        gc.set_threshold(*thresholds)
        if switch is not None:
            sys.setswitchinterval(switch)
        if allowed:
            linux.set_affinity(allowed)


def test_full_collector_runs_once_as_many_closed_as_open_and_starts_over():
    calls = []

    def collect():
        calls.append(1)
        return 7
    with LogLines("diskbench.server") as lines:
        c = interpreter.FullCollector(min_closed=3, collect=collect)
        for _ in range(2):
            c.connection_closed()
        assert c.maybe_collect(0) is None and calls == []    # fewer than min_closed
        c.connection_closed()
        assert c.maybe_collect(0) == 7 and len(calls) == 1
        assert c.closed == 0 and c.runs == 1
        assert c.maybe_collect(0) is None and len(calls) == 1  # the count started over
        for _ in range(4):             # more open than min_closed: as many as are open
            c.connection_closed()
        assert c.maybe_collect(5) is None and len(calls) == 1
        c.connection_closed()
        assert c.maybe_collect(5) == 7 and len(calls) == 2
    said = [t for t in lines.lines if t.startswith("full garbage collection (")]
    assert len(said) == 2, lines.lines
    for text, closed in zip(said, (3, 5)):
        assert text.startswith("full garbage collection (%d connections closed): 7 "
                               "objects freed in " % closed), text


def _in_process_master(tmpdir):
    """A real Master in this process (so a test can reach inside it), for a
    one-client run: (master, log_dir)."""
    log_dir = str(tmpdir.join("logs"))
    args = server_main.derive_limits(server_main.build_parser().parse_args(
        ["--port", "0", "--host", "127.0.0.1", "--log-dir", log_dir, "--clients", "1",
         "--quiet", "--cpu", "all"] + FAST))
    args.secret = None
    return Master(args, out=open(os.devnull, "w")), log_dir


def _run_in_process(master, before_the_client, name):
    """Run ``master`` in this (main) thread while another calls
    ``before_the_client(port)``, then plays a full run as client ``name``; the
    exit code and whether the client finished (an ending run otherwise)."""
    stack = threading.stack_size()
    done = []

    def client():
        try:
            before_the_client(port)
            c = FakeClient(port, name)
            play_full_run(c, [[0.001]], rollovers=0)
            c.close()
            done.append(c.seq)
        finally:
            if not done:              # end the run: the caller's assertions say why
                master.operator_end()
                master.operator_end()

    try:
        master.open_logs()
        port = master.bind()[1]
        t = threading.Thread(target=client)
        t.daemon = True
        t.start()
        code = master.run()          # the main thread: it installs signal handlers
        t.join(10)
    finally:
        master._untune()
        threading.stack_size(stack)
    return code, bool(done)


def test_a_write_stuck_on_the_log_disk_is_said_while_it_lasts(tmpdir):
    """The recorder stuck in a write of perf.jsonl (a stalled log disk): no
    ack goes out, and the main loop's look at the oldest record not yet
    written says "falling behind" while the write is still stuck; the run
    then completes once the write returns."""
    master, log_dir = _in_process_master(tmpdir)
    recorder = master.recorder
    said_while_stuck = []

    def stuck_write(fd, data):
        if not said_while_stuck and fd == recorder.files.get(PERF_LOG):
            try:   # (in the recorder thread: the test asserts the outcome)
                wait_until(lambda: recorder.behind_since is not None,
                           timeout=FALL_BEHIND_S + 20 * TICK_S + 5, what="it said")
                said_while_stuck.append(True)
            except AssertionError:
                said_while_stuck.append(False)
        return os.write(fd, data)
    recorder.write_fd = stuck_write
    code, finished = _run_in_process(master, lambda port: None, "stuck")
    assert said_while_stuck == [True], "said only once the write returned"
    assert finished and code == exitcodes.OK, (finished, code)
    with open(os.path.join(log_dir, "server.log")) as f:
        assert f.read().count("the server is falling behind: records have waited") == 1


def _dummy_threads():
    return [t for t in threading.enumerate() if isinstance(t, threading._DummyThread)]


def test_handler_threads_leave_no_thread_objects_behind(tmpdir):
    """Handler threads are started without threading.Thread (no wait per
    connection: listener.TCPServer.process_request); each logs its connection,
    and a log record that named its thread would make threading keep a dummy
    Thread object per connection for good (interpreter.tune drops it)."""
    master, log_dir = _in_process_master(tmpdir)
    before = len(_dummy_threads())

    def connect_and_leave(port):
        for _ in range(20):
            connect(port).close()
        wait_until(lambda: master.registry.connections >= 20 and
                   not master.connections, what="the 20 handlers ended")

    code, finished = _run_in_process(master, connect_and_leave, "leaves")
    assert finished and code == exitcodes.OK, (finished, code)
    with open(os.path.join(log_dir, "server.log")) as f:
        assert f.read().count(" closed") >= 20     # the handlers did log
    assert len(_dummy_threads()) == before, _dummy_threads()


def test_master_runs_a_full_collection_after_closed_connections(tmpdir):
    """A real Master in this process (its collector's minimum lowered, the
    only way to reach it without thousands of connections): connections that
    close are counted, and the main loop collects."""
    master, log_dir = _in_process_master(tmpdir)
    calls = []

    def collect():
        calls.append(len(master.connections))
        return gc.collect()
    master.collector = interpreter.FullCollector(min_closed=SMALL_MIN_CLOSED,
                                                 collect=collect)

    def close_some(port):
        socks = [connect(port) for _ in range(SMALL_MIN_CLOSED)]
        wait_until(lambda: len(master.connections) == SMALL_MIN_CLOSED,
                   what="a handler for each connection")
        for sock in socks:
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        wait_until(lambda: calls, timeout=10 * TICK_S + 5, what="a full collection")

    code, finished = _run_in_process(master, close_some, "last")
    assert calls, "no full collection after %d closed connections" % SMALL_MIN_CLOSED
    assert finished, "the client did not finish its run"
    assert code == exitcodes.OK
    assert calls[0] == 0, calls       # the three closed, none open: due at once
    with open(os.path.join(log_dir, "server.log")) as f:
        assert "full garbage collection (%d connections closed)" % SMALL_MIN_CLOSED \
            in f.read()


def _environ(pid):
    with open("/proc/%d/environ" % pid, "rb") as f:
        return dict(item.decode("utf-8", "replace").partition("=")[::2]
                    for item in f.read().split(b"\0") if item)


def _glibc_with_tcache_or_skip():
    glibc = linux.glibc_version()
    if glibc is None or glibc < interpreter.TCACHE_SINCE_GLIBC:
        pytest.skip("glibc %s has no per-thread cache to turn off" % (glibc,))


@pytest.mark.parametrize("theirs", [None, "glibc.malloc.tcache_count=3"])
def test_server_runs_with_glibcs_per_thread_cache_off_unless_told(procs, tmpdir, theirs):
    _glibc_with_tcache_or_skip()
    env = {} if theirs is None else {interpreter.TUNABLES_ENV: theirs}
    server = ServerProc(procs, str(tmpdir.join("logs")), FAST, env=env)
    # the process Popen started is the server (re-executed, same pid), or
    # the user's setting stands and it did not re-execute
    environ = _environ(server.proc.pid)
    tunables = environ.get(interpreter.TUNABLES_ENV)
    assert tunables == (theirs or interpreter.TCACHE_OFF)
    assert (interpreter.REEXEC_ENV in environ) == (theirs is None), environ
    with open("/proc/%d/cmdline" % server.proc.pid, "rb") as f:
        assert b"diskbench.server" in f.read()
    wait_until(lambda: "malloc: %s=%s" % (interpreter.TUNABLES_ENV, tunables)
               in server.server_log(), what="the malloc line in server.log")


def test_untcached_env_adds_to_tunables_and_leaves_the_users_choice():
    off = interpreter.TCACHE_OFF
    once = {interpreter.REEXEC_ENV: "1"}
    assert interpreter.untcached_env({"A": "1"}, (2, 36)) == dict(
        once, A="1", **{interpreter.TUNABLES_ENV: off})
    assert interpreter.untcached_env({interpreter.TUNABLES_ENV: "glibc.x=1"}, (2, 36)) == \
        dict(once, **{interpreter.TUNABLES_ENV: "glibc.x=1:" + off})
    # already said (by the user), or this process is the re-executed one
    assert interpreter.untcached_env({interpreter.TUNABLES_ENV: off}, (2, 36)) is None
    assert interpreter.untcached_env(once, (2, 36)) is None
    assert interpreter.untcached_env({}, None) is None        # not glibc
    assert interpreter.untcached_env({}, (2, 19)) is None     # no tcache (14.04's glibc)


def test_capacity_warning_only_on_27_beyond_what_was_measured():
    most = interpreter.PY2_CLIENTS_MEASURED
    assert interpreter.capacity_warning(most, py2=True) is None
    assert interpreter.capacity_warning(None, py2=True) is None
    said = interpreter.capacity_warning(most + 1, py2=True)
    assert "--clients %d" % (most + 1) in said and "Python 3" in said, said
    assert interpreter.capacity_warning(most * 10, py2=False) is None


@pytest.mark.skipif(not compat.PY2, reason="the warning is for a server on Python 2.7")
def test_a_27_server_asked_for_more_clients_than_measured_says_so(procs, tmpdir):
    over = interpreter.PY2_CLIENTS_MEASURED + 1
    server = ServerProc(procs, str(tmpdir.join("logs")), ["--clients", "%d" % over] + FAST)
    said = "with --clients %d it may fall seconds behind" % over
    wait_until(lambda: said in "".join(server.err), what="the warning on stderr")
    wait_until(lambda: said in server.server_log(), what="the warning in server.log")


class _Ticks(object):
    """A clock and a CPU counter moved by hand."""

    def __init__(self):
        self.now, self.cpu_s = 100.0, 5.0

    def spend(self, wall, busy):
        self.now += wall
        self.cpu_s += wall * busy


#: The clock tick os.times counts in (1/100 s on Linux): the gauge must read finer.
CLOCK_TICK_S = 0.01
#: Far longer than five moves of a CPU clock take while burning CPU, even on a
#: loaded host.
BURN_MOST_S = 1000 * CLOCK_TICK_S


def test_process_cpu_is_read_finer_than_clock_ticks():
    """A short run's CPU, or a quiet server's per message, is a few ms: read
    in 10 ms ticks (os.times) it came out as 0 on a fast host. Burn CPU until
    the reading has moved a few times: its steps are finer than a tick."""
    steps = []
    last = interpreter.process_cpu_s()
    deadline = compat.monotonic() + BURN_MOST_S
    while len(steps) < 5 and compat.monotonic() < deadline:
        now = interpreter.process_cpu_s()
        if now != last:
            steps.append(now - last)
            last = now
    assert len(steps) == 5, steps
    assert min(steps) < CLOCK_TICK_S / 2, steps


def test_cpu_gauge_measures_windows_and_warns_once_past_busy():
    t = _Ticks()
    reads = []

    def cpu():
        reads.append(t.now)
        return t.cpu_s
    gauge = interpreter.CpuGauge(clock=lambda: t.now, cpu=cpu)
    window, busy = interpreter.CPU_WINDOW_S, interpreter.CPU_BUSY
    t.spend(window / 2, 1.0)
    for _ in range(10):                          # the main loop samples every tick
        assert gauge.sample() is None and gauge.busiest is None   # no window yet
    assert len(reads) == 1      # CPU time (a kernel walk of every thread): at start only
    low = 2 * busy - 1.1        # the window's mean is then just under busy
    t.spend(window / 2, low)
    assert gauge.sample() is None                              # (1.0 + low) / 2
    assert abs(gauge.busiest - (1.0 + low) / 2) < 1e-9
    t.spend(window, 0.5 * busy)
    assert gauge.sample() is None and gauge.busiest < busy     # under: quiet
    t.spend(window * 2, busy + 0.1)
    said = gauge.sample()
    assert said and "needed %.0f%% of its one CPU over %.0f s" % (
        (busy + 0.1) * 100, window * 2) in said, said
    t.spend(window, 0.95)
    assert gauge.sample() is None                              # said once
    assert abs(gauge.busiest - 0.95) < 1e-9
    wall = window * 5
    cpu_s = window / 2 * (1.0 + low) + window * 0.5 * busy + \
        window * 2 * (busy + 0.1) + window * 0.95
    summary = gauge.summary(2000)
    assert abs(summary["cpu_s"] - cpu_s) < 1e-9
    assert abs(summary["mean_percent_of_one_cpu"] - cpu_s * 100 / wall) < 1e-9
    assert abs(summary["busiest_percent_of_one_cpu"] - 95.0) < 1e-9
    assert abs(summary["ms_per_1000_messages"] - cpu_s * 1e6 / 2000) < 1e-9
    assert gauge.summary(0)["ms_per_1000_messages"] is None


def test_report_says_what_cpu_the_server_used_per_message(procs, tmpdir):
    """A real server's report: the CPU it measured for itself, and the
    messages it accepted, also in report.txt. 300 perf messages: CPU that
    os.times (10 ms ticks) read as 0 on a fast host; getrusage sees it."""
    server = ServerProc(procs, str(tmpdir.join("logs")), ["--clients", "1"] + FAST)
    c = FakeClient(server.port, "measured")
    play_full_run(c, [[0.001, 0.002]] * 300)
    c.close()
    assert server.wait_exit() == exitcodes.OK
    cpu = server.report()["run"]["server_cpu"]
    assert cpu["message_count"] == c.seq, (cpu, c.seq)
    assert cpu["cpu_s"] > 0 and cpu["window_s"] == interpreter.CPU_WINDOW_S, cpu
    assert abs(cpu["ms_per_1000_messages"] - cpu["cpu_s"] * 1e6 / c.seq) < 1e-6
    assert 0 < cpu["mean_percent_of_one_cpu"] <= 100.0 * len(
        linux.get_affinity() or [1, 2]), cpu
    assert cpu["busiest_percent_of_one_cpu"] is None, cpu  # shorter than a window
    assert "server CPU: %.0f%% of one CPU over the run, - in its busiest %g s, " \
        "%.0f ms per 1000 accepted messages" % (
            cpu["mean_percent_of_one_cpu"], interpreter.CPU_WINDOW_S,
            cpu["ms_per_1000_messages"]) in server.report_text()


def test_a_busy_server_says_so_live_and_in_the_report(tmpdir, monkeypatch):
    """A real Master in this process whose gauge reads a fake, busy CPU
    (time runs 100x, the CPU counter at 90% of it): the first window over
    CPU_BUSY is said in server.log and in the report's warnings."""
    start, real_gauge = compat.monotonic(), interpreter.CpuGauge
    fast = lambda: start + (compat.monotonic() - start) * 100   # noqa: E731
    monkeypatch.setattr(interpreter, "CpuGauge", lambda: real_gauge(
        clock=fast, cpu=lambda: 0.9 * fast()))
    master, log_dir = _in_process_master(tmpdir)
    code, finished = _run_in_process(master, lambda port: wait_until(
        lambda: master.cpu_gauge and master.cpu_gauge.warning, timeout=interpreter.CPU_WINDOW_S / 100 + 10 * TICK_S + 5,
        what="the busy warning"), "busy")
    assert finished and code == exitcodes.OK, (finished, code)
    said = "the server needed 90% of its one CPU over "
    with open(os.path.join(log_dir, "server.log")) as f:
        assert f.read().count(said) == 1
    with open(os.path.join(log_dir, "report.json")) as f:
        run = json.load(f)["run"]
    assert [w for w in run["server_warnings"] if said in w], run["server_warnings"]
    assert abs(run["server_cpu"]["busiest_percent_of_one_cpu"] - 90.0) < 1, run


class _IdleTicks(object):
    """A /proc/stat reader giving two samples: the idle ticks each CPU gained."""

    def __init__(self, gained):
        self.samples = [dict((c, 1000) for c in gained),
                        dict((c, 1000 + g) for c, g in gained.items())]

    def __call__(self):
        return self.samples.pop(0)


def test_cpu_auto_picks_the_least_busy_cpu_and_stays_where_it_started_among_equals():
    pick = interpreter.least_busy_cpu
    # the CPU it started on is busy (another process settled there): the other one
    assert pick([0, 1], here=1, idle=_IdleTicks({0: 18, 1: 2}), sample_s=0) == 0
    assert pick([0, 1, 2, 3], here=0, idle=_IdleTicks({0: 0, 1: 5, 2: 19, 3: 12}),
                sample_s=0) == 2
    # equally idle (within a tick or two of noise): where the kernel put it
    assert pick([0, 1], here=1, idle=_IdleTicks({0: 20, 1: 19}), sample_s=0) == 1
    # only the allowed CPUs count, and a start CPU outside them is not taken
    assert pick([2, 3], here=0, idle=_IdleTicks({0: 20, 1: 20, 2: 3, 3: 9}),
                sample_s=0) == 3
    # the kernel cannot say: the start CPU, else the last allowed one
    assert pick([0, 1], here=0, idle=lambda: None, sample_s=0) == 0
    assert pick([0, 1], here=7, idle=lambda: None, sample_s=0) == 1


def test_cpu_idle_ticks_reads_every_cpu_of_proc_stat(tmpdir):
    stat = tmpdir.join("stat")
    stat.write("cpu  10 0 10 500 7 0 0 0 0 0\n"
               "cpu0 5 0 5 300 4 0 0 0 0 0\n"
               "cpu1 5 0 5 200 3 0 0 0 0 0\n"
               "intr 123\n")
    assert interpreter.cpu_idle_ticks(str(stat)) == {0: 304, 1: 203}
    assert interpreter.cpu_idle_ticks(str(tmpdir.join("none"))) is None
    real = interpreter.cpu_idle_ticks()
    assert real and set(linux.get_affinity() or []) <= set(real)
