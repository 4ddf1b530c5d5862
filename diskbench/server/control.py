"""The local control channel: LOG_DIR/control.sock and ``python -m diskbench.server ctl``.

Why: an operator must be able to stop one client, see the clients or end the
run from another terminal, without a signal (which cannot name a client) and
without opening a network port.

- **Server side** (``ControlServer``): a unix stream socket ``control.sock`` in
  --log-dir, created under a restrictive umask and chmod 0600 (only the
  server's user can connect), with the peer's uid checked too (SO_PEERCRED on
  Linux: the server's uid and root are served), removed at exit. The operator
  is never locked out: one thread ("control") accepts, checks the peer's uid
  before reading a byte (another user is refused at once) and hands each
  connection to a thread of its own (at most MAX_REQUESTS at once; beyond, a
  connection is refused "busy" at once), which must receive the whole request
  line within REQUEST_S of the connect (one deadline for the whole request: a
  peer trickling a byte at a time does not reset it). So a silent, slow or
  foreign peer delays no other request. Any failure is logged and serving goes
  on. A request is one protocol line (``protocol.CTL_REQUEST``); with a secret
  it must carry the secret's HMAC, like every data message, and be signed at
  most MAX_AGE_S before or after the server's clock (a captured request cannot
  be replayed later, nor one signed on a clock set ahead be kept for later).
  Answers (``protocol.CTL_REPLY``) end with a ``done`` line carrying ctl's
  exit code. Answers are not signed: they only report.
- **Client side** (``main``): ``python -m diskbench.server ctl [--log-dir DIR]
  list | stop NAME | end | not-coming HOST``; the secret is read by the client's rule
  (``cli.read_secret``). Every failure is one line naming the fix and a
  documented exit code (``exitcodes.CTL_*``).
"""
from __future__ import division

import errno
import logging
import os
import socket
import stat
import sys
import threading
import time

from diskbench import exitcodes, metrics, protocol
from diskbench.cli import (DEFAULT_LOG_DIR, SECRET_ENV, OneLineParser, bad_name_reason,
                           printable, prog_name, read_secret)
from diskbench.compat import as_bytes, monotonic, peer_uid
from diskbench.states import FINISHED, LIVE, shown

#: The socket's name in --log-dir.
SOCKET_NAME = "control.sock"
#: Its permissions, and the umask it is created under (no moment when others
#: could connect).
SOCKET_MODE = 0o600
SOCKET_UMASK = 0o177
#: The longest path a unix socket may have on Linux (sun_path, 108 bytes with
#: its NUL). A longer one is reached through /proc/self/fd (``_unix_address``).
SOCKET_PATH_MAX = 107
#: Where Linux shows a process's open descriptors as paths.
PROC_FD_DIR = "/proc/self/fd"
#: Pending connections the listener holds (operators, not clients).
BACKLOG = 8
#: The accepting thread looks at its closing flag this often.
POLL_S = 0.2
#: The whole request line must arrive within this time of the connect (one
#: deadline, not one per read: a peer sending a byte a second is cut off too);
#: ``ctl`` sends its line as soon as it is connected.
REQUEST_S = 1.0
#: Requests served at once, each by its own thread; a connection beyond them is
#: refused "busy" at once (each is held at most REQUEST_S before its line is in).
MAX_REQUESTS = 16
#: Each answer line must leave within this time (a peer that does not read).
IO_TIMEOUT_S = 5.0
#: After an unexpected failure in the serving loop, wait this long before
#: serving again (never a spin).
FAILURE_BACKOFF_S = 0.5
#: A request signed longer ago than this (or this far in the future) is
#: refused: a captured request cannot be replayed later.
MAX_AGE_S = 60.0
#: The longest request line (a request holds at most one client name).
MAX_REQUEST_BYTES = 4096
#: One read takes up to this much (more than a request may be: an over-long one is
#: read whole when it came in one piece, so the refusal is not reset under it).
_READ_BYTES = 65536
#: ctl waits this long to connect and for each line of the answer.
REPLY_TIMEOUT_S = 10.0
#: Joining the serving thread at exit takes at most this long.
JOIN_S = 2.0
#: An operator's stop, worded once: the reason a client is given (and logs),
#: and with its time what ctl list, the server's log and the report say.
OPERATOR_STOP_REASON = "stopped by the operator (ctl stop)"
#: The exit codes a server's answer may carry (anything else is a refusal).
_CTL_CODES = (exitcodes.OK, exitcodes.INTERNAL, exitcodes.USAGE, exitcodes.CTL_NO_SERVER,
              exitcodes.CTL_NO_CLIENT, exitcodes.CTL_REFUSED)

