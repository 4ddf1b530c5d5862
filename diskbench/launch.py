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
import re
import sys

from diskbench import DEFAULT_PORT, __version__, exitcodes
from diskbench.cli import (DEFAULT_LOG_DIR, listen_host, parse_host, port, printable, prog_name,
                           seconds)
from diskbench.compat import write_line
from diskbench.launchargs import (DEFAULT_PYTHONS, Usage, check_shared_name, parse_hosts,
                                  split_argv)
from diskbench.launcher import Launcher

PROG = prog_name("diskbench.launch")

#: ssh's own ConnectTimeout: how long one host may take to answer before it counts as failed.
SSH_CONNECT_TIMEOUT_S = 10
#: After the server ended: how long ssh sessions may take to end (a client delivering its
#: last results keeps trying for its --deliver-timeout, 30 s by default).
CLIENT_GRACE_S = 60.0
#: After every ssh session ended: how long the server may take to complete on its own
#: (its default rejoin grace is 30 s after a 15 s went-away timeout) before it is stopped.
SERVER_GRACE_S = 60.0


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
                   help="the address the hosts reach this server at, a name or an IPv4 "
                        "or IPv6 address (default: --host if it is one address, else this "
                        "machine's fully qualified name); the clients get it as "
                        "--server HOST:PORT ([ADDR]:PORT for IPv6)")
    p.add_argument("--host", default="0.0.0.0",
                   help="address the server listens on (default 0.0.0.0; :: for IPv6 and "
                        "IPv4; passed on)")
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
        try:   # as the server takes it ([::1] is ::1): the clients' address comes from it
            args.host = listen_host(args.host)
        except ValueError as exc:
            raise Usage("--host %s" % exc)
        check_shared_name(hosts, client_flags)
        if args.server_host:
            try:
                args.server_host = parse_host(args.server_host)
            except ValueError as exc:
                raise Usage("--server-host %s: the host %s; give this machine's name or "
                            "address as the hosts reach it (IPv6: fd00::5 or [fd00::5])"
                            % (printable(args.server_host), exc))
    except Usage as exc:
        write_line(sys.stderr, u"%s: error: %s (see %s --help)"
                    % (PROG, printable(exc.args[0]), PROG))
        return exitcodes.USAGE
    return Launcher(args, server_flags, client_flags, hosts).run()


if __name__ == "__main__":
    sys.exit(main())
