"""The client's main process: hello, children, relaying, duration, shutdown.

Timeline: connect + hello -> wait for GO -> take the run plan it carries
(checked against this host: ``plan_check``) and its start instant -> start
writer, stats, heartbeat (the writer's first write waits for the instant) ->
relay their pipe messages to the sender (the writer sends START once its
first file is open) -> stop after --duration (counted from the start instant,
or from GO when it names none), on a signal,
when the server asks, or when a child dies -> stop children (pipe command,
then SIGTERM, then SIGKILL, each bounded) -> remove leftover data files ->
STOP with the summary, BYE, wait (bounded: --deliver-timeout) for the final
ACK -> exit code.

A server outage never pauses the writer: the sender keeps everything
unacknowledged (bounded) and reconnects for as long as the run lasts. If the
server still has not acknowledged everything --deliver-timeout after the
stop, the unacknowledged wire lines are saved to ``cfg.undelivered_path``
(JSON lines, exactly as they would have been sent), the log says how many
(a signal during that wait cuts it short),
and a run that would have exited OK exits CLIENT_SERVER instead (its results
are not at the server).
"""
import ctypes
import errno
# imported now, not by the first Pipe() (2.7 imports it there): at the
# open-file limit that import fails, where the pipe itself is said (EMFILE)
import multiprocessing.connection  # noqa: F401
import os
import signal

from diskbench import exitcodes, plan, protocol, runclock, signals
from diskbench.client import child, heartbeat, progress, stats, writer
from diskbench.cli import join_host_port
from diskbench.client.sender import Sender
from diskbench.compat import monotonic, mp_context
from diskbench.pollio import wait_readable
from diskbench.metrics import MIB
from diskbench.signals import SignalFlag
from diskbench.stamp import kinds_text

#: The main loop wakes at least this often (a dead child is seen within it).
LOOP_TICK_S = 0.2
#: Most messages taken from one pipe per wake-up (fairness between children).
DRAIN_BATCH = 200
#: The writer gets this long to stop after the stop command (a chunk write
#: in flight must end), the stats and heartbeat processes AUX_STOP_TIMEOUT_S
#: (they only wait on their pipe), then SIGTERM ...
CHILD_STOP_TIMEOUT_S = 15.0
AUX_STOP_TIMEOUT_S = 5.0
#: ... and this long after SIGTERM before SIGKILL.
CHILD_KILL_TIMEOUT_S = 3.0
#: Once the results are acknowledged, the bye gets this much longer for its
#: own ack (the server may exit right after the stop summary; not waited for).
BYE_GRACE_S = 0.5
#: Env var choosing the multiprocessing start method (fork/spawn/forkserver).
START_METHOD_ENV = "DISKBENCH_START_METHOD"
#: A main-loop wake-up this much later than LOOP_TICK_S means this process was
#: paused (SIGSTOP, a frozen VM): said in the log and to the server.
PAUSE_NOTICE_S = 2.0
#: No beat relayed from the heartbeat process for this many of its intervals
#: during the run: this process beats for it (heartbeat.beat, the same facts),
#: and says so once. While the children stop, it beats every interval: the
#: server takes a silent client for gone away (3 intervals), and the stop
#: may wait on a child for up to CHILD_STOP_TIMEOUT_S.
BEAT_LATE_INTERVALS = 2
#: ... and for at least this long (a busy host delays a short interval's beat).
BEAT_LATE_MIN_S = 3.0
#: Signals that stop the client cleanly (SIGHUP: an ssh session dropping).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: A start instant further ahead than this is not believed (a server clock or
#: offset gone wrong): the client starts at once and says so.
MAX_START_WAIT_S = 60.0

WRITER, STATS, HEARTBEAT = "writer", "stats", "heartbeat"


def take_stop_signals():
    """A SignalFlag installed for STOP_SIGNALS, the first thing the client does;
    SIGHUP stays ignored where it is (nohup: the user asked to outlive the
    session). Its ``detached`` says which."""
    taken = list(STOP_SIGNALS)
    detached = signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    if detached:
        taken.remove(signal.SIGHUP)
    flag = SignalFlag().install(taken)
    flag.detached = detached
    return flag


class Outcome(object):
    """How the run ended: STOP reason, exit code, and a line for the log."""

    def __init__(self, reason, code, text):
        self.reason, self.code, self.text = reason, code, text


