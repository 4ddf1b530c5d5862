"""What the client shows while it runs: one progress line, and the closing figures.

On a terminal (stderr is a TTY) one line is rewritten in place every
REFRESH_S: elapsed/remaining, MiB/s now, MiB written, rollovers. Otherwise a
plain line goes to the log every --progress-interval. Log lines printed meanwhile
first clear the progress line (``ClearingHandler``), so the two never mix.

The figures come from the perf messages the writer sends, the same ones the
server gets, and are named as the report names them: "throughput (wall)" is
bytes over the perf intervals' wall time (the report's throughput mean) and
"in write+fsync calls" is bytes over the time spent in write (+fsync) calls only
(metrics.WALL_LABEL, metrics.IN_CALLS_LABEL).
"""
from __future__ import division

import collections
import logging
import sys

from diskbench.cli import REFRESH_S
from diskbench.compat import monotonic
from diskbench.metrics import IN_CALLS_LABEL, NOW_WINDOW_S, WALL_LABEL, mib, recent_mib_s

_CLEAR = "\r\x1b[2K"


class Figures(object):
    """Running totals of the perf intervals and rollovers seen."""

    def __init__(self):
        self.bytes = 0
        self.wall_s = 0.0       # summed perf interval lengths
        self.io_s = 0.0         # summed time inside write (+fsync)
        self.rollovers = 0
        self.recent = collections.deque()   # (monotonic seen, length s, bytes)

    def perf(self, msg, now):
        length = msg.t_end - msg.t_start
        self.bytes += msg.bytes
        self.wall_s += length
        self.io_s += msg.io_s
        self.recent.append((now, length, msg.bytes))
        while self.recent and now - self.recent[0][0] > NOW_WINDOW_S:
            self.recent.popleft()

    def mib_s_wall(self):
        """The report's 'throughput mean': bytes / perf interval wall time."""
        return mib(self.bytes) / self.wall_s if self.wall_s > 0 else None

    def mib_s_writing(self):
        """Bytes / time spent in write (+fsync) calls only."""
        return mib(self.bytes) / self.io_s if self.io_s > 0 else None

    def mib_s_now(self, now):
        return recent_mib_s(self.recent, now)

    def closing(self):
        """The figures of the closing line, labelled as the report labels them."""
        return "%s MiB written; %s %s MiB/s; %s %s MiB/s" % (
            _f(mib(self.bytes)), WALL_LABEL, _f(self.mib_s_wall()), IN_CALLS_LABEL,
            _f(self.mib_s_writing()))


def _f(value):
    return "-" if value is None else "%.1f" % value


class Progress(object):
    """Draws the progress line (TTY) or logs a plain one, from ``tick()``."""

    def __init__(self, log, stream=None, clock=monotonic):
        self.log = log
        self.duration_s = None
        self.stream = stream or sys.stderr
        self.clock = clock
        self.tty = _isatty(self.stream)
        self.figures = Figures()
        self.t0 = None
        self.next_due = None
        self.shown = False      # a progress line is on screen now

    def start(self, duration_s, plain_every_s):
        self.duration_s = duration_s
        self.plain_every_s = plain_every_s
        self.t0 = self.next_due = self.clock()

    def line(self, now):
        elapsed = now - self.t0
        return ("%.0f s of %g s (%.0f s left): %.1f MiB/s now, %s MiB written, %d "
                "rollovers" % (elapsed, self.duration_s, max(0.0, self.duration_s -
                                                             elapsed),
                               self.figures.mib_s_now(now), _f(mib(self.figures.bytes)),
                               self.figures.rollovers))

    def tick(self):
        if self.t0 is None:
            return
        now = self.clock()
        if now < self.next_due:
            return
        if self.tty:
            self.next_due = now + REFRESH_S
            self._draw(_CLEAR + self.line(now))
            self.shown = True
        else:
            self.next_due = now + self.plain_every_s
            if now > self.t0:
                self.log.info("progress: %s", self.line(now))

    def clear(self):
        """Take the progress line off the screen (before a log line, at the end)."""
        if self.shown:
            self._draw(_CLEAR)
            self.shown = False

    def _draw(self, text):
        try:
            self.stream.write(text)
            self.stream.flush()
        except (IOError, OSError, ValueError):
            self.tty = False    # the terminal is gone: plain lines from now on


#: ``extra=`` of a log call for a line the log file keeps but the console does
#: not show (one per rollover, per removed file: hundreds in a short run).
FILE_ONLY = {"file_only": True}


class ClearingHandler(logging.StreamHandler):
    """The client's console handler: clears the progress line before a log
    line, and leaves FILE_ONLY lines to the log file."""

    def __init__(self, stream=None):
        logging.StreamHandler.__init__(self, stream)
        self.progress = None

    def filter(self, record):
        if getattr(record, "file_only", False):
            return False
        return logging.StreamHandler.filter(self, record)

    def emit(self, record):
        if self.progress is not None:
            self.progress.clear()
        logging.StreamHandler.emit(self, record)


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
