"""The I/O threads: every established connection served by an event loop.

socketserver accepts a connection and its thread runs the handshake (up to
an accepted hello, a refusal or the end); the connection is then handed here
(``IOLoop.adopt``) and that thread ends. IO_THREADS threads each multiplex
their share of the connections with ``pollio.Poller`` (epoll; poll where
there is none; never select: FD_SETSIZE), read what is ready and pass it to
the connection's ``Handler.received``: the same framing, limits, dispatch
and policy as in the handshake, one batch per receive, recorded and acked by
the recorder thread as before. No thread per connection.

Back-pressure: while the recorder's queue is full (recorder.QUEUE_MAX), a
connection that has data is taken out of the poller (not read, not
buffered: its bytes wait in the kernel and then in its client) and put back
once there is room, looked at every PARK_POLL_S.

Sends never wait in an I/O thread (handler.LOOP_SEND_STALL_S); acks, pings
and go are sent by the recorder and main threads as before, under the
stall rule (a peer that does not read is closed).

An unexpected error serving one connection is logged with its traceback,
that connection's client is failed (refused with one line) and the
connection closed; an error outside any connection is logged and the loop
goes on. The loop never ends but by ``stop``.
"""
import collections
import errno
import fcntl
import logging
import os
import socket
import threading

from diskbench.compat import monotonic
from diskbench.pollio import Poller
from diskbench.server import handler as handler_mod
from diskbench.server.recorder import run_profiled

#: Threads serving established connections. One is the fastest on a
#: 2-core host (docs/SCALING.md): a second only adds GIL hand-overs.
IO_THREADS = 1
#: Most bytes taken from one connection per receive. One buffer per I/O
#: thread, not per connection (the handshake threads use handler.RECV_BYTES).
LOOP_RECV_BYTES = 65536
#: While connections are parked (the recorder's queue is full), the loop
#: looks this often whether there is room again.
PARK_POLL_S = 0.01

log = logging.getLogger("diskbench.server")

_WOULD_BLOCK = (errno.EAGAIN, errno.EWOULDBLOCK)


class IOLoop(object):
    """``ctx`` is the Master: recorder, server (for closing a socket), and
    connection_ended."""

    def __init__(self, ctx, threads=None):
        count = IO_THREADS if threads is None else threads
        self.workers = [_Worker(ctx, index) for index in range(max(1, count))]

    @property
    def kind(self):
        return self.workers[0].poller.kind

    def start(self):
        for worker in self.workers:
            worker.start()

    def adopt(self, handler):
        """Serve ``handler``'s connection from now on (its thread is done)."""
        self.workers[handler.conn_id % len(self.workers)].adopt(handler)

    def alive(self):
        return all(worker.thread.is_alive() for worker in self.workers)

    def parks(self):
        return sum(worker.parks for worker in self.workers)

    def stop(self):
        for worker in self.workers:
            worker.stop()


