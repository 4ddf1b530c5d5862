"""make demo: one server and three local clients, then the report.

The run plan lives on the server (chunk sizes 10, 20, 30 MiB handed out in order
of arrival, file size, duration, intervals): the three client commands are the
same but for their names, and they start writing at one instant.

Everything happens in a temporary directory that is removed at the end
(``--keep``, or ``make demo KEEP=1``, keeps it and prints where report.html is);
the script checks that no data file was left behind and exits non-zero if any
process failed. Runs with the interpreter that runs it (py3 or 2.7).
"""
from __future__ import print_function

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The server's chunk list (MiB), one per client; small files so each client
#: rolls over many times.
CHUNKS_MB = (10, 20, 30)
FILE_MB = 120
CLIENTS = ["demo-%d" % (i + 1) for i in range(len(CHUNKS_MB))]
DURATION_S = 8
#: Give up (and kill everything) after this long.
DEADLINE_S = 120
_LISTEN = re.compile(r"listening on ([^\s:]+):(\d+)")


def start(args, log_path, env):
    out = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable] + args, cwd=REPO, env=env,
                            stdout=subprocess.PIPE if log_path.endswith("server.out")
                            else out, stderr=subprocess.STDOUT, preexec_fn=os.setsid)
    proc.log_file = out
    return proc


def read_port(proc, deadline):
    """The port from the server's 'listening on HOST:PORT' line."""
    found = []

    def reader():
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace")
            proc.log_file.write(raw)
            proc.log_file.flush()
            match = _LISTEN.search(line)
            if match and not found:
                found.append(int(match.group(2)))
    t = threading.Thread(target=reader)
    t.daemon = True
    t.start()
    while not found and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    return found[0] if found else None


def wait_all(procs, deadline):
    while time.time() < deadline and any(p.poll() is None for p in procs):
        time.sleep(0.1)
    return [p.poll() for p in procs]


def kill_all(procs):
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            p.wait()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    keep = "--keep" in argv
    tmp = tempfile.mkdtemp(prefix="diskbench-demo-")
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    logs, data = os.path.join(tmp, "logs"), os.path.join(tmp, "data")
    os.makedirs(data)
    procs, failed = [], []
    deadline = time.time() + DEADLINE_S
    try:
        server = start(["-m", "diskbench.server", "--port", "0", "--clients",
                        str(len(CLIENTS)), "--log-dir", logs, "--quiet",
                        "--chunk-mb", ",".join(str(c) for c in CHUNKS_MB),
                        "--file-mb", str(FILE_MB), "--duration", str(DURATION_S),
                        "--stats-interval", "2", "--heartbeat-interval", "1"],
                       os.path.join(tmp, "server.out"), env)
        procs.append(server)
        port = read_port(server, time.time() + 15)
        if port is None:
            print("demo: the server did not say 'listening on HOST:PORT'", file=sys.stderr)
            return 1
        print("demo: server on port %d; %d clients write for %d s in %s (Python %s)"
              % (port, len(CLIENTS), DURATION_S, data, sys.version.split()[0]))
        clients = start_clients(port, tmp, logs, data, env)
        procs.extend(p for _, p in clients)
        failed += judge(clients, wait_all(procs, deadline), tmp, logs, data)
    finally:
        kill_all(procs)
        for p in procs:
            p.log_file.close()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return outcome(failed, keep, tmp, logs)


def start_clients(port, tmp, logs, data, env):
    """[(name, process)] of the demo's clients, one per CLIENTS entry: the
    same command but the name (the plan comes from the server)."""
    clients = []
    for name in CLIENTS:
        clients.append((name, start(
            ["-m", "diskbench.client", "--server", "127.0.0.1:%d" % port,
             "--name", name, "--log-dir", logs, data],
            os.path.join(tmp, name + ".out"), env)))
    return clients


def judge(clients, codes, tmp, logs, data):
    """What went wrong (a list of phrases); prints each exit code and the report."""
    failed = []
    for (name, _proc), code in zip(clients, codes[1:]):
        print("demo: client %s exited %s" % (name, code))
        if code != 0:
            failed.append(name)
            with open(os.path.join(tmp, name + ".out")) as f:
                print(f.read(), file=sys.stderr)
    print("demo: server exited %s" % codes[0])
    if codes[0] != 0:
        failed.append("server")
    report = os.path.join(logs, "report.txt")
    if os.path.exists(report):
        with open(report) as f:
            print(f.read())
    else:
        failed.append("report.txt missing")
    leftovers = [n for n in os.listdir(data)]
    if leftovers:
        failed.append("data files left behind: %s" % ", ".join(leftovers))
    return failed


def outcome(failed, keep, tmp, logs):
    if failed:
        print("demo: FAILED: %s" % "; ".join(failed), file=sys.stderr)
        return 1
    if keep:
        print("demo: OK (no data files left); kept %s" % tmp)
        for name in ("report.html", "report.txt", "report.json", "clients.csv",
                     "timeseries.csv"):
            print("demo: %-15s %s" % (name, os.path.join(logs, name)))
        return 0
    assert not os.path.exists(tmp)
    print("demo: OK (temporary directory removed, no data files left)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
