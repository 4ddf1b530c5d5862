"""python -m diskbench.launch: the server here, one client per host over the system ssh.

No agent of our own: every host needs only its sshd and a Python (2.7 or 3) that can
import diskbench. The launcher starts ``python -m diskbench.server --clients N`` locally
(N = the number of hosts), then ``ssh HOST 'python -m diskbench.client --server ADDR:PORT
... DIRECTORY'`` for every host at once, says in one line why a host could not be
started, lets the run go on with the rest (the server's --start-timeout then starts
those present), forwards SIGINT/SIGTERM/SIGHUP to the server (which asks every client
to stop), and ends with one row per host: the exit code of its client (ssh returns the
remote command's) and what it means.

Usage:
  python -m diskbench.launch --hosts FILE [launch options] [server flags] -- [client flags] DIRECTORY

Hosts file: one host per line, ``[user@]host[:port] [python=PATH] [dir=DIRECTORY]
[name=NAME]``; ``[v6addr]:port`` for IPv6; ``#`` starts a comment. docs/MULTIHOST.md
has the same run done with pdsh, Ansible, Slurm and compose.
"""
from __future__ import division, print_function

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from diskbench import DEFAULT_PORT, __version__, exitcodes, protocol
from diskbench.cli import DEFAULT_LOG_DIR, port, printable, prog_name, seconds
from diskbench.compat import shell_quote

PROG = prog_name("diskbench.launch")

#: ssh's own ConnectTimeout: how long one host may take to answer before it counts as failed.
SSH_CONNECT_TIMEOUT_S = 10
#: The server prints its listening line as soon as it is bound; longer means it is stuck.
SERVER_LISTEN_TIMEOUT_S = 30.0
#: After the server ended: how long ssh sessions may take to end (a client delivering its
#: last results keeps trying for its --deliver-timeout, 30 s by default).
CLIENT_GRACE_S = 60.0
#: After every ssh session ended: how long the server may take to complete on its own
#: (its default rejoin grace is 30 s after a 15 s went-away timeout) before it is stopped.
SERVER_GRACE_S = 60.0
#: How often the launcher looks at its processes and pending signals.
POLL_S = 0.1
#: Telling the server a host will not come (``ctl not-coming``) takes at most this
#: long (ctl's own connect and answer timeouts are shorter).
NOT_COMING_TIMEOUT_S = 30.0

#: Tried in this order on a host when neither --python nor python= says which one.
DEFAULT_PYTHONS = ("python3", "python", "python2")
HOST_KEYS = ("python", "dir", "name")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

#: ssh exits 255 when it could not connect or authenticate (or lost the connection).
SSH_FAILED = 255
#: The remote shell's "command not found"; our remote script also uses it when no Python
#: on the host can import diskbench.
REMOTE_NOT_FOUND = 127

#: What a client's exit code (= the ssh exit status) means, for the final table
#: (ssh's own codes are said where they are told apart).
MEANINGS = dict((code, exitcodes.brief(code, exitcodes.CLIENT))
                for code in exitcodes.codes(exitcodes.CLIENT))

_LISTENING = re.compile(r"listening on (\S+):(\d+) ")
_HOST_LINE = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:@\s\[\]]+))"
                        r"(?::(?P<port>\d+))?$")


class Usage(Exception):
    """A wrong flag or a bad hosts file: one line, exit 2."""


class Host(object):
    """One line of the hosts file."""

    def __init__(self, label, address, user=None, port=None, python=None, directory=None,
                 name=None, lineno=0):
        self.label = label
        self.address = address
        self.user = user
        self.port = port
        self.python = python
        self.directory = directory
        self.name = name
        self.lineno = lineno
        # filled in while the run goes on
        self.client = name            # the client's name (else read from its first line)
        self.told_server = False      # the server knows it will not come
        self.proc = None
        self.log_path = None
        self.code = None
        self.why = None
        self.ended = None