log = logging.getLogger("diskbench.server")


class ServerRunning(Exception):
    """A live server answers on the log dir's control socket; the text names the fix."""


def operator_reason(at):
    """Why a client stopped by ``ctl stop`` (at wall time ``at``) finished: the
    registry only knows that the server asked it (ctl list and the report)."""
    return "%s at %s" % (OPERATOR_STOP_REASON, metrics.utc(at))


def socket_path(log_dir):
    return os.path.join(log_dir, SOCKET_NAME)


def _unix_op(sock, op, path):
    """``sock.bind(path)`` or ``sock.connect(path)`` (``op``), also for a path
    longer than a unix socket address may be: then through the directory
    opened as /proc/self/fd/N (Linux), so a deep --log-dir still has ctl."""
    if len(path.encode("utf-8", "replace")) <= SOCKET_PATH_MAX or \
            not os.path.isdir(PROC_FD_DIR):
        return getattr(sock, op)(path)
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        return getattr(sock, op)(os.path.join(PROC_FD_DIR, "%d" % fd,
                                              os.path.basename(path)))
    finally:
        os.close(fd)


def check_free(log_dir):
    """Raise ServerRunning when another server is running with ``log_dir``
    (two servers appending to one perf.jsonl would mix two runs). A socket
    nobody answers on was left by a server that died: it is replaced later."""
    path = socket_path(log_dir)
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(IO_TIMEOUT_S)
    try:
        _unix_op(probe, "connect", path)
    except (socket.error, OSError):
        return
    finally:
        probe.close()   # the other server reads end of stream: nothing asked
    raise ServerRunning(
        "another server is running with --log-dir %s (its %s answers): end it "
        "(%s ctl --log-dir %s end) or give another --log-dir" % (
            log_dir, SOCKET_NAME, prog_name("diskbench.server"), log_dir))


