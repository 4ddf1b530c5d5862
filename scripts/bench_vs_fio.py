#!/usr/bin/env python
"""diskbench vs fio, side by side on the same directory (`make bench`).

For each interpreter and each allocation mode (none, posix), after one discarded
fio warm-up, run pairs A B, B A, A B ...: A = fio writing NFILES fresh files of
--file-mb sequentially (O_DIRECT, psync, bs = chunk), B = a real diskbench
server + one client with the same chunk and file size, for as long as the
latest fio run took. Print MiB/s per pair, the ratio, the median ratio, the
split into write phase and the rest (flushes, opens), the request size the
device saw, huge pages of each tool's buffer, and CPU seconds per GiB; write
everything as JSON to bench/results/. Disk speed here swings +-25-35% from run
to run: that is why pairs alternate and the median ratio, not an absolute
figure, is the result.

- Same buffer: diskbench writes from 2 MiB huge pages (payload.py says why);
  fio gets the same with --iomem_align=2m and glibc's malloc hugetlb tunable
  (--fio-buffer default gives fio its own 4 KiB-page buffer instead).
- Same order effects: odd pairs run fio first, even pairs diskbench first.

Like with like (both figures are bytes / wall time of writing, MiB/s = 2^20 B/s):
- fio: write io_bytes / write runtime. ``--openfiles=1 --fsync_on_close=1``
  makes fio close (and fsync) each file when it is full and open the next one
  inside its run, as diskbench's rollover does (timed fsync + close). fio
  creates (and with --fallocate=posix preallocates) all its files before its
  clock starts and deletes them after it stops (--unlink=1).
- diskbench: the report's throughput_mib_s.mean = bytes / summed perf-interval
  wall time. That wall time covers everything the writer does while it runs:
  the timed writes, stamping, rollover fsync + close, deleting the oldest file
  beyond --max-files, opening (and with --preallocate, posix_fallocate of) the
  next file. So diskbench pays for file creation and preallocation inside its
  figure, fio does not: such a cost lowers the ratio, never hides.
- Deleting: fio deletes its files after its clock stops. diskbench runs with
  --max-files = 3 x fio's file count, so it too deletes nothing while it
  writes (its files go at exit, outside its intervals) and holds no more
  space than fio. The ':rolling' mode (--max-files 2, the default) shows
  what deleting while writing costs on this disk: on ext4 mounted with
  `discard`, freeing a 1000 MiB file makes the device discard it, which
  takes ~0.5-1 s here and slows writes by as much whether the unlink runs
  in the writer or in a background thread (tried: no gain), so it is a cost
  of bounded disk use, reported as such, not a measurement error.
- Between runs (both ways): `sync`, then wait until /proc/diskstats shows
  no I/O for 1 s (6 s at most), so one run's deletions (fio's --unlink, diskbench's exit)
  and writeback are not paid by the next run, and diskbench's longer start-up
  (server, calibration) is no head start.
- --file-mb should be a multiple of --chunk-mb: fio writes only whole blocks of
  bs (1024 MiB files with 10 MiB blocks get 1020 MiB), diskbench cuts the last
  chunk of a file to fit.

The read-back row (mode 'readback'): diskbench writes with --verify
--keep-data (its own in-run read-back is recorded too), then the same full
files are read twice in turn, alternating which goes first: fio --rw=read
--direct=1 --ioengine=psync --bs=chunk over them one after the other, and
diskbench's re-check (python -m diskbench.client.verify: O_DIRECT reads of a
chunk each, timed alone, every block checked outside the timer). Ratio =
diskbench read MiB/s / fio read MiB/s, with its median and spread.

The data path alone is timed too (payload stamping MiB/s, perf message encoding
per second, on each interpreter) and the CPU time of every client process
(writer, stats + heartbeat, main), so a regression shows before it shows in
disk numbers.
"""
from __future__ import division, print_function

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from diskbench import protocol  # noqa: E402
from diskbench.compat import monotonic  # noqa: E402
from diskbench.metrics import MIB  # noqa: E402

try:
    import psutil
except ImportError:  # the CPU split per client process needs it; totals do not
    psutil = None

GIB = 1 << 30
#: fio options beyond the basic --rw=write --direct=1 --ioengine=psync --bs --size
FIO_FIXED = ["--rw=write", "--direct=1", "--ioengine=psync",
             "--file_service_type=sequential", "--openfiles=1", "--fsync_on_close=1",
             "--end_fsync=0", "--unlink=1", "--output-format=json"]
#: fio's I/O buffer like diskbench's: 2 MiB-aligned (--iomem_align) and in
#: transparent huge pages (glibc >= 2.35 malloc advises MADV_HUGEPAGE with this
#: tunable; older glibc ignores it, and the fio_buffer_huge_mib column shows it)
FIO_HUGE_OPTIONS = ["--iomem_align=2m"]
FIO_HUGE_ENV = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
#: per tool, "median_TOOL_NAME" in each run's JSON = median of this figure
MEDIANS = (("mib_s", "mib_s"), ("write_phase_mib_s", "write_only_mib_s"),
           ("rest_s_per_gib", "rest_s_per_gib"), ("cpu_s_per_gib", "cpu_s_per_gib"),
           ("process_cpu_s_per_gib", "process_cpu_s_per_gib"))
