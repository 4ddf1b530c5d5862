"""What the writer, stats and heartbeat processes share: the stop command,
the signals they leave to the supervisor, waiting on the pipe, sending on it."""
import os
import random
import signal

from diskbench import runclock, signals
from diskbench.compat import monotonic

#: The command the supervisor sends down the pipe to stop a child.
CMD_STOP = "halt"
#: Signals only the supervisor handles: a terminal sends Ctrl-C and a hangup to
#: the whole process group, and the children must not die of them.
LEFT_TO_SUPERVISOR = (signal.SIGINT, signal.SIGHUP)
#: Longest single wait, so a dead parent is noticed quickly.
POLL_SLICE_S = 0.25


def start(cfg):
    """First thing in a child: ignore what the supervisor handles, keep its
    wall clock (runclock); returns the parent's pid (a different
    ``os.getppid()`` later means it died)."""
    signals.ignore(LEFT_TO_SUPERVISOR)
    runclock.adopt(cfg.clock_anchor)
    return os.getppid()


def first_wait(interval, least=0.0, rng=None):
    """The wait before a periodic child's second sample: a random part of
    ``interval``, at least ``least`` of it (later ones wait the whole
    interval). A fleet's children all start at the go and would otherwise
    sample, and report, in step: thousands of heartbeats reaching the server
    within the same millisecond, every interval (client/sender.py spreads the
    writer's reports likewise)."""
    rng = rng or random.Random()   # seeded from the OS: forked siblings differ
    return interval * (least + (1.0 - least) * rng.random())


def wait_or_stop(conn, seconds, parent):
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
                if conn.recv() == CMD_STOP:
                    return True
        except (OSError, IOError, EOFError):
            return True


def send_quietly(conn, item):
    """Send ``item`` up the pipe; False (never an exception) when the
    supervisor is gone: the child then notices its parent died and exits."""
    try:
        conn.send(item)
        return True
    except (OSError, IOError, EOFError, ValueError):
        return False