# --- server side ----------------------------------------------------------------
class ControlServer(object):
    """Serves ctl requests on LOG_DIR/control.sock from one thread.

    ``registry``: the run's registry (list, stop). ``on_stop(name)``: called
    once a client was sent the operator's stop. ``on_end()``: ends the run,
    returns what happens in words.
    """

    def __init__(self, log_dir, secret, registry, on_stop, on_end, run_id,
                 clock=time.time):
        self.path = socket_path(log_dir)
        self.secret = secret
        self.registry = registry
        self.on_stop = on_stop
        self.on_end = on_end
        self.run_id = run_id
        self.clock = clock
        self.uids = (os.geteuid(), 0)   # root may signal the server anyway
        self.sock = None
        self.inode = None
        self.closing = False
        self.failures = 0               # unexpected failures, each logged
        self.stops = {}                 # client name -> wall time of its `ctl stop`
        self.thread = None
        self.slots = threading.BoundedSemaphore(MAX_REQUESTS)

    def open(self):
        """Create the socket (owner-only) and start serving. Raises
        socket.error/OSError with what went wrong (the run goes on without)."""
        try:
            mode = os.lstat(self.path).st_mode
        except OSError:
            mode = None
        if mode is not None:
            if not stat.S_ISSOCK(mode):
                raise OSError(errno.EEXIST, "%s exists and is not a socket: remove it"
                              % self.path)
            os.unlink(self.path)        # left by a server that died (check_free)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(SOCKET_UMASK)
        try:
            _unix_op(sock, "bind", self.path)
        except (socket.error, OSError):
            sock.close()
            raise
        finally:
            os.umask(old)
        os.chmod(self.path, SOCKET_MODE)
        self.inode = os.lstat(self.path).st_ino
        sock.listen(BACKLOG)
        sock.settimeout(POLL_S)         # accept() returns to look at self.closing
        self.sock = sock
        self.thread = threading.Thread(target=self._serve, name="control")
        self.thread.daemon = True
        self.thread.start()

    def close(self):
        """Stop serving and remove the socket (only if it is still ours)."""
        self.closing = True
        if self.thread is not None:
            self.thread.join(JOIN_S)
        if self.sock is not None:
            try:
                self.sock.close()
            except (socket.error, OSError):
                pass
        try:
            if self.inode is not None and os.lstat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except OSError:
            pass

    def alive(self):
        return self.thread is not None and self.thread.is_alive()

    def _serve(self):
        while not self.closing:
            try:
                try:
                    conn = self.sock.accept()[0]
                except socket.timeout:
                    continue
                self._dispatch(conn)
            except Exception:  # noqa: B902 - logged; the thread must keep serving
                if self.closing:
                    return
                self._failed("accepting failed")

    def _dispatch(self, conn):
        """Check the peer, then serve ``conn`` on a thread of its own (never here:
        a peer that says nothing must not hold the next request)."""
        deadline = monotonic() + REQUEST_S
        uid = peer_uid(conn)
        if uid is not None and uid not in self.uids:
            log.warning("control socket: refused a request from uid %d (only uid %d "
                        "and root are served)", uid, self.uids[0])
            self._refuse(conn, exitcodes.CTL_REFUSED, "refused: this control socket "
                         "serves uid %d (the server's user) only; run ctl as that user"
                         % self.uids[0])
            return
        if not self.slots.acquire(False):
            log.warning("control socket: refused a connection: %d requests in flight "
                        "(each has at most %g s to arrive)", MAX_REQUESTS, REQUEST_S)
            self._refuse(conn, exitcodes.CTL_REFUSED, "refused: the server is busy with "
                         "%d other control requests; run ctl again" % MAX_REQUESTS)
            return
        try:
            worker = threading.Thread(target=self._request_thread, name="control-request",
                                      args=(conn, deadline))
            worker.daemon = True
            worker.start()
        except Exception:  # noqa: B902 - no thread: the slot and socket go back
            self.slots.release()
            conn.close()
            raise

    def _refuse(self, conn, code, text):
        """Answer at once without reading, then close."""
        conn.settimeout(IO_TIMEOUT_S)
        self._done(conn, code, text)
        try:
            conn.shutdown(socket.SHUT_WR)
        except (socket.error, OSError):
            pass
        conn.close()

    def _request_thread(self, conn, deadline):
        try:
            self._serve_one(conn, deadline)
        except Exception:  # noqa: B902 - a bug: said, and the others served
            self._failed("a request failed")
            self._done(conn, exitcodes.INTERNAL, "the server failed to answer "
                       "(a bug: its server.log has the traceback)")
        finally:
            conn.close()
            self.slots.release()

    def _failed(self, what):
        """Log the exception being handled; wait a little (never a spin)."""
        self.failures += 1
        log.exception("control socket: %s (failure %d); still serving", what,
                      self.failures)
        time.sleep(FAILURE_BACKOFF_S)

    def _serve_one(self, conn, deadline):
        # The line is read before any answer, even one refusing the request:
        # closing on unread bytes would reset the connection under the answer.
        too_long = None
        try:
            line = _read_request(conn, deadline)
        except protocol.LineTooLong as exc:
            line, too_long = b"-", "%s" % exc
        except socket.timeout:
            log.warning("control socket: no whole request within %g s of the connect: "
                        "closed (a stuck or slow peer)", REQUEST_S)
            return
        except (socket.error, OSError) as exc:
            log.info("control socket: no request read (%s)", exc)
            return
        conn.settimeout(IO_TIMEOUT_S)
        if not line:
            return  # a probe (check_free of another server), or ctl gave up
        if too_long:
            log.warning("control socket: refused a request: %s", too_long)
            self._done(conn, exitcodes.USAGE, "refused: %s" % too_long)
            return
        try:
            req = protocol.decode(line, protocol.CTL_REQUEST, self.secret)
        except protocol.ProtocolError as exc:
            log.warning("control socket: refused a request (%s): %s", exc.kind, exc)
            if exc.kind == protocol.ProtocolError.BAD_MAC:
                self._done(conn, exitcodes.CTL_REFUSED, "refused: %s; give ctl the "
                           "server's secret (--secret-file or %s)" % (exc, SECRET_ENV))
            else:
                self._done(conn, exitcodes.USAGE, "refused: %s; run the same diskbench "
                           "version as the server" % exc)
            return
        age = self.clock() - req.ts
        if abs(age) > MAX_AGE_S:
            when = "%.0f s ago" % age if age > 0 else \
                "%.0f s ahead of the server's clock" % -age
            log.warning("control socket: refused a %s request signed %s (over %g s: a "
                        "replay, or a clock set wrong?)", req.type, when, MAX_AGE_S)
            self._done(conn, exitcodes.CTL_REFUSED, "refused: the request was signed %s "
                       "(at most %g s either way: a replayed request, or a clock that "
                       "is off?); run ctl again" % (when, MAX_AGE_S))
            return
        try:
            code, text = _REQUESTS[req.type](self, conn, req)
        except (socket.error, OSError) as exc:  # ctl went away mid-answer
            log.info("control socket: the answer to %s could not be sent (%s)",
                     req.type, exc)
            return
        self._done(conn, code, text)

    def _send(self, conn, type_, **fields):
        conn.sendall(protocol.encode(protocol.make(type_, protocol.CTL_REPLY, **fields)))

    def _done(self, conn, code, text):
        try:
            self._send(conn, protocol.CTL_DONE, code=code, text=text)
        except (socket.error, OSError) as exc:
            log.info("control socket: the answer could not be sent (%s)", exc)

    def _list(self, conn, req):
        view = self.registry.progress_view()
        now = self.clock()
        for c in view.clients:
            stopped = self.stops.get(c.name)
            reason = operator_reason(stopped) if stopped is not None and \
                c.state == FINISHED else c.reason
            self._send(conn, protocol.CTL_CLIENT, client=c.name, host=c.host,
                       state=c.state, reason=reason, peer=c.peer,
                       written_bytes=c.bytes, rollovers=c.rollovers,
                       mib_s_now=metrics.recent_mib_s(c.recent, view.now)
                       if c.state in LIVE else 0.0,
                       heartbeat_age_s=None if c.heartbeat_ts is None
                       else max(0.0, now - c.heartbeat_ts))
        return exitcodes.OK, "run %s: %d client%s" % (
            self.run_id, len(view.clients), "" if len(view.clients) == 1 else "s")

    def _stop(self, conn, req):
        name = req.client
        state, sender = self.registry.link(name)
        if state is None:
            return exitcodes.CTL_NO_CLIENT, ("no client named %s in this run (ctl list "
                                             "shows the names)" % name)
        if state not in LIVE:
            return exitcodes.CTL_NO_CLIENT, "client %s is %s: nothing to stop" % (
                name, state)
        stop = protocol.make(protocol.STOP, protocol.S2C, reason=OPERATOR_STOP_REASON)
        if sender is None or not sender(stop):
            return exitcodes.CTL_NO_CLIENT, ("client %s is not connected right now: "
                                             "nothing to send the stop to; try again "
                                             "once it reconnects" % name)
        self.stops[name] = self.clock()
        self.on_stop(name)
        return exitcodes.OK, ("asked client %s to stop: it finishes the chunk in "
                              "flight, sends its summary and exits; the report says "
                              "'%s'" % (name, OPERATOR_STOP_REASON))

    def _end(self, conn, req):
        return exitcodes.OK, self.on_end()

    def _not_coming(self, conn, req):
        return exitcodes.OK, self.registry.not_coming(req.host, req.reason)