# --- input -----------------------------------------------------------------------------
def parse_hosts(text, path="hosts"):
    """Hosts from the text of a hosts file; Usage naming the line on anything odd."""
    hosts = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        fields = line.split()
        m = _HOST_LINE.match(fields[0])
        where = "%s line %d" % (path, lineno)
        if not m:
            raise Usage("%s: '%s' is not [user@]host[:port] (IPv6: [addr]:port)"
                        % (where, printable(fields[0])))
        port = m.group("port")
        if port is not None and not 0 < int(port) <= 65535:
            raise Usage("%s: ssh port must be 1 to 65535, got %s" % (where, port))
        opts = {}
        for field in fields[1:]:
            key, sep, value = field.partition("=")
            if not sep or key not in HOST_KEYS or not value:
                raise Usage("%s: '%s' is not one of %s" % (
                    where, printable(field), ", ".join("%s=VALUE" % k for k in HOST_KEYS)))
            opts[key] = value
        hosts.append(Host(fields[0], m.group("v6") or m.group("host"), user=m.group("user"),
                          port=int(port) if port else None, python=opts.get("python"),
                          directory=opts.get("dir"), name=opts.get("name"),
                          lineno=lineno))
    if not hosts:
        raise Usage("%s names no host: write one [user@]host[:port] per line" % path)
    names = [h.name for h in hosts if h.name]
    if len(set(names)) != len(names):
        raise Usage("%s: two hosts have the same name=: client names must differ" % path)
    return hosts


def build_parser():
    p = argparse.ArgumentParser(
        prog=PROG, usage="%(prog)s --hosts FILE [options] [server flags] -- "
                         "[client flags] DIRECTORY",
        description="Start the diskbench server here and one client per host over the "
                    "system ssh; report each host's exit code at the end. Flags before "
                    "-- that are not listed here go to the server (python -m "
                    "diskbench.server --help); --clients is set to the number of hosts. "
                    "After --: the client's flags and the DIRECTORY to measure on every "
                    "host (python -m diskbench.client --help); --server is set here.",
        epilog="Hosts file: one host per line, [user@]host[:port] [python=PATH] "
               "[dir=DIRECTORY] [name=NAME]; # starts a comment. See docs/MULTIHOST.md. "
               + exitcodes.epilog(exitcodes.LAUNCH, "Exit codes (the server's own, passed "
                                  "on, when it is not 0)"))
    p.add_argument("--version", action="version", version="diskbench " + __version__)
    p.add_argument("--hosts", required=True, metavar="FILE",
                   help="the hosts file (one [user@]host[:port] per line)")
    p.add_argument("--server-host", metavar="ADDR",
                   help="the address the hosts reach this server at (default: --host if "
                        "it is one address, else this machine's fully qualified name)")
    p.add_argument("--host", default="0.0.0.0",
                   help="address the server listens on (default 0.0.0.0; passed on)")
    p.add_argument("--port", type=port, default=DEFAULT_PORT,
                   help="the server's TCP port (default %d; 0: any free port; passed on)"
                        % DEFAULT_PORT)
    p.add_argument("--log-dir", default=DEFAULT_LOG_DIR,
                   help="the server's log dir (passed on); the launcher puts each host's "
                        "ssh output there as launch-N-HOST.log (default ./%s)"
                        % DEFAULT_LOG_DIR)
    p.add_argument("--ssh", default="ssh", metavar="PROGRAM",
                   help="the ssh program (default: ssh on PATH)")
    p.add_argument("--ssh-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an extra ssh -o option, e.g. IdentityFile=~/.ssh/bench "
                        "(repeatable)")
    p.add_argument("--ssh-arg", action="append", default=[], metavar="ARG",
                   help="an extra raw ssh argument, e.g. --ssh-arg=-F --ssh-arg=/dev/null "
                        "(repeatable)")
    p.add_argument("--connect-timeout", type=seconds, default=SSH_CONNECT_TIMEOUT_S,
                   metavar="S", help="ssh ConnectTimeout (default %d)"
                                     % SSH_CONNECT_TIMEOUT_S)
    p.add_argument("--python", metavar="PATH",
                   help="the Python on the hosts (default: the first of %s that can "
                        "import diskbench; python= on a host line wins)"
                        % ", ".join(DEFAULT_PYTHONS))
    p.add_argument("--remote-env", action="append", default=[], metavar="NAME=VALUE",
                   help="set this variable for the client on every host, e.g. "
                        "PYTHONPATH=/opt/diskbench (repeatable)")
    p.add_argument("--client-grace", type=seconds, default=CLIENT_GRACE_S, metavar="S",
                   help="after the server ended, wait this long for the ssh sessions "
                        "(default %g)" % CLIENT_GRACE_S)
    p.add_argument("--server-grace", type=seconds, default=SERVER_GRACE_S, metavar="S",
                   help="after every ssh session ended, wait this long for the server to "
                        "complete before stopping it (default %g)" % SERVER_GRACE_S)
    return p