class _Worker(object):
    def __init__(self, ctx, index):
        self.ctx = ctx
        self.name = "io-%d" % index
        self.poller = Poller()
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            _set_nonblocking(fd)
        self.poller.register(self.wake_r)
        self.incoming = collections.deque()   # handed over, not yet registered
        self.conns = {}               # fd -> Handler
        self.parked = {}              # fd -> Handler, out of the poller (back-pressure)
        self.parks = 0                # times a connection was parked
        self.errors = 0               # unexpected errors caught (logged)
        self.stopping = False
        # (handler, seq, upto) the recorder wrote, whose acks this thread sends:
        # the sockets' own thread sends them in a row, where the recorder
        # sending each took the GIL back from this thread once per ack
        self.acks = collections.deque()
        # A wake-up is on its way (the pipe written, the loop not yet woken):
        # what is posted meanwhile rides on it. A join storm handed thousands
        # of connections over within seconds; each writing the pipe, the
        # handshake threads queued on it (a tenth of the storm's samples).
        self.wake_pending = False
        self.exited = False           # the loop is over: a poster sends its own
        self.thread = threading.Thread(target=run_profiled, args=(self.name, self._run),
                                       name=self.name)
        self.thread.daemon = True

    def start(self):
        self.thread.start()

    def stop(self):
        self.stopping = True
        self.wake_pending = True
        self._write_wake()

    def adopt(self, handler):
        self.incoming.append(handler)     # deque append: atomic, no lock
        self._wake()

    def post_ack(self, handler, seq, upto):
        """The recorder wrote ``handler``'s records up to ``seq``: have this
        thread send the ack (and go, ping). Called by the recorder thread."""
        self.acks.append((handler, seq, upto))   # deque append: atomic, no lock
        if self.exited:               # no loop to send it: whoever pops it sends it
            self._send_acks()
        else:
            self._wake()

    def _send_acks(self):
        now = monotonic()             # one clock read for the acks sent together
        while True:
            try:
                handler, seq, upto = self.acks.popleft()
            except IndexError:
                return
            try:
                handler.send_ack(seq, upto, now)
            except Exception:  # one connection's ack must not cost the others theirs
                log.exception("internal error acknowledging connection %d from %s",
                              handler.conn_id, handler.peer)

    def _wake(self):
        """Wake the loop unless a wake-up is already on its way (it takes
        whatever was posted before it is handled: ``_woken``)."""
        if not self.wake_pending:
            self.wake_pending = True
            self._write_wake()

    def _write_wake(self):
        try:
            os.write(self.wake_w, b"x")
        except (IOError, OSError):
            pass                      # the pipe is full: a wake-up is pending anyway

    def _run(self):
        handler_mod.mark_io_thread()
        while not self.stopping:
            try:
                self._once()
            except Exception:
                self.errors += 1
                log.exception("internal error in I/O thread %s; it goes on", self.name)
        self.exited = True            # (before the last look: see post_ack)
        self._send_acks()

    def _once(self):
        events = self.poller.poll(PARK_POLL_S if self.parked else None)
        full = self.ctx.recorder.full
        for fd, _events in events:
            if fd == self.wake_r:
                self._woken()
                continue
            handler = self.conns.get(fd)
            if handler is None:
                continue
            if full():                # back-pressure: stop reading it, for now
                self._park(fd, handler)
                continue
            self._serve(fd, handler)
        if self.parked and not full():
            self._unpark()

    def _woken(self):
        self._drain_wake_pipe()
        # Cleared after the drain (a byte written before it would be read with
        # the rest, leaving the flag set and the pipe empty: no wake-up ever
        # again) and before anything is taken (a post from here on wakes again).
        self.wake_pending = False
        self._take_incoming()
        self._send_acks()

    def _drain_wake_pipe(self):
        try:
            while os.read(self.wake_r, 4096):
                pass
        except (IOError, OSError):
            pass                      # drained

    def _take_incoming(self):
        while self.incoming:
            handler = self.incoming.popleft()
            try:
                fd = handler.loop_fd = handler.connection.fileno()
                handler.connection.setblocking(False)
                self.conns[fd] = handler
                self.poller.register(fd)
                handler.loop_worker = self    # its acks are sent from here on
            except Exception:
                log.exception("internal error taking over connection %d from %s in "
                              "I/O thread %s", handler.conn_id, handler.peer, self.name)
                self._failed(handler)

    def _park(self, fd, handler):
        if not self.parked and not self.parks:
            log.info("the recorder's queue is full (%d records): stopped reading the "
                     "connections that have more until it has room (back-pressure; "
                     "said once)", self.ctx.recorder.queue.limit)
        self.parks += 1
        self.poller.unregister(fd)
        self.parked[fd] = handler

    def _unpark(self):
        parked, self.parked = self.parked, {}
        for fd in parked:
            self.poller.register(fd)

    def _serve(self, fd, handler):
        try:
            data = handler.connection.recv(LOOP_RECV_BYTES)
        except (socket.error, IOError, OSError) as exc:
            if getattr(exc, "errno", None) in _WOULD_BLOCK:
                return
            log.info("connection %d from %s: read failed: %s", handler.conn_id,
                     handler.peer, exc)
            self._close(handler)
            return
        try:
            going = handler.received(data)
        except Exception:
            log.exception("internal error serving connection %d from %s (%s) in I/O "
                          "thread %s: failing that client, closing the connection; the "
                          "run goes on", handler.conn_id, handler.peer,
                          handler.name or "no hello", self.name)
            self._failed(handler)
            return
        if not going:
            self._close(handler)

    def _failed(self, handler):
        """An unexpected error on ``handler``'s connection (already logged)."""
        self.errors += 1
        try:
            handler.loop_failed()
        except Exception:
            log.exception("internal error failing the client of connection %d",
                          handler.conn_id)
        self._close(handler)

    def _close(self, handler):
        """Forget the connection, tell the registry and master, close the socket."""
        fd = getattr(handler, "loop_fd", None)
        if fd is not None:
            self.conns.pop(fd, None)
            self.parked.pop(fd, None)
            self.poller.unregister(fd)
        try:
            handler.closed()
        except Exception:
            log.exception("internal error closing connection %d", handler.conn_id)
        finally:
            try:
                self.ctx.connection_ended(handler)
            finally:
                self.ctx.server.shutdown_request(handler.request)


def _set_nonblocking(fd):
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
