"""The wall clock a process keeps for a run: read once, then advanced by the
monotonic clock.

Every timestamp diskbench sends or records (a message's ts, a perf interval's
start and end, an ack, the server's receive time, the start instant) comes from
``wall()``, and every wait and deadline from ``monotonic()``. A step of the
system's wall clock while a run lasts (an NTP step, a VM resumed, ``date -s``)
then moves no timestamp and stretches no wait: it once turned an 8 s run into a
3,600 s aggregate window. ``stepped()`` says how far the system's clock has
moved away from the kept one, so a step is said, not hidden.

A client's children keep the supervisor's anchor (``adopt``): the monotonic
clock is one for the whole host, so their timestamps agree with its own under
fork, spawn and forkserver alike.
"""
import time

from diskbench.compat import monotonic

#: A gap this large between the system's wall clock and the kept one is a
#: step worth saying (NTP slews smaller errors; the monotonic clock follows).
STEP_SAID_S = 1.0

_anchor = None


def anchor():
    """(wall, monotonic) read together once per process: the kept clock."""
    global _anchor
    if _anchor is None:
        _anchor = (time.time(), monotonic())
    return _anchor


def adopt(pair):
    """Keep another process's anchor (a child of the client's supervisor)."""
    global _anchor
    if pair is not None:
        _anchor = (float(pair[0]), float(pair[1]))


def wall():
    """Seconds since the epoch on the kept clock: never steps."""
    base_wall, base_mono = anchor()
    return base_wall + (monotonic() - base_mono)


def wall_at(mono):
    """``wall()`` at the instant ``mono`` (a ``monotonic()`` reading): one
    clock read serves a deadline and a timestamp (2.7's monotonic is a
    ctypes call)."""
    base_wall, base_mono = anchor()
    return base_wall + (mono - base_mono)


def stepped():
    """How far the system's wall clock is now from the kept one (seconds,
    positive: the system clock is ahead), or 0.0 within STEP_SAID_S."""
    gap = time.time() - wall()
    return gap if abs(gap) >= STEP_SAID_S else 0.0


class StepWatch(object):
    """Says a step of ``whose`` wall clock once: ``check()`` returns the
    sentence the first time the system clock is STEP_SAID_S away from the
    kept one, else None (the step moves no timestamp, but an operator
    comparing logs should know)."""

    def __init__(self, whose):
        self.whose = whose            # "this host's", "the server's"
        self.said = False

    def check(self):
        if self.said:
            return None
        gap = stepped()
        if not gap:
            return None
        self.said = True
        return ("%s wall clock stepped %.1f s %s during the run (NTP, a resumed VM, "
                "date -s?); diskbench's timestamps keep the clock as it was at the start"
                % (self.whose, abs(gap), "ahead" if gap > 0 else "back"))