def _option_table(parser):
    """{'--flag': takes_a_value} for the launcher's own flags."""
    table = {}
    for action in parser._actions:
        for opt in action.option_strings:
            table[opt] = action.nargs != 0
    return table


#: Launcher flags the server also gets (the launcher needs their values too).
PASSED_ON = ("--host", "--port", "--log-dir")


def split_argv(parser, argv):
    """(launcher args, server flags, client flags) from the command line.

    Tokens before ``--`` that are launcher flags (exact names, so the server's --host is
    never mistaken for --hosts) go to argparse; all others go to the server."""
    argv = list(argv)
    if "--" in argv:
        cut = argv.index("--")
        left, right = argv[:cut], argv[cut + 1:]
    else:
        left, right = argv, []
    table = _option_table(parser)
    mine, server = [], []
    i = 0
    while i < len(left):
        token = left[i]
        name = token.split("=", 1)[0]
        if name in table:
            mine.append(token)
            if table[name] and "=" not in token and i + 1 < len(left):
                i += 1
                mine.append(left[i])
        else:
            server.append(token)
        i += 1
    args = parser.parse_args(mine)
    for token in server:
        if token.split("=", 1)[0] == "--clients":
            raise Usage("--clients is set by the launcher to the number of hosts; "
                        "remove it")
    if not right:
        raise Usage("the directory to measure on the hosts is missing: end the command "
                    "with -- [client flags] DIRECTORY")
    if right[-1].startswith("-"):
        raise Usage("the last argument after -- must be the DIRECTORY on the hosts, got "
                    "'%s'" % printable(right[-1]))
    check_client_flags(right)
    for token in right[:-1]:
        if token.split("=", 1)[0] == "--server":
            raise Usage("--server is set by the launcher (--server-host, --port); remove "
                        "it from the client flags")
    return args, server, right


def check_client_flags(flags):
    """Refuse client flags the client would refuse, here, before any ssh: parsed by the
    client's own parser (the hosts run the same diskbench). Where that parser cannot be
    had, the hosts' clients say it themselves (exit 2 in the table)."""
    try:
        from diskbench.client.__main__ import build_parser as client_parser
        parser = client_parser()
    except Exception:  # noqa: BLE001 - a refactored client: its own check still runs on the hosts
        return

    def error(message):
        raise Usage("client flags after --: %s" % message)
    parser.error = error
    parser.parse_args(list(flags))


def remote_command(host, client_flags, server_addr, python=None, remote_env=()):
    """The one string ssh hands to the host's login shell.

    It runs ``sh -c SCRIPT`` so the script is POSIX sh whatever the login shell is; the
    script exports the --remote-env variables, picks the first Python that can import
    diskbench (exit 127 with one line if none can) and execs the client, every word
    quoted."""
    flags = list(client_flags[:-1])
    directory = host.directory or client_flags[-1]
    if host.name:
        flags += ["--name", host.name]
    words = ["-m", "diskbench.client", "--server", server_addr] + flags + [directory]
    pythons = [host.python or python] if (host.python or python) else list(DEFAULT_PYTHONS)
    lines = ["export %s=%s" % (name, shell_quote(value))
             for name, value in (item.split("=", 1) for item in remote_env)]
    lines += [
        "for py in %s; do" % " ".join(shell_quote(p) for p in pythons),
        '  if command -v "$py" >/dev/null 2>&1 && "$py" -c "import diskbench" '
        ">/dev/null 2>&1; then",
        '    exec "$py" %s' % " ".join(shell_quote(w) for w in words),
        "  fi",
        "done",
        # the names tried are one quoted word too (a python= of `...` or $(...) is
        # text here, never run); printf, not echo: echo may read backslashes
        """printf '%%s\\n' "diskbench launch: no Python that can import diskbench on """
        """$(hostname) (tried "%s")" >&2""" % shell_quote(" ".join(pythons)),
        "exit %d" % REMOTE_NOT_FOUND,
    ]
    return "sh -c " + shell_quote("\n".join(lines))


def ssh_argv(args, host, command):
    argv = [args.ssh, "-n", "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=%d" % max(1, int(round(args.connect_timeout)))]
    for opt in args.ssh_option:
        argv += ["-o", opt]
    argv += list(args.ssh_arg)
    if host.port:
        argv += ["-p", str(host.port)]
    if host.user:
        argv += ["-l", host.user]
    return argv + ["--", host.address, command]