SERVER_START_S = 30
CLIENT_EXTRA_S = 60        # a client run is killed this long after its duration
SERVER_END_S = 30          # the server must exit this long after its client did
#: diskbench --max-files = this x fio's file count: no file is deleted while it
#: writes (fio deletes its files only after its clock stops, --unlink=1), so
#: both do the same work and hold the same disk space. ':rolling' modes use
#: the default --max-files instead.
KEEP_ALL_FACTOR = 3
ROLLING_MAX_FILES = 2
#: The read-back row's mode name, and fio's read of the files diskbench kept.
READBACK = "readback"
FIO_READ = ["--rw=read", "--direct=1", "--ioengine=psync",
            "--file_service_type=sequential", "--openfiles=1", "--output-format=json"]
CPU_POLL_S = 0.2
SETTLE_S = 1.0
SETTLE_MAX_S = 6.0


def median(values):
    ordered = sorted(v for v in values if v is not None)
    n = len(ordered)
    if not n:
        return None
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


def _which(name):
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(folder, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


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
        sys.exit("error: fio is not installed; install it (e.g. 'apt-get install fio' "
                 "as root) and run 'make bench' again")
    return path


def _disk_counters():
    """Completed writes + discards and I/Os in flight, summed over /proc/diskstats."""
    total = 0
    for line in (_read("/proc/diskstats", "") or "").splitlines():
        f = line.split()
        if len(f) >= 14 and not f[2].startswith(("loop", "ram", "zram")):
            total += int(f[7]) + int(f[11]) + (int(f[14]) if len(f) > 14 else 0)
    return total


def settle():
    """Flush, then wait until the block devices have been idle for SETTLE_S
    (at most SETTLE_MAX_S), so every run starts on a quiet disk and none pays
    for the previous run's deletions (online discard) or writeback. Both tools
    get the same treatment, whatever their start-up time."""
    subprocess.call(["sync"])
    end = time.time() + SETTLE_MAX_S
    last, quiet_since = _disk_counters(), time.time()
    while time.time() < end:
        time.sleep(0.2)
        now = _disk_counters()
        if now != last:
            last, quiet_since = now, time.time()
        elif time.time() - quiet_since >= SETTLE_S:
            break


def _children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _per_gib(cpu_s, nbytes):
    return cpu_s / (nbytes / GIB) if nbytes and cpu_s is not None else None


def fio_command(fio, directory, chunk_mb, file_mb, nfiles, fallocate, huge=True):
    return [fio, "--name=diskbench-compare", "--directory=%s" % directory,
            "--bs=%dm" % chunk_mb, "--nrfiles=%d" % nfiles, "--filesize=%dm" % file_mb,
            "--size=%dm" % (file_mb * nfiles), "--fallocate=%s" % fallocate] + \
        FIO_FIXED + (FIO_HUGE_OPTIONS if huge else [])


def _huge_bytes_of_tree(pid):
    """AnonHugePages summed over a process and its children (fio forks a job
    process), or None when /proc cannot tell."""
    total, found = 0, False
    todo = [pid]
    while todo:
        p = todo.pop()
        for line in (_read("/proc/%d/smaps_rollup" % p, "") or "").splitlines():
            if line.startswith("AnonHugePages:"):
                total += int(line.split()[1]) * 1024
                found = True
        for kids in (_read("/proc/%d/task/%d/children" % (p, p), "") or "").split():
            todo.append(int(kids))
    return total if found else None


def _sysfs_block(directory):
    """/sys/dev/block/MAJ:MIN of the device holding ``directory``."""
    st = os.stat(directory)
    return "/sys/dev/block/%d:%d" % (os.major(st.st_dev), os.minor(st.st_dev))


def _device_writes(directory):
    """(write requests completed, sectors written) of the block device holding
    ``directory``, from /proc/diskstats (None off Linux)."""
    name = os.path.basename(os.path.realpath(_sysfs_block(directory)))
    for line in (_read("/proc/diskstats", "") or "").splitlines():
        f = line.split()
        if len(f) >= 10 and f[2] == name:
            return int(f[7]), int(f[9])
    return None


def _device_figures(before, after):
    """Requests per GiB and mean request size the device saw during a run
    (everything on that device, journal included: both tools alike)."""
    if before is None or after is None or after[0] == before[0]:
        return {"device_requests": None, "device_request_kib": None}
    n, sectors = after[0] - before[0], after[1] - before[1]
    return {"device_requests": n, "device_request_kib": sectors * 512.0 / 1024 / n}


def run_fio(fio, directory, chunk_mb, file_mb, nfiles, fallocate, huge=True):
    """One fio run; MiB/s = write io_bytes / write runtime."""
    cmd = fio_command(fio, directory, chunk_mb, file_mb, nfiles, fallocate, huge)
    env = dict(os.environ, **FIO_HUGE_ENV) if huge else None
    cpu0 = _children_cpu_s()
    dev0 = _device_writes(directory)
    out_file = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=out_file, env=env)
    huge_seen = None
    while proc.poll() is None:
        seen = _huge_bytes_of_tree(proc.pid)
        if seen is not None:
            huge_seen = max(huge_seen or 0, seen)
        time.sleep(CPU_POLL_S)
    if proc.returncode != 0:
        raise RuntimeError("fio exited %d: %s" % (proc.returncode, " ".join(cmd)))
    dev = _device_figures(dev0, _device_writes(directory))
    process_cpu_s = _children_cpu_s() - cpu0
    out_file.seek(0)
    job = json.loads(out_file.read().decode("utf-8"))["jobs"][0]
    write = job["write"]
    seconds = write["runtime"] / 1000.0
    nbytes = write["io_bytes"]
    job_cpu_s = (job["usr_cpu"] + job["sys_cpu"]) / 100.0 * seconds
    # time inside the writes: psync completes each I/O in its pwrite, so the
    # mean total latency x the number of I/Os is the time spent writing; the
    # rest of the runtime is fsync + close + open between files (rest_s)
    io_s = write["lat_ns"]["mean"] * write["total_ios"] / 1e9
    return {"mib_s": nbytes / MIB / seconds, "bytes": nbytes, "seconds": seconds,
            "io_s": io_s, "rest_s": seconds - io_s,
            "rest_s_per_gib": _per_gib(seconds - io_s, nbytes),
            "write_only_mib_s": nbytes / MIB / io_s if io_s else None,
            "latency_p50_ms": write["clat_ns"]["percentile"]["50.000000"] / 1e6,
            "latency_p99_ms": write["clat_ns"]["percentile"]["99.000000"] / 1e6,
            "fio_reported_bw_mib_s": write["bw_bytes"] / MIB,
            "buffer_huge_page_mib": huge_seen / MIB if huge_seen is not None else None,
            "device_requests": dev["device_requests"],
            "device_request_kib": dev["device_request_kib"],
            "cpu_s_per_gib": _per_gib(job_cpu_s, nbytes),
            "process_cpu_s_per_gib": _per_gib(process_cpu_s, nbytes)}


