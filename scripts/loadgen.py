"""Simulated diskbench clients: thousands of them from one process (2.7 and 3).

Each simulated client speaks the documented protocol at a real client's
cadence and timing: hello; at go, heartbeats begin (every
--heartbeat-interval) and stats (every --stats-interval), the second of each
a random part of its interval after the first (client/child.first_wait);
start at go's common start instant, then perf every --perf-interval; every
report sent the client's own send offset late (client/sender.py: random,
under SEND_OFFSET_MAX_S); at the end its last perf at its next perf tick,
then stop + bye at its end offset (sender.offsets: the same phase over the
go's end_spread_s), waiting for the last ack. One epoll loop
drives every socket; messages are formatted from per-client templates, so the
generator's own CPU stays small next to the server's.

It measures what the server gives back: time from connect to go, ack latency
(send of a seq to the ack that covers it), messages acked, connections lost.
``--json`` prints the figures as one JSON object (used by make bench-server).

    python scripts/loadgen.py --port 7878 --clients 1000 --duration 60
"""
from __future__ import division, print_function

import argparse
import collections
import errno
import heapq
import json
import os
import random
import select
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from diskbench import metrics, plan, protocol  # noqa: E402
from diskbench.client.child import first_wait  # noqa: E402
from diskbench.client.stats import FIRST_SAMPLE_MIN  # noqa: E402
from diskbench.client.sender import offsets  # noqa: E402
from diskbench.compat import monotonic  # noqa: E402

#: How long after the end of sending a client waits for its last ack.
FINAL_ACK_TIMEOUT_S = 60.0
#: The loop never sleeps longer than this (timers fire this late at most).
LOOP_TICK_S = 0.01
_EP_IN, _EP_OUT = select.EPOLLIN, select.EPOLLOUT
_EP_ERR = select.EPOLLERR | select.EPOLLHUP

_ENVELOPE = ('{"v":%d,"type":"%%s","name":"%%s","seq":%%d,"ts":%%.6f,"data":%%s}\n'
             % protocol.PROTOCOL_VERSION)
#: Chunks in one simulated perf interval: 10 MiB chunks at about 200 MiB/s.
#: With latencies spread as a real disk's, its histogram has about as many
#: pairs as a real client's perf line (tests/data/readme_run: 12 to 19), and
#: the line about its length (a one-pair histogram understated the server's
#: parse, check and merge per message).
PERF_CHUNKS = 20
#: Shortest and longest chunk latency drawn (log-uniform), seconds.
PERF_LAT_S = (0.02, 0.06)
#: Distinct perf bodies made at start; each simulated client sends one.
PERF_BODIES = 16


def perf_bodies(rng, count=PERF_BODIES):
    """``count`` perf bodies (JSON with ``%(t_start).6f`` and ``%(t_end).6f``
    left to fill), each from PERF_CHUNKS latencies drawn as a disk's: the
    histogram, io_s, min and max all agree, as the server checks."""
    out = []
    lo, hi = PERF_LAT_S
    for _ in range(count):
        hist = metrics.LatencyHistogram()
        for _ in range(PERF_CHUNKS):
            hist.add(lo * (hi / lo) ** rng.random())
        fields = '"bytes":%d,"chunks":%d,"io_s":%r,"lat_min_s":%r,"lat_max_s":%r,' \
            '"lat_hist":%s,"sync_mode":"o_direct","file_index":0' % (
                PERF_CHUNKS * (10 << 20), hist.count, hist.total, hist.min, hist.max,
                json.dumps(hist.to_wire(), separators=(",", ":")))
        out.append('{"t_start":%(t_start).6f,"t_end":%(t_end).6f,' +
                   fields.replace("%", "%%") + '}')
    return out


def _hello_data(name, args):
    fields = dict(
        client_version="loadgen", hostname="loadgen-%s" % name, pid=os.getpid(),
        instance_id="loadgen%016x" % (hash(name) & 0xffffffffffffffff),
        python_version="sim", platform="sim", directory="/sim/%s" % name,
        fs_type="sim", chunk_bytes=10 << 20, file_bytes=100 << 20,
        duration_s=float(args.duration), max_files=2, sync_mode=protocol.SYNC_DIRECT,
        preallocate=False, stats_interval_s=args.stats_interval,
        heartbeat_interval_s=args.heartbeat_interval)
    msg = protocol.make(protocol.HELLO, name=name, seq=1, **fields)
    return json.dumps(msg.data, separators=(",", ":"))


