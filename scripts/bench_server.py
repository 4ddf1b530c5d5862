"""make bench-server: the real server under thousands of simulated clients.

For each interpreter and client count: start ``python -m diskbench.server``
(limits raised to fit), drive it with scripts/loadgen.py at a real client's
cadence, sample the server's CPU, RSS and threads from /proc while it runs,
and afterwards count perf.jsonl against what was sent (lost must be 0). The
same load against scripts/baseline_server.py (a bare threaded socketserver
with one recorder thread) is the side-by-side arm: server CPU per message is
read against it. Results are printed and written as JSON, with the commit
measured (a second run on the same day gets its own file).

    python scripts/bench_server.py --python .venv/py3/bin/python --clients 1000 2000
"""
from __future__ import division, print_function

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
from diskbench.client import procinfo  # noqa: E402
from diskbench.linux import get_affinity, set_affinity  # noqa: E402
#: /proc/PID/status (RSS, threads) is read this often while a run lasts.
#: The server's CPU time is read twice, when the load starts and when it
#: ends, not once a second: reading a process's CPU time (/proc/PID/stat,
#: times(2)) walks every thread it has in the kernel (0.35 ms at 5,000), and
#: a bench should touch what it measures as little as it can (an A/B of
#: that per-second read at 5,000 clients on 3.11 was lost in the run-to-run
#: spread: bench/results/bench-server-2026-12-01-variance.json).
SAMPLE_S = 5.0
MIB = float(1 << 20)


def _status(pid):
    """(VmRSS bytes, VmHWM bytes, threads) of ``pid`` from /proc, or None."""
    status = procinfo.proc_status(pid, ("VmRSS", "VmHWM", "Threads"))
    if status is None:
        return None
    return status["VmRSS"] * 1024, status["VmHWM"] * 1024, status["Threads"]


class Sampler(threading.Thread):
    """RSS (peak: the kernel's high-water mark) and threads of a process,
    every SAMPLE_S until it exits."""

    def __init__(self, pid):
        threading.Thread.__init__(self)
        self.daemon = True
        self.pid = pid
        self.rss = self.threads = 0
        self.rss_timeline = []        # [second, RSS MiB]: does it grow with run length?
        self.stopped = threading.Event()

    def run(self):
        t0 = time.time()
        while not self.stopped.is_set():
            stats = _status(self.pid)
            if stats is None:
                return
            self.rss = max(self.rss, stats[1])
            self.threads = max(self.threads, stats[2])
            self.rss_timeline.append([int(time.time() - t0), round(stats[0] / MIB, 1)])
            self.stopped.wait(SAMPLE_S)


def _drain(stream, lines):
    """Keep reading a child's pipe (so it never blocks writing), last lines kept."""
    for line in iter(stream.readline, b""):
        lines.append(line.decode("utf-8", "replace"))
        del lines[:-20]


def _wait(proc):
    """Wait for ``proc``: (exit code, peak RSS in bytes as the kernel counted
    it over the whole process life, the report at its end included)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = (os.WEXITSTATUS(status) if os.WIFEXITED(status)
                       else -os.WTERMSIG(status))
    return proc.returncode, usage.ru_maxrss * 1024


def _limits():
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_split():
    """(the server's CPU, the load generator's CPUs), apart: the simulated
    clients stand for other hosts and must not take the server's CPU (left
    free to run anywhere, the load generator ran on it at times and the
    server's threads queued behind it). (None, None) with a single CPU."""
    allowed = get_affinity()
    if not allowed or len(allowed) < 2:
        return None, None
    return allowed[-1], allowed[:-1]


def _loadgen(port, clients, duration, cpus=None):
    """The load generator's figures, with its own CPU seconds (``loadgen_cpu_s``):
    it shares the machine with the server, so it must stay small."""
    import resource
    cmd = [sys.executable, os.path.join(HERE, "loadgen.py"), "--port", str(port),
           "--clients", str(clients), "--duration", str(duration), "--json"]

    def setup():
        _limits()
        if cpus:
            set_affinity(cpus)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.check_output(cmd, preexec_fn=setup)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = json.loads(out.decode("utf-8").strip().splitlines()[-1])
    load["loadgen_cpu_s"] = (after.ru_utime + after.ru_stime) - (
        before.ru_utime + before.ru_stime)
    return load


def _free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _wait_listening(proc, what):
    line = proc.stdout.readline().decode("utf-8", "replace")
    while "listening on" not in line:
        if not line:
            raise RuntimeError("%s did not start: %s" % (what, proc.stderr.read()))
        line = proc.stdout.readline().decode("utf-8", "replace")


