"""The run: TCP server thread, liveness tick, completion rule, signals, shutdown.

The main thread only loops: every TICK_S it marks silent clients went away,
releases GO when it is due, and checks the completion rule. Signal handlers
only record the signal and wake the loop (gunicorn's arbiter style); the
shutdown work happens in the loop: stop accepting, ask live clients to stop,
give them --shutdown-grace seconds to send their summaries, write the report,
flush and fsync the logs, return the exit code.

A log dir holding an unfinished run (run.json or perf.jsonl, no report.json)
is resumed: every record is replayed into the registry and the run goes on
appending to the same files (a server killed mid-run loses nothing it
acknowledged). A log dir holding a finished run (report.json) is refused.
"""
import errno
import json
import logging
import os
import signal
import socket
import sys
import threading
import time

from diskbench import __version__, exitcodes, protocol
from diskbench import report as outputs
from diskbench.cli import prog_name
from diskbench.report import readers
from diskbench.compat import as_bytes, monotonic, socketserver, start_new_thread
from diskbench.fsutil import atomic_write
from diskbench.metrics import describe_offset, utc
from diskbench.signals import SignalFlag
from diskbench.server import console as console_mod
from diskbench.server.deadlines import Deadlines
from diskbench.server import control as control_mod
from diskbench.server import event, log
from diskbench.server import handler as handler_mod
from diskbench.server import ioloop as ioloop_mod
from diskbench.server import interpreter
from diskbench.server import recorder as recorder_mod
from diskbench.server import registry as reg
from diskbench import effects
from diskbench.server import liveness
from diskbench import states as st
from diskbench.report import build as report_build
from diskbench.report import text as report_text

#: How often the main loop checks liveness, GO, completion and connection
#: deadlines (seconds).
TICK_S = 0.2
#: The marker of a run in progress in --log-dir (run id and start time).
RUN_MARKER = "run.json"
#: The server's claim on --log-dir, held (fcntl.flock) for its whole life: a
#: second server on the same directory exits; the kernel drops the claim of a
#: server that was killed, so a restart is never blocked by it.
LOCK_FILE = "server.lock"
#: Refused connections logged per kind; further ones are counted, and logged
#: every LIMIT_LOG_EVERY.
LIMIT_LOG_MAX = 20
LIMIT_LOG_EVERY = 1000
#: Connection deadlines (--hello-timeout, --read-timeout) are enforced with
#: this granularity (only the connections whose deadline came: deadlines.py).
DEADLINE_CHECK_S = 1.0
#: A gap this long between two ticks means the server itself did not run
#: (SIGSTOP, a frozen VM, starvation): every deadline is moved by the gap.
PAUSE_GAP_S = 2.0
#: accept() failing for want of file descriptors: wait this long before the
#: next try, doubling up to ACCEPT_BACKOFF_MAX_S (instead of spinning).
ACCEPT_BACKOFF_S = 0.05
ACCEPT_BACKOFF_MAX_S = 1.0
#: File descriptors kept for everything but connections (logs, listener,
#: report files, libraries).
FD_RESERVE = 32
#: At the end, how long the recorder may take to write what is queued before
#: the report says how much is not on disk (and the exit code is not OK).
DRAIN_TIMEOUT_S = 120.0
#: Stack of each connection's thread: what a handler needs (JSON nested up to
#: the interpreter's recursion limit, then refused) with room to spare, not the
#: platform's 8 MiB: thousands of connections stay small (virtual memory).
HANDLER_STACK_BYTES = 512 * 1024
#: Signals that end the run with a report: SIGHUP is an ssh session dropping.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_FD_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


EXIT_MEANING = {
    exitcodes.OK: "every client finished",
    exitcodes.SERVER_INCOMPLETE: "a client went away, failed, never finished or never "
                                 "came, or not all it sent is on disk (see the warnings)",
    exitcodes.SERVER_INTERRUPTED: "the server was interrupted; report has what was known",
    exitcodes.SERVER_BAD_DATA: "--verify: a client's data did not come back as written",
}
#: How the report and the log name the operator's `ctl end`.
OPERATOR_END = "the operator (ctl end)"
ENDED_MEANING = "the operator ended the run (ctl end); report has what was known"


def run_end_bound_s(heartbeat_timeout=None, rejoin_grace=None, idle_timeout=0.0):
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


class FinishedRun(Exception):
    """The log dir holds a finished run; the message names the fix."""


class LogDirTaken(Exception):
    """Another server holds the log dir's LOCK_FILE; the message names the fix."""


