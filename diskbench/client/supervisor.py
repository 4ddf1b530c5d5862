"""The client's main process: hello, children, relaying, duration, shutdown.

Timeline: connect + hello -> wait for GO -> start writer, stats, heartbeat ->
relay their pipe messages to the sender (the writer sends START once its
first file is open) -> stop after --duration (counted from GO), on a signal,
when the server asks, or when a child dies -> stop children (pipe command,
then SIGTERM, then SIGKILL, each bounded) -> remove leftover data files ->
STOP with the summary, BYE, wait (bounded: --deliver-timeout) for the final
ACK -> exit code.

A server outage never pauses the writer: the sender keeps everything
unacknowledged (bounded) and reconnects for as long as the run lasts. If the
server still has not acknowledged everything --deliver-timeout after the
stop, the unacknowledged wire lines are saved to ``cfg["undelivered_path"]``
(JSON lines, exactly as they would have been sent), the log says how many
(a signal during that wait cuts it short),
and a run that would have exited OK exits CLIENT_SERVER instead (its results
are not at the server).
"""
import ctypes
import glob
import os
import signal

from diskbench import exitcodes, protocol
from diskbench.client import heartbeat, stats, writer
from diskbench.client.sender import Sender
from diskbench.compat import monotonic, mp_context, wait_readable
from diskbench.metrics import MIB

#: The main loop wakes at least this often (a dead child is seen within it).
LOOP_TICK_S = 0.2
#: Most messages taken from one pipe per wake-up (fairness between children).
DRAIN_BATCH = 200
#: Children get this long to stop after the stop command, then SIGTERM ...
CHILD_STOP_TIMEOUT_S = 15.0
#: ... and this long after SIGTERM before SIGKILL.
CHILD_KILL_TIMEOUT_S = 3.0
#: How long to wait for the server to acknowledge STOP and BYE (and anything
#: still unacknowledged) by default; --deliver-timeout overrides it.
FINAL_ACK_TIMEOUT_S = 30.0
#: Once the results are acknowledged, the bye gets this much longer for its
#: own ack (the server may exit right after the stop summary; not waited for).
BYE_GRACE_S = 0.5
#: Env var choosing the multiprocessing start method (fork/spawn/forkserver).
START_METHOD_ENV = "DISKBENCH_START_METHOD"

WRITER, STATS, HEARTBEAT = "writer", "stats", "heartbeat"


class _Signals(object):
    received = None
    count = 0


def _on_signal(signum, frame):
    _Signals.received = signum  # only a flag: the loop does the work
    _Signals.count += 1


class Outcome(object):
    """How the run ended: STOP reason, exit code, and a line for the log."""

    def __init__(self, reason, code, text):
        self.reason, self.code, self.text = reason, code, text


