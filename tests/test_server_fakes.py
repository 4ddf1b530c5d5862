"""Test machinery for the server: the real server process, and fake clients that
speak protocol-built messages over real TCP. (No tests here.)"""
import json
import os
import re
import socket
import threading

from diskbench import metrics, protocol
from tests.helpers import connect, read_jsonl, wait_until

LISTEN_RE = re.compile(r"listening on [0-9.]+:(\d+)")
T0 = 1763870000.0  # a fixed client wall-clock origin for perf intervals


class ServerProc(object):
    """``python -m diskbench.server --port 0 --log-dir DIR flags...`` under ``procs``."""

    def __init__(self, procs, log_dir, flags=(), env=None):
        self.log_dir = log_dir
        self.proc = procs.start(["-m", "diskbench.server", "--port", "0", "--host",
                                 "127.0.0.1", "--log-dir", log_dir] + list(flags),
                                env=env)
        self.out, self.err = [], []
        self.pumps = []
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            t = threading.Thread(target=_pump, args=(stream, sink))
            t.daemon = True
            t.start()
            self.pumps.append(t)
        match = wait_until(lambda: LISTEN_RE.search("".join(self.out)) or (
            self.proc.poll() is not None and "exited"), timeout=20,
            what="the server's listening line")
        assert match != "exited", "server exited: %s" % "".join(self.err)
        self.port = int(match.group(1))

    def wait_exit(self, timeout=20):
        wait_until(lambda: self.proc.poll() is not None, timeout=timeout,
                   what="the server to exit")
        for t in self.pumps:
            t.join(5)
        return self.proc.returncode

    def report(self):
        with open(os.path.join(self.log_dir, "report.json")) as f:
            return json.load(f)

    def report_text(self):
        with open(os.path.join(self.log_dir, "report.txt")) as f:
            return f.read()

    def server_log(self):
        path = os.path.join(self.log_dir, "server.log")
        if not os.path.exists(path):
            return ""
        with open(path) as f:
            return f.read()

    def records(self):
        path = os.path.join(self.log_dir, "perf.jsonl")
        if not os.path.exists(path):
            return []
        return [protocol.from_record(obj) for obj in read_jsonl(path)]

    def stderr(self):
        return "".join(self.err)

    def stdout(self):
        return "".join(self.out)


def _pump(stream, sink):
    for raw in iter(stream.readline, b""):
        sink.append(raw.decode("utf-8", "replace"))


def hello_fields(**over):
    fields = dict(client_version="0.1.0", hostname="testhost", pid=os.getpid(),
                  python_version="3.x", platform="Linux-test", directory="/mnt/test",
                  fs_type="ext4", chunk_bytes=1 << 20, file_bytes=4 << 20,
                  duration_s=5.0, max_files=2, sync_mode=protocol.SYNC_DIRECT,
                  preallocate=False, stats_interval_s=1.0, heartbeat_interval_s=1.0)
    fields.update(over)
    # one identity per pid, as host name and pid were before instance ids
    fields.setdefault("instance_id", "fake%012x" % fields["pid"])
    return fields


