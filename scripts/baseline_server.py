"""The bench-server baselines: a bare threaded socketserver with one recorder
thread (--mode threaded), or a bare event loop (--mode epoll).

What a design costs at its least. Threaded: one handler thread per
connection reads lines and parses the JSON; one recorder thread appends the
lines to a file in batches and acknowledges each connection's highest seq.
Epoll: one thread, one poller (pollio.Poller) over every connection, parse,
append what one wake-up brought in one write, ack each connection's highest
seq. In both, go follows the hello at once. No validation, no registry, no report: ``make bench-server``
runs the real server and this side by side, so diskbench's per-message cost
is read against what the design itself needs. The process is tuned as the
server's is (server/interpreter.py: one CPU, switch interval, no automatic
full collection, glibc's per-thread cache off) unless --untuned.

    python scripts/baseline_server.py --port 7999 --log FILE [--mode epoll]
"""
from __future__ import print_function

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from diskbench.compat import queue, socketserver  # noqa: E402
from diskbench.linux import get_affinity  # noqa: E402
from diskbench.pollio import Poller  # noqa: E402
from diskbench.server import interpreter  # noqa: E402

BATCH_MAX = 1000


def _line(type_, **data):
    return (json.dumps(dict(v=1, type=type_, ts=time.time(), data=data),
                       separators=(",", ":")) + "\n").encode("ascii")


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        q = self.server.q
        while True:
            line = self.rfile.readline(65537)
            if not line:
                return
            obj = json.loads(line.decode("utf-8"))
            q.put((line, self, obj["seq"], obj["type"] == "hello"))

    def send(self, data):
        try:
            self.connection.sendall(data)
        except (socket.error, OSError):
            pass


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 4096


def recorder(q, path):
    with open(path, "ab") as f:
        while True:
            batch = [q.get()]
            while len(batch) < BATCH_MAX:
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    break
            f.write(b"".join(item[0] for item in batch))
            f.flush()
            upto, hellos = {}, []
            for _, handler, seq, hello in batch:
                upto[handler] = max(upto.get(handler, 0), seq)
                if hello:
                    hellos.append(handler)
            for handler, seq in upto.items():
                handler.send(_line("ack", upto_seq=seq))
            for handler in hellos:
                handler.send(_line("go", run_id="baseline"))


def serve_epoll(port, path):
    """One thread: accept, read, parse, append, ack; nothing else."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(4096)
    listener.setblocking(False)
    poller = Poller()
    poller.register(listener.fileno())
    conns = {}                        # fd -> [socket, bytes of a partial line]
    print("baseline listening on 127.0.0.1:%d" % port)
    sys.stdout.flush()
    with open(path, "ab") as f:
        while True:
            out, upto, hellos = [], {}, []
            for fd, _ev in poller.poll(None):
                if fd == listener.fileno():
                    while True:
                        try:
                            sock, _addr = listener.accept()
                        except (socket.error, OSError):
                            break
                        sock.setblocking(False)
                        conns[sock.fileno()] = [sock, b""]
                        poller.register(sock.fileno())
                    continue
                conn = conns[fd]
                try:
                    data = conn[0].recv(65536)
                except (socket.error, OSError):
                    continue
                if not data:
                    poller.unregister(fd)
                    conn[0].close()
                    del conns[fd]
                    continue
                lines = (conn[1] + data).split(b"\n")
                conn[1] = lines.pop()
                for line in lines:
                    obj = json.loads(line.decode("utf-8"))
                    out.append(line + b"\n")
                    upto[fd] = max(upto.get(fd, 0), obj["seq"])
                    if obj["type"] == "hello":
                        hellos.append(fd)
            if out:
                f.write(b"".join(out))
                f.flush()
            for fd, seq in upto.items():
                _send(conns, fd, _line("ack", upto_seq=seq))
            for fd in hellos:
                _send(conns, fd, _line("go", run_id="baseline"))


def _send(conns, fd, data):
    conn = conns.get(fd)
    if conn is not None:
        try:
            conn[0].send(data)
        except (socket.error, OSError):
            pass


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--mode", choices=("threaded", "epoll"), default="threaded",
                   help="a thread per connection (socketserver), or one thread with "
                   "epoll (default: %(default)s)")
    p.add_argument("--switch-interval", type=float, default=None,
                   help="sys.setswitchinterval (Python 3) for this run")
    p.add_argument("--cpu", default=interpreter.CPU_AUTO,
                   help="CPUs to run on, as the server's --cpu (default: the same)")
    p.add_argument("--untuned", action="store_true",
                   help="keep CPython's defaults (any CPU, 5 ms switch interval, its own "
                   "full garbage collections): at 5,000 clients on 3.11 this bare server "
                   "then fell minutes behind")
    args = p.parse_args()
    if not args.untuned:   # the server's process tuning: like for like
        interpreter.reexec_untcached([os.path.abspath(__file__)] + sys.argv[1:])
        interpreter.tune(interpreter.parse_cpus(args.cpu, get_affinity()))
    if args.switch_interval and hasattr(sys, "setswitchinterval"):
        sys.setswitchinterval(args.switch_interval)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    if args.mode == "epoll":
        try:
            serve_epoll(args.port, args.log)
        except (KeyboardInterrupt, SystemExit):
            pass
        return 0
    server = Server(("127.0.0.1", args.port), Handler)
    server.q = queue.Queue()
    t = threading.Thread(target=recorder, args=(server.q, args.log))
    t.daemon = True
    t.start()
    print("baseline listening on 127.0.0.1:%d" % args.port)
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.5)
    except (KeyboardInterrupt, SystemExit):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