def _read_request(conn, deadline):
    """The request line from ``conn`` (b'' at end of stream before a newline),
    all of it by ``deadline`` (compat.monotonic): socket.timeout after it,
    LineTooLong past MAX_REQUEST_BYTES."""
    data = b""
    while b"\n" not in data:
        left = deadline - monotonic()
        if left <= 0:
            raise socket.timeout("no whole request in time")
        conn.settimeout(left)
        chunk = conn.recv(_READ_BYTES)
        if not chunk:
            return b""
        data += chunk
        if len(data) > MAX_REQUEST_BYTES and b"\n" not in data[:MAX_REQUEST_BYTES + 1]:
            raise protocol.LineTooLong(MAX_REQUEST_BYTES)
    return data[:data.index(b"\n") + 1]


_REQUESTS = {
    protocol.CTL_LIST: ControlServer._list,
    protocol.CTL_STOP: ControlServer._stop,
    protocol.CTL_END: ControlServer._end,
    protocol.CTL_NOT_COMING: ControlServer._not_coming,
}


# --- client side: python -m diskbench.server ctl ---------------------------------
def build_parser():
    prog = "%s ctl" % prog_name("diskbench.server")
    p = OneLineParser(prog=prog, description=(
        "Control a running diskbench server from its host, over the unix socket "
        "control.sock in its --log-dir (only the server's user may use it)."),
        epilog="Exit codes: 0 done; 2 usage; %d no server running with that --log-dir; "
        "%d no such client, or it is not running; %d refused (secret differs or is "
        "missing, another user, a clock off by over %g s, or busy)." % (
            exitcodes.CTL_NO_SERVER, exitcodes.CTL_NO_CLIENT, exitcodes.CTL_REFUSED,
            MAX_AGE_S))
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
    return p


