"""Whole client runs: real client processes, real TCP, real files in tmp.

The three-client test and the kill -9 test use the real server
(``python -m diskbench.server``); the others use the minimal listener of
test_client_fakeserver so they can look at every message the client sent.
"""
import json
import os
import re
import select
import signal
import sys

import pytest

from diskbench import exitcodes
from diskbench import protocol as P
from diskbench.metrics import MIB, mib
from tests.helpers import communicate, read_jsonl, thp_mode, wait_until
from tests.test_client_fakeserver import FakeServer

CLIENT = ["-m", "diskbench.client"]
FAST = ["--stats-interval", "0.5", "--heartbeat-interval", "0.5", "--perf-interval", "0.5",
        "--connect-timeout", "5"]


def client_args(tmpdir, port, name, data, chunk=10, file_mb=20, duration=2.5, extra=()):
    return CLIENT + FAST + [
        "--server", "127.0.0.1:%d" % port, "--name", name, "--chunk-mb", str(chunk),
        "--file-mb", str(file_mb), "--duration", str(duration),
        "--log-dir", str(tmpdir.join("logs"))] + list(extra) + [data]


def start_server(procs, log_dir, *extra, **kw):
    """The real server on a free port (``env=`` adds to its environment);
    returns (process, port)."""
    proc = procs.start(["-m", "diskbench.server", "--port", "0", "--log-dir", log_dir,
                        "--quiet"] + list(extra), env=kw.get("env"))
    seen = []

    def port_line():
        if select.select([proc.stdout], [], [], 0.1)[0]:
            line = proc.stdout.readline().decode("utf-8", "replace")
            seen.append(line)
            m = re.search(r"listening on \S+:(\d+)", line)
            return int(m.group(1)) if m else None
        assert proc.poll() is None, "server exited: %s" % "".join(seen)
        return None
    return proc, wait_until(port_line, 15, what="the server's 'listening on' line")


def records(log_dir):
    path = os.path.join(log_dir, "perf.jsonl")
    if not os.path.exists(path):
        return []
    return [P.from_record(obj)[0] for obj in read_jsonl(path)]


def of(msgs, type_, name=None):
    return [m for m in msgs if m.type == type_ and (name is None or m.name == name)]


def client_log(tmpdir, name):
    with open(str(tmpdir.join("logs", "client-%s.log" % name))) as f:
        return f.read()


# --- with the real server ------------------------------------------------------------
def test_three_clients_real_server_report_and_logs(procs, tmpdir):
    slog = str(tmpdir.join("server-logs"))
    data = str(tmpdir.mkdir("data"))
    server, port = start_server(procs, slog, "--clients", "3")
    sizes = {"c10": (10, 20), "c20": (20, 40), "c30": (30, 60)}
    clients = dict((name, procs.start(client_args(
        tmpdir, port, name, data, chunk, size, duration=3,
        extra=["--progress-interval", "0.5"])))
                   for name, (chunk, size) in sizes.items())
    for name, proc in clients.items():
        out, err = communicate(proc, 60)
        assert proc.returncode == 0, (name, err)
        assert "Traceback" not in err
    communicate(server, 30)
    assert server.returncode == exitcodes.OK
    assert os.listdir(data) == []
    with open(os.path.join(slog, "report.json")) as f:
        report = json.load(f)
    with open(os.path.join(slog, "report.txt")) as f:
        report_text = f.read()
    by_name = dict((c["client"], c) for c in report["clients"])
    assert sorted(by_name) == sorted(sizes)
    msgs = records(slog)
    with open(os.path.join(slog, "server.log")) as f:
        server_log = f.read()
    for name, (chunk, size) in sizes.items():
        entry = by_name[name]
        assert entry["chunk_mib"] == chunk and entry["file_mib"] == size
        assert entry["rollover_count"] >= 2
        assert entry["throughput_mib_s"]["mean"] > 0
        assert entry["writer_cpu_percent"]["sample_count"] >= 1
        assert entry["writer_cpu_percent"]["mean"] is not None
        assert entry["writer_rss_mib"]["max"] >= chunk  # the writer holds the payload
        # the kernel's account of the writer's buffer (procinfo reads smaps):
        # all of it in huge pages wherever THP is on (see payload.py)
        assert entry["buffer_huge_page_mib"] is not None
        if thp_mode() in ("always", "madvise"):
            assert entry["buffer_huge_page_mib"] == chunk
        # (the text report wraps long lines where the paths' lengths put them)
        assert "buffer in huge pages %g MiB" % entry["buffer_huge_page_mib"] in \
            " ".join(report_text.split())
        # every start, stop and rollover is in the client log and the server log
        text = client_log(tmpdir, name)
        rolls = of(msgs, P.ROLLOVER, name)
        assert len(rolls) == entry["rollover_count"]
        assert len(re.findall(r"rollover: file \d+ closed", text)) == len(rolls)
        assert len(re.findall(r"client %s rollover #" % name, server_log)) == len(rolls)
        assert "start: writer pid %d" % of(msgs, P.START, name)[0].writer_pid in text
        assert "stop (duration)" in text
        # pinged after its hello: an NTP-style offset and round trip (loopback)
        assert entry["clock_offset_source"] == "ping"
        assert 0 < entry["rtt_ms"] < 1000 and abs(entry["clock_offset_s"]) < 0.5
        assert "ping round trip %.2f ms" % entry["rtt_ms"] in report_text
        # the closing line gives the report's figures, under the report's names
        wall, writing = re.search(r"throughput \(wall\) ([\d.]+) MiB/s; in write\+fsync calls "
                                  r"([\d.]+) MiB/s", text).groups()
        tp = entry["throughput_mib_s"]
        assert abs(float(wall) - tp["mean"]) <= 0.05 + 1e-9
        assert abs(float(writing) - tp["in_write_calls"]) <= 0.05 + 1e-9
        assert "in write+fsync calls" in report_text and "throughput (wall)" in report_text
        # a progress line every --progress-interval (no terminal: plain lines)
        assert len(re.findall(r"progress: \d+ s of 3 s \(\d+ s left\): [\d.]+ MiB/s "
                              r"now, [\d.]+ MiB written, \d+ rollovers", text)) >= 2
        assert "client %s started writing" % name in server_log
        assert "client %s stopped (duration)" % name in server_log
        assert of(msgs, P.STOP, name)[0].reason == P.STOP_DURATION
        assert len(of(msgs, P.START, name)) == 1


