"""The launcher's processes: the server started here, one ssh session per
host, signals forwarded to the server, a host that ended without a result
told to the server (ctl not-coming), and the closing table of exit codes.

Separate from launch.py (the command line: python -m diskbench.launch) and
launchargs.py (the hosts file and the commands, worked out before any process
starts): this is the part that runs and waits.
"""
from __future__ import division, print_function

import os
import re
import signal
import subprocess
import sys
import threading
import time

from diskbench import exitcodes, protocol
from diskbench.cli import join_host_port, printable
from diskbench.compat import PY2, monotonic, native_arg, new_session, write_line
from diskbench.launchargs import (REMOTE_NOT_FOUND, default_server_host, is_loopback,
                                  remote_command, ssh_argv)
from diskbench.report import build as report_build
from diskbench.report import readers

#: The server prints its listening line as soon as it is bound; longer means it is stuck.
SERVER_LISTEN_TIMEOUT_S = 30.0
#: How often the launcher looks at its processes and pending signals.
POLL_S = 0.1
#: Telling the server a host will not come (``ctl not-coming``) takes at most this
#: long (ctl's own connect and answer timeouts are shorter).
NOT_COMING_TIMEOUT_S = 30.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

#: ssh exits 255 when it could not connect or authenticate (or lost the connection).
SSH_FAILED = 255

#: What a client's exit code (= the ssh exit status) means, for the final table
#: (ssh's own codes are said where they are told apart).
MEANINGS = dict((code, exitcodes.brief(code, exitcodes.CLIENT))
                for code in exitcodes.codes(exitcodes.CLIENT))
#: What Python prints first when a traceback ends it: exit 1 (INTERNAL) means "a bug:
#: a traceback" only with one in the host's output (a shell's false or a foreign
#: program exits 1 too).
_TRACEBACK = "Traceback (most recent call last)"

_LISTENING = re.compile(r"listening on (\S+):(\d+) ")


def _last_line(path):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 4096))
            tail = f.read().decode("utf-8", "replace")
    except (IOError, OSError):
        return ""
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


#: The client's first log line names it: "diskbench VERSION client NAME: ...".
_CLIENT_LINE = re.compile(r"diskbench \S+ client (.+?): ")


def _head(path):
    try:
        with open(path, "rb") as f:
            return f.read(65536).decode("utf-8", "replace")
    except (IOError, OSError):
        return ""


def _client_name(path):
    """The client's name from its first line in a host's ssh log (None: not there,
    so no client got past its start-up checks there: none said hello)."""
    m = _CLIENT_LINE.search(_head(path))
    return m.group(1) if m else None


def exit_meaning(code, path):
    """What a host's exit code means (``path``: its ssh output): the client's
    table (exitcodes), but exit 1 is a traceback only when one was printed,
    and a negative code is ssh killed by a signal."""
    last = _last_line(path)
    if code < 0:
        return "ssh was killed by signal %d" % -code
    if code == exitcodes.INTERNAL and _TRACEBACK not in _head(path):
        return "exit 1 with %s" % ("no traceback: %s" % last if last else "no output")
    return MEANINGS.get(code, last or "exit %d" % code)


def _secret_flags(server_flags):
    """The server's --secret-file flag (ctl needs the same secret), or []."""
    for i, flag in enumerate(server_flags):
        if flag == "--secret-file" and i + 1 < len(server_flags):
            return [flag, server_flags[i + 1]]
        if flag.startswith("--secret-file="):
            return [flag]
    return []


def _safe_label(text):
    """``text`` as a file name part of ASCII letters, digits and ``._@-``, as
    the native str: joined to a 2.7 --log-dir of non-ASCII bytes, a unicode
    part would make the join decode them as ASCII (a traceback)."""
    return str(re.sub(r"[^A-Za-z0-9._@-]", "_", text)[:80])


