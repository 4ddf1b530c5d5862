"""The stats process: CPU% and RSS of the WRITER's PID every --stats-interval.

With psutil: ``psutil.Process(writer_pid).cpu_percent()`` and
``memory_info().rss`` (source "psutil"). Without it: utime+stime deltas from
/proc/PID/stat and VmRSS from /proc/PID/status (source "proc"), and a NOTE
says so once. It never crashes: a sample that cannot be taken is skipped.
"""
import os
import signal

from diskbench import protocol
from diskbench.client import procinfo
from diskbench.compat import monotonic

#: Longest single wait, so a dead parent is noticed quickly.
POLL_SLICE_S = 0.25


def wait_or_stop(conn, seconds, parent, stop_cmd):
    """Wait ``seconds`` on the pipe; True when told to stop or the parent died."""
    deadline = monotonic() + seconds
    while True:
        if os.getppid() != parent:
            return True
        left = deadline - monotonic()
        if left <= 0:
            return False
        try:
            if conn.poll(min(left, POLL_SLICE_S)):
                if conn.recv() == stop_cmd:
                    return True
        except (OSError, IOError, EOFError):
            return True


def send_quietly(conn, item):
    try:
        conn.send(item)
        return True
    except (OSError, IOError, EOFError, ValueError):
        return False


def stats_main(conn, cfg, writer_pid):
    """Entry point of the stats process (module level: fork/spawn safe)."""
    from diskbench.client.writer import CMD_STOP
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the supervisor handles it
    parent = os.getppid()
    interval = cfg["stats_interval_s"]
    sampler = procinfo.CpuSampler(writer_pid)
    if sampler.source != procinfo.SOURCE_PSUTIL:
        send_quietly(conn, (protocol.NOTE, dict(text=procinfo.NO_PSUTIL_NOTE)))
    last = monotonic()
    while not wait_or_stop(conn, interval, parent, CMD_STOP):
        try:
            sample = sampler.sample()
        except Exception:  # never crash the stats process
            sample = None
        now = monotonic()
        if sample is not None:
            cpu, rss = sample
            send_quietly(conn, (protocol.STATS, dict(
                writer_pid=writer_pid, cpu_percent=min(max(cpu, 0.0), 100000.0),
                rss_bytes=int(rss), source=sampler.source, interval_s=now - last)))
        last = now
