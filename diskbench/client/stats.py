"""The stats process: CPU% and RSS of the WRITER's PID every --stats-interval.

With psutil: ``psutil.Process(writer_pid).cpu_percent()`` and
``memory_info().rss`` (source "psutil"). Without it: utime+stime deltas from
/proc/PID/stat and VmRSS from /proc/PID/status (source "proc"), and a NOTE
says so once. It never crashes: a sample that cannot be taken is skipped.
"""
from diskbench import protocol
from diskbench.client import child, procinfo
from diskbench.client.child import first_wait, send_quietly, wait_or_stop
from diskbench.compat import monotonic

#: The first sample covers at least this part of the interval (a CPU share
#: over a sliver of time would be noise).
FIRST_SAMPLE_MIN = 0.5


def stats_main(conn, cfg, writer_pid):
    """Entry point of the stats process (module level: fork/spawn safe)."""
    parent = child.start(cfg)
    interval = cfg.stats_interval_s
    sampler = procinfo.CpuSampler(writer_pid)
    if sampler.source != procinfo.SOURCE_PSUTIL:
        send_quietly(conn, (protocol.NOTE, dict(text=procinfo.NO_PSUTIL_NOTE)))
    last = monotonic()
    wait = first_wait(interval, FIRST_SAMPLE_MIN)   # out of step with the fleet
    while not wait_or_stop(conn, wait, parent):
        wait = interval
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