def test_kill_9_writer_is_reported_and_client_exits_child_died(procs, tmpdir):
    slog = str(tmpdir.join("server-logs"))
    data = str(tmpdir.mkdir("data"))
    server, port = start_server(procs, slog, "--clients", "1")
    client = procs.start(client_args(tmpdir, port, "victim", data, duration=60))
    start = wait_until(lambda: of(records(slog), P.START), 20, what="start recorded")[0]
    wait_until(lambda: os.listdir(data), 10, what="a data file")
    os.kill(start.writer_pid, signal.SIGKILL)
    out, err = communicate(client, 20)
    assert client.returncode == exitcodes.CLIENT_CHILD_DIED, err
    assert "Traceback" not in err
    assert "writer process (pid %d) died unexpectedly (killed by signal 9)" \
        % start.writer_pid in err
    assert os.listdir(data) == []
    msgs = wait_until(lambda: of(records(slog), P.STOP) and records(slog), 10,
                      what="stop recorded")
    errors = of(msgs, P.ERROR)
    assert errors and errors[0].source == "writer" and errors[0].fatal
    stop = of(msgs, P.STOP)[0]
    assert stop.reason == P.STOP_ERROR
    # what it wrote after its last perf sample is on no figure: the report says so
    measured = sum(m.bytes for m in of(msgs, P.PERF))
    communicate(server, 60)
    with open(os.path.join(slog, "report.json")) as f:
        said = " ".join(json.load(f)["run"]["server_warnings"])
    unmeasured = "client victim: its stop summary says its writer wrote %.1f MiB, its " \
        "perf samples measured %.1f MiB" % (mib(stop.bytes_written), mib(measured))
    # (equal only if the kill fell between a sample and the next chunk's end)
    assert (unmeasured in said) == (stop.bytes_written > measured), said


# --- with the minimal listener (every message visible) ----------------------------------
@pytest.fixture
def fake():
    srv = FakeServer()
    yield srv
    srv.close()


def test_stats_are_of_the_writer_pid_not_main(procs, tmpdir, fake):
    data = str(tmpdir.mkdir("data"))
    proc = procs.start(client_args(tmpdir, fake.port, "pids", data, chunk=30, file_mb=60))
    start = wait_until(lambda: fake.of_type(P.START), 20, what="start")[0]
    with open("/proc/%d/stat" % start.writer_pid) as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    assert ppid == proc.pid  # the writer is the client's child, not the client
    out, err = communicate(proc, 30)
    assert proc.returncode == 0, err
    hello = fake.of_type(P.HELLO)[0]
    assert hello.pid == proc.pid != start.writer_pid
    stats = fake.of_type(P.STATS)
    beats = fake.of_type(P.HEARTBEAT)
    assert len(stats) >= 2 and len(beats) >= 2
    assert set(s.writer_pid for s in stats) == set([start.writer_pid])
    assert set(b.writer_pid for b in beats) == set([start.writer_pid])
    assert all(b.writer_alive for b in beats)
    assert beats[-1].bytes_written > 0
    # only the writer holds the 30 MiB payload, so its RSS is above it
    assert min(s.rss_bytes for s in stats) >= 30 * MIB
    assert max(s.cpu_percent for s in stats) > 0  # the writer's CPU is visible


