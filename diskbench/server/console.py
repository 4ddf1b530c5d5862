"""The server's console while a run goes on.

Three modes, chosen once (``console_mode``):

- ``tty``: a table redrawn in place (plain ANSI: cursor up, clear line) every
  REFRESH_S: one line per client, a totals line, the warnings that still hold
  and the last few events under it. Only the main loop draws; event lines from
  handler threads are queued and drawn with the next refresh, so the table is
  never scrolled away by them.
- ``plain`` (a pipe, a log file, CI, ssh without -t): event lines as they happen,
  and one summary line every --progress-interval seconds.
- ``off`` (--quiet): nothing.

Every line on the console and in server.log starts with the same UTC timestamp
as report.txt ('2026-11-23 10:00:00.123Z', ``metrics.utc``). Figures come from
``Registry.progress_view()``: one O(clients) copy under the registry's lock
per refresh, never per message or per tick.
"""
from __future__ import division

import collections
import os
import struct
import threading

from diskbench import metrics, runclock
from diskbench.compat import monotonic, write_text
from diskbench.server import event, verbose
from diskbench import states as st
from diskbench.cli import PROGRESS_INTERVAL_S, REFRESH_S
from diskbench.metrics import utc
from diskbench.server.recorder import LineHandler

#: ... and no more often than this when an event line arrives in between.
EVENT_REDRAW_MIN_S = 0.2
#: "MiB/s now" sums the perf intervals received in the last this many seconds.
RATE_WINDOW_S = metrics.NOW_WINDOW_S
#: More clients than this (or than the terminal has lines for) give the compact
#: view: totals, the slowest and fastest COMPACT_EXTREMES writers, and every
#: client not in a good state.
TABLE_ROWS_MAX = 20
COMPACT_EXTREMES = 3
#: Event lines kept visible under the table (older ones are in server.log).
EVENTS_SHOWN = 6
#: Warnings shown under the table at most (the rest are counted).
WARNINGS_SHOWN = 8
#: Terminal size when it cannot be asked (and no COLUMNS/LINES).
DEFAULT_SIZE = (80, 24)
#: Environment variable forcing the console mode: tty, plain or off.
MODE_ENV = "DISKBENCH_CONSOLE"
MODES = ("tty", "plain", "off")
#: Console writes waiting for a slow reader of stdout; beyond it lines are
#: dropped (and counted) rather than any thread of the server waiting.
OUTBOX_MAX = 2000
#: At the end, how long the last console lines may take to get out.
OUTBOX_FLUSH_S = 5.0
#: Client names are cut to this many characters in the table.
NAME_WIDTH_MAX = 24

#: Displayed state names (states.SHOWN: the same in ctl list and the report).
SHOWN_STATE = st.SHOWN
#: States that need someone's attention (always listed in the compact view).
BAD_STATES = (st.STALLED, st.WENT_AWAY, st.FAILED)
#: Order of the per-state counts on the totals line.
COUNT_ORDER = (st.JOINED, st.RUNNING, st.STALLED, st.FINISHED, st.WENT_AWAY,
               st.FAILED)

_CSI = "\x1b["


def console_mode(out, quiet=False, environ=None):
    """'off' with --quiet; DISKBENCH_CONSOLE when set to a known mode; else
    'tty' when ``out`` is a terminal, 'plain' otherwise."""
    if quiet:
        return "off"
    forced = (environ if environ is not None else os.environ).get(MODE_ENV, "").strip()
    if forced in MODES:
        return forced
    try:
        return "tty" if out.isatty() else "plain"
    except (AttributeError, ValueError, OSError):
        return "plain"


def terminal_size(out, environ=None):
    """(columns, lines) of the terminal ``out`` writes to: the TIOCGWINSZ ioctl
    (works on both Pythons), then COLUMNS/LINES, then DEFAULT_SIZE."""
    try:
        import fcntl
        import termios
        raw = fcntl.ioctl(out.fileno(), termios.TIOCGWINSZ, b"\0" * 8)
        lines, cols = struct.unpack("hhhh", raw)[:2]
        if cols > 0 and lines > 0:
            return cols, lines
    except (ImportError, AttributeError, ValueError, IOError, OSError):
        pass
    env = environ if environ is not None else os.environ
    try:
        return int(env["COLUMNS"]), int(env["LINES"])
    except (KeyError, ValueError):
        return DEFAULT_SIZE


