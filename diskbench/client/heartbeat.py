"""The heartbeat process: proves the WRITER is alive and progressing.

Every --heartbeat-interval: writer_alive (its PID exists and is not a zombie),
bytes/chunks from the counters the writer updates after each chunk, and
progress_age_s (seconds since the writer last finished a chunk). It runs in
its own process so a saturated writer or main loop cannot delay it.

Each beat's ``ts`` is when it was sampled, not when it was sent: a beat that
waited in the pipe (the main process paused) is a fact about that moment, and
the server judges it so (a writer gone after its run ended is not a stall).
"""

from diskbench import protocol, runclock
from diskbench.client import child, procinfo
from diskbench.client.child import first_wait, send_quietly, wait_or_stop
from diskbench.compat import monotonic


def beat(writer_pid, counters):
    bytes_v, chunks_v, progress_v = counters
    return (protocol.HEARTBEAT, dict(
        writer_pid=writer_pid, writer_alive=procinfo.is_alive(writer_pid),
        bytes_written=int(bytes_v.value), chunks_written=int(chunks_v.value),
        progress_age_s=max(0.0, monotonic() - progress_v.value), ts=runclock.wall()))


def heartbeat_main(conn, cfg, writer_pid, counters):
    """Entry point of the heartbeat process (module level: fork/spawn safe)."""
    parent = child.start(cfg)
    interval = cfg.heartbeat_interval_s
    wait = first_wait(interval)   # the first beat at once, then out of step
    while True:
        try:
            item = beat(writer_pid, counters)
        except Exception:  # never crash the heartbeat process
            item = None
        if item is not None and not send_quietly(conn, item):
            return
        if wait_or_stop(conn, wait, parent):
            return
        wait = interval