class CpuCap(object):
    """A cgroup that holds a process to ``percent`` of one CPU (cgroup v2
    ``cpu.max``, else v1 ``cpu.cfs_quota_us``): a faster VM made as slow as a
    slower one, for its server only (root). ``add(pid)`` moves a process in;
    ``remove()`` deletes the group once its process has exited."""

    #: Short: the group runs at most its share of each period, then waits for the
    #: next, and a 100 ms period made stalls of up to 40 ms a slower CPU never has.
    PERIOD_US = 10000

    def __init__(self, percent):
        self.percent = percent
        quota = int(self.PERIOD_US * percent / 100.0)
        name = "diskbench-bench-%d" % os.getpid()
        v2 = "/sys/fs/cgroup"
        if os.path.exists(os.path.join(v2, "cgroup.controllers")):
            self.path = os.path.join(v2, name)
            os.mkdir(self.path)
            self._write("cpu.max", "%d %d" % (quota, self.PERIOD_US))
        else:
            self.path = os.path.join(v2, "cpu", name)
            os.mkdir(self.path)
            self._write("cpu.cfs_period_us", "%d" % self.PERIOD_US)
            self._write("cpu.cfs_quota_us", "%d" % quota)

    def _write(self, name, text):
        with open(os.path.join(self.path, name), "w") as f:
            f.write(text)

    def add(self, pid):
        self._write("cgroup.procs", "%d" % pid)

    def remove(self):
        try:
            os.rmdir(self.path)
        except OSError:
            pass


def run_arm(python, arm, clients, duration, scratch, extra=(), loadgen_anywhere=False,
            cpu_quota=None):
    """One run: 'server' (diskbench) or 'baseline'; returns its figures.
    ``cpu_quota``: the server held to that percent of one CPU (CpuCap)."""
    port = _free_port()
    log_dir = tempfile.mkdtemp(prefix="%s-%d-" % (arm, clients), dir=scratch)
    if arm == "server":
        cmd = [python, "-m", "diskbench.server", "--port", str(port), "--host",
               "127.0.0.1", "--log-dir", log_dir, "--clients", str(clients), "--quiet"]
    else:   # "baseline" (threaded) or "epoll" (the bare event loop)
        cmd = [python, os.path.join(HERE, "baseline_server.py"), "--port", str(port),
               "--log", os.path.join(log_dir, "lines.jsonl"), "--mode",
               "epoll" if arm == "epoll" else "threaded"]
    server_cpu, loadgen_cpus = cpu_split()
    if loadgen_anywhere:   # a shared host: the load generator runs where it likes
        loadgen_cpus = None
    if server_cpu is not None:
        cmd += ["--cpu", str(server_cpu)]
    cmd += list(extra)
    env = dict(os.environ, PYTHONPATH=REPO)
    cap = CpuCap(cpu_quota) if cpu_quota else None
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            preexec_fn=_limits, cwd=REPO)
    try:
        if cap is not None:
            cap.add(proc.pid)     # before it listens: every thread it starts is held
        _wait_listening(proc, arm)
        said = []
        for stream in (proc.stdout, proc.stderr):
            t = threading.Thread(target=_drain, args=(stream, said))
            t.daemon = True
            t.start()
        sampler = Sampler(proc.pid)
        sampler.start()
        t0, cpu0 = time.time(), procinfo.proc_cpu_seconds(proc.pid)
        steady = SteadyWindow(proc.pid, t0 + max(STEADY_FROM_S, duration * STEADY_FROM))
        load = _loadgen(port, clients, duration, loadgen_cpus)
        took, cpu = time.time() - t0, procinfo.proc_cpu_seconds(proc.pid) - cpu0
        steady.end()
        if arm != "server":
            proc.send_signal(signal.SIGTERM)
        code, peak_rss = _wait(proc)
        sampler.stopped.set()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if cap is not None:
            cap.remove()
    recorded = _count_recorded(log_dir, arm)
    steady_msgs = _count_sent_between(log_dir, arm, steady.t0, steady.t1)
    sent = load.pop("sent_per_client")
    lost = sum(max(0, n - recorded.get(name, 0)) for name, n in sent.items())
    msgs = load["sent"]
    return dict(
        arm=arm, python=_version(python), clients=clients, exit_code=code,
        offered_msg_s=load["offered_msg_s"], recorded=sum(recorded.values()),
        lost=lost, ack_p50_ms=load["ack_p50_ms"], ack_p99_ms=load["ack_p99_ms"],
        ack_max_ms=load["ack_max_ms"], unacked=load["unacked"],
        go_p50_s=load["go_p50_s"], go_max_s=load["go_max_s"],
        lost_connections=load["lost_connections"],
        loadgen_cpu_percent=100.0 * load["loadgen_cpu_s"] / took if took else None,
        server_cpu_s=cpu, server_cpu_percent=100.0 * cpu / took if took else None,
        cpu_ms_per_1000_msgs=1e6 * cpu / msgs if msgs else None,
        steady_window_s=steady.seconds(), steady_msg_s=steady.rate(steady_msgs),
        steady_cpu_percent=steady.cpu_percent(),
        steady_us_per_msg=steady.us_per_msg(steady_msgs),
        peak_rss_mib=max(sampler.rss, peak_rss) / MIB, peak_threads=sampler.threads,
        server_on_cpu=server_cpu, loadgen_on_cpus=loadgen_cpus, cpu_quota_percent=cpu_quota,
        cpu_percent_of_cap=100.0 * cpu / took / (cpu_quota / 100.0) if took and cpu_quota
        else None,
        rss_timeline_mib=sampler.rss_timeline,
        ack_timeline=load.get("ack_timeline"),
        output_tail=[line.rstrip() for line in said] if code else None)