def default_server_host(args):
    if args.server_host:
        return args.server_host
    if args.host not in ("0.0.0.0", "::", ""):
        return args.host
    return socket.getfqdn()


def _is_loopback(name):
    try:
        infos = socket.getaddrinfo(name, None)
    except (socket.error, socket.gaierror, UnicodeError):
        return False
    return bool(infos) and all(info[4][0].startswith("127.") or info[4][0] == "::1"
                               for info in infos)


def _join_host_port(host, port):
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


# --- the run ---------------------------------------------------------------------------
def _new_session():
    """Popen kwargs that put a child in its own session: a Ctrl-C on the terminal reaches
    only the launcher, which forwards it once to the server."""
    if sys.version_info[0] >= 3:
        return {"start_new_session": True}
    return {"preexec_fn": os.setsid}


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


def _client_name(path):
    """The client's name from its first line in a host's ssh log (None: not there)."""
    try:
        with open(path, "rb") as f:
            head = f.read(65536).decode("utf-8", "replace")
    except (IOError, OSError):
        return None
    m = _CLIENT_LINE.search(head)
    return m.group(1) if m else None


def _secret_flags(server_flags):
    """The server's --secret-file flag (ctl needs the same secret), or []."""
    for i, flag in enumerate(server_flags):
        if flag == "--secret-file" and i + 1 < len(server_flags):
            return [flag, server_flags[i + 1]]
        if flag.startswith("--secret-file="):
            return [flag]
    return []


def _safe_label(text):
    return re.sub(r"[^A-Za-z0-9._@-]", "_", text)[:80]