class Launcher(object):
    """Runs the server and the ssh sessions (launch.py's docstring says how)."""

    def __init__(self, args, server_flags, client_flags, hosts, out=None, err=None):
        self.args = args
        self.server_flags = server_flags
        self.client_flags = client_flags
        self.hosts = hosts
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.lock = threading.Lock()
        self.server = None
        self.listening = None
        self.signals = []
        self.forwarded = False        # a stop signal went to the server
        self.no_host = False
        self.devnull = None

    # output -------------------------------------------------------------------------
    def say(self, text, stream=None):
        with self.lock:
            write_line(stream or self.out, u"\n".join(printable(line)
                                                      for line in text.split("\n")))

    def warn(self, text):
        self.say("diskbench launch: %s" % text, self.err)

    def _pump_server_output(self):
        """Copy the server's stdout through, noting its listening line."""
        out = getattr(self.out, "buffer", None)
        for raw in iter(self.server.stdout.readline, b""):
            if self.listening is None:
                m = _LISTENING.search(raw.decode("utf-8", "replace"))
                if m:
                    self.listening = int(m.group(2))
            with self.lock:
                if out is not None:
                    out.write(raw)
                else:
                    self.out.write(raw if PY2 else raw.decode("utf-8", "replace"))
                self.out.flush()

    def _on_signal(self, signum, _frame):
        self.signals.append(signum)

    # steps --------------------------------------------------------------------------
    def start_server(self):
        argv = [sys.executable, "-m", "diskbench.server", "--clients", str(len(self.hosts)),
                "--host", self.args.host, "--port", str(self.args.port),
                "--log-dir", self.args.log_dir] + self.server_flags
        kwargs = new_session()
        self.server = subprocess.Popen(argv, stdin=self.devnull,
                                       stdout=subprocess.PIPE, close_fds=True, **kwargs)
        pump = threading.Thread(target=self._pump_server_output, name="server-output")
        pump.daemon = True
        pump.start()
        deadline = monotonic() + SERVER_LISTEN_TIMEOUT_S
        while self.listening is None:
            if self.server.poll() is not None:
                pump.join(1.0)
                if self.listening is None:
                    return False  # the server said why on stderr
                break
            if monotonic() > deadline:
                self.warn("the server printed no 'listening on' line within %g s; "
                          "stopping it" % SERVER_LISTEN_TIMEOUT_S)
                self.server.kill()
                self.server.wait()
                return False
            time.sleep(POLL_S / 2)
        return True

    def start_hosts(self):
        server_host = default_server_host(self.args)
        if not self.args.server_host and is_loopback(server_host):
            self.warn("this machine's name %s is a loopback address here: hosts other than "
                      "this one cannot reach the server at it; give --server-host"
                      % server_host)
        addr = join_host_port(server_host, self.listening)
        for index, host in enumerate(self.hosts, 1):
            command = remote_command(host, self.client_flags, addr, self.args.python,
                                     self.args.remote_env)
            host.log_path = os.path.join(self.args.log_dir, "launch-%d-%s.log" % (
                index, _safe_label(host.label)))
            log = open(host.log_path, "wb")
            try:
                host.proc = subprocess.Popen(
                    ssh_argv(self.args, host, command), stdin=self.devnull,
                    stdout=log, stderr=subprocess.STDOUT, close_fds=True, **new_session())
            except OSError as exc:
                host.code = None
                host.why = "cannot run %s: %s" % (self.args.ssh, exc.strerror or exc)
                host.ended = monotonic()
                self.warn("%s: %s" % (host.label, host.why))
                self._not_coming(host)
            finally:
                log.close()
        self.say("diskbench launch: %d hosts, clients reach the server at %s; ssh output "
                 "in %s/launch-*.log" % (len(self.hosts), addr, self.args.log_dir))

    def _host_ended(self, host, code):
        host.code = code
        host.ended = monotonic()
        host.ran = _client_name(host.log_path) is not None
        host.client = host.client or _client_name(host.log_path)
        last = _last_line(host.log_path)
        if code == SSH_FAILED:
            host.why = "ssh failed: %s" % (last or "exit 255, no message")
            self.warn("ssh to %s failed: %s" % (host.label, last or "exit 255, no message"))
        elif code == REMOTE_NOT_FOUND:
            host.why = "no Python with diskbench there (%s)" % (last or "exit 127")
            self.warn("%s: no Python there can import diskbench (%s): install it there "
                      "(pip install the wheel or sdist from make dist, or copy the "
                      "diskbench/ directory onto its PYTHONPATH; docs/MULTIHOST.md)"
                      % (host.label, last or "exit 127"))
        elif code != 0:
            host.why = exit_meaning(code, host.log_path)
            if self.server is not None and self.server.poll() is None:
                self.warn("%s: %s" % (host.label, host.why) if code < 0 else
                          "%s: client exited %d: %s" % (host.label, code, host.why))
        elif not host.ran:
            host.why = "exit 0, but no diskbench client ran there (its output has no " \
                       "client's first line)"
            self.warn("%s: %s" % (host.label, host.why))
        else:
            host.why = MEANINGS[0]
        if code != 0 or not host.ran:
            self._not_coming(host)

    def _not_coming(self, host):
        """A host whose session ended without a result: tell the server (``ctl
        not-coming``, before go it then waits for one client fewer; for none left
        and none come, it ends the run), so one dead host does not cost
        --start-timeout. Said in one line; a failure to tell only costs that wait
        (or, no client having run, the launcher stops the server: supervise)."""
        if host.told_server or self.server is None or self.server.poll() is not None:
            return
        host.told_server = True
        argv = [sys.executable, "-m", "diskbench.server", "ctl", "--log-dir",
                self.args.log_dir] + _secret_flags(self.server_flags) + [
            "not-coming", host.label, "--why", (host.why or "")[:protocol.TEXT_MAX_CHARS]]
        if host.client:   # one that said hello came: the server keeps counting it
            argv += ["--client", host.client]
        argv = [native_arg(w) for w in argv]
        try:
            ctl = subprocess.Popen(argv, stdin=self.devnull, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, close_fds=True)
        except OSError as exc:
            self.warn("could not tell the server that %s will not come (%s)" % (
                host.label, exc.strerror or exc))
            return
        deadline = monotonic() + NOT_COMING_TIMEOUT_S
        while ctl.poll() is None and monotonic() < deadline:
            time.sleep(POLL_S / 2)
        if ctl.poll() is None:
            ctl.kill()
            ctl.wait()
        host.server_knows = ctl.returncode == exitcodes.OK
        answer = ctl.stdout.read().decode("utf-8", "replace").strip().splitlines()
        ctl.stdout.close()
        self.warn("told the server that %s will not come: %s" % (
            host.label, answer[-1] if answer else "no answer"))

    def _poll_hosts(self):
        for host in self.hosts:
            if host.proc is not None and host.ended is None:
                code = host.proc.poll()
                if code is not None:
                    self._host_ended(host, code)

    def _forward_signals(self):
        while self.signals:
            signum = self.signals.pop(0)
            if self.server.poll() is None:
                self.warn("signal %d: asked the server to stop (it asks every client to "
                          "stop)" % signum)
                self.forwarded = True
                os.kill(self.server.pid, signum)
            else:
                self._stop_sessions("signal %d after the server ended" % signum)

    def _stop_sessions(self, why):
        for host in self.hosts:
            if host.proc is not None and host.ended is None and host.proc.poll() is None:
                try:
                    os.killpg(host.proc.pid, signal.SIGTERM)
                except OSError:
                    pass
                host.proc.wait()
                host.code = None
                host.why = "ssh still running (%s): stopped it; the client may still run " \
                           "on the host" % why
                host.ended = monotonic()
                self.warn("%s: %s" % (host.label, host.why))

    def supervise(self):
        """Until the server ended: poll, forward signals, stop a server left alone.

        When every host ended before its client said hello, the server, told
        each (ctl not-coming), ends the run by itself at once; it is stopped
        here only when one of them could not be told (it would wait for ever)."""
        all_ended_at = None
        while self.server.poll() is None:
            self._forward_signals()
            self._poll_hosts()
            started = [h for h in self.hosts if h.proc is not None]
            if all(h.ended is not None for h in self.hosts):
                if not any(h.ran for h in self.hosts) and not self.no_host and \
                        not all(h.server_knows for h in self.hosts):
                    self.no_host = True
                    self.warn("no host's client ran and the server could not be told of "
                              "every host: stopping it")
                    os.kill(self.server.pid, signal.SIGTERM)
                elif all_ended_at is None:
                    all_ended_at = monotonic()
                elif monotonic() - all_ended_at > self.args.server_grace and started:
                    self.warn("every ssh session ended %g s ago and the server is still "
                              "running: stopping it (--server-grace)"
                              % self.args.server_grace)
                    os.kill(self.server.pid, signal.SIGTERM)
                    all_ended_at = float("inf")
            time.sleep(POLL_S)
        return self.server.returncode

    def wait_sessions(self):
        deadline = monotonic() + self.args.client_grace
        while monotonic() < deadline:
            self._forward_signals()
            self._poll_hosts()
            if all(h.ended is not None for h in self.hosts):
                return
            time.sleep(POLL_S)
        self._stop_sessions("%g s after the server ended" % self.args.client_grace)

    def summary(self):
        """The end table: a row per host line with its client's name."""
        width = max([len("host")] + [len(h.label) for h in self.hosts])
        names = [h.client or "-" for h in self.hosts]
        nw = max([len("client")] + [len(n) for n in names])
        rows = ["%-*s  %-*s  %4s  %s" % (width, "host", nw, "client", "exit", "meaning")]
        for host, name in zip(self.hosts, names):
            code = "-" if host.code is None else str(host.code)
            rows.append("%-*s  %-*s  %4s  %s" % (width, host.label, nw, name, code,
                                                  host.why or ""))
        self.say("\n".join(rows))

    def no_client_came(self):
        """The server's report lists no client (and no stop signal of ours ended
        it early): every host ended before its client said hello. None when the
        report cannot be read (the server's own code is passed on then)."""
        if self.forwarded:
            return False
        try:
            rep = readers.read_json(os.path.join(self.args.log_dir,
                                                 report_build.REPORT_JSON))
        except (IOError, OSError, readers.Unreadable):
            return None
        clients = rep.get("clients")
        return isinstance(clients, list) and not clients

    def exit_code(self, server_code):
        if server_code < 0:     # killed by a signal: no report (said by run)
            return exitcodes.SERVER_INCOMPLETE
        if self.no_host or self.no_client_came():
            return exitcodes.LAUNCH_NO_HOST
        if server_code != 0:
            return server_code
        if any(h.code != 0 or not h.ran for h in self.hosts):
            return exitcodes.LAUNCH_CLIENT_FAILED
        return exitcodes.OK

    def run(self):
        old = dict((sig, signal.signal(sig, self._on_signal)) for sig in STOP_SIGNALS)
        self.devnull = open(os.devnull, "rb")
        try:
            if not self.start_server():
                return self.server.returncode if self.server.returncode else \
                    exitcodes.INTERNAL
            try:
                self.start_hosts()
                server_code = self.supervise()
                self.wait_sessions()
            finally:
                self._stop_sessions("the launcher is ending")
                if self.server.poll() is None:
                    self.server.terminate()
                    self.server.wait()
            self.summary()
            code = self.exit_code(server_code)
            if code == exitcodes.LAUNCH_NO_HOST:
                self.warn("no client ran on any host (each host's line above says why): "
                          "the server's run ended with none")
            if server_code < 0:
                self.warn("the server was killed by signal %d before it wrote a report: "
                          "its perf.jsonl holds every message it acknowledged; "
                          "python -m diskbench.report %s writes the report from it"
                          % (-server_code, self.args.log_dir))
                self.say("diskbench launch: exit %d (server killed by signal %d)"
                         % (code, -server_code))
                return code
            self.say("diskbench launch: exit %d (server exit %d)" % (code, server_code))
            return code
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            self.devnull.close()