def claim_log_dir(log_dir):
    """Take ``log_dir``'s LOCK_FILE for this process's life: returns the open
    file (keep it open), raises LogDirTaken when another server holds it."""
    import fcntl
    path = os.path.join(log_dir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.fcntl(fd, fcntl.F_GETFD) | fcntl.FD_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (IOError, OSError) as exc:
        os.close(fd)
        if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            raise
        raise LogDirTaken(
            "another server is running with --log-dir %s (it holds %s): end it (%s "
            "ctl --log-dir %s end) or give another --log-dir" % (
                log_dir, path, prog_name("diskbench.server"), log_dir))
    os.ftruncate(fd, 0)     # for a reader: who holds it
    os.write(fd, as_bytes("%d\n" % os.getpid()))
    return fd


class TCPServer(socketserver.ThreadingTCPServer):
    """Accepts; refuses a connection over --max-connections or --max-per-address
    before any thread is started for it (it is closed at once, nothing sent)."""

    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, ctx):
        self.ctx = ctx
        self.accept_failures = 0      # in the current burst of failed accepts
        # The accept queue holds a whole storm of clients connecting at once
        # (the kernel caps it at net.core.somaxconn).
        self.request_queue_size = max(self.request_queue_size, ctx.max_connections)
        self.conn_lock = threading.Lock()
        self.open_conns = {}          # accepted socket -> peer address
        self.per_address = {}         # peer address -> open connections
        socketserver.ThreadingTCPServer.__init__(self, address, handler_mod.Handler)

    def get_request(self):
        """accept(), backing off while file descriptors are exhausted: the
        listening socket stays readable, so retrying at once would spin."""
        try:
            request = socketserver.ThreadingTCPServer.get_request(self)
        except socket.error as exc:
            if getattr(exc, "errno", None) not in _FD_ERRNOS:
                raise
            self.accept_failures += 1
            self.ctx.accept_failed(exc, self.accept_failures)
            time.sleep(min(ACCEPT_BACKOFF_MAX_S,
                           ACCEPT_BACKOFF_S * 2 ** min(self.accept_failures - 1, 10)))
            raise
        if self.accept_failures:
            self.ctx.accept_recovered(self.accept_failures)
            self.accept_failures = 0
        return request

    def verify_request(self, request, client_address):
        address = client_address[0]
        ctx = self.ctx
        with self.conn_lock:
            total, mine = len(self.open_conns), self.per_address.get(address, 0)
            if total < ctx.max_connections and mine < ctx.max_per_address:
                self.open_conns[request] = address
                self.per_address[address] = mine + 1
                return True
        if total >= ctx.max_connections:
            ctx.limit_hit(reg.REJECT_TOO_MANY_CONNECTIONS, client_address,
                          "%d connections are open (--max-connections %d)"
                          % (total, ctx.max_connections))
        else:
            ctx.limit_hit(reg.REJECT_TOO_MANY_FROM_ADDRESS, client_address,
                          "%d connections from %s are open (--max-per-address %d)"
                          % (mine, address, ctx.max_per_address))
        # Close it now: Python 2.7 leaves a refused socket to the garbage collector.
        socketserver.ThreadingTCPServer.shutdown_request(self, request)
        return False

    def shutdown_request(self, request):
        # Called once for every accepted socket (refused or served), never twice.
        with self.conn_lock:
            address = self.open_conns.pop(request, None)
            if address is not None:
                left = self.per_address.get(address, 1) - 1
                if left > 0:
                    self.per_address[address] = left
                else:
                    self.per_address.pop(address, None)
        socketserver.ThreadingTCPServer.shutdown_request(self, request)

    def handle_error(self, request, client_address):
        # A handler bug must not print to the console silently and go on unseen.
        log.exception("internal error on the connection from %s", client_address)

    def process_request_thread(self, request, client_address):
        """socketserver's, but a connection whose handshake ended with an
        accepted hello is handed to the I/O threads instead of closed."""
        handler = None
        try:
            handler = self.RequestHandlerClass(request, client_address, self)
        except Exception:
            self.handle_error(request, client_address)
        if handler is not None and handler.adopted:
            self.ctx.ioloop.adopt(handler)
        else:
            self.shutdown_request(request)

    def process_request(self, request, client_address):
        """A handler thread per connection, started without waiting for it to
        run: threading.Thread.start waits, a GIL hand-over and back per
        connection, which held a storm of hellos at the accept (measured in
        docs/ARCHITECTURE.md). Like a daemon thread, it never holds up exit."""
        start_new_thread(self.process_request_thread, (request, client_address))