class Supervisor(object):
    def __init__(self, cfg, hello_fields, log):
        self.cfg = cfg
        self.log = log
        self.sender = Sender(cfg["host"], cfg["port"], cfg["name"], hello_fields,
                             secret=cfg.get("secret"), log=log)
        self.procs = {}       # role -> Process
        self.conns = {}       # role -> parent end of its pipe
        self.counters = None
        self.rollovers = 0
        self.io_s = 0.0
        self.writer_error = None
        self.t_go = None
        self.started = False

    # --- entry ---------------------------------------------------------------------
    def run(self):
        _Signals.received = None
        _Signals.count = 0
        old = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            old[signum] = signal.signal(signum, _on_signal)
        try:
            return self._run()
        finally:
            for signum, handler in old.items():
                signal.signal(signum, handler)

    def _run(self):
        cfg, log = self.cfg, self.log
        where = "%s:%d" % (cfg["host"], cfg["port"])
        self.sender.start()
        if not self.sender.wait_connected(cfg["connect_timeout_s"]):
            self.sender.close(0)
            return self._fail(exitcodes.CLIENT_SERVER, "cannot reach the diskbench server "
                              "at %s within %g s (%s); start the server or fix --server / "
                              "--connect-timeout" % (where, cfg["connect_timeout_s"],
                                                     self.sender.last_error))
        outcome = self._wait_for_go(where)
        if outcome is not None:
            return self._finish(outcome)
        self.t_go = monotonic()
        log.info("go from server (run %s); starting writer, stats and heartbeat",
                 self.sender.run_id)
        self._start_children()
        outcome = self._loop()
        return self._finish(outcome)

    def _fail(self, code, text):
        self.log.error("%s", text)
        return code

    def _wait_for_go(self, where):
        while not self.sender.go.wait(LOOP_TICK_S):
            if self.sender.rejected is not None:
                return Outcome(None, exitcodes.CLIENT_SERVER,
                               "server refused us: %s" % self.sender.rejected)
            if _Signals.received is not None:
                return Outcome(protocol.STOP_SIGNAL, exitcodes.CLIENT_INTERRUPTED,
                               "interrupted by signal %d before the run started"
                               % _Signals.received)
            if self.sender.server_stop is not None:
                return Outcome(protocol.STOP_SERVER, exitcodes.CLIENT_INTERRUPTED,
                               "server asked us to stop: %s" % self.sender.server_stop)
            if self.sender.disconnected_for() > self.cfg["connect_timeout_s"]:
                return Outcome(None, exitcodes.CLIENT_SERVER, "lost the server at %s "
                               "before the run started (%s); check the server"
                               % (where, self.sender.last_error))
        if self.sender.rejected is not None:
            return Outcome(None, exitcodes.CLIENT_SERVER,
                           "server refused us: %s" % self.sender.rejected)
        return None

    # --- children ---------------------------------------------------------------------
    def _start_children(self):
        cfg = self.cfg
        ctx = mp_context(cfg.get("start_method"))
        child_cfg = dict((k, v) for k, v in cfg.items() if k != "secret")
        self.counters = (ctx.RawValue(ctypes.c_longlong, 0),
                         ctx.RawValue(ctypes.c_longlong, 0),
                         ctx.RawValue(ctypes.c_double, monotonic()))
        # Children must not get Ctrl-C (only the supervisor does): they set SIG_IGN
        # first thing, and inherit it here too so no early SIGINT kills them.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self._spawn(ctx, WRITER, writer.writer_main, (child_cfg, self.counters))
            wpid = self.procs[WRITER].pid
            self._spawn(ctx, STATS, stats.stats_main, (child_cfg, wpid))
            self._spawn(ctx, HEARTBEAT, heartbeat.heartbeat_main,
                        (child_cfg, wpid, self.counters))
        finally:
            signal.signal(signal.SIGINT, previous)
        self.log.info("children started: writer pid %d, stats pid %d, heartbeat pid %d",
                      wpid, self.procs[STATS].pid, self.procs[HEARTBEAT].pid)

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
        msg = self.sender.send(type_, **fields)
        if msg is None:
            return  # invalid: the sender has logged why
        log = self.log
        if type_ == protocol.PERF:
            self.io_s += msg.io_s
        elif type_ == protocol.START:
            self.started = True
            log.info("start: writer pid %d writing %d MiB chunks to %d MiB files in %s "
                     "(sync_mode=%s, preallocate=%s)", msg.writer_pid,
                     self.cfg["chunk_bytes"] // MIB, self.cfg["file_bytes"] // MIB,
                     self.cfg["directory"], msg.sync_mode, msg.preallocate)
        elif type_ == protocol.ROLLOVER:
            self.rollovers += 1
            log.info("rollover: file %d closed at %d MiB (fsync+close %.3f s)",
                     msg.file_index, msg.file_bytes // MIB, msg.close_s)
        elif type_ == protocol.ERROR:
            log.error("error from %s: %s", msg.source, msg.reason)
            if role == WRITER and msg.fatal:
                self.writer_error = msg
        elif type_ == protocol.NOTE:
            log.warning("note from %s: %s", role, msg.text)

    def _dead_child(self):
        for role, proc in sorted(self.procs.items()):
            if proc.exitcode is not None:
                return role, proc
        return None, None

    def _loop(self):
        cfg = self.cfg
        while True:
            self._drain(LOOP_TICK_S)
            role, proc = self._dead_child()
            if role is not None:
                return self._child_died(role, proc)
            if _Signals.received is not None:
                return Outcome(protocol.STOP_SIGNAL, exitcodes.CLIENT_INTERRUPTED,
                               "interrupted by signal %d" % _Signals.received)
            if self.sender.server_stop is not None:
                return Outcome(protocol.STOP_SERVER, exitcodes.CLIENT_INTERRUPTED,
                               "server asked us to stop: %s" % self.sender.server_stop)
            if self.sender.rejected is not None:
                return Outcome(protocol.STOP_ERROR, exitcodes.CLIENT_SERVER,
                               "server refused us: %s" % self.sender.rejected)
            if monotonic() - self.t_go >= cfg["duration_s"]:
                return Outcome(protocol.STOP_DURATION, exitcodes.OK,
                               "ran the configured %g s" % cfg["duration_s"])

    def _child_died(self, role, proc):
        # Let the last words (an ERROR from the writer) arrive first.
        deadline = monotonic() + LOOP_TICK_S
        while role in self.conns and monotonic() < deadline:
            if not self._drain(LOOP_TICK_S / 4):
                break
        code = proc.exitcode
        if role == WRITER and (code == writer.EXIT_DISK_ERROR or self.writer_error):
            reason = self.writer_error.reason if self.writer_error else "disk error"
            return Outcome(protocol.STOP_ERROR, exitcodes.CLIENT_DISK_ERROR,
                           "the writer stopped on a disk error: %s" % reason)
        how = ("killed by signal %d" % -code) if code < 0 else ("exit code %d" % code)
        text = "%s process (pid %d) died unexpectedly (%s)" % (role, proc.pid, how)
        self.log.error("%s", text)
        self.sender.send(protocol.ERROR, source=role, reason=text, errno=None, fatal=True)
        return Outcome(protocol.STOP_ERROR, exitcodes.CLIENT_CHILD_DIED, text)

    def _stop_children(self):
        for role, conn in list(self.conns.items()):
            try:
                conn.send(writer.CMD_STOP)
            except (OSError, IOError, EOFError):
                pass
        deadline = monotonic() + CHILD_STOP_TIMEOUT_S
        while monotonic() < deadline and any(
                p.exitcode is None for p in self.procs.values()):
            self._drain(LOOP_TICK_S / 2)
        for sig, wait_s in ((signal.SIGTERM, CHILD_KILL_TIMEOUT_S),
                            (signal.SIGKILL, CHILD_KILL_TIMEOUT_S)):
            alive = [p for p in self.procs.values() if p.exitcode is None]
            if not alive:
                break
            for p in alive:
                self.log.warning("%s (pid %d) did not stop; sending signal %d",
                                 p.name, p.pid, sig)
                try:
                    os.kill(p.pid, sig)
                except OSError:
                    pass
            end = monotonic() + wait_s
            while monotonic() < end and any(p.exitcode is None for p in alive):
                self._drain(LOOP_TICK_S / 2)
        while self.conns and self._drain(0):
            pass
        for proc in self.procs.values():
            proc.join(0.5)
        for conn in self.conns.values():
            conn.close()
        self.conns = {}

    def _remove_leftovers(self):
        """Data files of a writer that could not clean up (e.g. kill -9)."""
        if self.cfg["keep_data"] or WRITER not in self.procs:
            return
        pattern = os.path.join(self.cfg["directory"], writer.data_file_prefix(
            self.cfg["name"], self.procs[WRITER].pid) + "*.dat")
        for path in glob.glob(pattern):
            try:
                os.unlink(path)
                self.log.info("removed leftover data file %s", path)
            except OSError as exc:
                self.log.warning("could not remove %s: %s", path, exc)

    # --- the end ------------------------------------------------------------------------
    def _finish(self, outcome):
        log, sender = self.log, self.sender
        if self.procs:
            self._stop_children()
            self._remove_leftovers()
        elapsed = monotonic() - self.t_go if self.t_go is not None else 0.0
        nbytes = int(self.counters[0].value) if self.counters else 0
        chunks = int(self.counters[1].value) if self.counters else 0
        if outcome.reason is not None:
            sender.send(protocol.STOP, reason=outcome.reason, bytes_written=nbytes,
                        chunks_written=chunks, rollovers=self.rollovers,
                        elapsed_s=elapsed, io_s=self.io_s,
                        dropped_messages=sender.make_room(2))  # room for stop + bye
            sender.send(protocol.BYE)
        code = outcome.code
        if outcome.reason is not None:
            code = self._deliver(code)
        mib_s = nbytes / float(MIB) / self.io_s if self.io_s > 0 else 0.0
        level = log.info if code == exitcodes.OK else log.error
        level("stop (%s): %s; %d MiB in %d chunks, %d rollovers, %.1f s, %.1f MiB/s "
              "while writing, %d messages dropped; exit code %d",
              outcome.reason or "refused", outcome.text, nbytes // MIB, chunks,
              self.rollovers, elapsed, mib_s, sender.dropped, code)
        if outcome.reason is None:
            sender.close(0)
        return code

    def _deliver(self, code):
        """Wait (bounded) for the final ack; save what never got one.

        Returns the exit code: OK becomes CLIENT_SERVER when messages were
        not delivered; a more specific failure code is kept.
        """
        log, sender = self.log, self.sender
        timeout = self.cfg.get("deliver_timeout_s", FINAL_ACK_TIMEOUT_S)
        pending = sender.pending()
        if pending and not sender.connected():
            log.warning("server unreachable (%s); trying for up to %g s more to deliver "
                        "%d unacknowledged messages", sender.last_error, timeout, pending)
        deadline = monotonic() + timeout
        signals = _Signals.count
        while monotonic() < deadline and _Signals.count == signals:
            if sender.wait_delivered(min(LOOP_TICK_S, max(0.0, deadline - monotonic()))):
                break
            if sender.rejected is not None:
                break
        if _Signals.count != signals:
            log.warning("signal %d: not waiting any longer for the server's ack",
                        _Signals.received)
        if sender.wait_delivered(0):
            sender.wait_delivered(BYE_GRACE_S, everything=True)
        if sender.close(0):
            return code
        lines = sender.unacked_lines()
        where = self._save_undelivered(lines)
        log.error("the server did not acknowledge %d messages within %g s after the stop "
                  "(%s; %d dropped earlier); %s", len(lines), timeout,
                  sender.last_error or "no ack", sender.dropped, where)
        return exitcodes.CLIENT_SERVER if code == exitcodes.OK else code

    def _save_undelivered(self, lines):
        path = self.cfg.get("undelivered_path")
        if not path:
            return "they are lost"
        try:
            with open(path, "ab") as f:
                for line in lines:
                    f.write(line)
        except (IOError, OSError) as exc:
            return "and they could not be saved to %s (%s)" % (path, exc)
        return "they are saved, one JSON message per line, in %s" % path