#: The steady window: from this share of the run's duration (at least
#: STEADY_FROM_S after the load generator started: every client has joined
#: and had its go) to the end of the load. Its CPU per message leaves out the
#: join (a handshake per client, which the bare baselines do not have).
STEADY_FROM = 1 / 3.0
STEADY_FROM_S = 10.0


class SteadyWindow(object):
    """The server's CPU seconds between ``t0`` (wall) and ``end()``."""

    def __init__(self, pid, t0):
        self.pid, self.t0, self.t1 = pid, t0, None
        self.cpu0 = self.cpu1 = None
        self.timer = threading.Timer(max(0.0, t0 - time.time()), self._start)
        self.timer.daemon = True
        self.timer.start()

    def _start(self):
        self.cpu0 = procinfo.proc_cpu_seconds(self.pid)
        self.t0 = time.time()

    def end(self):
        self.timer.cancel()
        self.t1 = time.time()
        self.cpu1 = procinfo.proc_cpu_seconds(self.pid)

    def seconds(self):
        if self.cpu0 is None or self.cpu1 is None or self.t1 <= self.t0:
            return None
        return self.t1 - self.t0

    def cpu_percent(self):
        took = self.seconds()
        return 100.0 * (self.cpu1 - self.cpu0) / took if took else None

    def rate(self, msgs):
        took = self.seconds()
        return msgs / took if took and msgs else None

    def us_per_msg(self, msgs):
        return 1e6 * (self.cpu1 - self.cpu0) / msgs if self.seconds() and msgs else None


def _count_sent_between(log_dir, arm, t0, t1):
    """Messages on disk that their client sent (its ``ts``) in [t0, t1)."""
    if t0 is None or t1 is None:
        return 0
    n = 0
    with open(_recorded_path(log_dir, arm), "rb") as f:
        for line in f:
            try:
                ts = json.loads(line.decode("utf-8"))["ts"]
            except (ValueError, KeyError, TypeError):
                continue
            n += t0 <= ts < t1
    return n


def _recorded_path(log_dir, arm):
    return os.path.join(log_dir, "perf.jsonl" if arm == "server" else "lines.jsonl")


def _count_recorded(log_dir, arm):
    """Messages on disk per client name (perf.jsonl, or the baseline's file)."""
    path = _recorded_path(log_dir, arm)
    counts = {}
    if not os.path.exists(path):
        return counts
    with open(path, "rb") as f:
        for line in f:
            try:
                name = json.loads(line.decode("utf-8"))["name"]
            except (ValueError, KeyError):
                continue
            counts[name] = counts.get(name, 0) + 1
    return counts


def _version(python):
    out = subprocess.check_output([python, "-c", "import platform; "
                                   "print(platform.python_version())"])
    return out.decode("ascii").strip()


COLUMNS = (("arm", "%-8s"), ("python", "%-7s"), ("clients", "%6d"),
           ("offered_msg_s", "%8.0f"), ("lost", "%5d"), ("ack_p50_ms", "%8.1f"),
           ("ack_p99_ms", "%9.1f"), ("ack_max_ms", "%9.1f"), ("go_max_s", "%6.2f"),
           ("server_cpu_percent", "%5.0f"), ("cpu_ms_per_1000_msgs", "%8.0f"),
           ("steady_cpu_percent", "%5.0f"), ("steady_us_per_msg", "%6.1f"),
           ("loadgen_cpu_percent", "%5.0f"),
           ("peak_rss_mib", "%7.0f"), ("peak_threads", "%6d"), ("exit_code", "%4d"))


