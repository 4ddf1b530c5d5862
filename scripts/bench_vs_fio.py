#!/usr/bin/env python
"""diskbench vs fio, side by side on the same directory (`make bench`).

For each allocation mode (none, posix) and each interpreter, run A B A B ...:
fio (sequential write, O_DIRECT, psync, bs = chunk, files of --file-mb) then a
real diskbench server + client with the same chunk and file size. Print a table
of MiB/s per pair, the ratio, the median ratio, and CPU seconds per GiB, and
write it as JSON to bench/results/. Disk speed here swings +-25-35% from run to
run: that is why pairs alternate and the median ratio is the result.

Also times the data path alone (payload stamping, protocol encoding), so a
regression there shows before it shows in disk numbers.
"""
from __future__ import division, print_function

import argparse
import datetime
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from diskbench.metrics import MIB, mib_per_s  # noqa: E402

GIB = 1 << 30


def median(values):
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        return None
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


def ensure_fio():
    """Path to fio, installing it with apt when we are root and it is missing."""
    path = _which("fio")
    if path:
        return path
    if os.geteuid() == 0 and _which("apt-get"):
        print("fio not found: installing it with apt-get (Debian package 'fio')")
        subprocess.call(["apt-get", "update", "-qq"])
        subprocess.call(["apt-get", "install", "-y", "-qq", "fio"])
        path = _which("fio")
    if not path:
        sys.exit("error: fio is not installed; install it (e.g. 'apt-get install fio') "
                 "and run 'make bench' again")
    return path