def shown(text):
    """``text`` as ASCII (non-ASCII escaped): column widths stay true and no
    terminal encoding can refuse it."""
    return text.encode("ascii", "backslashreplace").decode("ascii")


def rate_now(recent, now, window=RATE_WINDOW_S):
    """MiB/s of the perf intervals received in the last ``window`` seconds."""
    return metrics.recent_mib_s(recent, now, window)


def _secs(value):
    if value is None:
        return "-"
    value = max(0.0, value)
    if value < 10:
        return "%.1f s" % value
    if value < 3600:
        return "%d s" % int(value + 0.5)
    return "%dh%02dm" % (int(value // 3600), int(value % 3600 // 60))


def _size(nbytes):
    mib = metrics.mib(nbytes)
    return "%.1f GiB" % (mib / 1024) if mib >= 1024 else "%.1f MiB" % mib


class Summary(object):
    """The figures of one ProgressView, as the table and the summary line use them."""

    def __init__(self, view, wall_now, extra=(), history=None):
        self.view = view
        self.extra = extra            # more warnings (server pauses)
        # name -> "state: reason" of every client ever seen in a bad state, so
        # that a warning stays visible after the client recovered (kept by Console)
        self.history = history if history is not None else collections.OrderedDict()
        self.rows = []                # (ClientProgress, MiB/s now)
        self.counts = dict((s, 0) for s in st.STATES)
        self.total_bytes = 0
        self.rate = 0.0
        starts, ends = [], []
        for c in view.clients:
            r = rate_now(c.recent, view.now) if c.state in st.LIVE else 0.0
            self.rows.append((c, r))
            self.counts[c.state] = self.counts.get(c.state, 0) + 1
            self.total_bytes += c.bytes
            self.rate += r
            if c.start_ts is not None:
                starts.append(c.start_ts)
                if c.state in st.LIVE and c.duration_s:
                    ends.append(c.start_ts + c.duration_s)
        self.elapsed = wall_now - min(starts) if starts else None
        self.remaining = max(0.0, max(ends) - wall_now) if ends else None
        self.wall_now = wall_now

    def states_text(self):
        parts = ["%d %s" % (self.counts[s], SHOWN_STATE.get(s, s))
                 for s in COUNT_ORDER if self.counts.get(s)]
        return ", ".join(parts) or "none yet"

    def timing_text(self):
        if self.elapsed is None:
            view = self.view
            if view.expected_clients and not view.go_released:
                return "waiting for %d of %d clients to say hello" % (
                    view.expected_clients - len(view.clients), view.expected_clients)
            return "no client writing yet"
        return "%s elapsed, %s remaining" % (
            _secs(self.elapsed),
            _secs(self.remaining) if self.remaining is not None else "-")

    def line(self):
        """The one-line summary (plain mode; also the table's totals line)."""
        return "%d clients (%s), %.1f MiB/s now, %s written, %s%s" % (
            len(self.view.clients), self.states_text(), self.rate,
            _size(self.total_bytes), self.timing_text(), self.verified_text())

    def verified_text(self):
        """--verify's progress: files and bytes read back so far, bad blocks."""
        verified = getattr(self.view, "verified", None)
        if verified is None:
            return ""
        files, nbytes, bad = verified
        return "; read back %d files, %s, %d bad blocks%s" % (
            files, _size(nbytes), bad, " (DATA DID NOT COME BACK)" if bad else "")

    def warnings(self):
        """What needs attention now: clients in a bad state, the run's notes
        (start-timeout with fewer clients, rejoin waits), server pauses."""
        out, now = [], {}
        for c, _ in self.rows:
            now[c.name] = c.state
            if c.state in BAD_STATES:
                self.history[c.name] = "%s: %s" % (c.state, shown(c.reason))
                out.append("client %s %s" % (shown(c.name), self.history[c.name]))
        out += ["client %s now %s; earlier %s" % (shown(name), SHOWN_STATE.get(
            now[name], now[name]), was) for name, was in self.history.items()
            if name in now and now[name] not in BAD_STATES]
        return out + [shown(n) for n in self.view.notes] + [shown(t) for t in self.extra]


def table_lines(summary, width, height, events=()):
    """The live view (list of lines, none longer than ``width``, at most
    ``height - 1`` of them so the cursor can always get back to the top)."""
    rows = summary.rows
    name_w = min(NAME_WIDTH_MAX, max([len(shown(c.name)) for c, _ in rows] + [6]))
    fmt = "%%-%ds %%-9s %%10s %%11s %%9s %%10s %%10s" % name_w
    warnings = summary.warnings()
    if len(warnings) > WARNINGS_SHOWN:
        warnings = warnings[:WARNINGS_SHOWN - 1] + [
            "... and %d more (server.log has them all)" % (
                len(warnings) - WARNINGS_SHOWN + 1)]
    budget = height - 1
    room = budget - 2 - (1 + len(warnings) if warnings else 0) - \
        (1 + len(events) if events else 0)
    note = None
    if len(rows) > min(TABLE_ROWS_MAX, room):
        rows, note = _compact_rows(rows, room - 1)
    lines = ["%s  %s" % (utc(summary.wall_now), summary.line()),
             fmt % ("client", "state", "MiB/s now", "total MiB", "rollovers",
                    "heartbeat", "clock off")]
    for c, r in rows:
        hb = "-" if c.heartbeat_ts is None or c.state == st.FINISHED else \
            _secs(summary.wall_now - c.heartbeat_ts) + " ago"
        off = "-" if c.clock_offset_s is None else "%+.3f s" % c.clock_offset_s
        lines.append(fmt % (shown(c.name)[:name_w], SHOWN_STATE.get(c.state, c.state),
                            "%.1f" % r if c.state in st.LIVE else "-",
                            "%.1f" % metrics.mib(c.bytes), c.rollovers, hb, off))
    if note:
        lines.append(note)
    if warnings:
        lines.append("warnings:")
        lines += ["  ! " + w for w in warnings]
    if events:
        lines.append("events:")
        lines += ["  " + e for e in events]
    return [line[:width] for line in lines[:budget]]


def _compact_rows(rows, room):
    """(rows, note): every client in a bad state, then the COMPACT_EXTREMES
    slowest and fastest writers (by MiB/s now), cut to ``room``, in hello order."""
    order = dict((c.name, i) for i, (c, _) in enumerate(rows))
    writing = sorted((cr for cr in rows if cr[0].state == st.RUNNING),
                     key=lambda cr: (cr[1], order[cr[0].name]))
    chosen, seen = [], set()
    for c, r in [cr for cr in rows if cr[0].state in BAD_STATES] + \
            writing[:COMPACT_EXTREMES] + writing[-COMPACT_EXTREMES:]:
        if c.name not in seen and len(chosen) < max(0, room):
            seen.add(c.name)
            chosen.append((c, r))
    chosen.sort(key=lambda cr: order[cr[0].name])
    note = ("(%d of %d clients shown: the %d slowest and fastest writing, and every "
            "one stalled, went away or failed)" % (len(chosen), len(rows),
                                                   COMPACT_EXTREMES))
    return chosen, note


class Console(object):
    """The live view. ``tick()`` is called by the main loop every tick and
    draws when due; ``finish()`` leaves the last table on screen and turns the
    console into plain event lines for the end of the run."""

    def __init__(self, out, registry, mode, verbose=False,
                 interval=PROGRESS_INTERVAL_S, refresh_s=REFRESH_S, wall=runclock.wall,
                 clock=None, extra_warnings=()):
        self.out = out
        self.registry = registry
        self.mode = mode
        self.verbose = verbose
        self.interval = interval
        self.refresh_s = refresh_s
        self.wall = wall
        self.clock = clock or registry.clock
        self.extra = extra_warnings   # a list the master appends to (server pauses)
        self.lock = threading.Lock()
        self.events = collections.deque(maxlen=EVENTS_SHOWN)
        self.history = collections.OrderedDict()   # see Summary.history
        self.dirty = False
        self.drawn = 0                # lines of the live view on screen now
        self.next_due = None
        self.last_draw = None
        self.live = mode == "tty"
        self.outbox = Outbox(out, on_broken=self._broken)

    def handlers(self):
        """[(logger, handler)] to attach: events always, rollovers with --verbose."""
        if self.mode == "off":
            return []
        # event lines: printed at once in plain mode, queued under the table in
        # tty mode (drawn by the main loop)
        handler = LineHandler(self.event, "%(asctime)s %(message)s")
        out = [(event, handler)]
        if self.verbose:
            out.append((verbose, handler))
        return out

    # --- called from any thread --------------------------------------------------
    def event(self, line):
        with self.lock:
            if self.live:
                self.events.append(shown(line))
                self.dirty = True
                return
            self._write(line + "\n")

    # --- called from the main loop -------------------------------------------------
    def tick(self):
        if self.mode == "off":
            return
        now = self.clock()
        if self.next_due is None:
            self.next_due = now + (0 if self.live else self.interval)
        if self.live:
            due = now >= self.next_due or (
                self.dirty and now - (self.last_draw or 0) >= EVENT_REDRAW_MIN_S)
        else:
            due = now >= self.next_due
        if not due:
            return
        self.next_due = now + (self.refresh_s if self.live else self.interval)
        self.last_draw = now
        summary = Summary(self.registry.progress_view(), self.wall(), list(self.extra),
                          self.history)
        with self.lock:
            if self.live:
                self._draw(summary)
            else:
                self._write("%s progress: %s\n" % (utc(summary.wall_now), summary.line()))

    def finish(self):
        """Draw the table once more with the final states, then print plainly."""
        if not self.live:
            return
        summary = Summary(self.registry.progress_view(), self.wall(), list(self.extra),
                          self.history)
        with self.lock:
            self._draw(summary)
            self.live = False
            self.drawn = 0

    def _draw(self, summary):
        self.dirty = False
        width, height = terminal_size(self.out)
        lines = table_lines(summary, width - 1, height, list(self.events))
        parts = []
        if self.drawn:
            parts.append("\r%s%dA" % (_CSI, self.drawn))
        for line in lines:
            parts.append("\r%s2K%s\n" % (_CSI, line))
        parts.append("%sJ" % _CSI)    # clear what a longer view left below
        self.drawn = len(lines)
        self._write("".join(parts))

    def _write(self, text):
        """Hand ``text`` to the outbox: never waits for the reader of stdout."""
        self.outbox.put(text)

    def write_last(self, text, timeout=OUTBOX_FLUSH_S):
        """The end-of-run lines: queued like the rest, then given ``timeout``
        to get out (a reader that stopped reading cannot hold the exit)."""
        self.outbox.put(text, last=True)
        self.outbox.flush(timeout)

    def _broken(self):
        """The console cannot be written to (closed pipe, gone terminal): off.
        The run goes on; server.log has it all."""
        self.mode = "off"
        self.live = False


class Outbox(object):
    """Console output through one daemon thread and a bounded queue, so no
    thread of the server (a handler, the recorder, the main loop) ever blocks
    on stdout: a paused pager or a launcher that stopped reading a pipe used
    to freeze the whole server once the pipe was full. Lines beyond OUTBOX_MAX
    are dropped and counted (server.log keeps every one)."""

    def __init__(self, out, on_broken=None, limit=OUTBOX_MAX):
        self.out = out
        self.on_broken = on_broken
        self.limit = limit
        self.items = collections.deque()
        self.cond = threading.Condition(threading.Lock())
        self.dropped = 0
        self.busy = False             # the writer thread is writing an item
        self.broken = False
        self.thread = None

    def put(self, text, last=False):
        with self.cond:
            if self.broken:
                return
            if len(self.items) >= self.limit and not last:
                self.dropped += 1
                return
            if self.dropped and not self.items:
                text = ("(%d console lines dropped: nothing read the console; "
                        "server.log has them)\n" % self.dropped) + text
                self.dropped = 0
            self.items.append(text)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="console")
                self.thread.daemon = True
                self.thread.start()
            self.cond.notify()

    def stuck(self):
        """Output is still waiting for a reader (after ``flush`` gave up)."""
        with self.cond:
            return bool(self.items or self.busy) and not self.broken

    def flush(self, timeout):
        """Wait up to ``timeout`` for everything queued to be written."""
        deadline = monotonic() + timeout
        with self.cond:
            while (self.items or self.busy) and not self.broken:
                left = deadline - monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.1))
        return True

    def _run(self):
        while True:
            with self.cond:
                while not self.items:
                    self.cond.wait()
                text = self.items.popleft()
                self.busy = True
            try:
                write_text(self.out, text)
                self.out.flush()
            except (IOError, OSError, ValueError):
                with self.cond:
                    self.broken = True
                    self.items.clear()
                    self.busy = False
                    self.cond.notify_all()
                if self.on_broken is not None:
                    self.on_broken()
                return
            with self.cond:
                self.busy = False
                self.cond.notify_all()
