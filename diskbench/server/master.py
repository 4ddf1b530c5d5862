"""The run loop: start-up wiring, the liveness tick, the completion rule,
signals and the operator's requests, shutdown.

The main thread only loops: every TICK_S it marks silent clients went away,
asks clients live past their planned end to stop, releases GO when it is
due, and checks the completion rule. Signal handlers
only record the signal and wake the loop (gunicorn's arbiter style); the
shutdown work happens in the loop: stop accepting, ask live clients to stop,
give them --shutdown-grace seconds to send their summaries, write the report
(finalreport.py), flush and fsync the logs, return the exit code. The
listener is listener.py; the log dir's claim and resume are logdir.py.
"""
import logging
import os
import signal
import socket
import sys
import threading
import time

from diskbench import __version__, exitcodes, plan, protocol, runclock
from diskbench.cli import display_path, join_host_port, say
from diskbench.compat import monotonic, write_text
from diskbench.metrics import utc
from diskbench.signals import SignalFlag
from diskbench.server import console as console_mod
from diskbench.server.deadlines import Deadlines
from diskbench.server import control as control_mod
from diskbench.server import event, finalreport, go, listener, log, logdir
from diskbench.server import handler as handler_mod
from diskbench.server import ioloop as ioloop_mod
from diskbench.server import interpreter
from diskbench.server import recorder as recorder_mod
from diskbench.server import liveness
from diskbench.server import registry as reg
from diskbench.server.finalreport import OPERATOR_END, OPERATOR_ENDED

#: How often the main loop checks liveness, GO, completion and connection
#: deadlines (seconds).
TICK_S = 0.2
#: Connection deadlines (--hello-timeout, --read-timeout) are enforced with
#: this granularity (only the connections whose deadline came: deadlines.py).
DEADLINE_CHECK_S = 1.0
#: A gap this long between two ticks means the server itself did not run
#: (SIGSTOP, a frozen VM, starvation): every deadline is moved by the gap.
PAUSE_GAP_S = 2.0
#: Signals that end the run with a report: SIGHUP is an ssh session dropping.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def silence_bound_s(heartbeat_timeout=None, rejoin_grace=None, idle_timeout=0.0):
    """The longest a run goes on after the last message any client sends (the
    server running, not paused): a silent client is went away within its
    timeout W (--heartbeat-timeout, else at most liveness.MAX_WENT_AWAY_S)
    and the liveness check's step, then waited for (--rejoin-grace R, else
    REJOIN_GRACE_TIMEOUTS x W; a failed client's summary: SUMMARY_GRACE_S),
    then complete (--idle-timeout without --clients) at a tick. The README's
    formula; the report follows."""
    went_away = heartbeat_timeout if heartbeat_timeout is not None \
        else liveness.MAX_WENT_AWAY_S
    grace = rejoin_grace if rejoin_grace is not None \
        else liveness.REJOIN_GRACE_TIMEOUTS * went_away
    return (went_away + liveness.LIVENESS_CHECK_S + max(grace, liveness.SUMMARY_GRACE_S) +
            idle_timeout + 2 * TICK_S)


def run_end_bound_s(max_duration=plan.MAX_RUN_S, clients=0, heartbeat_timeout=None,
                    rejoin_grace=None, idle_timeout=0.0):
    """The longest a run goes on after the last go the server sends (the
    server running, not paused), whatever its clients do: a client starts
    within the start lead (go.START_LEAD_S + START_LEAD_PER_CLIENT_S for each
    of up to ``clients``), writes at most --max-duration (a verifying one
    reads back for READBACK_ALLOWANCE x that more), ends within the end
    spread (protocol.END_SPREAD_MAX_S); OVERRUN_GRACE_S later (and the
    check's step) it is asked to stop, as long again later it is failed,
    and its summary is waited for (SUMMARY_GRACE_S); a client that went
    silent on the way is bounded by ``silence_bound_s`` (it may come back
    within its rejoin grace: one more check's step). The README's formula."""
    planned = max_duration * (1 + liveness.READBACK_ALLOWANCE)
    lead = go.START_LEAD_S + go.START_LEAD_PER_CLIENT_S * clients
    overrun = 2 * liveness.OVERRUN_GRACE_S + 3 * liveness.LIVENESS_CHECK_S + \
        liveness.SUMMARY_GRACE_S
    return lead + planned + protocol.END_SPREAD_MAX_S + overrun + silence_bound_s(
        heartbeat_timeout, rejoin_grace, idle_timeout)