def _which(name):
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(folder, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def run_fio(fio, directory, chunk_mb, file_mb, nfiles, fallocate):
    """One fio run: nfiles sequential files of file_mb, bs=chunk, O_DIRECT."""
    cmd = [fio, "--name=diskbench-compare", "--directory=%s" % directory,
           "--rw=write", "--direct=1", "--ioengine=psync", "--bs=%dm" % chunk_mb,
           "--nrfiles=%d" % nfiles, "--filesize=%dm" % file_mb,
           "--size=%dm" % (file_mb * nfiles), "--file_service_type=sequential",
           "--fallocate=%s" % fallocate, "--end_fsync=0", "--unlink=1",
           "--output-format=json"]
    out = subprocess.check_output(cmd)
    job = json.loads(out.decode("utf-8"))["jobs"][0]
    write = job["write"]
    seconds = write["runtime"] / 1000.0
    cpu_s = (job["usr_cpu"] + job["sys_cpu"]) / 100.0 * seconds
    nbytes = write["io_bytes"]
    return {"mib_s": write["bw_bytes"] / MIB, "bytes": nbytes, "seconds": seconds,
            "cpu_s_per_gib": cpu_s / (nbytes / GIB) if nbytes else None}


def _wait_port(proc, deadline):
    """Read the server's 'listening on HOST:PORT' line."""
    while time.time() < deadline:
        line = proc.stdout.readline().decode("utf-8", "replace")
        if not line:
            break
        if "listening on" in line:
            return int(line.strip().rsplit(":", 1)[1].split()[0])
    raise RuntimeError("diskbench server did not report its port")


def run_diskbench(python, directory, chunk_mb, file_mb, duration, preallocate):
    """One diskbench run (real server + one real client); figures from report.json."""
    logs = tempfile.mkdtemp(prefix="diskbench-bench-logs-")
    env = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
    server = subprocess.Popen(
        [python, "-m", "diskbench.server", "--host", "127.0.0.1", "--port", "0",
         "--clients", "1", "--log-dir", logs, "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
    try:
        port = _wait_port(server, time.time() + 30)
        cmd = [python, "-m", "diskbench.client", "--server", "127.0.0.1:%d" % port,
               "--name", "bench", "--chunk-mb", str(chunk_mb), "--file-mb", str(file_mb),
               "--duration", str(duration), "--log-dir", logs, "--force"]
        if preallocate:
            cmd.append("--preallocate")
        rc = subprocess.call(cmd + [directory], env=env, cwd=REPO,
                             stdout=open(os.devnull, "w"))
        server.wait()
        if rc != 0:
            raise RuntimeError("diskbench client exited %d (logs in %s)" % (rc, logs))
        with open(os.path.join(logs, "report.json")) as f:
            report = json.load(f)
        return report_figures(report)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        shutil.rmtree(logs, ignore_errors=True)


def report_figures(report):
    """The bench's figures from a diskbench report.json (one client)."""
    client = report["clients"][0]
    nbytes = client["bytes_written"]
    seconds = client["write_seconds"]
    cpu_mean = client["writer_cpu_percent"]["mean"]
    cpu_s = (cpu_mean or 0.0) / 100.0 * seconds
    return {"mib_s": client["throughput_mib_s"]["mean"], "bytes": nbytes,
            "seconds": seconds, "sync_mode": client["sync_mode"],
            "cpu_s_per_gib": cpu_s / (nbytes / GIB) if nbytes else None}


def data_path():
    """MiB/s of payload stamping and messages/s of protocol encoding."""
    from diskbench.client.payload import Payload
    from diskbench import protocol
    from diskbench.metrics import LatencyHistogram
    payload = Payload(10 * MIB)
    start = time.time()
    n = 200
    for i in range(n):
        payload.stamp(i)
    stamp_mib_s = mib_per_s(n * 10 * MIB, time.time() - start)
    hist = LatencyHistogram()
    for i in range(100):
        hist.add(0.005 + i * 1e-5)
    start = time.time()
    m = 5000
    for i in range(m):
        protocol.encode(protocol.make(
            protocol.PERF, name="bench", seq=i + 1, t_start=1.0, t_end=2.0,
            bytes=10 * MIB, chunks=1, io_s=0.01, lat_min_s=0.005, lat_max_s=0.006,
            lat_hist=hist.to_wire(), sync_mode=protocol.SYNC_DIRECT, file_index=0))
    return {"payload_stamp_mib_s": stamp_mib_s,
            "perf_messages_encoded_per_s": m / (time.time() - start)}


def python_label(python):
    out = subprocess.check_output([python, "-c", "import platform;"
                                   "print(platform.python_version())"])
    return out.decode().strip()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", help="directory to test (default: a temp dir "
                        "under the repository, i.e. this machine's disk)")
    parser.add_argument("--python", action="append", help="interpreter(s) running "
                        "diskbench (repeatable; default this one)")
    parser.add_argument("--chunk-mb", type=int, default=10)
    parser.add_argument("--file-mb", type=int, default=1024)
    parser.add_argument("--files", type=int, default=4, help="files per fio run")
    parser.add_argument("--duration", type=float, default=6.0,
                        help="seconds per diskbench run")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--modes", default="none,posix",
                        help="allocation modes (fio --fallocate / diskbench --preallocate)")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    args = parser.parse_args(argv)

    fio = ensure_fio()
    fio_version = subprocess.check_output([fio, "--version"]).decode().strip()
    pythons = args.python or [sys.executable]
    base = args.dir or tempfile.mkdtemp(prefix="bench-", dir=REPO)
    made_base = args.dir is None
    results = {"date": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
               "machine": {"host": socket.gethostname(), "platform": platform.platform(),
                           "cpus": os.sysconf("SC_NPROCESSORS_ONLN")},
               "fio": fio_version, "chunk_mib": args.chunk_mb, "file_mib": args.file_mb,
               "unit": "MiB/s (2^20 bytes per second)", "data_path": data_path(),
               "runs": []}
    print("data path: payload stamping %.0f MiB/s, perf encoding %.0f messages/s"
          % (results["data_path"]["payload_stamp_mib_s"],
             results["data_path"]["perf_messages_encoded_per_s"]))
    try:
        for python in pythons:
            label = python_label(python)
            for mode in args.modes.split(","):
                pairs = []
                print("\nPython %s, allocation %s, chunk %d MiB, file %d MiB"
                      % (label, mode, args.chunk_mb, args.file_mb))
                print("%4s %14s %19s %7s %16s %16s" % (
                    "pair", "fio MiB/s", "diskbench MiB/s", "ratio",
                    "fio CPU s/GiB", "db CPU s/GiB"))
                for i in range(args.pairs):
                    work = tempfile.mkdtemp(prefix="pair-", dir=base)
                    a = run_fio(fio, work, args.chunk_mb, args.file_mb, args.files, mode)
                    b = run_diskbench(python, work, args.chunk_mb, args.file_mb,
                                      args.duration, mode != "none")
                    shutil.rmtree(work, ignore_errors=True)
                    ratio = b["mib_s"] / a["mib_s"]
                    pairs.append({"fio": a, "diskbench": b, "ratio": ratio})
                    print("%4d %14.1f %19.1f %7.3f %16.3f %16.3f" % (
                        i + 1, a["mib_s"], b["mib_s"], ratio, a["cpu_s_per_gib"] or 0,
                        b["cpu_s_per_gib"] or 0))
                med = median([p["ratio"] for p in pairs])
                print("median ratio diskbench/fio: %.3f" % med)
                results["runs"].append({
                    "python": label, "allocation": mode, "pairs": pairs,
                    "median_ratio": med,
                    "median_fio_mib_s": median([p["fio"]["mib_s"] for p in pairs]),
                    "median_diskbench_mib_s": median([p["diskbench"]["mib_s"] for p in pairs])})
    finally:
        if made_base:
            shutil.rmtree(base, ignore_errors=True)
    if not os.path.isdir(args.out):
        os.makedirs(args.out)
    path = os.path.join(args.out, "bench-%s.json" % results["date"][:10])
    with open(path, "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    print("\nwritten %s" % os.path.relpath(path, REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