def _wait_port(out_path, proc, deadline):
    """The port from the server's first line 'listening on HOST:PORT'."""
    while time.time() < deadline and proc.poll() is None:
        with open(out_path) as f:
            for line in f:
                if "listening on" in line:
                    return int(line.split("listening on", 1)[1].split()[0]
                               .rsplit(":", 1)[1])
        time.sleep(0.05)
    raise RuntimeError("diskbench server did not report its port (see %s)" % out_path)


class CpuWatch(object):
    """CPU seconds of each child of a process, last value seen (psutil)."""

    def __init__(self, pid):
        self.proc = psutil.Process(pid) if psutil else None
        self.seen = {}

    def poll(self):
        if self.proc is None:
            return
        try:
            kids = self.proc.children(recursive=True)
        except psutil.Error:
            return
        for kid in kids:
            try:
                t = kid.cpu_times()
                self.seen[kid.pid] = t.user + t.system
            except psutil.Error:
                pass


def _writer_pid(perf_path):
    with open(perf_path) as f:
        for line in f:
            try:
                msg, _ = protocol.from_record(json.loads(line))
            except (ValueError, protocol.ProtocolError):
                continue
            if msg.type == protocol.START:
                return msg.writer_pid
    return None


def run_diskbench(python, directory, chunk_mb, file_mb, duration, preallocate,
                  max_files, extra=()):
    """One diskbench run (real server + one real client); figures from report.json."""
    logs = tempfile.mkdtemp(prefix="diskbench-bench-logs-")
    env = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
    server_out = os.path.join(logs, "server.out")
    with open(server_out, "w") as out:
        server = subprocess.Popen(
            [python, "-m", "diskbench.server", "--host", "127.0.0.1", "--port", "0",
             "--clients", "1", "--log-dir", logs, "--quiet"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    client = None
    try:
        port = _wait_port(server_out, server, time.time() + SERVER_START_S)
        cmd = [python, "-m", "diskbench.client", "--server", "127.0.0.1:%d" % port,
               "--name", "bench", "--chunk-mb", str(chunk_mb), "--file-mb", str(file_mb),
               "--duration", "%.1f" % duration, "--stats-interval", "1",
               "--max-files", str(max_files), "--log-dir", logs, "--force"]
        if preallocate:
            cmd.append("--preallocate")
        cmd += list(extra)
        cpu0 = _children_cpu_s()
        dev0 = _device_writes(directory)  # (its start-up probe + calibration too)
        with open(os.path.join(logs, "client.out"), "w") as out:
            client = subprocess.Popen(cmd + [directory], env=env, cwd=REPO,
                                      stdout=out, stderr=subprocess.STDOUT)
        watch = CpuWatch(client.pid)
        rc = _wait_client(client, watch, duration)
        dev = _device_figures(dev0, _device_writes(directory))
        tree_cpu_s = _children_cpu_s() - cpu0  # client + every child it reaped
        _wait_server(server, logs)
        if rc != 0:
            raise RuntimeError("diskbench client exited %d (logs in %s)" % (rc, logs))
        with open(os.path.join(logs, "report.json")) as f:
            figures = report_figures(json.load(f))
        figures["max_files"] = max_files
        figures.update(dev)
        # the oldest file is deleted before each file beyond max_files is opened
        figures["files_deleted_while_writing"] = max(
            0, figures["rollovers"] + 1 - max_files)
        figures["process_cpu_s_per_gib"] = _per_gib(tree_cpu_s, figures["bytes"])
        _writer_cpu(figures, watch, _writer_pid(os.path.join(logs, "perf.jsonl")),
                    duration)
        shutil.rmtree(logs, ignore_errors=True)
        return figures
    finally:
        for proc in (client, server):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def fio_read(fio, paths, chunk_mb, file_mb, huge=True):
    """fio reading ``paths`` (each ``file_mb``) one after the other with
    O_DIRECT; MiB/s = read io_bytes / read runtime."""
    cmd = [fio, "--name=diskbench-readback", "--filename=%s" % ":".join(paths),
           "--bs=%dm" % chunk_mb, "--size=%dm" % (file_mb * len(paths))] + FIO_READ + \
        (FIO_HUGE_OPTIONS if huge else [])
    env = dict(os.environ, **FIO_HUGE_ENV) if huge else None
    out = subprocess.check_output(cmd, env=env)
    read = json.loads(out.decode("utf-8"))["jobs"][0]["read"]
    return {"mib_s": read["io_bytes"] / MIB / (read["runtime"] / 1000.0),
            "bytes": read["io_bytes"],
            "latency_p50_ms": read["clat_ns"]["percentile"]["50.000000"] / 1e6,
            "latency_p99_ms": read["clat_ns"]["percentile"]["99.000000"] / 1e6}


def diskbench_read(python, paths, chunk_mb):
    """diskbench's re-check of ``paths``: MiB/s = bytes read / time in its
    timed reads (python -m diskbench.client.verify)."""
    from diskbench.metrics import LatencyHistogram
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen([python, "-m", "diskbench.client.verify", "--chunk-mb",
                             str(chunk_mb)] + list(paths), stdout=subprocess.PIPE,
                            env=env, cwd=REPO)
    out = proc.communicate()[0]
    nbytes, io_s, bad, hist = 0, 0.0, 0, LatencyHistogram()
    for line in out.decode("utf-8").splitlines():
        rec = json.loads(line)
        if rec["type"] != protocol.READBACK:
            continue
        nbytes += rec["bytes"]
        io_s += rec["io_s"]
        bad += sum(rec[k] for k in protocol.BAD_KINDS)
        hist.merge(LatencyHistogram.from_wire(rec["lat_hist"], total=rec["io_s"],
                                              lo=rec["lat_min_s"], hi=rec["lat_max_s"]))
    if proc.returncode not in (0,) or not io_s:
        raise RuntimeError("diskbench re-check exited %d having read %d bytes"
                           % (proc.returncode, nbytes))
    return {"mib_s": nbytes / MIB / io_s, "bytes": nbytes, "bad_blocks": bad,
            "latency_p50_ms": hist.percentile(50) * 1000.0,
            "latency_p99_ms": hist.percentile(99) * 1000.0}


def run_readback_pair(bench, index, python):
    """diskbench writes (--verify --keep-data), then fio and diskbench read
    its full files in turn (order by --order)."""
    args = bench.args
    fio_first = index % 2 == 0 or args.order == "ab"
    work = tempfile.mkdtemp(prefix="pair-", dir=bench.base)
    try:
        settle()
        written = run_diskbench(python, work, args.chunk_mb, args.file_mb,
                                max(args.min_duration, bench.last_fio_s), False,
                                KEEP_ALL_FACTOR * args.files, ["--verify", "--keep-data"])
        full = sorted((p for p in (os.path.join(work, n) for n in os.listdir(work))
                       if p.endswith(".dat") and os.path.getsize(p) == args.file_mb * MIB),
                      key=lambda p: int(p.rsplit("-", 1)[1].split(".")[0]))
        if not full:
            raise RuntimeError("diskbench wrote no full %d MiB file" % args.file_mb)
        a = b = None
        for tool in ("fio", "db") if fio_first else ("db", "fio"):
            settle()
            if tool == "fio":
                a = fio_read(bench.fio, full, args.chunk_mb, args.file_mb, bench.huge_fio)
            else:
                b = diskbench_read(python, full, args.chunk_mb)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        settle()
    return {"fio": a, "diskbench": b, "ratio": b["mib_s"] / a["mib_s"],
            "files": len(full), "in_run_read_mib_s": written.get("read_mib_s"),
            "in_run_bad_blocks": written.get("bad_blocks"),
            "write_mib_s": written["mib_s"],
            "write_only_mib_s": written["write_only_mib_s"],
            "order": "fio,diskbench" if fio_first else "diskbench,fio"}


def run_readback(bench, python, label, stamp_mib_s):
    """--pairs read-back pairs; the run's dict with median ratio and spread."""
    args = bench.args
    print("\nPython %s, read-back: fio --rw=read --direct=1 vs diskbench's re-check "
          "of the same files (chunk %d MiB, file %d MiB)" % (label, args.chunk_mb,
                                                             args.file_mb))
    print("%4s %5s %9s %9s %6s | %9s %5s | %9s" % (
        "pair", "order", "fio read", "db read", "ratio", "in-run db", "bad", "stamp %"))
    pairs = []
    for i in range(args.pairs):
        p = run_readback_pair(bench, i, python)
        p["stamp_share_of_write_time"] = p["write_only_mib_s"] / stamp_mib_s \
            if p["write_only_mib_s"] else None
        pairs.append(p)
        print("%4d %5s %9.1f %9.1f %6.3f | %9s %5s | %9s" % (
            i + 1, "AB" if p["order"] == "fio,diskbench" else "BA", p["fio"]["mib_s"],
            p["diskbench"]["mib_s"], p["ratio"], _f(p["in_run_read_mib_s"], "%.1f"),
            _f(p["in_run_bad_blocks"], "%d"),
            _f(None if p["stamp_share_of_write_time"] is None
               else 100.0 * p["stamp_share_of_write_time"], "%.2f")))
    ratios = [p["ratio"] for p in pairs]
    run = {"python": label, "mode": READBACK, "pairs": pairs,
           "median_ratio": median(ratios), "ratio_min": min(ratios),
           "ratio_max": max(ratios),
           "median_fio_mib_s": median([p["fio"]["mib_s"] for p in pairs]),
           "median_diskbench_mib_s": median([p["diskbench"]["mib_s"] for p in pairs]),
           "stamp_mib_s": stamp_mib_s,
           "median_stamp_share_of_write_time": median(
               [p["stamp_share_of_write_time"] for p in pairs
                if p["stamp_share_of_write_time"] is not None] or [None])}
    print("median: fio read %.1f MiB/s, diskbench read %.1f MiB/s, ratio %.3f (spread "
          "%.3f-%.3f); stamping %s%% of the write calls' time" % (
              run["median_fio_mib_s"], run["median_diskbench_mib_s"], run["median_ratio"],
              run["ratio_min"], run["ratio_max"],
              _f(None if run["median_stamp_share_of_write_time"] is None
                 else 100.0 * run["median_stamp_share_of_write_time"], "%.2f")))
    return run


def _wait_client(client, watch, duration):
    """The client's exit code; its processes' CPU sampled while it runs."""
    deadline = time.time() + duration + CLIENT_EXTRA_S
    while client.poll() is None and time.time() < deadline:
        watch.poll()
        time.sleep(CPU_POLL_S)
    if client.poll() is None:
        client.kill()
    return client.wait()


def _wait_server(server, logs):
    end = time.time() + SERVER_END_S
    while server.poll() is None and time.time() < end:
        time.sleep(0.05)
    if server.poll() is None:
        raise RuntimeError("diskbench server still running %d s after its client "
                           "ended (logs in %s)" % (SERVER_END_S, logs))


def _writer_cpu(figures, watch, writer_pid, duration):
    """The writer's own CPU per GiB, and its helpers', when psutil saw them."""
    if not watch.seen or writer_pid not in watch.seen:
        return
    writer_cpu = watch.seen.pop(writer_pid)
    helpers = sum(watch.seen.values())
    figures["cpu_s_per_gib"] = _per_gib(writer_cpu, figures["bytes"])
    figures["cpu_source"] = "psutil: writer process"
    figures["helpers_cpu_s"] = helpers  # stats + heartbeat processes
    figures["helpers_cpu_percent"] = 100.0 * helpers / max(duration, 1e-9)


def report_figures(report):
    """The bench's figures from a diskbench report.json (one client).

    ``mib_s`` is the report's throughput_mib_s.mean: bytes over the summed
    wall time of the perf intervals (so rollovers are inside it). ``seconds``
    is that wall time; ``io_s`` the time inside the timed writes only;
    ``rollover_s`` the timed fsync + close at rollovers; ``other_s`` the rest
    (stamping, deleting, opening, preallocating, bookkeeping).
    """
    client = report["clients"][0]
    nbytes = int(round(client["written_mib"] * MIB))
    mib_s = client["throughput_mib_s"]["mean"]
    seconds = client["written_mib"] / mib_s if mib_s else None
    rollovers = client["rollover_count"]
    close_mean_ms = client["rollover_close_ms"]["mean"] or 0.0
    rollover_s = rollovers * close_mean_ms / 1000.0
    io_s = client["io_time_s"]
    cpu_mean = client["writer_cpu_percent"]["mean"]
    writer_cpu_s = cpu_mean / 100.0 * seconds if cpu_mean is not None and seconds \
        else None
    return {"mib_s": mib_s, "bytes": nbytes, "seconds": seconds,
            "sync_mode": client["sync"], "preallocated": client["preallocated"],
            "buffer_huge_page_mib": client.get("buffer_huge_page_mib"),
            "io_s": io_s, "rollovers": rollovers, "rollover_s": rollover_s,
            "other_s": seconds - io_s - rollover_s if seconds is not None else None,
            "rest_s": seconds - io_s if seconds is not None else None,
            "rest_s_per_gib": _per_gib(seconds - io_s, nbytes) if seconds is not None
            else None,
            "write_only_mib_s": nbytes / MIB / io_s if io_s else None,
            "latency_p50_ms": client["latency_ms"]["p50"],
            "latency_p99_ms": client["latency_ms"]["p99"],
            "cpu_s_per_gib": _per_gib(writer_cpu_s, nbytes),
            "cpu_source": "report: writer CPU% mean x seconds",
            "state": client["state"],
            # --verify: the in-run read-back (None: off)
            "read_mib_s": (client.get("verification") or {}).get("read_mib_s"),
            "bad_blocks": (client.get("verification") or {}).get("bad_block_count")}


# --- the data path alone (run under each interpreter) -----------------------------------
def data_path():
    """MiB/s of payload stamping (the writer's: every block's stamp, stamp.py)
    and perf messages encoded per second."""
    from diskbench.client.payload import Payload
    from diskbench.metrics import LatencyHistogram
    chunk = 10 * MIB
    payload = Payload(chunk)
    stamper = payload.stamper(1, 2)
    n = 300
    start = monotonic()
    for i in range(n):
        stamper.stamp(i // 10, i % 10)
    stamp_s = monotonic() - start
    payload.close()
    hist = LatencyHistogram()    # one 1 s interval of 100 chunks (a consistent perf)
    lats = [0.005 + i * 1e-5 for i in range(100)]
    for value in lats:
        hist.add(value)
    m = 5000
    start = monotonic()
    for i in range(m):
        protocol.encode(protocol.make(
            protocol.PERF, name="bench", seq=i + 1, t_start=1.0, t_end=2.0,
            bytes=len(lats) * chunk, chunks=len(lats), io_s=sum(lats),
            lat_min_s=min(lats), lat_max_s=max(lats),
            lat_hist=hist.to_wire(), sync_mode=protocol.SYNC_DIRECT, file_index=0))
    encode_s = monotonic() - start
    return {"python": platform.python_version(),
            "payload_stamp_mib_s": n * chunk / MIB / stamp_s,
            "payload_stamp_ms_per_10_mib_chunk": 1000.0 * stamp_s / n,
            "perf_messages_encoded_per_s": m / encode_s}


def data_path_of(python):
    out = subprocess.check_output([python, os.path.abspath(__file__), "--data-path"],
                                  cwd=REPO)
    return json.loads(out.decode("utf-8"))


# --- the machine ------------------------------------------------------------------------
def _read(path, default=None):
    try:
        with open(path) as f:
            return f.read().strip()
    except (IOError, OSError):
        return default


def machine(directory):
    info = {"host": socket.gethostname(), "platform": platform.platform(),
            "cpus": os.sysconf("SC_NPROCESSORS_ONLN")}
    for line in (_read("/proc/meminfo", "") or "").splitlines():
        if line.startswith("MemTotal:"):
            info["mem_gib"] = round(int(line.split()[1]) / (1 << 20), 1)
    path, best = os.path.realpath(directory), ""
    for line in (_read("/proc/mounts", "") or "").splitlines():
        parts = line.split()
        if len(parts) >= 4 and (path == parts[1] or path.startswith(
                parts[1].rstrip("/") + "/")) and len(parts[1]) >= len(best):
            best = parts[1]
            info.update(device=parts[0], mount=parts[1], fs=parts[2],
                        mount_options=parts[3])
    sysdev = _sysfs_block(directory)
    for queue in (sysdev + "/queue", sysdev + "/../queue"):
        lbs = _read(queue + "/logical_block_size")
        if lbs:
            info["logical_block_bytes"] = int(lbs)
            info["rotational"] = _read(queue + "/rotational")
            break
    return info


def python_label(python):
    out = subprocess.check_output([python, "-c", "import platform;"
                                   "print(platform.python_version())"])
    return out.decode().strip()


def _load():
    return [round(x, 2) for x in os.getloadavg()]


def _f(value, fmt):
    return "-" if value is None else fmt % value


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", help="directory to test (default: a temp dir "
                        "under the repository, i.e. this machine's disk)")
    parser.add_argument("--python", action="append", help="interpreter(s) running "
                        "diskbench (repeatable; default this one)")
    parser.add_argument("--chunk-mb", type=int, default=10)
    parser.add_argument("--file-mb", type=int, default=1000)
    parser.add_argument("--files", type=int, default=4, help="files per fio run")
    parser.add_argument("--min-duration", type=float, default=4.0, help="a diskbench "
                        "run lasts as long as the fio run before it, at least this")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--modes", default="none,posix,none:rolling,%s" % READBACK,
                        help="allocation modes (fio --fallocate / diskbench "
                        "--preallocate); ':rolling' = diskbench with --max-files %d, "
                        "deleting old files while it writes (first --python only); "
                        "'%s' = the read-back row (first --python only)"
                        % (ROLLING_MAX_FILES, READBACK))
    parser.add_argument("--order", choices=("abba", "ab"), default="abba",
                        help="abba (default): odd pairs run fio first, even pairs "
                        "diskbench first, so whatever one run leaves the next "
                        "(host cache, discards) is paid equally by both; ab: fio "
                        "always first")
    parser.add_argument("--fio-buffer", choices=("huge", "default"), default="huge",
                        help="huge (default): fio's buffer 2 MiB-aligned in "
                        "transparent huge pages, like diskbench's; default: fio's "
                        "own malloc buffer (4 KiB pages: request sizes vary run to "
                        "run)")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="skip the discarded fio run that starts each mode")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    parser.add_argument("--data-path", action="store_true", help=argparse.SUPPRESS)
    return parser


class Bench(object):
    """What every pair of a run shares: the flags, fio, where files go."""

    def __init__(self, args, fio, base):
        self.args, self.fio, self.base = args, fio, base
        self.huge_fio = args.fio_buffer == "huge"
        self.last_fio_s = args.min_duration

    def fio_run(self, directory, fallocate):
        a = self.args
        return run_fio(self.fio, directory, a.chunk_mb, a.file_mb, a.files, fallocate,
                       self.huge_fio)


def results_header(bench, pythons, started, argv):
    args, fio = bench.args, bench.fio
    return {
        "date": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join([os.path.relpath(sys.executable, REPO),
                             os.path.relpath(os.path.abspath(__file__), REPO)] +
                            (argv if argv is not None else sys.argv[1:])),
        "machine": machine(bench.base), "load_average_start": _load(),
        "fio": subprocess.check_output([fio, "--version"]).decode().strip(),
        "fio_command": " ".join(
            ["%s=%s" % kv for kv in sorted(FIO_HUGE_ENV.items()) if bench.huge_fio] +
            fio_command("fio", "DIR", args.chunk_mb, args.file_mb, args.files, "MODE",
                        bench.huge_fio)), "fio_buffer": args.fio_buffer,
        "chunk_mib": args.chunk_mb, "file_mib": args.file_mb, "fio_files": args.files,
        "unit": "MiB/s = 2^20 bytes per second; CPU s/GiB = CPU seconds per 2^30 "
                "bytes written",
        "method": __doc__.split("\n\n", 2)[2].split("\n\nThe data path")[0],
        "data_path": [data_path_of(p) for p in pythons], "runs": []}


_ROW = "%4s %5s %7s %7s %6s | %6s %6s | %5s %5s | %5s %5s | %4s %4s | %5s %5s"


def print_mode_header(args, label, fallocate, rolling, max_files):
    print("\nPython %s, allocation %s (fio --fallocate=%s, diskbench %s), "
          "diskbench --max-files %d%s, chunk %d MiB, file %d MiB" % (
              label, fallocate, fallocate, "--preallocate"
              if fallocate != "none" else "default", max_files,
              " (deletes the oldest file while writing)" if rolling
              else " (keeps every file, like fio)", args.chunk_mb, args.file_mb))
    print(_ROW % ("pair", "order", "fio", "db", "ratio", "write", "phase",
                  "rest", "", "req", "size", "huge", "pgs", "CPU", ""))
    print(_ROW % ("", "", "MiB/s", "MiB/s", "", "fio", "db", "fio", "db",
                  "fio", "db", "fio", "db", "fio", "db"))
    print(_ROW % ("", "", "", "", "", "MiB/s", "MiB/s", "s/GiB", "s/GiB",
                  "KiB", "KiB", "MiB", "MiB", "s/GiB", "s/GiB"))


def warm_up(bench, fallocate):
    """One discarded fio run; its length sets the first diskbench run's."""
    settle()
    warm = tempfile.mkdtemp(prefix="warmup-", dir=bench.base)
    try:
        bench.last_fio_s = bench.fio_run(warm, fallocate)["seconds"]
    finally:
        shutil.rmtree(warm, ignore_errors=True)


def run_pair(bench, index, python, fallocate, max_files):
    """fio and diskbench once each on a fresh directory (order by --order)."""
    args = bench.args
    fio_first = index % 2 == 0 or args.order == "ab"
    load = _load()
    work = tempfile.mkdtemp(prefix="pair-", dir=bench.base)
    a = b = None
    try:
        for tool in ("fio", "db") if fio_first else ("db", "fio"):
            settle()
            if tool == "fio":
                a = bench.fio_run(work, fallocate)
                bench.last_fio_s = a["seconds"]
            else:
                b = run_diskbench(python, work, args.chunk_mb, args.file_mb,
                                  max(args.min_duration, bench.last_fio_s),
                                  fallocate != "none", max_files)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        settle()
    return {"fio": a, "diskbench": b, "ratio": b["mib_s"] / a["mib_s"],
            "order": "fio,diskbench" if fio_first else "diskbench,fio",
            "load_average": load}


def print_row(index, pair):
    a, b = pair["fio"], pair["diskbench"]
    print("%4d %5s %7.1f %7.1f %6.3f | %6.0f %6.0f | %5.2f %5.2f | "
          "%5s %5s | %4s %4s | %5s %5s" % (
              index + 1, "AB" if pair["order"] == "fio,diskbench" else "BA",
              a["mib_s"], b["mib_s"], pair["ratio"], a["write_only_mib_s"],
              b["write_only_mib_s"], a["rest_s_per_gib"], b["rest_s_per_gib"],
              _f(a["device_request_kib"], "%.0f"), _f(b["device_request_kib"], "%.0f"),
              _f(a["buffer_huge_page_mib"], "%.0f"), _f(b["buffer_huge_page_mib"], "%.0f"),
              _f(a["cpu_s_per_gib"], "%.3f"), _f(b["cpu_s_per_gib"], "%.3f")))


def run_mode(bench, python, label, mode):
    """--pairs pairs in one allocation mode; the run's dict with its medians."""
    args = bench.args
    fallocate, _, rolling = mode.partition(":")
    max_files = ROLLING_MAX_FILES if rolling else KEEP_ALL_FACTOR * args.files
    print_mode_header(args, label, fallocate, rolling, max_files)
    if args.warmup:
        warm_up(bench, fallocate)
    else:
        bench.last_fio_s = args.min_duration
    pairs = []
    for i in range(args.pairs):
        pairs.append(run_pair(bench, i, python, fallocate, max_files))
        print_row(i, pairs[-1])
    run = {"python": label, "allocation": fallocate, "mode": mode,
           "diskbench_max_files": max_files, "pairs": pairs,
           "median_ratio": median([p["ratio"] for p in pairs])}
    for tool in ("fio", "diskbench"):
        for name, key in MEDIANS:
            run["median_%s_%s" % (tool, name)] = median([p[tool][key] for p in pairs])
    print_median(run)
    return run


def print_median(run):
    print("median: fio %.1f MiB/s, diskbench %.1f MiB/s, ratio "
          "diskbench/fio %.3f; CPU s/GiB fio %s, diskbench writer %s "
          "(whole processes: fio %s, diskbench client %s)" % (
              run["median_fio_mib_s"], run["median_diskbench_mib_s"],
              run["median_ratio"],
              _f(run["median_fio_cpu_s_per_gib"], "%.3f"),
              _f(run["median_diskbench_cpu_s_per_gib"], "%.3f"),
              _f(run["median_fio_process_cpu_s_per_gib"], "%.3f"),
              _f(run["median_diskbench_process_cpu_s_per_gib"], "%.3f")))


def save(results, args, huge_fio):
    print("\nsummary (median ratio diskbench/fio, %d pairs each):" % args.pairs)
    for run in results["runs"]:
        print("  Python %-7s mode %-12s ratio %.3f  (fio %.1f, diskbench %.1f MiB/s)"
              % (run["python"], run["mode"], run["median_ratio"],
                 run["median_fio_mib_s"], run["median_diskbench_mib_s"]))
    if not os.path.isdir(args.out):
        os.makedirs(args.out)
    path = os.path.join(args.out, "bench-%s%s.json" % (
        results["date"][:10], "" if huge_fio else "-fio-default-buffer"))
    with open(path, "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
        f.write("\n")
    print("written %s" % os.path.relpath(path, REPO))


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.data_path:
        print(json.dumps(data_path()))
        return 0
    if args.file_mb % args.chunk_mb:
        parser.error("--file-mb must be a multiple of --chunk-mb (fio writes whole "
                     "blocks only)")
    pythons = [_which(p) if os.sep not in p else os.path.abspath(p)
               for p in args.python or [sys.executable]]
    bench = Bench(args, ensure_fio(), args.dir or tempfile.mkdtemp(prefix=".bench-",
                                                                    dir=REPO))
    started = datetime.datetime.utcnow()
    results = results_header(bench, pythons, started, argv)
    for d in results["data_path"]:
        print("data path (Python %s): payload stamping %.0f MiB/s (%.3f ms per 10 MiB "
              "chunk), perf encoding %.0f messages/s" % (
                  d["python"], d["payload_stamp_mib_s"],
                  d["payload_stamp_ms_per_10_mib_chunk"], d["perf_messages_encoded_per_s"]))
    try:
        for python, path in zip(pythons, results["data_path"]):
            for mode in args.modes.split(","):
                if (mode.partition(":")[2] or mode == READBACK) and python != pythons[0]:
                    continue  # rolling: the deletion cost is the disk's, not Python's
                if mode == READBACK:
                    results["runs"].append(run_readback(
                        bench, python, python_label(python), path["payload_stamp_mib_s"]))
                    continue
                results["runs"].append(run_mode(bench, python, python_label(python), mode))
    finally:
        if args.dir is None:
            shutil.rmtree(bench.base, ignore_errors=True)
    results["load_average_end"] = _load()
    results["elapsed_s"] = (datetime.datetime.utcnow() - started).total_seconds()
    save(results, args, bench.huge_fio)
    return 0


if __name__ == "__main__":
    sys.exit(main())