class Supervisor(object):
    def __init__(self, cfg, hello_fields, log, plan_check=None):
        self.cfg = cfg
        self.log = log
        # cfg -> None or (exit code, why): the plan from go, checked on this host
        self.plan_check = plan_check
        self.sender = Sender(cfg.host, cfg.port, cfg.name, hello_fields,
                             secret=cfg.secret, log=log)
        self.procs = {}       # role -> Process
        self.conns = {}       # role -> parent end of its pipe
        self.counters = None
        # perf/rollover totals and the progress line (progress.py)
        self.progress = progress.Progress(log)
        self.perf_samples = 0     # perf samples made (stop.perf_samples)
        self.writer_error = None
        self.t_go = None
        self.started = False
        self.stalled = False      # the writer is stalled now
        self.watch_from = 0.0     # stall ages count from here at the earliest
        self.signalled = set()    # roles that had to be sent SIGTERM/SIGKILL
        self.paused_s = 0.0       # longest pause of this process seen
        self.clock_steps = runclock.StepWatch("this host's")
        self.stuck_s = 0.0        # the writer's progress age when signals began
        self.signals = SignalFlag()  # installed by run()
        self.bad_blocks = 0       # --verify: blocks that did not come back
        self.last_beat = None     # monotonic() of the last heartbeat sent (any source)
        self.beat_late_said = False

    # --- entry ---------------------------------------------------------------------
    def run(self, flag=None):
        """The run; ``flag``: the SignalFlag main installed first thing (else
        one is installed here for the run)."""
        if flag is not None:
            self.signals = flag
            return self._run()
        self.signals = take_stop_signals()  # only a flag: the loop does the work
        try:
            return self._run()
        finally:
            self.signals.restore()

    def _run(self):
        cfg, log = self.cfg, self.log
        where = join_host_port(cfg.host, cfg.port)
        if getattr(self.signals, "detached", False):
            log.info("SIGHUP is ignored (nohup?): running detached")
        self.sender.start()
        if not self.sender.wait_connected(cfg.connect_timeout_s,
                                          lambda: self.signals.last is not None):
            self.sender.close(0)
            if self.signals.last is not None:
                return self._fail(exitcodes.CLIENT_INTERRUPTED, "interrupted by signal %d "
                                  "while connecting to the server at %s"
                                  % (self.signals.last, where))
            if self.sender.fatal is not None:
                return self._fail(exitcodes.CLIENT_SERVER, self.sender.fatal)
            self.sender.close(0)
            return self._fail(exitcodes.CLIENT_SERVER, "cannot reach the diskbench server "
                              "at %s within %g s (%s); start the server or fix --server / "
                              "--connect-timeout" % (where, cfg.connect_timeout_s,
                                                     self.sender.last_error))
        outcome = self._wait_for_go(where) or self._take_plan()
        if outcome is not None:
            return self._finish(outcome)
        self.t_go = self._start_instant()
        self.cfg = cfg = self.cfg.replace(start_at=self.t_go, run_id=self.sender.run_id)
        go = self.sender.go_msg
        offset, end_offset = self.sender.pace(cfg.perf_interval_s,
                                              go.end_spread_s if go else None)
        log.info("go from server (run %s): %s; starting writer, stats and heartbeat "
                 "(reports go out %.3f s after they are made, the stop summary %.3f s: "
                 "this client's send offsets, so a fleet does not report all at once)",
                 self.sender.run_id, plan.describe(
                     dict((k, getattr(cfg, k)) for k in protocol.PLAN_FIELDS)), offset,
                 end_offset)
        for handler in log.handlers:
            if isinstance(handler, progress.ClearingHandler):
                handler.progress = self.progress
        self.progress.start(self.cfg.duration_s, self.cfg.progress_interval_s)
        try:
            self._start_children()
        except EnvironmentError as exc:  # EMFILE, EAGAIN (a process limit), ENOMEM
            outcome = self._not_started(exc)
        else:
            outcome = self._loop()
        return self._finish(outcome)

    def _not_started(self, exc):
        """A child (or its pipe) could not be made: the run cannot be measured.
        Said in one line naming the limit to raise; the children already
        started are stopped by _finish and their files removed."""
        role = [r for r in (WRITER, STATS, HEARTBEAT) if r not in self.procs][0]
        err = getattr(exc, "errno", None)
        text = ("cannot start the %s process (%s: %s); raise the open-file limit (ulimit "
                "-n) or the process limit (ulimit -u), or free memory, and run again"
                % (role, errno.errorcode.get(err, "E?"),
                   getattr(exc, "strerror", None) or exc))
        self.sender.send(protocol.ERROR, source=role, reason=text, errno=None, fatal=True)
        return Outcome(protocol.STOP_ERROR, exitcodes.CLIENT_CHILD_DIED, text)

    def _fail(self, code, text):
        self.log.error("%s", text)
        return code

    def _wait_for_go(self, where):
        since, said = monotonic(), False
        while not self.sender.go.wait(LOOP_TICK_S):
            if not said and self.sender.ever_healthy and not self.sender.ever_acked \
                    and monotonic() - since > self.cfg.connect_timeout_s:
                said = True    # (a server that pings is there: wait through its outage)
                self.log.warning("the server at %s is there (it pings us) but has "
                                 "acknowledged nothing for %g s: its log dir may be full "
                                 "or unwritable (see the server's console); waiting for "
                                 "its go", where, self.cfg.connect_timeout_s)
            if self.sender.rejected is not None:
                return Outcome(None, exitcodes.CLIENT_SERVER,
                               "server refused us: %s" % self.sender.rejected)
            if self.sender.fatal is not None:
                self.sender.wait_sent(BYE_GRACE_S)  # (the server is told why)
                return Outcome(None, exitcodes.CLIENT_SERVER, self.sender.fatal)
            if self.signals.last is not None:
                return Outcome(protocol.STOP_SIGNAL, exitcodes.CLIENT_INTERRUPTED,
                               "interrupted by signal %d before the run started"
                               % self.signals.last)
            if self.sender.server_stop is not None:
                return Outcome(protocol.STOP_SERVER, exitcodes.CLIENT_INTERRUPTED,
                               "server asked us to stop: %s" % self.sender.server_stop)
            if self.sender.disconnected_for() > self.cfg.connect_timeout_s:
                if not self.sender.ever_healthy and self.sender.connected():
                    return Outcome(None, exitcodes.CLIENT_SERVER, "the peer at %s "
                                   "accepted the connection but said nothing in %g s "
                                   "(--connect-timeout): not a diskbench server, or a "
                                   "stuck one; check --server and the server"
                                   % (where, self.cfg.connect_timeout_s))
                return Outcome(None, exitcodes.CLIENT_SERVER, "lost the server at %s "
                               "before the run started (%s); check the server"
                               % (where, self.sender.last_error or "no answer"))
        if self.sender.rejected is not None:
            return Outcome(None, exitcodes.CLIENT_SERVER,
                           "server refused us: %s" % self.sender.rejected)
        return None

    def _take_plan(self):
        """Apply the plan the go carries (an older-style go has none: ours
        stays) and check it on this host; an Outcome if it cannot run."""
        go = self.sender.go_msg
        changes = dict((k, go.data[k]) for k in protocol.PLAN_FIELDS + ("verify",)
                       if go is not None and go.data.get(k) is not None)
        self.cfg = self.cfg.replace(**changes)
        problem = self.plan_check(self.cfg) if self.plan_check else None
        if problem is None:
            return None
        code, why = problem
        text = "the run plan from the server cannot run here: %s" % why
        self.sender.send(protocol.ERROR, source="plan", reason=text, errno=None,
                         fatal=True)
        return Outcome(protocol.STOP_ERROR, code, text)

    def _start_instant(self):
        """The monotonic time of the first write: go's common start instant
        (server clock) put on ours, by the server's estimate of our clock
        offset when it has one, else by when the go was sent (its ts) and
        came (one network delay late); None in go: now."""
        go, now = self.sender.go_msg, monotonic()
        if go is None or go.start_at is None:
            return now
        if go.clock_offset_s is not None:
            at = self.sender.go_mono + (go.start_at + go.clock_offset_s -
                                        self.sender.go_wall)
            how = "our clock offset as the server measured it (%+.3f s)" % go.clock_offset_s
        else:
            at = self.sender.go_mono + (go.start_at - go.ts)
            how = "the time the go was sent"
        wait = at - now
        if wait < 0 or wait > MAX_START_WAIT_S:
            self.log.warning("the common start instant is %.3f s %s (converted with %s): "
                             "starting now", abs(wait), "past" if wait < 0 else
                             "ahead, beyond belief", how)
            return now
        self.log.info("synchronized start: the first write in %.3f s (converted with %s)",
                      wait, how)
        return at

    # --- children ---------------------------------------------------------------------
    def _start_children(self):
        cfg = self.cfg
        ctx = mp_context(cfg.start_method)
        child_cfg = cfg.for_children()
        self.counters = (ctx.RawValue(ctypes.c_longlong, 0),
                         ctx.RawValue(ctypes.c_longlong, 0),
                         ctx.RawValue(ctypes.c_double, monotonic()))
        # Children must not get Ctrl-C or a hangup (only the supervisor does: a
        # terminal sends both to the whole process group): they set SIG_IGN first
        # thing, and inherit it here too so no early signal kills them.
        previous = signals.ignore(child.LEFT_TO_SUPERVISOR)
        try:
            self._spawn(ctx, WRITER, writer.writer_main, (child_cfg, self.counters))
            wpid = self.procs[WRITER].pid
            self._spawn(ctx, STATS, stats.stats_main, (child_cfg, wpid))
            self._spawn(ctx, HEARTBEAT, heartbeat.heartbeat_main,
                        (child_cfg, wpid, self.counters))
        finally:
            signals.restore(previous)
        self.watch_from = max(monotonic(), self.t_go)
        self.log.info("children started: writer pid %d, stats pid %d, heartbeat pid %d "
                      "(start method %s)", wpid, self.procs[STATS].pid,
                      self.procs[HEARTBEAT].pid, start_method_of(ctx))

    def _spawn(self, ctx, role, target, args):
        parent_end, child_end = ctx.Pipe()
        proc = ctx.Process(target=target, args=(child_end,) + tuple(args),
                           name="diskbench-%s" % role)
        proc.daemon = True
        proc.start()
        child_end.close()
        self.procs[role] = proc
        self.conns[role] = parent_end

    def _drain(self, timeout):
        """Relay what the children sent; True if anything arrived."""
        by_conn = dict((conn, role) for role, conn in self.conns.items())
        ready = wait_readable(list(by_conn), timeout)
        for conn in ready:
            role = by_conn[conn]
            for _ in range(DRAIN_BATCH):
                try:
                    if not conn.poll(0):
                        break
                    item = conn.recv()
                except (EOFError, OSError, IOError):
                    conn.close()
                    del self.conns[role]
                    break
                self._handle(role, item)
        return bool(ready)

    def _handle(self, role, item):
        """Relay one (type, fields) item from a child; log what a human wants."""
        try:
            type_, fields = item
        except (TypeError, ValueError):
            self.log.warning("ignored a malformed item from %s: %r", role, item)
            return
        if type_ not in ON_CHILD_ITEM:
            self.log.warning("ignored a %r item from %s: children do not send it",
                             type_, role)
            return
        msg = self.sender.send(type_, **fields)
        if msg is None:
            return  # invalid: the sender has logged why
        on_item = ON_CHILD_ITEM[type_]
        if on_item is not None:
            on_item(self, role, msg)

    def _on_perf(self, role, msg):
        self.perf_samples += 1
        self.progress.figures.perf(msg, monotonic())

    def _on_start(self, role, msg):
        self.started = True
        self.log.info("start: writer pid %d writing %d MiB chunks to %d MiB files in %s "
                      "(sync_mode=%s, preallocate=%s)", msg.writer_pid,
                      self.cfg.chunk_bytes // MIB, self.cfg.file_bytes // MIB,
                      self.cfg.directory, msg.sync_mode, msg.preallocate)

    def _on_rollover(self, role, msg):
        self.progress.figures.rollovers += 1
        self.log.info("rollover: file %d closed at %d MiB (fsync+close %.3f s)",
                      msg.file_index, msg.file_bytes // MIB, msg.close_s,
                      extra=progress.FILE_ONLY)

    def _on_error(self, role, msg):
        self.log.error("error from %s: %s", msg.source, msg.reason)
        if role == WRITER and msg.fatal:
            self.writer_error = msg

    def _on_readback(self, role, msg):
        bad = sum(msg.data[kind] for kind in protocol.BAD_KINDS)
        self.bad_blocks += bad
        line = ("read back file %d: %d of %d MiB at %.1f MiB/s (%s), %s" % (
            msg.file_index, msg.bytes // MIB, msg.file_bytes // MIB,
            msg.bytes / float(MIB) / msg.io_s if msg.io_s else 0.0, msg.read_mode,
            kinds_text(msg.data) or "every block as written"))
        if bad:
            self.log.error("%s", line)
        else:  # in the log, not on the console (as rollovers)
            self.log.info("%s", line, extra=progress.FILE_ONLY)

    def _on_bad_block(self, role, msg):
        self.log.error("bad block (%s) in %s at offset %d: expected %s, found %s",
                       msg.kind, msg.path, msg.offset, msg.expected, msg.found)

    def _judge_data(self, outcome):
        """--verify: a client whose data did not come back failed, whatever its speed."""
        if not self.bad_blocks or outcome.code not in (exitcodes.OK,
                                                       exitcodes.CLIENT_INTERRUPTED):
            return outcome
        text = ("--verify: %d blocks did not come back as written (see the bad block "
                "lines above)" % self.bad_blocks)
        return Outcome(outcome.reason, exitcodes.CLIENT_BAD_DATA, text)

    def _on_heartbeat(self, role, msg):
        self.last_beat = monotonic()

    def _beat_if_due(self, intervals):
        """Beat for the heartbeat process when none went out for ``intervals``
        of its intervals (it is stopped, stopping or gone): the same facts,
        sampled here, so the server never takes a client that is running or
        stopping for gone away. True if it beat."""
        if self.counters is None or WRITER not in self.procs or \
                self.procs[WRITER].exitcode is not None:
            return False          # (a beat of a writer gone is a stall before its end)
        now = monotonic()
        since = now - (self.watch_from if self.last_beat is None else self.last_beat)
        late = intervals >= BEAT_LATE_INTERVALS
        if since < max(intervals * self.cfg.heartbeat_interval_s,
                       BEAT_LATE_MIN_S if late else 0.0):
            return False
        if late and not self.beat_late_said:
            self.beat_late_said = True
            text = ("the heartbeat process (pid %d) sent no beat for %.1f s; the main "
                    "process beats for it" % (self.procs[HEARTBEAT].pid, since))
            self.log.warning("%s", text)
            self.sender.send(protocol.NOTE, text=text)
        type_, fields = heartbeat.beat(self.procs[WRITER].pid, self.counters)
        self.sender.send(type_, **fields)
        self.last_beat = now
        return True

    def _drain_stopping(self, timeout, intervals=1):
        """Relay while the children stop, beating for the heartbeat process
        (told to stop) each of its intervals."""
        self._drain(timeout)
        self._beat_if_due(intervals)

    def _on_note(self, role, msg):
        self.log.warning("note from %s: %s", role, msg.text)

    def _dead_child(self):
        for role, proc in sorted(self.procs.items()):
            if proc.exitcode is not None:
                return role, proc
        return None, None

    def _loop(self):
        cfg = self.cfg
        last = monotonic()
        while True:
            self._drain(LOOP_TICK_S)
            self.progress.tick()
            now = monotonic()
            if now - last > LOOP_TICK_S + PAUSE_NOTICE_S:
                self._paused(now - last)
            last = now
            self._clock_stepped()
            role, proc = self._dead_child()
            if role is not None:
                return self._child_died(role, proc)
            self._watch_progress()
            self._beat_if_due(BEAT_LATE_INTERVALS)
            if self.signals.last is not None:
                return Outcome(protocol.STOP_SIGNAL, exitcodes.CLIENT_INTERRUPTED,
                               "interrupted by signal %d" % self.signals.last)
            if self.sender.server_stop is not None:
                return Outcome(protocol.STOP_SERVER, exitcodes.CLIENT_INTERRUPTED,
                               "server asked us to stop: %s" % self.sender.server_stop)
            if self.sender.rejected is not None:
                return Outcome(protocol.STOP_ERROR, exitcodes.CLIENT_SERVER,
                               "server refused us: %s" % self.sender.rejected)
            if monotonic() - self.t_go >= cfg.duration_s:
                return Outcome(protocol.STOP_DURATION, exitcodes.OK,
                               "ran the configured %g s" % cfg.duration_s)

    def _clock_stepped(self):
        """A step of this host's wall clock, said once (runclock.StepWatch):
        on stderr, in the log and as a note in the report."""
        text = self.clock_steps.check()
        if text:
            self.log.warning("%s", text)
            self.sender.send(protocol.NOTE, text=text)

    def _paused(self, gap):
        """This process did not run for ``gap`` s (SIGSTOP, a frozen VM): say so.
        The children went on; stall ages restart from now (the writer may have
        been blocked on its full pipe meanwhile)."""
        self.paused_s = max(self.paused_s, gap)
        self.watch_from = monotonic()
        text = ("this client's main process was paused for %.1f s (SIGSTOP or a frozen "
                "VM?); the writer went on meanwhile" % gap)
        self.log.warning("%s", text)
        self.sender.send(protocol.NOTE, text=text)

    def _progress_age(self):
        """Seconds since the writer last finished a chunk (or since the watch began)."""
        if not self.counters:
            return 0.0
        return monotonic() - max(self.counters[2].value, self.watch_from)

    def _watch_progress(self):
        """Notice a stalled writer (and its recovery): log it, tell the server."""
        limit = self.cfg.stall_timeout_s
        age = self._progress_age()
        if age >= limit and not self.stalled:
            self.stalled = True
            pid = self.procs[WRITER].pid
            self.log.error("writer (pid %d) stalled: no progress for %.1f s (--stall-timeout "
                           "%g s); a disk that stopped answering, or a stopped process?",
                           pid, age, limit)
            self.sender.send(protocol.ERROR, source=WRITER, errno=None, fatal=False,
                             reason="no progress for %.1f s (writer pid %d stalled)"
                             % (age, pid))
        elif age < limit and self.stalled:
            self.stalled = False
            text = "writer progressing again after a stall"
            self.log.warning("%s", text)
            self.sender.send(protocol.NOTE, text=text)

    def _child_died(self, role, proc):
        # Let the last words (an ERROR from the writer) arrive first.
        deadline = monotonic() + LOOP_TICK_S
        while role in self.conns and monotonic() < deadline:
            if not self._drain(LOOP_TICK_S / 4):
                break
        code = proc.exitcode
        if role == WRITER and code == 0 and not self.writer_error and \
                monotonic() - self.t_go >= self.cfg.duration_s:
            # Its own safety net (DURATION_GRACE_S): it stopped itself on time,
            # while this process could not tell it to (paused, or very late).
            return Outcome(protocol.STOP_DURATION, exitcodes.OK,
                           "ran the configured %g s (the writer stopped itself at the "
                           "end of its duration; this process was paused for %.1f s)"
                           % (self.cfg.duration_s, self.paused_s))
        if role == WRITER and (code == writer.EXIT_DISK_ERROR or (
                self.writer_error and self.writer_error.errno is not None)):
            reason = self.writer_error.reason if self.writer_error else "disk error"
            return Outcome(protocol.STOP_ERROR, exitcodes.CLIENT_DISK_ERROR,
                           "the writer stopped on a disk error: %s" % reason)
        how = ("killed by signal %d" % -code) if code < 0 else ("exit code %d" % code)
        if role == WRITER and self.writer_error:  # a crash: its own words say why
            how += ": %s" % self.writer_error.reason
        text = "%s process (pid %d) died unexpectedly (%s)" % (role, proc.pid, how)
        self.log.error("%s", text)
        self.sender.send(protocol.ERROR, source=role, reason=text, errno=None, fatal=True)
        return Outcome(protocol.STOP_ERROR, exitcodes.CLIENT_CHILD_DIED, text)

    def _stop_children(self, hurry=lambda: False):
        """Stop command, then SIGTERM (+ SIGCONT, so a stopped child can obey
        it), then SIGKILL; each bounded, and cut short once ``hurry()`` (a
        signal). Records who had to be signalled."""
        spent = self.cfg.verify and self._stop_writer_first(hurry)
        for conn in list(self.conns.values()):
            try:
                conn.send(child.CMD_STOP)
            except (OSError, IOError, EOFError):
                pass
        wait_s = CHILD_STOP_TIMEOUT_S
        limit = self.cfg.stall_timeout_s
        if self._progress_age() >= limit:  # stalled: it is unlikely to answer
            wait_s = min(wait_s, limit)
        now = monotonic()
        deadlines = dict((p, now + (0.0 if spent else wait_s if role == WRITER else
                                    min(wait_s, AUX_STOP_TIMEOUT_S)))
                         for role, p in self.procs.items())
        writer = self.procs.get(WRITER)
        while not hurry() and any(p.exitcode is None and monotonic() < deadline
                                  for p, deadline in deadlines.items()):
            self._drain_stopping(LOOP_TICK_S / 2)
            if writer is not None and writer.exitcode is not None:
                # no more beats (the writer is gone): a helper still running
                # gets one heartbeat interval more, so the server hears the
                # stop summary before it takes the silence for a client gone
                last = monotonic() + self.cfg.heartbeat_interval_s
                for p in deadlines:
                    deadlines[p] = min(deadlines[p], last)
                writer = None
        roles = dict((p, role) for role, p in self.procs.items())
        # how long the writer has made no progress, read before a signal can
        # let its stuck write finish (and reset the figure): the stall's length
        self.stuck_s = self._progress_age()
        for sig, wait_s in ((signal.SIGTERM, CHILD_KILL_TIMEOUT_S),
                            (signal.SIGKILL, CHILD_KILL_TIMEOUT_S)):
            alive = [p for p in self.procs.values() if p.exitcode is None]
            if not alive:
                break
            for p in alive:
                self.signalled.add(roles[p])
                self.log.warning("%s (pid %d) did not stop; sending signal %d",
                                 p.name, p.pid, sig)
                if roles[p] != WRITER and sig == signal.SIGTERM:   # (the writer's is judged)
                    self.sender.send(protocol.NOTE, text="the %s process (pid %d) did not "
                                     "stop when told; sent signal %d" % (roles[p], p.pid, sig))
                try:
                    os.kill(p.pid, sig)
                    if sig == signal.SIGTERM:
                        os.kill(p.pid, signal.SIGCONT)
                except OSError:
                    pass
            end = monotonic() + (LOOP_TICK_S if hurry() and sig == signal.SIGTERM
                                 else wait_s)
            while monotonic() < end and any(p.exitcode is None for p in alive):
                self._drain_stopping(LOOP_TICK_S / 2)
        while self.conns and self._drain(0):
            pass
        for proc in self.procs.values():
            proc.join(0.5)
        for conn in self.conns.values():
            conn.close()
        self.conns = {}

    def _stop_writer_first(self, hurry=lambda: False):
        """--verify: the writer reads its files back when told to stop, which
        may take long; the heartbeat goes on meanwhile (else the server would
        take the silence for a client gone away), so the writer is stopped
        and waited for first (as below: the stop timeout, longer while its
        read-back makes progress), the other children after. True when the
        writer is still running at the end of that: its stop timeout is spent."""
        conn = self.conns.get(WRITER)
        if conn is None:
            return False
        try:
            conn.send(child.CMD_STOP)
        except (OSError, IOError, EOFError):
            return False
        limit = self.cfg.stall_timeout_s
        deadline = monotonic() + (CHILD_STOP_TIMEOUT_S if self._progress_age() < limit
                                  else min(CHILD_STOP_TIMEOUT_S, limit))  # stalled
        while WRITER in self.procs and self.procs[WRITER].exitcode is None and \
                not hurry() and (monotonic() < deadline or self._reading_back(limit)):
            self._drain_stopping(LOOP_TICK_S / 2, BEAT_LATE_INTERVALS)  # it still beats
        return WRITER in self.procs and self.procs[WRITER].exitcode is None

    def _reading_back(self, limit):
        """--verify: the writer is reading its files back at the end and making
        progress (a file per chunk read): it gets longer than the stop timeout."""
        return self.cfg.verify and WRITER in self.procs and \
            self.procs[WRITER].exitcode is None and self._progress_age() < limit

    def _remove_leftovers(self):
        """Data files of a writer that could not clean up (e.g. kill -9)."""
        if self.cfg.keep_data or WRITER not in self.procs:
            return
        directory, pid = self.cfg.directory, self.procs[WRITER].pid
        try:
            names = os.listdir(directory)
        except OSError as exc:
            self.log.warning("could not look for leftover data files in %s: %s",
                             directory, exc)
            return
        for filename in sorted(names):  # exactly ours: never a longer name's files
            if writer.data_file_index(filename, self.cfg.name, pid) is None:
                continue
            path = os.path.join(directory, filename)
            try:
                os.unlink(path)
                self.log.info("removed leftover data file %s", path,
                              extra=progress.FILE_ONLY)
            except OSError as exc:
                self.log.warning("could not remove %s: %s", path, exc)

    # --- the end ------------------------------------------------------------------------
    def _finish(self, outcome):
        log, sender = self.log, self.sender
        seen = self.signals.count
        if self.procs:
            # stalled when the run ended: its age then, whatever happens next
            stalled_s = self._progress_age() if self.stalled else None
            log.info("stopping the writer, stats and heartbeat (%s)", outcome.text)
            self._stop_children(lambda: self.signals.count != seen)
            self._remove_leftovers()
            if self.signals.count != seen:
                outcome = self._judge_data(self._cut_short(outcome))
            else:
                outcome = self._judge_data(self._judge_writer(outcome, stalled_s))
        self.progress.clear()
        figures = self.progress.figures
        elapsed = max(0.0, monotonic() - self.t_go) if self.t_go is not None else 0.0
        nbytes = int(self.counters[0].value) if self.counters else 0
        chunks = int(self.counters[1].value) if self.counters else 0
        if outcome.reason is not None:
            sender.send(protocol.STOP, reason=outcome.reason, bytes_written=nbytes,
                        chunks_written=chunks, rollovers=figures.rollovers,
                        elapsed_s=elapsed, io_s=figures.io_s,
                        dropped_messages=sender.make_room(2),  # room for stop + bye
                        perf_samples=self.perf_samples)
            sender.send(protocol.BYE)
        code = outcome.code
        if outcome.reason is not None:
            # interrupted before the run started (nothing measured to wait for),
            # or again while stopping: no long wait for acks
            code = self._deliver(code, quick=self.signals.count != seen or (
                outcome.reason == protocol.STOP_SIGNAL and self.t_go is None))
        level = log.info if code == exitcodes.OK else log.error
        level("stop (%s): %s; %s in %d chunks, %d rollovers, %.1f s; %d messages "
              "dropped; exit code %d", outcome.reason or "refused", outcome.text,
              figures.closing(), chunks, figures.rollovers, elapsed, sender.dropped,
              code)
        if outcome.reason is None:
            sender.close(0)
        return code

    def _cut_short(self, outcome):
        """A signal came while the children were being stopped: they were not
        waited for. A run that would have ended well ends interrupted."""
        self.log.warning("signal %d while stopping: did not wait for the children "
                         "(stopped at once; data files removed)", self.signals.last)
        if outcome.code != exitcodes.OK:
            return outcome
        return Outcome(protocol.STOP_SIGNAL, exitcodes.CLIENT_INTERRUPTED,
                       "%s, then interrupted by signal %d while stopping"
                       % (outcome.text, self.signals.last))

    def _judge_writer(self, outcome, stalled_s=None):
        """A writer that had to be signalled at the end, or was stalled when
        the run ended (``stalled_s``: its age without progress then), failed
        the run: the measurement stopped when it stalled, whatever the clock
        says (and the server, whose heartbeats said so, fails it too)."""
        killed = WRITER in self.signalled
        if not (killed or stalled_s is not None) or outcome.reason is None or \
                outcome.code not in (exitcodes.OK, exitcodes.CLIENT_INTERRUPTED):
            return outcome
        if killed:
            text = ("the writer (pid %d) stalled: no progress for %.1f s, and it did "
                    "not stop when asked (had to be sent SIGTERM/SIGKILL)"
                    % (self.procs[WRITER].pid, max(self.stuck_s, stalled_s or 0.0)))
        else:
            text = ("the writer (pid %d) stalled: no progress for %.1f s when the run "
                    "ended (--stall-timeout %g s)" % (self.procs[WRITER].pid, stalled_s,
                                                      self.cfg.stall_timeout_s))
        self.sender.send(protocol.ERROR, source=WRITER, reason=text, errno=None,
                         fatal=True)
        return Outcome(protocol.STOP_ERROR, exitcodes.CLIENT_WRITER_STALLED, text)

    def _deliver(self, code, quick=False):
        """Wait (bounded; ``quick``: BYE_GRACE_S at most) for the final ack;
        save what never got one.

        Returns the exit code: OK becomes CLIENT_SERVER when messages were
        not delivered; a more specific failure code is kept.
        """
        log, sender = self.log, self.sender
        timeout = min(self.cfg.deliver_timeout_s, BYE_GRACE_S) if quick else \
            self.cfg.deliver_timeout_s
        pending = sender.pending()
        if pending and not sender.connected():
            log.warning("server unreachable (%s); trying for up to %g s more to deliver "
                        "%d unacknowledged messages", sender.last_error, timeout, pending)
        deadline = monotonic() + timeout + sender.end_offset_s   # (its stop is held)
        seen = self.signals.count
        while monotonic() < deadline and self.signals.count == seen:
            if sender.wait_delivered(min(LOOP_TICK_S, max(0.0, deadline - monotonic()))):
                break
            if sender.rejected is not None or sender.ack_beyond is not None:
                break
        if self.signals.count != seen:
            log.warning("signal %d: not waiting any longer for the server's ack",
                        self.signals.last)
        if sender.wait_delivered(0):
            sender.wait_delivered(BYE_GRACE_S, everything=True)
        if sender.close(0) and sender.ack_beyond is None:
            return code
        lines = sender.unacked_lines()
        where = self._save_undelivered(lines) + may_hold(sender.unacked_sent(), len(lines),
                                                         self.cfg.name)
        if sender.ack_beyond is not None:
            log.error("the server acknowledged seq %d, beyond our last seq %d (another "
                      "peer took our name?): not trusting its acks; %d messages kept; %s",
                      sender.ack_beyond[0], sender.ack_beyond[1], len(lines), where)
            return exitcodes.CLIENT_SERVER if code == exitcodes.OK else code
        log.error("the server did not acknowledge %d messages within %g s after the stop "
                  "(%s; %d dropped earlier); %s", len(lines), timeout,
                  sender.last_error or "no ack", sender.dropped, where)
        return exitcodes.CLIENT_SERVER if code == exitcodes.OK else code

    def _save_undelivered(self, lines):
        path = self.cfg.undelivered_path
        if not path:
            return "they are lost"
        try:
            with open(path, "ab") as f:
                for line in lines:
                    f.write(line)
        except (IOError, OSError) as exc:
            return "and they could not be saved to %s (%s)" % (path, exc)
        return "they are saved, one JSON message per line, in %s" % path