class Sim(object):
    """One simulated client: its socket, its seqs and what is unacknowledged."""

    __slots__ = ("name", "sock", "fd", "seq", "out", "inbuf", "pending", "state",
                 "t_connect", "t_go", "hello", "stop_seq", "acked", "sent", "offset",
                 "end_delay", "beats")

    def __init__(self, name, hello):
        self.name, self.hello = name, hello
        self.sock = self.fd = None
        self.seq = 0
        self.out = bytearray()
        self.inbuf = b""
        self.pending = collections.deque()   # (seq, send time)
        self.state = "new"
        self.t_connect = self.t_go = None
        self.stop_seq = None
        self.acked = 0
        self.sent = 0
        self.offset = 0.0                    # its send offset (set at go)
        self.end_delay = 0.0                 # its end offset, after its send offset
        self.beats = 0                       # heartbeats sent

    def line(self, type_, data, now):
        self.seq += 1
        self.pending.append((self.seq, now, type_))
        self.sent += 1
        self.out += (_ENVELOPE % (type_, self.name, self.seq, time.time(),
                                  data)).encode("ascii")
        return self.seq


class LoadGen(object):
    def __init__(self, args):
        self.args = args
        self.ep = select.epoll()
        self.sims = [Sim("%s%05d" % (args.prefix, i), None) for i in range(args.clients)]
        for sim in self.sims:
            sim.hello = _hello_data(sim.name, args)
        self.by_fd = {}
        self.timers = []                  # (due, order, sim index, kind)
        self.order = 0
        self.ack_lat = []
        self.ack_at = []                  # monotonic() of each ack_lat entry
        self.worst = {}                   # message type -> longest ack wait (s)
        self.go_lat = []
        self.lost_connections = 0
        self.stopping = False
        self.settled = 0                  # clients that got go, or were lost before
        self.ended = 0                    # clients done (last ack) or lost
        self.refused = 0
        self.rng = random.Random(args.seed)
        self.perf_bodies = perf_bodies(self.rng)

    # --- timers -----------------------------------------------------------------------
    def at(self, due, index, kind):
        self.order += 1
        heapq.heappush(self.timers, (due, self.order, index, kind))

    # --- sockets ----------------------------------------------------------------------
    def connect(self, index, now):
        sim = self.sims[index]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex((self.args.host, self.args.port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self.refused += 1
            return
        sim.sock, sim.fd, sim.state, sim.t_connect = sock, sock.fileno(), "hello", now
        self.by_fd[sim.fd] = index
        sim.line(protocol.HELLO, sim.hello, now)
        self.ep.register(sim.fd, _EP_IN | _EP_OUT)

    def flush(self, sim):
        if not sim.out:
            return
        try:
            n = sim.sock.send(sim.out)
        except socket.error as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOTCONN):
                n = 0
            else:
                return self.lose(sim)
        del sim.out[:n]
        self.ep.modify(sim.fd, _EP_IN | (_EP_OUT if sim.out else 0))

    def lose(self, sim):
        if sim.sock is None:
            return
        self.lost_connections += 1
        self.ep.unregister(sim.fd)
        self.by_fd.pop(sim.fd, None)
        sim.sock.close()
        if sim.t_go is None:
            self.settled += 1
        if sim.state != "done":
            self.ended += 1
        sim.sock, sim.state = None, "lost"

    def read(self, sim, now):
        try:
            data = sim.sock.recv(65536)
        except socket.error as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                return
            return self.lose(sim)
        if not data:
            return self.lose(sim)
        sim.inbuf += data
        while b"\n" in sim.inbuf:
            line, sim.inbuf = sim.inbuf.split(b"\n", 1)
            obj = json.loads(line.decode("utf-8"))
            kind = obj.get("type")
            if kind == protocol.ACK:
                upto = obj["data"]["upto_seq"]
                while sim.pending and sim.pending[0][0] <= upto:
                    _, sent, type_ = sim.pending.popleft()
                    self.ack_lat.append(now - sent)
                    self.ack_at.append(now)
                    self.worst[type_] = max(self.worst.get(type_, 0.0), now - sent)
                    sim.acked += 1
                if sim.stop_seq is not None and upto >= sim.stop_seq and \
                        sim.state != "done":
                    sim.state = "done"
                    self.ended += 1
            elif kind == protocol.GO and sim.t_go is None:
                sim.t_go = now
                self.settled += 1
                self.go_lat.append(now - sim.t_connect)
                # like a real client: its first write (and START) waits for
                # the common start instant, on this host's clock
                self.went(sim, obj["data"], now)
            elif kind == protocol.REJECTED:
                self.refused += 1

    # --- the simulated client's life ----------------------------------------------------
    def went(self, sim, go, now):
        """Go came: the children's cadence begins, START waits for the instant."""
        index = self.by_fd[sim.fd]
        a = self.args
        sim.state = "running"
        sim.offset, end_offset = offsets(self.rng.random(), a.perf_interval,
                                         go.get("end_spread_s"))
        sim.end_delay = end_offset - sim.offset
        start_at = go.get("start_at")
        delay = 0.0 if start_at is None else max(0.0, start_at - time.time())
        self.at(now + delay + sim.offset, index, "start")
        self.at(now + sim.offset, index, "heartbeat")
        self.at(now + first_wait(a.stats_interval, FIRST_SAMPLE_MIN, self.rng) +
                sim.offset, index, "stats")

    def started(self, sim, now):
        index = self.by_fd[sim.fd]
        sim.line(protocol.START, '{"writer_pid":%d,"sync_mode":"o_direct","preallocate":'
                 'false,"block_bytes":512,"buffer_huge_bytes":null}' % os.getpid(), now)
        self.at(now + self.args.perf_interval, index, "perf")
        self.flush(sim)

    def fire(self, index, kind, now):
        sim = self.sims[index]
        if kind == "start" and sim.state == "running":
            return self.finish(sim, now) if self.stopping else self.started(sim, now)
        if kind == "end":
            return self.finish(sim, now)
        if sim.state != "running":
            return None
        a = self.args
        wall = time.time()
        if kind == "perf":
            body = self.perf_bodies[index % len(self.perf_bodies)]
            sim.line(protocol.PERF, body % {"t_start": wall - a.perf_interval,
                                            "t_end": wall}, now)
            every = a.perf_interval
            if self.stopping:   # like a writer: its last interval, then its end
                self.flush(sim)
                return self.at(now + sim.end_delay, index, "end")
        elif kind == "heartbeat":
            sim.line(protocol.HEARTBEAT, '{"writer_pid":%d,"writer_alive":true,'
                     '"bytes_written":%d,"chunks_written":1,"progress_age_s":0.1}'
                     % (os.getpid(), sim.seq << 20), now)
            sim.beats += 1
            every = a.heartbeat_interval if sim.beats > 1 else first_wait(
                a.heartbeat_interval, rng=self.rng)
        elif kind == "stats":
            sim.line(protocol.STATS, '{"writer_pid":%d,"cpu_percent":12.5,"rss_bytes":'
                     '20971520,"source":"proc","interval_s":%g}'
                     % (os.getpid(), a.stats_interval), now)
            every = a.stats_interval
        else:
            return None
        self.flush(sim)
        self.at(now + every, index, kind)

    def finish(self, sim, now):
        if sim.state != "running":
            if sim.state not in ("done", "lost"):
                self.ended += 1   # never got go: nothing to wait for
            return
        sim.line(protocol.STOP, '{"reason":"duration","bytes_written":%d,"chunks_written":'
                 '1,"rollovers":0,"elapsed_s":%g,"io_s":1.0,"dropped_messages":0}'
                 % (sim.seq << 20, self.args.duration), now)
        sim.stop_seq = sim.seq
        sim.line(protocol.BYE, "{}", now)
        sim.state = "stopping"
        self.flush(sim)

    # --- the loop ---------------------------------------------------------------------
    def run(self):
        a = self.args
        t0 = monotonic()
        ramp = max(a.ramp, 1e-3)
        for i in range(len(self.sims)):
            self.at(t0 + ramp * i / len(self.sims), i, "connect")
        end_send = None
        deadline = None
        while True:
            now = monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, _, index, kind = heapq.heappop(self.timers)
                if kind == "connect":
                    self.connect(index, now)
                else:
                    self.fire(index, kind, now)
            if end_send is None and self.settled == len(self.sims):
                end_send = now + a.duration  # duration counts once the last got go
            if end_send is not None and now >= end_send and deadline is None:
                self.stopping = True            # each stops at its next perf tick
                for sim in self.sims:
                    if sim.state != "running":   # no go, or not started yet
                        self.finish(sim, now)
                deadline = now + a.perf_interval + protocol.END_SPREAD_MAX_S + \
                    FINAL_ACK_TIMEOUT_S
            if deadline is not None and (now >= deadline or self.ended == len(self.sims)):
                break
            if end_send is None and now - t0 > a.ramp + a.go_timeout:
                end_send = now  # go never came for some: measure what we have
            wait = LOOP_TICK_S
            if self.timers:
                wait = max(0.0, min(wait, self.timers[0][0] - now))
            for fd, ev in self.ep.poll(wait):
                index = self.by_fd.get(fd)
                if index is None:
                    continue
                sim = self.sims[index]
                if ev & _EP_IN or ev & _EP_ERR:
                    self.read(sim, monotonic())
                if sim.sock is not None and ev & _EP_OUT:
                    self.flush(sim)
        for sim in self.sims:
            if sim.sock is not None:
                sim.sock.close()
        return self.summary(monotonic() - t0)

    def summary(self, took):
        sent = sum(s.sent for s in self.sims)
        acked = sum(s.acked for s in self.sims)
        lat = sorted(self.ack_lat)
        go = sorted(self.go_lat)

        def pct(values, p):
            return metrics.percentile(values, p) if values else None
        return dict(
            clients=len(self.sims), duration_s=self.args.duration, took_s=took,
            sent=sent, acked=acked, unacked=sent - acked,
            offered_msg_s=sent / self.args.duration if self.args.duration else None,
            ack_p50_ms=_ms(pct(lat, 50)), ack_p99_ms=_ms(pct(lat, 99)),
            ack_max_ms=_ms(lat[-1] if lat else None),
            go_count=len(go), go_p50_s=pct(go, 50), go_max_s=go[-1] if go else None,
            lost_connections=self.lost_connections, refused=self.refused,
            ack_max_ms_by_type=dict((k, _ms(v)) for k, v in self.worst.items()),
            ack_timeline=self.timeline(),
            sent_per_client=dict((s.name, s.sent) for s in self.sims))


    def timeline(self):
        """Per second of the run, by when the ack came: [second, acks, p50 ms,
        p99 ms, max ms]: shows whether slow acks are steady or come in bursts."""
        if not self.ack_at:
            return []
        t0 = min(self.ack_at)
        by_s = collections.defaultdict(list)
        for at, lat in zip(self.ack_at, self.ack_lat):
            by_s[int(at - t0)].append(lat)
        out = []
        for second in sorted(by_s):
            lat = sorted(by_s[second])
            out.append([second, len(lat), round(_ms(metrics.percentile(lat, 50)), 1),
                        round(_ms(metrics.percentile(lat, 99)), 1), round(_ms(lat[-1]), 1)])
        return out


def _ms(seconds):
    return None if seconds is None else seconds * 1000.0


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--duration", type=float, default=10.0,
                   help="seconds of sending after the last client got go")
    p.add_argument("--ramp", type=float, default=2.0, help="connect over this many seconds")
    p.add_argument("--go-timeout", type=float, default=120.0)
    # a real client's cadence: the plan's defaults
    p.add_argument("--perf-interval", type=float, default=plan.PERF_INTERVAL_S)
    p.add_argument("--heartbeat-interval", type=float, default=plan.HEARTBEAT_INTERVAL_S)
    p.add_argument("--stats-interval", type=float, default=plan.STATS_INTERVAL_S)
    p.add_argument("--prefix", default="sim")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = args.clients + 64
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, want), hard))
    except (ImportError, ValueError, OSError):
        pass
    out = LoadGen(args).run()
    if args.json:
        print(json.dumps(out, sort_keys=True))
    else:
        for key in sorted(out):
            if key != "sent_per_client":
                print("%-18s %s" % (key, out[key]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
