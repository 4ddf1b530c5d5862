"""Runs for the report tests: real ones (server + real clients) and crafted perf.jsonl files.

(No tests here.)
"""
import json
import os
import shutil
import signal

from diskbench import metrics, protocol
from tests.helpers import communicate, wait_until
from tests.test_client_runs import client_args, start_server
from tests.test_server_fakes import hello_fields

T0 = 1763870000.0


def real_run(procs, tmpdir, log_dir, names=("ra", "rb"), kill_server=False, duration=2):
    """Real clients against the real server in ``log_dir``; with ``kill_server`` the
    server is SIGKILLed once every client exited (it would have waited --idle-timeout),
    so it never writes a report."""
    data = str(tmpdir.mkdir("data-" + os.path.basename(log_dir)))
    if not tmpdir.join("logs").check():
        # the clients' --log-dir: made here, since two clients creating it at once can
        # race (client/__main__ makedirs: "File exists"), which is not what we test
        tmpdir.mkdir("logs")
    extra = ("--idle-timeout", "120") if kill_server else ("--clients", str(len(names)))
    server, port = start_server(procs, log_dir, *extra)
    clients = [procs.start(client_args(tmpdir, port, n, data, 10, 20, duration=duration))
               for n in names]
    for proc in clients:
        out, err = communicate(proc, 60)
        assert proc.returncode == 0, err
    if kill_server:
        assert server.poll() is None
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    else:
        communicate(server, 30)
        assert server.returncode == 0
    return log_dir


def copy_run(src, dst):
    os.makedirs(dst)
    for name in ("perf.jsonl", "run.json"):
        shutil.copy(os.path.join(src, name), os.path.join(dst, name))
    return dst


class Crafted(object):
    """Writes a perf.jsonl (and run.json) with protocol-built messages."""

    def __init__(self, log_dir, start_ts=T0):
        self.log_dir = log_dir
        os.makedirs(log_dir)
        self.start_ts = start_ts
        self.lines = []
        self.seq = {}
        with open(os.path.join(log_dir, "run.json"), "w") as f:
            json.dump(dict(run_id="crafted", started_ts=start_ts, server_pid=1,
                           protocol=protocol.PROTOCOL_VERSION), f)

    def add(self, name, type_, ts, recv_delay=0.01, **fields):
        self.seq[name] = self.seq.get(name, 0) + 1
        msg = protocol.make(type_, protocol.C2S, name=name, seq=self.seq[name], ts=ts,
                            **fields)
        self.lines.append(json.dumps(protocol.record(msg, ts + recv_delay, "127.0.0.1:1")))

    def client(self, name, host, mib_s, latency_s, intervals=4, stop=True, rollovers=1,
               cpu=10.0, rates=None, offset=0.0, start=None, **hello):
        """A client writing ``mib_s`` for ``intervals`` 1 s intervals: in each, 2% of the chunks
        (at least 2) take 3 x ``latency_s`` (the interval's p99 and max), the others ``latency_s`` (p50).
        ``rates``: the MiB/s of each interval instead (one interval each); ``offset``: s
        after the others it starts; ``start``: fields of its start message other than the
        defaults (sync_mode, ...); ``hello``: fields of its hello (its plan: chunk_bytes,
        ...) other than the defaults."""
        t = self.start_ts + 1.0 + offset
        rates = list(rates) if rates is not None else [mib_s] * intervals
        intervals = len(rates)
        self.add(name, protocol.HELLO, t, **hello_fields(hostname=host, **hello))
        start_fields = dict(writer_pid=42, sync_mode=protocol.SYNC_DIRECT, preallocate=False,
                            block_bytes=4096, buffer_huge_bytes=None)
        start_fields.update(start or {})
        self.add(name, protocol.START, t, **start_fields)
        written = 0
        for i, rate in enumerate(rates):
            # 10 MiB chunks from 100 MiB/s up, so a chunk's time fits its interval
            chunk_mib = 10 if rate >= 100 else 1
            chunks = int(rate) // chunk_mib
            written += chunks * chunk_mib
            hist = metrics.LatencyHistogram()
            slow = max(2, chunks // 50)     # 2%: always the p99
            lats = [latency_s] * (chunks - slow) + [3 * latency_s] * slow
            for value in lats:
                hist.add(value)
            self.add(name, protocol.PERF, t + i + 1.0, t_start=t + i, t_end=t + i + 1.0,
                     bytes=chunks * chunk_mib * metrics.MIB, chunks=chunks, io_s=sum(lats),
                     lat_min_s=min(lats), lat_max_s=max(lats), lat_hist=hist.to_wire(),
                     sync_mode=start_fields["sync_mode"], file_index=0)
            self.add(name, protocol.STATS, t + i + 1.0, writer_pid=42, cpu_percent=cpu,
                     rss_bytes=20 * metrics.MIB, source="proc", interval_s=1.0)
        for r in range(rollovers):
            self.add(name, protocol.ROLLOVER, t + 1.5 + r, file_index=r,
                     file_bytes=written * metrics.MIB // intervals, close_s=0.01)
        if stop:
            self.add(name, protocol.STOP, t + intervals + 1.0, reason=protocol.STOP_DURATION,
                     bytes_written=written * metrics.MIB,
                     chunks_written=sum(int(r) // (10 if r >= 100 else 1) for r in rates),
                     rollovers=rollovers, elapsed_s=float(intervals), io_s=1.0,
                     dropped_messages=0)

    def save(self):
        with open(os.path.join(self.log_dir, "perf.jsonl"), "w") as f:
            f.write("".join(line + "\n" for line in self.lines))
        return self.log_dir


def run_report(procs, *args):
    """``python -m diskbench.report ARGS``: (exit code, stdout, stderr)."""
    return procs.run(["-m", "diskbench.report"] + list(args), timeout=120)


def load_report(log_dir):
    with open(os.path.join(log_dir, "report.json")) as f:
        return json.load(f)


def by_client(rep):
    return dict((e["client"], e) for e in rep["clients"])


def wait_file(path, timeout=10):
    return wait_until(lambda: os.path.exists(path), timeout, what=path)