class Master(object):
    """One benchmark run. ``open_logs()`` and ``bind()`` may raise; ``run()`` returns
    the exit code."""

    def __init__(self, args, out=None, clock=time.time):
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
            plan_given=getattr(args, "plan", None), wall=clock)
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
        self.limit_counts = {}
        self.last_tick = None         # monotonic() of the previous tick
        self.next_expiry = None       # monotonic() of the next connection-deadline scan
        self.pauses = []              # report sentences, one per server pause
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
        self.fit_fd_limit()

    def fit_fd_limit(self):
        """Raise RLIMIT_NOFILE as far as allowed; if it still cannot hold
        --max-connections, lower that and say so (a refused connection is
        better than accept() failing for everyone)."""
        try:
            import resource
        except ImportError:  # pragma: no cover - not POSIX
            return
        want = self.max_connections + FD_RESERVE
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < want:
            target = want if hard == resource.RLIM_INFINITY else min(hard, want)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError):
                pass
        if soft != resource.RLIM_INFINITY and soft < want:
            fit = max(1, soft - FD_RESERVE)
            self.startup_warnings.append(
                "the open-file limit is %d (hard limit %s), too low for "
                "--max-connections %d: using --max-connections %d; raise it with "
                "'ulimit -n %d' (as root if needed)" % (
                    soft, "unlimited" if hard == resource.RLIM_INFINITY else hard,
                    self.max_connections, fit, want))
            self.max_connections = fit

    def accept_failed(self, exc, failures):
        """accept() failed for want of descriptors: count it, log once a burst."""
        self.registry.count_rejected(reg.REJECT_FD_EXHAUSTED)
        if failures == 1:
            log.warning("cannot accept connections: %s (out of file descriptors); "
                        "backing off and retrying; raise 'ulimit -n' or lower "
                        "--max-connections", getattr(exc, "strerror", None) or exc)

    def accept_recovered(self, failures):
        log.warning("accepting connections again after %d failed accepts (out of file "
                    "descriptors)", failures)

    # --- start-up (errors become exit codes in __main__) ------------------------------
    def open_logs(self):
        """Create the log dir, or resume the unfinished run in it.

        Raises FinishedRun when it holds a finished run, IOError/OSError when
        it cannot be used.
        """
        log_dir = self.args.log_dir
        try:
            os.makedirs(log_dir)
        except OSError as exc:   # (two servers started together: both create it)
            if exc.errno != errno.EEXIST or not os.path.isdir(log_dir):
                raise
        self.claim = claim_log_dir(log_dir)   # raises LogDirTaken
        control_mod.check_free(log_dir)   # raises ServerRunning
        if os.path.exists(os.path.join(log_dir, report_build.REPORT_JSON)):
            raise FinishedRun(
                "%s holds a finished run (%s exists): give a new --log-dir, or remove "
                "that directory to start over" % (log_dir, report_build.REPORT_JSON))
        marker = os.path.join(log_dir, RUN_MARKER)
        perf = os.path.join(log_dir, recorder_mod.PERF_LOG)
        if os.path.exists(marker) or (os.path.exists(perf) and os.path.getsize(perf)):
            self._resume(marker)
        else:
            self.started = self.wall()
            atomic_write(marker, as_bytes(json.dumps(dict(
                run_id=self.run_id, started_ts=self.started, server_pid=os.getpid(),
                protocol=protocol.PROTOCOL_VERSION), sort_keys=True, allow_nan=False) + "\n"))
        self.recorder.open()

    def abandon(self):
        """Start-up failed after open_logs (e.g. bind): a fresh, empty run leaves no
        marker behind, so the next start is a fresh run too."""
        self.recorder.close()
        self._untune()
        self._release_claim()
        if self.resumed is None:
            for name in (RUN_MARKER, recorder_mod.PERF_LOG):
                path = os.path.join(self.args.log_dir, name)
                try:
                    if name == RUN_MARKER or not os.path.getsize(path):
                        os.unlink(path)
                except OSError:
                    pass

    def _resume(self, marker):
        info, why = readers.read_marker(marker)   # validated: the file may be damaged
        if info:
            self.run_id, self.started = info["run_id"], info["started_ts"]
        else:
            self.started = self.wall()
            self.startup_warnings.append("%s unreadable (%s): the resumed run keeps "
                                         "its records under the new run id %s" % (
                                             marker, why, self.run_id))
        skipped = self.registry.restore_all(recorder_mod.read_back(
            self.args.log_dir, self.startup_warnings.append))
        if skipped:
            self.startup_warnings.append("%d records in perf.jsonl were skipped (a "
                                         "repeated seq, or no hello on record)" % skipped)
        clients = len(self.registry.clients)
        self.resumed = "resumed run %s with %d clients, %d records" % (
            self.run_id, clients, self.registry.restored)

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

    def limit_hit(self, kind, client_address, why):
        """A connection refused by a limit (accept thread): count, log sparingly."""
        self.registry.count_rejected(kind)
        with self.conn_lock:
            n = self.limit_counts[kind] = self.limit_counts.get(kind, 0) + 1
        if n <= LIMIT_LOG_MAX or n % LIMIT_LOG_EVERY == 0:
            log.warning("refused connection from %s:%s (%s): %s%s", client_address[0],
                        client_address[1], kind, why,
                        "" if n < LIMIT_LOG_MAX else
                        "; %d refused so far, logging every %dth" % (n, LIMIT_LOG_EVERY))

    def bind(self):
        threading.stack_size(HANDLER_STACK_BYTES)  # for the threads made from now on
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
        self.server = TCPServer((self.args.host, self.args.port), self)
        return self.server.server_address[:2]

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
        host, port = self.server.server_address[:2]
        self.out.write("diskbench server %s listening on %s:%d (log dir %s)\n" % (
            __version__, host, port, os.path.abspath(self.args.log_dir)))
        self.out.flush()
        log.info("diskbench server %s (protocol %d) run %s listening on %s:%d, log dir %s",
                 __version__, protocol.PROTOCOL_VERSION, self.run_id, host, port,
                 os.path.abspath(self.args.log_dir))
        log.info("limits: lines up to %d bytes, %d connections (%d per address), %d "
                 "client names, hello within %g s, a line every %g s", self.max_line_bytes,
                 self.max_connections, self.max_per_address,
                 self.registry.max_clients or 0, self.hello_timeout, self.read_timeout)
        log.info("the run ends at most %g s after its clients' last message "
                 "(run_end_bound_s of --heartbeat-timeout, --rejoin-grace, "
                 "--idle-timeout)", run_end_bound_s(
                     self.args.heartbeat_timeout, self.args.rejoin_grace,
                     self.args.idle_timeout))
        for text in self.startup_notes:
            log.info("%s", text)
        for text in self.startup_warnings:
            log.warning("%s", text)
            sys.stderr.write("diskbench server: warning: %s\n" % text)
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
                    event.info("run complete: every client is finished, failed or gone")
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
            code = self._write_report(started, self._exit_code())
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
        self.collector.maybe_collect(len(self.connections))

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
            self.operator_end, self.run_id, clock=self.wall)
        try:
            control.open()
        except (socket.error, OSError) as exc:
            text = ("no control socket (%s): python -m diskbench.server ctl cannot "
                    "reach this run; SIGINT still ends it" % (
                        getattr(exc, "strerror", None) or exc))
            log.warning("%s", text)
            sys.stderr.write("diskbench server: warning: %s\n" % text)
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
            event.info("the operator ended the run (ctl end): no new connections; "
                       "asking live clients to stop")
            why = "the operator ended the run (ctl end)"
        else:
            event.info("%s received: no new connections; asking live clients to stop",
                       cause)
            why = "the server was interrupted (%s)" % cause
        stop = protocol.make(protocol.STOP, protocol.S2C, reason=why)
        for _name, sender in self.registry.live_senders():
            sender(stop)
        # their summaries are held for up to the end spread their go gave
        deadline = self.wall() + self.args.shutdown_grace + self.registry.end_spread_s
        self.wake.clear()
        while self.registry.live_senders() and self.signals.count + self.ends < 2 and \
                self.wall() < deadline:
            self.wake.wait(TICK_S)
        if self.signals.count + self.ends >= 2:
            event.info("interrupted again: not waiting for the clients' summaries")
        self.registry.mark_unfinished("had not finished when %s" % (
            "the operator ended the run (ctl end)" if cause == OPERATOR_END
            else "the server was interrupted (%s)" % cause))

    def _exit_code(self):
        if self.interrupted_by is not None:
            return exitcodes.SERVER_INTERRUPTED
        if self.registry.bad_data():
            return exitcodes.SERVER_BAD_DATA
        if self.registry.all_finished() and self.registry.short_start is None:
            return exitcodes.OK
        return exitcodes.SERVER_INCOMPLETE

    def _write_report(self, started, code):
        """Write the report once everything accepted is on disk (or say exactly
        what is not); returns the exit code, which such a gap downgrades."""
        unwritten = self.recorder.drain(DRAIN_TIMEOUT_S)
        view = self.registry.snapshot()
        messages = sum(c.messages for c in view.clients)
        # Thousands of clients' report takes a while (it reads all of
        # perf.jsonl): said, so a quiet console is not taken for a hang.
        event.info("writing the report: %d clients, %d messages", len(view.clients),
                   messages)
        server_cpu = self.cpu_gauge.summary(max(0, messages - view.restored))
        self._operator_stopped(view)
        warnings = list(self.startup_warnings)
        if unwritten:
            warnings.append(self.recorder.unwritten_text(unwritten, DRAIN_TIMEOUT_S))
        if self.recorder_died:
            warnings.append("the recorder thread stopped during the run; the run was "
                            "ended early (a bug: please report it)")
        short = report_build.shortfalls(view.clients)   # client summaries vs what we hold
        warnings += short
        if (unwritten or self.recorder_died or short) and code == exitcodes.OK:
            code = exitcodes.SERVER_INCOMPLETE
        behind = self.recorder.falling_behind()
        if behind:
            warnings.append(behind)
        if self.cpu_gauge.warning:
            warnings.append(self.cpu_gauge.warning)
        if self.resumed:
            warnings.append("the server was restarted during this run and %s"
                            % self.resumed)
        warnings += self.pauses + view.notes
        warnings += ["client %s's clock is %s the server's: its times are put "
                     "on the server's clock" % (c.name, describe_offset(c.offset()[0]))
                     for c in view.clients if c.offset()[0] is not None and
                     abs(c.offset()[0]) > effects.CLOCK_SKEW_WARN_S]
        warnings += ["client %s's clock moved %.3f s against the server's during the "
                     "run" % (c.name, c.offset_high - c.offset_low) for c in view.clients
                     if c.drift_warned]
        trouble = self.recorder.trouble()
        if trouble:
            warnings.append(trouble)
        meaning = ENDED_MEANING if self.interrupted_by == OPERATOR_END and \
            code == exitcodes.SERVER_INTERRUPTED else EXIT_MEANING[code]
        ended, facts = self.wall(), dict(
            run_label=self.run_id, interrupted_by=self.interrupted_by, exit_code=code,
            exit_meaning=meaning, warnings=warnings, server_cpu=server_cpu)
        # what perf.jsonl cannot say goes in run.json first: a re-render states it
        trouble = outputs.record_facts(self.args.log_dir, report_build.facts(
            view, started, ended, **facts))
        if trouble:
            log.warning("cannot add the report facts to %s (%s): a re-render will not "
                        "know them", RUN_MARKER, getattr(trouble, "strerror", trouble))
        rep = report_build.build(view, started, ended, **facts)
        written, failed = outputs.write_all(self.args.log_dir, rep)
        for path, exc in failed:
            sys.stderr.write("%s: error: cannot write the report %s (%s)\n" % (
                prog_name("diskbench.server"), path, getattr(exc, "strerror", None) or exc))
        main = [p for p in written if os.path.basename(p) in report_build.REPORT_FILES]
        if written:
            event.info("report written: %s", " and ".join(reversed(main)) or "-")
            event.info("also written: %s", ", ".join(
                os.path.basename(p) for p in written if p not in main) or "-")
        if not main:  # no report on disk, in any format: on stdout
            self.console.write_last(report_text.render_text(rep))
        elif not self.args.quiet:
            self.console.write_last("\n" + outputs.console_summary(rep))
        else:
            self.console.outbox.flush(console_mod.OUTBOX_FLUSH_S)
        sys.stderr.flush()
        return code


    def _operator_stopped(self, view):
        """Clients stopped with `ctl stop` say so in the report (the registry
        only knows the server asked them)."""
        stops = dict(self.control.stops) if self.control is not None else {}
        for client in view.clients:
            at = stops.get(client.name)
            if at is None:
                continue
            if client.state == st.FINISHED and client.stop is not None and \
                    client.stop.reason == protocol.STOP_SERVER:
                client.reason = control_mod.operator_reason(at)
            else:
                client.reason = "%s; before that, %s" % (
                    client.reason, control_mod.operator_reason(at))


def _signal_name(signum):
    return {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM",
            signal.SIGHUP: "SIGHUP"}.get(signum, "signal %s" % signum)