class Master(object):
    """One benchmark run. ``open_logs()`` and ``bind()`` may raise; ``run()`` returns
    the exit code."""

    def __init__(self, args, out=None, clock=runclock.wall):
        self.args = args
        self.out = out or sys.stdout
        self.wall = clock
        self.secret = args.secret
        self.read_timeout = args.read_timeout
        self.hello_timeout = args.hello_timeout
        self.max_line_bytes = args.max_line_bytes
        self.max_connections = args.max_connections   # lowered by fit_fd_limit
        self.max_per_address = args.max_per_address
        self.run_id = "%s-%d" % (time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
                                 os.getpid())
        self.registry = reg.Registry(
            expected_clients=args.clients, heartbeat_timeout=args.heartbeat_timeout,
            idle_timeout=args.idle_timeout, start_timeout=args.start_timeout,
            max_clients=args.max_clients, rejoin_grace=args.rejoin_grace,
            stall_timeout=args.stall_timeout, require_all=args.require_all,
            plan_given=getattr(args, "plan", None), wall=clock,
            max_duration=getattr(args, "max_duration", plan.MAX_RUN_S))
        self.recorder = recorder_mod.Recorder(args.log_dir)
        self.ioloop = ioloop_mod.IOLoop(self)   # established connections
        self.claim = None             # LOCK_FILE's descriptor once open_logs took it
        self.server = None
        self.wake = threading.Event()
        self.signals = SignalFlag(wake=self.wake.set)   # installed by run()
        self._handlers = []
        self._log_was = None          # (level, propagate) of the server logger before run()
        self.started = None           # wall time the run started (kept on resume)
        self.resumed = None           # "resumed run X with N clients, M records"
        self.startup_warnings = []    # said once logging is up
        self.startup_notes = []       # logged once logging is up
        self.conn_lock = threading.Lock()
        self.connections = {}         # conn_id -> live Handler (deadlines)
        self.conn_deadlines = Deadlines()   # conn_id -> when to look at its deadline
        self.last_tick = None         # monotonic() of the previous tick
        self.next_expiry = None       # monotonic() of the next connection-deadline scan
        self.pauses = []              # report sentences, one per server pause
        self.clock_steps = runclock.StepWatch("the server's")
        self.recorder_died = False
        self.control = None           # control_mod.ControlServer once run() opened it
        self.ends = 0                 # `ctl end` requests (the control thread counts)
        self.interrupted_by = None    # signal name or OPERATOR_END, once interrupted
        self.finishing = False        # the run is complete: the report is coming
        self.tuned = None             # what interpreter.tune changed (bind)
        self.collector = interpreter.FullCollector()
        self.cpu_gauge = None         # interpreter.CpuGauge, from the run's start
        self.console = console_mod.Console(
            self.out, self.registry, console_mod.console_mode(self.out, args.quiet),
            verbose=args.verbose, interval=args.progress_interval,
            wall=clock, extra_warnings=self.pauses)
        self.max_connections = listener.fit_fd_limit(self.max_connections,
                                                     self.startup_warnings.append)

    # --- start-up (errors become exit codes in __main__) ------------------------------
    def open_logs(self):
        """Create the log dir, or resume the unfinished run in it (logdir.py).

        Raises logdir.FinishedRun when it holds a finished run, LogDirTaken or
        control.ServerRunning when another server has it, IOError/OSError when
        it cannot be used.
        """
        log_dir = self.args.log_dir
        logdir.create(log_dir)
        self.claim = logdir.claim_log_dir(log_dir)   # raises LogDirTaken
        logdir.check_reusable(log_dir)   # raises ServerRunning, FinishedRun
        if logdir.holds_a_run(log_dir):
            self.run_id, self.started, self.resumed = logdir.resume(
                log_dir, self.registry, self.run_id, self.wall,
                self.startup_warnings.append)
        else:
            self.started = self.wall()
            logdir.write_marker(log_dir, self.run_id, self.started,
                                getattr(self.args, "plan", None))
        self.recorder.open()

    def abandon(self):
        """Start-up failed after open_logs (e.g. bind): a fresh, empty run leaves no
        marker behind, so the next start is a fresh run too."""
        self.recorder.close()
        self._untune()
        self._release_claim()
        if self.resumed is None:
            logdir.forget_fresh_run(self.args.log_dir)

    def _untune(self):
        if self.tuned is not None:
            interpreter.restore(self.tuned)
            self.tuned = None

    def connection_started(self, handler):
        with self.conn_lock:
            self.connections[handler.conn_id] = handler
            self.conn_deadlines.watch(handler.conn_id, handler.deadline)

    def connection_ended(self, handler):
        with self.conn_lock:
            self.connections.pop(handler.conn_id, None)
            self.conn_deadlines.forget(handler.conn_id)
            self.collector.connection_closed()

    def bind(self):
        threading.stack_size(listener.HANDLER_STACK_BYTES)  # for the threads made from now on
        if self.tuned is None:
            self.tuned, cpus = interpreter.tune(getattr(self.args, "cpu",
                                                        interpreter.CPU_AUTO))
            if cpus is not None:
                self.startup_notes.append("running on CPU %s (--cpu)"
                                          % interpreter.format_cpus(cpus))
            too_many = interpreter.capacity_warning(self.args.clients)
            if too_many:
                self.startup_warnings.append(too_many)
            tunables = os.environ.get(interpreter.TUNABLES_ENV)
            if tunables:   # glibc's per-thread cache (interpreter.reexec_untcached)
                self.startup_notes.append("malloc: %s=%s" % (interpreter.TUNABLES_ENV,
                                                             tunables))
        family, address = listener.listen_address(self.args.host, self.args.port)
        self.server = listener.TCPServer(address, self, family)
        if self.server.dual_stack:
            self.startup_notes.append("--host :: takes IPv4 clients too (dual stack)")
        elif self.server.dual_stack is False:
            self.startup_warnings.append(
                "--host :: listens on IPv6 only (this system keeps IPv6 sockets from "
                "IPv4): IPv4 clients cannot connect; give --host 0.0.0.0 for them")
        return self.server.server_address[:2]

    def listening_on(self):
        """HOST:PORT the server listens on, as a client's --server takes it
        (an IPv6 address in brackets: ``[::1]:7878``)."""
        return join_host_port(*self.server.server_address[:2])

    def _setup_logging(self):
        root = log
        self._log_was = (root.level, root.propagate)   # teardown puts them back
        root.setLevel(logging.INFO)
        root.propagate = False
        file_handler = recorder_mod.RecorderLogHandler(self.recorder)
        root.addHandler(file_handler)
        self._handlers.append((root, file_handler))
        for logger, handler in self.console.handlers():
            logger.addHandler(handler)
            self._handlers.append((logger, handler))

    def _teardown_logging(self):
        for logger, handler in self._handlers:
            logger.removeHandler(handler)
        self._handlers = []
        if self._log_was is not None:
            log.setLevel(self._log_was[0])
            log.propagate = self._log_was[1]
            self._log_was = None

    # --- the run ---------------------------------------------------------------------
    def run(self):
        self.recorder.start()
        self._setup_logging()
        self.signals.install(STOP_SIGNALS)
        self._open_control()
        if self.started is None:
            self.started = self.wall()
        started = self.started
        where = self.listening_on()
        write_text(self.out, "diskbench server %s listening on %s (log dir %s)\n" % (
            __version__, where, display_path(os.path.abspath(self.args.log_dir))))
        self.out.flush()
        log.info("diskbench server %s (protocol %d) run %s listening on %s, log dir %s",
                 __version__, protocol.PROTOCOL_VERSION, self.run_id, where,
                 os.path.abspath(self.args.log_dir))
        log.info("limits: lines up to %d bytes, %d connections (%d per address), %d "
                 "client names, hello within %g s, a line every %g s", self.max_line_bytes,
                 self.max_connections, self.max_per_address,
                 self.registry.max_clients or 0, self.hello_timeout, self.read_timeout)
        silence = (self.args.heartbeat_timeout, self.args.rejoin_grace,
                   self.args.idle_timeout)
        log.info("the run ends at most %g s after the last go it sends (run_end_bound_s "
                 "of --max-duration, --max-clients and those below), at most %g s after "
                 "its clients' last message (silence_bound_s of --heartbeat-timeout, "
                 "--rejoin-grace, --idle-timeout)", run_end_bound_s(
                     self.registry.max_duration, self.registry.max_clients or 0,
                     *silence), silence_bound_s(*silence))
        for text in self.startup_notes:
            log.info("%s", text)
        for text in self.startup_warnings:
            log.warning("%s", text)
            say("diskbench server", text, kind="warning")
        if self.resumed:
            self.registry.resumed("the server restarted; waiting for it to reconnect")
            event.info("%s", self.resumed)
        self.cpu_gauge = interpreter.CpuGauge()
        thread = threading.Thread(target=self.server.serve_forever, name="tcp-server",
                                  kwargs=dict(poll_interval=TICK_S))
        thread.daemon = True
        self.ioloop.start()
        thread.start()
        try:
            while self.signals.first is None and not self.ends:
                self._tick()
                self._step("console", self.console.tick)
                if self._step("completion", self.registry.is_complete):
                    self.finishing = True
                    event.info("run complete: %s", "no client came and none will (every "
                               "host will not come)" if self.registry.none_coming and
                               not self.registry.clients else
                               "every client is finished, failed or gone")
                    break
                if not self.recorder.alive():  # by design it cannot die: stop loudly
                    self.recorder_died = True
                    event.warning("the recorder thread stopped: nothing more can be "
                                  "recorded; ending the run with what is known")
                    break
                self.wake.wait(TICK_S)
            self.console.finish()
            self.server.shutdown()
            self.server.server_close()
            if self.signals.first is not None or self.ends:
                self.interrupted_by = (_signal_name(self.signals.first)
                                       if self.signals.first is not None
                                       else OPERATOR_END)
                self._interrupted()
            code = finalreport.write(self, started, self._exit_code())
        finally:
            if self.control is not None:
                self.control.close()
            self.signals.restore()
            self.ioloop.stop()
            self.recorder.close()
            self._teardown_logging()
            self._untune()
            self._release_claim()
        return code

    def _release_claim(self):
        if self.claim is not None:
            os.close(self.claim)     # (the lock goes with it)
            self.claim = None

    def _tick(self):
        now = monotonic()
        gap = 0.0 if self.last_tick is None else now - self.last_tick - TICK_S
        self.last_tick = now
        if gap >= PAUSE_GAP_S:
            self._paused(gap, self._handlers_now())
        if self.next_expiry is None or now >= self.next_expiry:
            self.next_expiry = now + DEADLINE_CHECK_S
            for handler in self._handlers_due(now):
                if not handler.expire_if_due(now) and handler.expired is None:
                    self.watch_connection(handler)   # its deadline moved on
        self._step("overrun", self._stop_overruns)   # before silence: see liveness.py
        self._step("liveness", self.registry.check_liveness)
        self._step("recorder lag and collector", self._housekeeping)
        busy = self._step("CPU gauge", self.cpu_gauge.sample)
        if busy:
            event.warning("%s", busy)
        self._step("go release", self._release_go)
        self._step("require-all", self._require_all)

    def _housekeeping(self):
        """The recorder's lag and the collector (a step of the tick)."""
        self.recorder.check_lag()
        if self.recorder.held is not None:
            self._ping_held_hellos()
        self.collector.maybe_collect(len(self.connections))
        self._clock_stepped()

    def _ping_held_hellos(self):
        """While the log dir cannot be written no hello is acknowledged and no
        go sent: each connection waiting for its first ack is pinged once, so
        its client knows the server is there (README: clients wait through a
        full log dir)."""
        pinged = sum(1 for handler in self._handlers_now() if handler.ping_while_held())
        if pinged:
            log.info("pinged %d clients whose hello waits for the log dir to be "
                     "writable", pinged)

    def _clock_stepped(self):
        """A step of the server's wall clock, said once (runclock.StepWatch):
        in server.log and among the report's warnings."""
        text = self.clock_steps.check()
        if text:
            log.warning("%s", text)
            self.pauses.append(text)

    def _stop_overruns(self):
        """The server's stop to every client live past its planned end (a
        step of the tick; liveness.OVERRUN_GRACE_S)."""
        for _name, sender, why in self.registry.check_overrun():
            sender(protocol.make(protocol.STOP, protocol.S2C, reason=why))

    def _release_go(self):
        """Go to every client it is due to (a step of the tick; a go that
        cannot be made or sent fails that client alone: handler.send_go)."""
        handler_mod.send_go(self.registry.release_go(), self.run_id)

    @staticmethod
    def _step(what, func, *args):
        """One step of the tick; an unexpected error is logged with its
        traceback and the loop goes on (a client it concerns is failed where
        the step knows it: registry.check_liveness, handler.send_go)."""
        try:
            return func(*args)
        except Exception:
            log.exception("internal error in the main loop (%s); the run goes on", what)
            return None

    def _require_all(self):
        if self.registry.require_all and self.registry.short_start and \
                self.registry.aborted is None:
            why = ("only %s expected clients said hello within --start-timeout %g s "
                   "and --require-all is set" % (self.registry.short_start,
                                                 self.registry.start_timeout))
            stop = protocol.make(protocol.STOP, protocol.S2C, reason=why)
            for _name, sender in self.registry.abort(why):
                sender(stop)

    def _handlers_now(self):
        with self.conn_lock:
            return list(self.connections.values())

    def _handlers_due(self, now):
        """The connections whose deadline may have passed (no scan of all)."""
        with self.conn_lock:
            return [self.connections[key] for key in self.conn_deadlines.due_now(now)
                    if key in self.connections]

    def watch_connection(self, handler):
        """Have the tick look at ``handler`` by its deadline (at its start, and
        when a hello sets a deadline that may come sooner)."""
        deadline = handler.deadline
        with self.conn_lock:
            if deadline is not None and handler.conn_id in self.connections:
                self.conn_deadlines.watch(handler.conn_id, deadline)

    def _paused(self, gap, handlers):
        """The server did not run for ``gap`` s: nobody is blamed for it."""
        log.warning("the server did not run for %.1f s (stopped, frozen or starved): "
                    "moving every client's deadline by that much", gap)
        self.pauses.append("the server itself did not run for %.1f s at %s (stopped, "
                           "frozen or starved); clients' deadlines were moved by that "
                           "much" % (gap, utc(self.wall() - gap)))
        self.registry.server_paused(gap)
        for handler in handlers:   # (their heap entries now come early: re-armed)
            handler.extend_deadline(gap)

    # --- the operator: signals and the control socket --------------------------------
    def _open_control(self):
        """LOG_DIR/control.sock for `python -m diskbench.server ctl`; a run
        without it goes on (with a warning)."""
        control = control_mod.ControlServer(
            self.args.log_dir, self.secret, self.registry, self.operator_stop,
            self.operator_end, self.run_id)   # signed on the ctl's own system clock
        try:
            control.open()
        except (socket.error, OSError) as exc:
            text = ("no control socket (%s): python -m diskbench.server ctl cannot "
                    "reach this run; SIGINT still ends it" % (
                        getattr(exc, "strerror", None) or exc))
            log.warning("%s", text)
            say("diskbench server", text, kind="warning")
            return
        self.control = control

    def operator_stop(self, name):
        """`ctl stop NAME` sent the client its stop (control thread)."""
        event.info("the operator asked client %s to stop (ctl stop)", name)

    def operator_end(self):
        """`ctl end` (control thread): end the run as one SIGINT does, a second
        request (or signal) as two do. Returns what happens, in words."""
        self.ends += 1
        self.wake.set()
        if self.finishing:
            return "the run is already complete: the report is being written"
        if self.ends + self.signals.count >= 2:
            return ("ending the run at once: not waiting any longer for clients' "
                    "summaries; the report follows")
        return ("ending the run: every live client is asked to stop, up to %g s "
                "(--shutdown-grace, and the end spread their go gave) for their "
                "summaries, then the report"
                % (self.args.shutdown_grace + self.registry.end_spread_s))

    def _interrupted(self):
        """SIGINT/SIGTERM/SIGHUP or `ctl end`: ask every live client to stop and
        wait up to --shutdown-grace (and the end spread) for their summaries;
        a second signal or `ctl end` cuts the wait short."""
        cause = self.interrupted_by
        if cause == OPERATOR_END:
            event.info("%s: no new connections; asking live clients to stop",
                       OPERATOR_ENDED)
            why = OPERATOR_ENDED
        else:
            event.info("%s received: no new connections; asking live clients to stop",
                       cause)
            why = "the server was interrupted (%s)" % cause
        stop = protocol.make(protocol.STOP, protocol.S2C, reason=why)
        for _name, sender in self.registry.live_senders():
            sender(stop)
        # their summaries are held for up to the end spread their go gave
        # (self.wall is runclock's: a clock step does not move this deadline)
        deadline = self.wall() + self.args.shutdown_grace + self.registry.end_spread_s
        self.wake.clear()
        while self.registry.live_senders() and self.signals.count + self.ends < 2 and \
                self.wall() < deadline:
            self.wake.wait(TICK_S)
        if self.signals.count + self.ends >= 2:
            event.info("interrupted again: not waiting for the clients' summaries")
        self.registry.mark_unfinished("had not finished when %s" % (
            OPERATOR_ENDED if cause == OPERATOR_END
            else "the server was interrupted (%s)" % cause))

    def _exit_code(self):
        if self.interrupted_by is not None:
            return exitcodes.SERVER_INTERRUPTED
        if self.registry.bad_data():
            return exitcodes.SERVER_BAD_DATA
        if self.registry.all_finished() and self.registry.short_start is None:
            return exitcodes.OK
        return exitcodes.SERVER_INCOMPLETE

def _signal_name(signum):
    return {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM",
            signal.SIGHUP: "SIGHUP"}.get(signum, "signal %s" % signum)
