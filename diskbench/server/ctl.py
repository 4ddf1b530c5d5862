"""``python -m diskbench.server ctl``: the command-line client of a running
server's control socket.

``ctl [--log-dir DIR] list | stop NAME | end | not-coming HOST``: one request
(protocol/ctl.py), the answer shown; the secret is read by the client's rule
(``cli.read_secret``). Every failure is one line naming the fix and a
documented exit code (``exitcodes.CTL_*``). Apart from the server side
(server/control.py): it shares only the channel's format.
"""
from __future__ import division

import errno
import os
import socket
import sys

from diskbench import exitcodes, metrics, protocol
from diskbench.cli import (DEFAULT_LOG_DIR, SECRET_ENV, OneLineParser, bad_name_reason,
                           printable, prog_name, read_secret, say)
from diskbench.compat import write_line
from diskbench.protocol.ctl import (ANSWER_CODES, MAX_AGE_S, REPLY_WAIT_S, SOCKET_NAME,
                                    socket_path, unix_op)
from diskbench.states import shown

#: ctl waits this long to connect and for each line of the answer.
REPLY_TIMEOUT_S = REPLY_WAIT_S


def build_parser():
    prog = "%s ctl" % prog_name("diskbench.server")
    p = OneLineParser(prog=prog, description=(
        "Control a running diskbench server from its host, over the unix socket "
        "control.sock in its --log-dir (only the server's user may use it)."),
        epilog=exitcodes.epilog(exitcodes.CTL))
    p.add_argument("--log-dir", default=os.path.join(".", DEFAULT_LOG_DIR),
                   help="the server's --log-dir (default: %(default)s)")
    p.add_argument("--secret-file", metavar="PATH", help="the server's secret, when it "
                   "has one (or set %s); read as the client reads it" % SECRET_ENV)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    sub.add_parser(protocol.CTL_LIST, help="one line per client: state, address, MiB written, "
                   "MiB/s now, rollovers, heartbeat age, why")
    stop = sub.add_parser(protocol.CTL_STOP, help="ask one client to stop (it finishes the chunk "
                          "in flight and sends its summary; reported as stopped by the "
                          "operator)")
    stop.add_argument("name", metavar="NAME", help="the client's name (ctl list)")
    sub.add_parser(protocol.CTL_END, help="end the run as one SIGINT does: every client asked to "
                   "stop, --shutdown-grace for their summaries, then the report")
    gone = sub.add_parser(protocol.CTL_NOT_COMING, help="before go: a host's client will not "
                          "come (the launcher says so when its ssh fails), so the run "
                          "waits for one client fewer instead of --start-timeout")
    gone.add_argument("host", metavar="HOST", help="the host, as the report should name it")
    gone.add_argument("--why", default="the operator said so", help="why it will not come")
    gone.add_argument("--client", metavar="NAME", help="its client's name, when known: a "
                      "client of that name that already said hello came, and the run "
                      "goes on waiting for as many clients as before")
    return p


def _fail(prog, code, text):
    say(prog, text)
    return code


def _connect(path, log_dir):
    """The connected socket, or (code, text) saying why not."""
    if not os.path.isdir(log_dir):
        return exitcodes.CTL_NO_SERVER, ("no directory %s: give the --log-dir the "
                                         "server was started with" % log_dir)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(REPLY_TIMEOUT_S)
    try:
        unix_op(sock, "connect", path)
        return sock
    except (socket.error, OSError) as exc:
        sock.close()
        err = getattr(exc, "errno", None)
        detail = os.strerror(err) if err else "%s" % exc
    if err == errno.ENOENT:
        return exitcodes.CTL_NO_SERVER, ("no server is running with --log-dir %s (no "
                                         "%s there): give the --log-dir the server was "
                                         "started with" % (log_dir, SOCKET_NAME))
    if err == errno.ECONNREFUSED:
        return exitcodes.CTL_NO_SERVER, ("no server is running with --log-dir %s (its "
                                         "%s was left by a server that ended without "
                                         "removing it)" % (log_dir, SOCKET_NAME))
    if err in (errno.EACCES, errno.EPERM):
        return exitcodes.CTL_REFUSED, ("not allowed to use %s: run ctl as the user "
                                       "that runs the server" % path)
    return exitcodes.CTL_NO_SERVER, "cannot connect to %s (%s)" % (path, detail)


