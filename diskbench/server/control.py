"""The server's control socket: LOG_DIR/control.sock and the thread serving it.

Why: an operator must be able to stop one client, see the clients or end the
run from another terminal, without a signal (which cannot name a client) and
without opening a network port. The request/answer format and the socket's
place are protocol/ctl.py; the ``ctl`` command is server/ctl.py.

``ControlServer``: a unix stream socket ``control.sock`` in --log-dir,
created under a restrictive umask and chmod 0600 (only the server's user can
connect), with the peer's uid checked too (SO_PEERCRED on Linux: the server's
uid and root are served), removed at exit. The operator is never locked out:
one thread ("control") accepts, checks the peer's uid before reading a byte
(another user is refused at once) and hands each connection to a thread of
its own (at most MAX_REQUESTS at once; beyond, a connection is refused "busy"
at once), which must receive the whole request line within REQUEST_S of the
connect (one deadline for the whole request: a peer trickling a byte at a
time does not reset it). So a silent, slow or foreign peer delays no other
request. Any failure is logged and serving goes on. A request is one protocol
line (``protocol.CTL_REQUEST``); with a secret it must carry the secret's
HMAC, like every data message, and be signed at most MAX_AGE_S before or
after the server's clock (a captured request cannot be replayed later, nor
one signed on a clock set ahead be kept for later). Answers
(``protocol.CTL_REPLY``) end with a ``done`` line carrying ctl's exit code.
"""
from __future__ import division

import errno
import logging
import os
import socket
import stat
import threading
import time

from diskbench import exitcodes, metrics, protocol
from diskbench.cli import SECRET_ENV, prog_name
from diskbench.compat import monotonic
from diskbench.linux import peer_uid
from diskbench.protocol.ctl import (MAX_AGE_S, MAX_REQUEST_BYTES, SOCKET_NAME, socket_path,
                                    unix_op)
from diskbench.server import Sparse
from diskbench.states import FINISHED, LIVE

#: Its permissions, and the umask it is created under (no moment when others
#: could connect).
SOCKET_MODE = 0o600
SOCKET_UMASK = 0o177
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
#: One read takes up to this much (more than a request may be: an over-long one is
#: read whole when it came in one piece, so the refusal is not reset under it).
_READ_BYTES = 65536
#: Joining the serving thread at exit takes at most this long.
JOIN_S = 2.0
#: An operator's stop, worded once: the reason a client is given (and logs),
#: and with its time what ctl list, the server's log and the report say.
OPERATOR_STOP_REASON = "stopped by the operator (ctl stop)"

log = logging.getLogger("diskbench.server")


class ServerRunning(Exception):
    """A live server answers on the log dir's control socket; the text names the fix."""


def operator_reason(at):
    """Why a client stopped by ``ctl stop`` (at wall time ``at``) finished: the
    registry only knows that the server asked it (ctl list and the report)."""
    return "%s at %s" % (OPERATOR_STOP_REASON, metrics.utc(at))



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
        unix_op(probe, "connect", path)
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
        self.refusals = Sparse()        # refusals logged sparingly, per kind

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
            unix_op(sock, "bind", self.path)
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

    def _refused(self, kind, text):
        """Log a refusal of ``kind`` sparingly (``Sparse``: a flood on the
        socket must not flood server.log)."""
        said = self.refusals.note(kind)
        if said is not None:
            log.warning("control socket: %s%s", text, said)

    def _dispatch(self, conn):
        """Check the peer, then serve ``conn`` on a thread of its own (never here:
        a peer that says nothing must not hold the next request)."""
        deadline = monotonic() + REQUEST_S
        uid = peer_uid(conn)
        if uid is not None and uid not in self.uids:
            self._refused("uid", "refused a request from uid %d (only uid %d and root "
                          "are served)" % (uid, self.uids[0]))
            self._refuse(conn, exitcodes.CTL_REFUSED, "refused: this control socket "
                         "serves uid %d (the server's user) only; run ctl as that user"
                         % self.uids[0])
            return
        if not self.slots.acquire(False):
            self._refused("busy", "refused a connection: %d requests in flight (each "
                          "has at most %g s to arrive)" % (MAX_REQUESTS, REQUEST_S))
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
            self._refused("slow", "no whole request within %g s of the connect: "
                          "closed (a stuck or slow peer)" % REQUEST_S)
            return
        except (socket.error, OSError) as exc:
            log.info("control socket: no request read (%s)", exc)
            return
        conn.settimeout(IO_TIMEOUT_S)
        if not line:
            return  # a probe (check_free of another server), or ctl gave up
        if too_long:
            self._refused("too long", "refused a request: %s" % too_long)
            self._done(conn, exitcodes.USAGE, "refused: %s" % too_long)
            return
        try:
            req = protocol.decode(line, protocol.CTL_REQUEST, self.secret)
        except protocol.ProtocolError as exc:
            self._refused(exc.kind, "refused a request (%s): %s" % (exc.kind, exc))
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
            self._refused("age", "refused a %s request signed %s (over %g s: a replay, "
                          "or a clock set wrong?)" % (req.type, when, MAX_AGE_S))
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
        return exitcodes.OK, self.registry.not_coming(req.host, req.reason,
                                                      req.data.get("client"))


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
        head = data[:MAX_REQUEST_BYTES]   # the request line's first bytes
        if b"\n" not in head and protocol.pending_over(head, MAX_REQUEST_BYTES):
            raise protocol.LineTooLong(MAX_REQUEST_BYTES)
    return data[:data.index(b"\n") + 1]


_REQUESTS = {
    protocol.CTL_LIST: ControlServer._list,
    protocol.CTL_STOP: ControlServer._stop,
    protocol.CTL_END: ControlServer._end,
    protocol.CTL_NOT_COMING: ControlServer._not_coming,
}