class Launcher(object):
    """Runs the server and the ssh sessions; see the module docstring."""

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
        self.no_host = False
        self.devnull = None

    # output -------------------------------------------------------------------------
    def say(self, text, stream=None):
        with self.lock:
            _write_line(stream or self.out, u"\n".join(printable(line)
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
                    self.out.write(raw.decode("utf-8", "replace") if sys.version_info[0]
                                   >= 3 else raw)
                self.out.flush()

    def _on_signal(self, signum, _frame):
        self.signals.append(signum)

    # steps --------------------------------------------------------------------------
    def start_server(self):
        argv = [sys.executable, "-m", "diskbench.server", "--clients", str(len(self.hosts)),
                "--host", self.args.host, "--port", str(self.args.port),
                "--log-dir", self.args.log_dir] + self.server_flags
        kwargs = _new_session()
        self.server = subprocess.Popen(argv, stdin=self.devnull,
                                       stdout=subprocess.PIPE, close_fds=True, **kwargs)
        pump = threading.Thread(target=self._pump_server_output, name="server-output")
        pump.daemon = True
        pump.start()
        deadline = time.time() + SERVER_LISTEN_TIMEOUT_S
        while self.listening is None:
            if self.server.poll() is not None:
                pump.join(1.0)
                if self.listening is None:
                    return False  # the server said why on stderr
                break
            if time.time() > deadline:
                self.warn("the server printed no 'listening on' line within %g s; "
                          "stopping it" % SERVER_LISTEN_TIMEOUT_S)
                self.server.kill()
                self.server.wait()
                return False
            time.sleep(POLL_S / 2)
        return True

    def start_hosts(self):
        server_host = default_server_host(self.args)
        if not self.args.server_host and _is_loopback(server_host):
            self.warn("this machine's name %s is a loopback address here: hosts other than "
                      "this one cannot reach the server at it; give --server-host"
                      % server_host)
        addr = _join_host_port(server_host, self.listening)
        for index, host in enumerate(self.hosts, 1):
            command = remote_command(host, self.client_flags, addr, self.args.python,
                                     self.args.remote_env)
            host.log_path = os.path.join(self.args.log_dir, "launch-%d-%s.log" % (
                index, _safe_label(host.label)))
            log = open(host.log_path, "wb")
            try:
                host.proc = subprocess.Popen(
                    ssh_argv(self.args, host, command), stdin=self.devnull,
                    stdout=log, stderr=subprocess.STDOUT, close_fds=True, **_new_session())
            except OSError as exc:
                host.code = None
                host.why = "cannot run %s: %s" % (self.args.ssh, exc.strerror or exc)
                host.ended = time.time()
                self.warn("%s: %s" % (host.label, host.why))
                self._not_coming(host)
            finally:
                log.close()
        self.say("diskbench launch: %d hosts, clients reach the server at %s; ssh output "
                 "in %s/launch-*.log" % (len(self.hosts), addr, self.args.log_dir))

    def _host_ended(self, host, code):
        host.code = code
        host.ended = time.time()
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
            host.why = MEANINGS.get(code, last or "exit %d" % code)
            if self.server is not None and self.server.poll() is None:
                self.warn("%s: client exited %d: %s" % (host.label, code, host.why))
        else:
            host.why = MEANINGS[0]
        if code != 0:
            self._not_coming(host)

    def _not_coming(self, host):
        """A host whose session ended without a result: tell the server (``ctl
        not-coming``, before go it then waits for one client fewer), so one dead
        host does not cost --start-timeout. Said in one line; a failure to tell
        only costs that wait."""
        if host.told_server or self.server is None or self.server.poll() is not None:
            return
        host.told_server = True
        argv = [sys.executable, "-m", "diskbench.server", "ctl", "--log-dir",
                self.args.log_dir] + _secret_flags(self.server_flags) + [
            "not-coming", host.label, "--why", (host.why or "")[:protocol.TEXT_MAX_CHARS]]
        try:
            ctl = subprocess.Popen(argv, stdin=self.devnull, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, close_fds=True)
        except OSError as exc:
            self.warn("could not tell the server that %s will not come (%s)" % (
                host.label, exc.strerror or exc))
            return
        deadline = time.time() + NOT_COMING_TIMEOUT_S
        while ctl.poll() is None and time.time() < deadline:
            time.sleep(POLL_S / 2)
        if ctl.poll() is None:
            ctl.kill()
            ctl.wait()
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
                host.ended = time.time()
                self.warn("%s: %s" % (host.label, host.why))

    def supervise(self):
        """Until the server ended: poll, forward signals, stop a server left alone."""
        all_ended_at = None
        while self.server.poll() is None:
            self._forward_signals()
            self._poll_hosts()
            started = [h for h in self.hosts if h.proc is not None]
            if all(h.ended is not None for h in self.hosts):
                if all(h.code in (SSH_FAILED, REMOTE_NOT_FOUND, None) for h in self.hosts) \
                        and not self.no_host:
                    self.no_host = True
                    self.warn("no host could be started: stopping the server")
                    os.kill(self.server.pid, signal.SIGTERM)
                elif all_ended_at is None:
                    all_ended_at = time.time()
                elif time.time() - all_ended_at > self.args.server_grace and started:
                    self.warn("every ssh session ended %g s ago and the server is still "
                              "running: stopping it (--server-grace)"
                              % self.args.server_grace)
                    os.kill(self.server.pid, signal.SIGTERM)
                    all_ended_at = float("inf")
            time.sleep(POLL_S)
        return self.server.returncode

    def wait_sessions(self):
        deadline = time.time() + self.args.client_grace
        while time.time() < deadline:
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

    def exit_code(self, server_code):
        if self.no_host:
            return exitcodes.LAUNCH_NO_HOST
        if server_code != 0:
            return server_code
        if any(h.code != 0 for h in self.hosts):
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
            self.say("diskbench launch: exit %d (server exit %d)" % (code, server_code))
            return code
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            self.devnull.close()


def _write_line(stream, text):
    """One line of text on a console that may not take it (2.7 into a pipe: bytes)."""
    if sys.version_info[0] < 3 and isinstance(text, type(u"")):
        text = text.encode("utf-8", "backslashreplace")
    stream.write(text + "\n")
    stream.flush()


def main(argv=None):
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    try:
        args, server_flags, client_flags = split_argv(parser, argv)
        for item in args.remote_env:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", item):
                raise Usage("--remote-env wants NAME=VALUE, got '%s'" % printable(item))
        try:
            with open(args.hosts, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except (IOError, OSError) as exc:
            raise Usage("cannot read the hosts file %s: %s" % (
                printable(args.hosts), printable(getattr(exc, "strerror", None) or exc)))
        hosts = parse_hosts(text, args.hosts)
    except Usage as exc:
        _write_line(sys.stderr, u"%s: error: %s (see %s --help)"
                    % (PROG, printable(exc.args[0]), PROG))
        return exitcodes.USAGE
    return Launcher(args, server_flags, client_flags, hosts).run()


if __name__ == "__main__":
    sys.exit(main())