def test_runs_without_psutil_and_says_so(procs, tmpdir, fake):
    hide = tmpdir.mkdir("hide")
    hide.join("psutil.py").write("raise ImportError('psutil hidden by the test')\n")
    data = str(tmpdir.mkdir("data"))
    args = client_args(tmpdir, fake.port, "nopsutil", data)
    code, out, err = procs.run(args, env={"PYTHONPATH": str(hide)}, timeout=30)
    assert code == 0, err
    assert "psutil is not installed" in err and "pip install psutil" in err
    assert err.count("psutil is not installed") == 1      # said once
    assert fake.of_type(P.HELLO)[0].psutil_version is None
    stats = fake.of_type(P.STATS)
    assert stats and all(s.source == "proc" for s in stats)
    assert all(s.rss_bytes > 10 * MIB for s in stats)
    assert any("psutil is not installed" in n.text for n in fake.of_type(P.NOTE))
    assert "psutil is not installed" in client_log(tmpdir, "nopsutil")


@pytest.mark.skipif(sys.version_info[0] < 3, reason="Python 2.7 has only fork")
def test_whole_client_under_spawn(procs, tmpdir, fake):
    data = str(tmpdir.mkdir("data"))
    proc = procs.start(client_args(tmpdir, fake.port, "spawned", data),
                       env={"DISKBENCH_START_METHOD": "spawn"})
    start = wait_until(lambda: fake.of_type(P.START), 20, what="start")[0]
    with open("/proc/%d/cmdline" % start.writer_pid, "rb") as f:
        assert b"multiprocessing.spawn" in f.read()  # really spawned, not forked
    out, err = communicate(proc, 30)
    assert proc.returncode == 0, err
    assert len(fake.of_type(P.ROLLOVER)) >= 2
    assert fake.of_type(P.STATS) and fake.of_type(P.HEARTBEAT) and fake.of_type(P.PERF)
    assert fake.of_type(P.STOP)[0].reason == P.STOP_DURATION
    assert os.listdir(data) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly(procs, tmpdir, fake, signum):
    data = str(tmpdir.mkdir("data"))
    proc = procs.start(client_args(tmpdir, fake.port, "sig", data, duration=60))
    wait_until(lambda: fake.of_type(P.START), 20, what="start")
    wait_until(lambda: os.listdir(data), 10, what="a data file")
    os.kill(proc.pid, signum)
    out, err = communicate(proc, 30)
    assert proc.returncode == exitcodes.CLIENT_INTERRUPTED, err
    assert "Traceback" not in err
    assert os.listdir(data) == []
    stop = wait_until(lambda: fake.of_type(P.STOP), 5, what="stop")[0]
    assert stop.reason == P.STOP_SIGNAL and stop.bytes_written > 0
    assert fake.of_type(P.BYE)


def test_server_stop_ends_the_run_early(procs, tmpdir, fake):
    data = str(tmpdir.mkdir("data"))
    proc = procs.start(client_args(tmpdir, fake.port, "early", data, duration=60))
    wait_until(lambda: fake.of_type(P.START), 20, what="start")
    fake.stop_clients("operator said so")
    out, err = communicate(proc, 30)
    assert proc.returncode == exitcodes.CLIENT_INTERRUPTED, err
    assert fake.of_type(P.STOP)[0].reason == P.STOP_SERVER
    assert os.listdir(data) == []


def test_connection_drop_midrun_loses_nothing(procs, tmpdir, fake):
    data = str(tmpdir.mkdir("data"))
    proc = procs.start(client_args(tmpdir, fake.port, "flaky", data, duration=3))
    wait_until(lambda: len(fake.of_type(P.PERF)) >= 2, 20, what="perf samples")
    fake.drop_connections()
    out, err = communicate(proc, 30)
    assert proc.returncode == 0, err
    assert "reconnected to server" in err
    seqs = [m.seq for m in fake.messages]
    assert seqs == list(range(1, len(seqs) + 1))  # every seq once, none lost
    assert fake.of_type(P.STOP)[0].dropped_messages == 0
    assert fake.of_type(P.BYE)


def test_client_killed_children_clean_up(procs, tmpdir, fake):
    data = str(tmpdir.mkdir("data"))
    proc = procs.start(client_args(tmpdir, fake.port, "orphan", data, duration=60))
    start = wait_until(lambda: fake.of_type(P.START), 20, what="start")[0]
    wait_until(lambda: os.listdir(data), 10, what="a data file")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    def writer_gone():
        try:
            with open("/proc/%d/stat" % start.writer_pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] in "ZX"
        except (IOError, OSError):
            return True
    wait_until(writer_gone, 10, what="the orphaned writer to exit")
    wait_until(lambda: os.listdir(data) == [], 5, what="its data files removed")