def _answer(sock):
    """Yield the server's answer messages up to and including ``done``."""
    rfile = sock.makefile("rb")
    while True:
        line = protocol.read_line(rfile)
        if not line:
            return
        msg = protocol.decode(line, protocol.CTL_REPLY)
        yield msg
        if msg.type == protocol.CTL_DONE:
            return


def _table(rows):
    """``ctl list``'s lines: a header, then one aligned row per client."""
    head = ("client", "state", "address", "MiB written", "MiB/s now", "rollovers",
            "heartbeat", "why")
    body = [(printable(m.client), shown(m.state), printable(m.peer or "-"),
             "%.1f" % metrics.mib(m.written_bytes), "%.1f" % m.mib_s_now,
             "%d" % m.rollovers, "-" if m.heartbeat_age_s is None
             else "%.1f s ago" % m.heartbeat_age_s, printable(m.reason))
            for m in rows]
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head) - 1)]
    right = (3, 4, 5)
    out = []
    for r in [head] + body:
        cells = [r[i].rjust(w) if i in right else r[i].ljust(w)
                 for i, w in enumerate(widths)]
        out.append("  ".join(cells + [r[-1]]))
    return out


def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    prog = p.prog
    try:
        secret = read_secret(args.secret_file, os.environ.get(SECRET_ENV))
    except ValueError as exc:
        return _fail(prog, exitcodes.USAGE, exc)
    fields = {}
    if args.command == protocol.CTL_STOP:
        why = bad_name_reason(args.name)
        if why:
            return _fail(prog, exitcodes.USAGE, why.replace("--name", "NAME", 1))
        fields = dict(client=args.name)
    elif args.command == protocol.CTL_NOT_COMING:
        fields = dict(host=printable(args.host)[:255], reason=printable(args.why))
        if args.client is not None:
            why = bad_name_reason(args.client)
            if why:
                return _fail(prog, exitcodes.USAGE, why.replace("--name", "--client", 1))
            fields["client"] = args.client
    request = protocol.encode(protocol.make(args.command, protocol.CTL_REQUEST,
                                            **fields), secret)
    path = socket_path(args.log_dir)
    sock = _connect(path, args.log_dir)
    if isinstance(sock, tuple):
        return _fail(prog, *sock)
    rows, done = [], None
    try:
        try:
            sock.sendall(request)
        except (socket.error, OSError):
            pass  # the answer (a refusal) may still be there to read
        for msg in _answer(sock):
            if msg.type == protocol.CTL_CLIENT:
                rows.append(msg)
            else:
                done = msg
    except socket.timeout:
        return _fail(prog, exitcodes.CTL_NO_SERVER, "no answer from the server within "
                     "%g s (is it stopped or frozen?); it will not carry the request out "
                     "later (it refuses one older than %g s): run ctl again once it "
                     "answers" % (REPLY_TIMEOUT_S, MAX_AGE_S))
    except (socket.error, OSError, protocol.ProtocolError) as exc:
        return _fail(prog, exitcodes.CTL_NO_SERVER, "the server's answer broke off "
                     "(%s); see its server.log" % exc)
    finally:
        sock.close()
    if done is None:
        return _fail(prog, exitcodes.CTL_NO_SERVER, "the server closed the control "
                     "connection without an answer (it may be ending); see its "
                     "server.log")
    code = done.code if done.code in ANSWER_CODES else exitcodes.CTL_REFUSED
    if code != exitcodes.OK:
        return _fail(prog, code, done.text)
    if args.command == protocol.CTL_LIST:
        lines = _table(rows) if rows else ["no client has said hello yet"]
        write_line(sys.stdout, "\n".join(lines))
    write_line(sys.stdout, printable(done.text))
    return code