def may_hold(sent, total, name):
    """What the undelivered line adds about the messages it names: which of
    them the server may hold after all (``sent``: their seqs, sent but not
    acknowledged), and how to merge without counting one twice."""
    if not sent:
        return "; none of them was ever sent, so the server holds none of them"
    return ("; the server may still hold some of the %d of them that were sent but not "
            "acknowledged (seq %d to %d; %d never sent): it may have written them without "
            "being able to acknowledge them, so when merging this file with the server's "
            "perf.jsonl, keep a line only if perf.jsonl has no record of client %s with "
            "that seq (dedup by name and seq)" % (len(sent), sent[0], sent[-1],
                                                 total - len(sent), name))


def start_method_of(ctx):
    """The start method a multiprocessing context (or module) uses."""
    getter = getattr(ctx, "get_start_method", None)
    if getter is None:
        return "fork"  # Python 2.7 always forks
    try:
        return getter()
    except TypeError:
        return getter(allow_none=False)


#: Every client -> server type a child (writer, stats, heartbeat) may send, and
#: what the supervisor does besides relaying it (None: relay only).
ON_CHILD_ITEM = {
    protocol.START: Supervisor._on_start,
    protocol.PERF: Supervisor._on_perf,
    protocol.ROLLOVER: Supervisor._on_rollover,
    protocol.ERROR: Supervisor._on_error,
    protocol.NOTE: Supervisor._on_note,
    protocol.READBACK: Supervisor._on_readback,
    protocol.BAD_BLOCK: Supervisor._on_bad_block,
    protocol.STATS: None,
    protocol.HEARTBEAT: Supervisor._on_heartbeat,
}
#: The rest are the supervisor's and the sender's own (a test checks that every
#: type is in exactly one of the two).
NOT_FROM_CHILDREN = (protocol.HELLO, protocol.STOP, protocol.PONG, protocol.BYE)