class FakeClient(object):
    """One TCP connection speaking as client ``name``; a thread collects S2C messages."""

    def __init__(self, port, name, secret=None, seq=0, on_ack=None):
        self.name = name
        self.secret = secret
        self.seq = seq
        self.on_ack = on_ack
        self.sock = connect(port)
        self.received = []
        self.closed_by_server = False
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read)
        self.reader.daemon = True
        self.reader.start()

    def _read(self):
        rfile = self.sock.makefile("rb")
        try:
            while True:
                line = protocol.read_line(rfile)
                if not line:
                    break
                msg = protocol.decode(line, protocol.S2C, self.secret)
                if msg.type == protocol.ACK and self.on_ack:
                    self.on_ack(msg)
                with self.lock:
                    self.received.append(msg)
        except (socket.error, IOError, OSError, ValueError):
            pass
        self.closed_by_server = True

    # --- sending -------------------------------------------------------------
    def build(self, type_, **fields):
        self.seq += 1
        return protocol.make(type_, protocol.C2S, name=self.name, seq=self.seq, **fields)

    def send(self, type_, **fields):
        msg = self.build(type_, **fields)
        self.send_msg(msg)
        return msg

    def send_msg(self, msg):
        self.sock.sendall(protocol.encode(msg, self.secret))

    def raw(self, data):
        self.sock.sendall(data)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except (socket.error, OSError):
            pass
        self.sock.close()

    # --- receiving -----------------------------------------------------------
    def got(self, type_):
        with self.lock:
            return [m for m in self.received if m.type == type_]

    def wait_for(self, type_, pred=lambda m: True, timeout=10):
        return wait_until(lambda: [m for m in self.got(type_) if pred(m)],
                          timeout=timeout, what="%s to get %s" % (self.name, type_))[0]

    def wait_acked(self, seq, timeout=10):
        return self.wait_for(protocol.ACK, lambda m: m.upto_seq >= seq, timeout)

    # --- whole conversations -------------------------------------------------
    def hello(self, **over):
        return self.send(protocol.HELLO, **hello_fields(**over))

    def begin(self, **hello_over):
        """hello, wait for go, start: a client now writing."""
        self.hello(**hello_over)
        self.wait_for(protocol.GO)
        return self.start()

    def start(self):
        return self.send(protocol.START, writer_pid=os.getpid(),
                         sync_mode=protocol.SYNC_DIRECT, preallocate=False,
                         block_bytes=512)

    def perf(self, index, latencies, chunk_bytes=1 << 20, length_s=1.0, t0=T0):
        hist = metrics.LatencyHistogram()
        for value in latencies:
            hist.add(value)
        return self.send(protocol.PERF, t_start=t0 + index * length_s,
                         t_end=t0 + (index + 1) * length_s,
                         bytes=chunk_bytes * len(latencies), chunks=len(latencies),
                         io_s=sum(latencies), lat_min_s=min(latencies),
                         lat_max_s=max(latencies), lat_hist=hist.to_wire(),
                         sync_mode=protocol.SYNC_DIRECT, file_index=index // 4)

    def stop(self, reason=protocol.STOP_DURATION, nbytes=0, rollovers=0):
        return self.send(protocol.STOP, reason=reason, bytes_written=nbytes,
                         chunks_written=nbytes >> 20, rollovers=rollovers, elapsed_s=5.0,
                         io_s=1.0, dropped_messages=0)


def latency_sets(seed, intervals, per_interval):
    """Deterministic, varied chunk latencies (seconds) for ``intervals`` intervals."""
    out = []
    x = seed
    for _ in range(intervals):
        lats = []
        for _ in range(per_interval):
            x = (x * 1103515245 + 12345) % (1 << 31)
            lats.append(0.001 + (x % 100000) / 1e7)  # 1 ms .. 11 ms
        out.append(lats)
    return out


def play_full_run(client, lat_sets, rollovers=2, cpu=(20.0, 40.0), rss=(10 << 20, 30 << 20),
                  t0=T0, wait_go=True, bye=True, hello=True):
    """hello (unless it was said already), go, start, perf..., heartbeat,
    stats, rollovers, stop, bye."""
    if hello:
        client.hello()
    if wait_go:
        client.wait_for(protocol.GO)
    client.start()
    total = 0
    for i, lats in enumerate(lat_sets):
        msg = client.perf(i, lats, t0=t0)
        total += msg.bytes
        if i == 0:
            client.send(protocol.HEARTBEAT, writer_pid=os.getpid(), writer_alive=True,
                        bytes_written=total, chunks_written=len(lats), progress_age_s=0.1)
    for value, nbytes in zip(cpu, rss):
        client.send(protocol.STATS, writer_pid=os.getpid(), cpu_percent=value,
                    rss_bytes=nbytes, source="proc", interval_s=1.0)
    for i in range(rollovers):
        client.send(protocol.ROLLOVER, file_index=i, file_bytes=4 << 20,
                    close_s=0.01 * (i + 1))
    client.stop(nbytes=total, rollovers=rollovers)
    if bye:
        client.send(protocol.BYE)
    client.wait_acked(client.seq)
    return total


def run_in_threads(funcs, timeout=30):
    """Run callables concurrently; re-raise the first failure."""
    errors = []

    def wrap(func):
        try:
            func()
        except Exception as exc:  # noqa: B902 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(f,)) for f in funcs]
    for t in threads:
        t.daemon = True
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a client thread hung"
    if errors:
        raise errors[0]