def print_row(row):
    print("  ".join(fmt % row[key] if row.get(key) is not None else
                    "%*s" % (len(fmt % 0) if "d" in fmt else 5, "-")
                    for key, fmt in COLUMNS))
    sys.stdout.flush()


def _ratios(rows, row):
    """diskbench's CPU per message over each baseline's, same Python and
    client count (``cpu_x_threaded``, ``cpu_x_epoll`` on the server's row)."""
    server = [r for r in rows if r["arm"] == "server" and r["python"] == row["python"]
              and r["clients"] == row["clients"]]
    for r in server:
        for arm, key in (("baseline", "cpu_x_threaded"), ("epoll", "cpu_x_epoll")):
            for figure, name in (("cpu_ms_per_1000_msgs", key),
                                 ("steady_us_per_msg", "steady_" + key)):
                base = [b for b in rows if b["arm"] == arm and b["python"] == r["python"]
                        and b["clients"] == r["clients"] and b.get(figure)]
                if base and r.get(figure):
                    r[name] = round(r[figure] / base[-1][figure], 2)


def code_version():
    """The commit measured (``-dirty`` with uncommitted changes), or None."""
    try:
        out = subprocess.check_output(["git", "describe", "--always", "--dirty"],
                                      cwd=REPO, stderr=subprocess.STDOUT)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.decode("ascii", "replace").strip() or None


def fresh_path(path):
    """``path``, or with -2, -3, ... before its extension if it exists: a
    second run on the same day never overwrites the first one's results."""
    stem, ext = os.path.splitext(path)
    n = 1
    while os.path.exists(path):
        n += 1
        path = "%s-%d%s" % (stem, n, ext)
    return path


def save(args, rows):
    result = dict(machine=dict(platform=platform.platform(), cpus=os.sysconf(
        "SC_NPROCESSORS_ONLN")), duration_s=args.duration, runs=rows, code=args.code,
        cadence="perf 1 s, heartbeat 5 s, stats 10 s per client (scripts/loadgen.py)")
    if not os.path.isdir(os.path.dirname(args.out)):
        os.makedirs(os.path.dirname(args.out))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2, sort_keys=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--python", action="append", required=True)
    p.add_argument("--clients", type=int, nargs="+", default=[1000, 5000])
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--arms", nargs="+", default=["server", "baseline", "epoll"],
                   help="server (diskbench), baseline (bare threaded), epoll (bare "
                   "event loop)")
    p.add_argument("--baseline-args", default="", help="extra baseline_server.py "
                   "arguments (one string)")
    p.add_argument("--server-args", default="", help="extra server arguments (a "
                   "--cpu here overrides the bench's own)")
    p.add_argument("--loadgen-anywhere", action="store_true", help="leave the load "
                   "generator unpinned (how --cpu's default was chosen)")
    p.add_argument("--cpu-quota", type=float, metavar="PERCENT", help="hold every "
                   "arm's server to this percent of one CPU (a cgroup; root): a faster "
                   "VM made as slow as a slower one, read by the baselines")
    p.add_argument("--out", help="results file (default bench/results/"
                   "bench-server-DATE.json, -2, -3... if taken)", default=os.path.join(
        REPO, "bench", "results", "bench-server-%s.json" % time.strftime("%Y-%m-%d")))
    args = p.parse_args(argv)
    args.out = fresh_path(args.out)
    args.code = code_version()
    scratch = tempfile.mkdtemp(prefix="diskbench-bench-server-")
    rows = []
    print("  ".join(key for key, _ in COLUMNS))
    try:
        for python in args.python:
            for clients in args.clients:
                for arm in args.arms:
                    extra = (args.server_args if arm == "server" else
                             args.baseline_args).split()
                    row = run_arm(python, arm, clients, args.duration, scratch, extra,
                                  args.loadgen_anywhere, args.cpu_quota)
                    if extra:
                        row["extra_args"] = " ".join(extra)
                    rows.append(row)
                    _ratios(rows, row)
                    print_row(row)
                    save(args, rows)    # after every run: a crash keeps what was measured
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for r in rows:
        if r["arm"] == "server":
            print("diskbench CPU per message, Python %s, %d clients: %sx the threaded "
                  "baseline, %sx the epoll baseline over the whole run; once all "
                  "joined: %sx and %sx" % (
                      r["python"], r["clients"], r.get("cpu_x_threaded", "-"),
                      r.get("cpu_x_epoll", "-"), r.get("steady_cpu_x_threaded", "-"),
                      r.get("steady_cpu_x_epoll", "-")))
    print("written: %s" % args.out)
    return 1 if any(r["lost"] for r in rows if r["arm"] == "server") else 0


if __name__ == "__main__":
    sys.exit(main())
