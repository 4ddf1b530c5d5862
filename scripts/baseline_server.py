"""The bench-server baseline: a bare threaded socketserver with one recorder thread.

What the design costs at its least: one handler thread per connection reads
lines and parses the JSON; one recorder thread appends the lines to a file
in batches and acknowledges each connection's highest seq; go follows the
hello at once. No validation, no registry, no report: ``make bench-server``
runs the real server and this side by side, so diskbench's per-message cost
is read against what the design itself needs. The process is tuned as the
server's is (server/interpreter.py: one CPU, switch interval, no automatic
full collection, glibc's per-thread cache off) unless --untuned.

    python scripts/baseline_server.py --port 7999 --log FILE
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
from diskbench.compat import get_affinity, queue, socketserver  # noqa: E402
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


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--log", required=True)
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
    server = Server(("127.0.0.1", args.port), Handler)
    server.q = queue.Queue()
    t = threading.Thread(target=recorder, args=(server.q, args.log))
    t.daemon = True
    t.start()
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    print("baseline listening on 127.0.0.1:%d" % args.port)
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.5)
    except (KeyboardInterrupt, SystemExit):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
