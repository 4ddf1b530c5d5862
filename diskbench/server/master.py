"""The run: TCP server thread, liveness tick, completion rule, signals, shutdown.

The main thread only loops: every TICK_S it marks silent clients went away,
releases GO when it is due, and checks the completion rule. Signal handlers
only record the signal and wake the loop (gunicorn's arbiter style); the
shutdown work happens in the loop: stop accepting, ask live clients to stop,
give them --shutdown-grace seconds to send their summaries, write the report,
flush and fsync the logs, return the exit code.
"""
import logging
import os
import signal
import sys
import threading
import time

from diskbench import __version__, exitcodes, protocol
from diskbench.compat import socketserver
from diskbench.server import handler as handler_mod
from diskbench.server import recorder as recorder_mod
from diskbench.server import registry as reg
from diskbench.server import report as report_mod

#: How often the main loop checks liveness, GO and completion (seconds).
TICK_S = 0.2

log = logging.getLogger("diskbench.server")
event = logging.getLogger("diskbench.server.event")

EXIT_MEANING = {
    exitcodes.OK: "every client finished",
    exitcodes.SERVER_INCOMPLETE: "a client went away, failed or never finished",
    exitcodes.SERVER_INTERRUPTED: "the server was interrupted; report has what was known",
}


class TCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address, ctx):
        self.ctx = ctx
        socketserver.ThreadingTCPServer.__init__(self, address, handler_mod.Handler)

    def handle_error(self, request, client_address):
        # A handler bug must not print to the console silently and go on unseen.
        log.exception("internal error on the connection from %s", client_address)


class Master(object):
    """One benchmark run. ``open_logs()`` and ``bind()`` may raise; ``run()`` returns
    the exit code."""

    def __init__(self, args, out=None, clock=time.time):
        self.args = args
        self.out = out or sys.stdout
        self.wall = clock
        self.secret = args.secret
        self.read_timeout = args.read_timeout
        self.run_id = "%s-%d" % (time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
                                 os.getpid())
        self.registry = reg.Registry(
            expected_clients=args.clients, heartbeat_timeout=args.heartbeat_timeout,
            idle_timeout=args.idle_timeout, start_timeout=args.start_timeout)
        self.recorder = recorder_mod.Recorder(args.log_dir)
        self.server = None
        self.signalled = None
        self.wake = threading.Event()
        self._handlers = []

    # --- start-up (errors become exit codes in __main__) ------------------------------
    def open_logs(self):
        if not os.path.isdir(self.args.log_dir):
            os.makedirs(self.args.log_dir)
        self.recorder.open()

    def bind(self):
        self.server = TCPServer((self.args.host, self.args.port), self)
        return self.server.server_address[:2]

    def _setup_logging(self):
        root = logging.getLogger("diskbench.server")
        root.setLevel(logging.INFO)
        root.propagate = False
        file_handler = recorder_mod.RecorderLogHandler(self.recorder)
        root.addHandler(file_handler)
        self._handlers.append((root, file_handler))
        if not self.args.quiet:
            console = logging.StreamHandler(self.out)
            console.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
            event.addHandler(console)
            self._handlers.append((event, console))

    def _teardown_logging(self):
        for logger, handler in self._handlers:
            logger.removeHandler(handler)
        self._handlers = []

    def _on_signal(self, signum, _frame):
        if self.signalled is None:
            self.signalled = signum
        else:
            self.second_signal = True
        self.wake.set()

    # --- the run ---------------------------------------------------------------------
    def run(self):
        self.second_signal = False
        self.recorder.start()
        self._setup_logging()
        old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, self._on_signal)
        started = self.wall()
        host, port = self.server.server_address[:2]
        self.out.write("diskbench server %s listening on %s:%d (log dir %s)\n" % (
            __version__, host, port, os.path.abspath(self.args.log_dir)))
        self.out.flush()
        log.info("diskbench server %s (protocol %d) run %s listening on %s:%d, log dir %s",
                 __version__, protocol.PROTOCOL_VERSION, self.run_id, host, port,
                 os.path.abspath(self.args.log_dir))
        thread = threading.Thread(target=self.server.serve_forever, name="tcp-server",
                                  kwargs=dict(poll_interval=TICK_S))
        thread.daemon = True
        thread.start()
        try:
            while self.signalled is None:
                self._tick()
                if self.registry.is_complete():
                    event.info("run complete: every client is finished, failed or gone")
                    break
                self.wake.wait(TICK_S)
            self.server.shutdown()
            self.server.server_close()
            if self.signalled is not None:
                self._interrupted()
            code = self._exit_code()
            self._write_report(started, code)
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            self.recorder.close()
            self._teardown_logging()
        return code

    def _tick(self):
        self.registry.check_liveness()
        go = protocol.make(protocol.GO, protocol.S2C, run_id=self.run_id)
        for _name, sender in self.registry.release_go():
            sender(go)

    def _interrupted(self):
        name = _signal_name(self.signalled)
        event.info("%s received: no new connections; asking live clients to stop", name)
        stop = protocol.make(protocol.STOP, protocol.S2C,
                             reason="the server was interrupted (%s)" % name)
        for _name, sender in self.registry.live_senders():
            sender(stop)
        deadline = self.wall() + self.args.shutdown_grace
        self.wake.clear()
        while self.registry.live_senders() and not self.second_signal and \
                self.wall() < deadline:
            self.wake.wait(TICK_S)
        self.registry.mark_unfinished("had not finished when the server was "
                                      "interrupted (%s)" % name)

    def _exit_code(self):
        if self.signalled is not None:
            return exitcodes.SERVER_INTERRUPTED
        if self.registry.all_finished():
            return exitcodes.OK
        return exitcodes.SERVER_INCOMPLETE

    def _write_report(self, started, code):
        view = self.registry.snapshot()
        rep = report_mod.build(
            view, started, self.wall(), run_label=self.run_id,
            interrupted_by=_signal_name(self.signalled) if self.signalled else None,
            exit_code=code, exit_meaning=EXIT_MEANING[code])
        try:
            paths = report_mod.write(self.args.log_dir, rep)
        except (IOError, OSError) as exc:
            sys.stderr.write("diskbench server: error: cannot write the report to %s: "
                             "%s\n" % (self.args.log_dir, exc))
            return
        event.info("report written: %s and %s", paths[1], paths[0])


def _signal_name(signum):
    return {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}.get(
        signum, "signal %s" % signum)