def _write(stream, text):
    """UTF-8 on both Pythons, whatever the locale says (names may be any text)."""
    stream.flush()
    out = getattr(stream, "buffer", stream)
    out.write(as_bytes(text))
    out.flush()


def _fail(prog, code, text):
    _write(sys.stderr, "%s: error: %s\n" % (prog, printable(text)))
    return code


def _connect(path, log_dir):
    """The connected socket, or (code, text) saying why not."""
    if not os.path.isdir(log_dir):
        return exitcodes.CTL_NO_SERVER, ("no directory %s: give the --log-dir the "
                                         "server was started with" % log_dir)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(REPLY_TIMEOUT_S)
    try:
        _unix_op(sock, "connect", path)
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
        return _fail(prog, exitcodes.USAGE, "%s" % exc)
    fields = {}
    if args.command == protocol.CTL_STOP:
        why = bad_name_reason(args.name)
        if why:
            return _fail(prog, exitcodes.USAGE, why.replace("--name", "NAME", 1))
        fields = dict(client=args.name)
    elif args.command == protocol.CTL_NOT_COMING:
        fields = dict(host=printable(args.host)[:255], reason=printable(args.why))
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
                     "%g s (is it stopped or frozen?)" % REPLY_TIMEOUT_S)
    except (socket.error, OSError, protocol.ProtocolError) as exc:
        return _fail(prog, exitcodes.CTL_NO_SERVER, "the server's answer broke off "
                     "(%s); see its server.log" % exc)
    finally:
        sock.close()
    if done is None:
        return _fail(prog, exitcodes.CTL_NO_SERVER, "the server closed the control "
                     "connection without an answer (it may be ending); see its "
                     "server.log")
    code = done.code if done.code in _CTL_CODES else exitcodes.CTL_REFUSED
    if code != exitcodes.OK:
        return _fail(prog, code, done.text)
    if args.command == protocol.CTL_LIST:
        lines = _table(rows) if rows else ["no client has said hello yet"]
        _write(sys.stdout, "".join("%s\n" % line for line in lines))
    _write(sys.stdout, "%s\n" % printable(done.text))
    return code
