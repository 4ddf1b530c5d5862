"""One TCP connection: read lines, decode, dedupe by seq, dispatch, send acks/go.

The receive loop (``handle``/``_loop``: framing, timeouts, bad input) is kept
apart from dispatch (``_DISPATCH``: what each message type means for the
connection); what a message means for the client's figures is the registry's
business. A handler never writes a file: accepted messages go to the recorder,
whose callback sends the ack once the record is flushed.

Client input can never kill the server: every undecodable line is logged with
the peer address, counted by kind, and the connection goes on, except when it
is beyond repair (over-long line, wrong protocol version, wrong secret on hello,
a name taken by another process): then the connection is closed, after a
``rejected`` message where the client can act on it.

Two phases, one line handling: the thread socketserver starts for a
connection serves it until its hello is accepted (or it is refused or
closed), then hands it to the I/O threads (ioloop.py), which serve every
established connection with epoll. Both feed what they receive to
``received`` (framing, limits, dispatch, policy): nothing is duplicated.

Deadlines (enforced by the master's tick through ``expire_if_due``, so a peer
that trickles one byte at a time cannot hold a thread): a connection must have
an accepted hello within --hello-timeout of connecting, and after that must
complete a line at least every --read-timeout.
"""
import errno
import logging
import random
import socket
import threading

from diskbench import protocol, runclock
from diskbench.cli import peer_text
from diskbench.compat import monotonic, socketserver
from diskbench.pollio import wait_writable
from diskbench.server import registry as reg
from diskbench import ledger
from diskbench.server.recorder import run_profiled

_THREAD = threading.local()


def in_io_thread():
    """Is the calling thread one of the I/O threads (ioloop.py)?"""
    return getattr(_THREAD, "io", False)


def mark_io_thread():
    _THREAD.io = True

#: A connection that sends nothing for this long is closed (its client, if it
#: had one, is then marked went away). Set from --read-timeout.
READ_TIMEOUT_S = 300.0
#: A connection without an accepted hello this long after connecting is closed
#: (slowloris). Set from --hello-timeout.
HELLO_TIMEOUT_S = 10.0
#: Rejections logged per connection; further ones are only counted.
REJECT_LOG_MAX = 20
#: A send (ack, go, ...) that cannot go out for this long means the peer does
#: not read: the connection is closed, so it never holds up the recorder thread
#: that sends acks.
SEND_STALL_S = 2.0
#: An ack or ping the recorder thread cannot send within this long closes the
#: connection (its peer has left a whole socket buffer of our lines unread):
#: a peer that does not read delays the other connections' acks once, by at
#: most this much, never by SEND_STALL_S. Only for a connection still in its
#: handshake thread: an I/O thread sends the acks of its own (LOOP_SEND_STALL_S).
RECORDER_SEND_STALL_S = 0.05
#: A client is pinged right after its hello, then about this often (sent
#: after one of its messages: no scan of every connection), each wait drawn
#: from PING_JITTER times it. Its pong gives the round trip and the clock
#: offset (registry._apply_pong).
PING_INTERVAL_S = 10.0
PING_JITTER = (0.5, 1.5)
#: A send made by an I/O thread (a rejection) waits this long at most for
#: the peer to read: an I/O thread serves every connection and never waits
#: on one. 0: what the socket buffer cannot take now closes the connection.
LOOP_SEND_STALL_S = 0.0
#: Most bytes taken from a connection's socket per receive: every complete
#: line they hold is handled, recorded and acked as one batch. Small: each
#: thread holds a buffer this big while it waits in recv, so it is paid
#: once per connection; a few lines are enough.
RECV_BYTES = 4096

log = logging.getLogger("diskbench.server")

# Kinds after which a connection is closed (with a REJECTED message first when
# the peer is a diskbench client that can print it).
_FATAL_KINDS = (protocol.ProtocolError.BAD_VERSION,)


class Handler(socketserver.BaseRequestHandler):
    """``self.server.ctx`` is the Master: registry, recorder, secret, run_id.

    No file objects over the socket: the loop receives into its own batches,
    and a buffered reader per connection was 8 KiB each on Python 3. No
    socket timeout either: a socket with one polls before every read (one
    more system call per message); the master's deadlines close a silent
    connection instead (expire_if_due)."""

    def setup(self):
        ctx = self.server.ctx
        self.connection = self.request
        try:  # acks are small and must not wait for the peer's delayed ACK (Nagle)
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (socket.error, OSError):
            pass
        self.ctx = ctx
        self.registry = ctx.registry
        self.peer = peer_text(self.client_address)     # [::1]:54321 for IPv6
        self.send_lock = threading.Lock()
        self.name = None
        self.said_bye = False
        self.outcome = None           # the registry's word on the last message
        self.rejections = 0
        self.expired = None           # (kind, reason) once the master cut us off
        self.send_dead = False        # a send stalled or failed: no more sends
        # Highest seq handed to the recorder on this connection (handler
        # thread). Acks are per connection: an ack says "every seq you sent on
        # this connection up to here is recorded", whatever another peer
        # claiming the same name sends on its own connection.
        self.queued_upto = 0
        self.new_seq = 0                   # highest NEW seq of the batch in hand
        self.pending = []                  # its record lines, queued by _flush
        self.pending_acks = False          # it holds something to ack
        self.next_ping = None              # monotonic() the next ping is due
        self.acked = False                 # an ack was sent on this connection
        self.held_pinged = False           # pinged while its hello is held unwritten
        self.deadline = monotonic() + ctx.hello_timeout
        self.rest = b""               # bytes of a line not yet complete
        self.adopted = False          # handed to the I/O threads (ioloop.py)
        self.conn_id = self.registry.connection_opened()
        ctx.connection_started(self)

    def finish(self):
        if not self.adopted:          # else the I/O thread ends it (ioloop._close)
            self.ctx.connection_ended(self)

    # --- the receive loop ------------------------------------------------------
    def handle(self):
        log.info("connection %d from %s", self.conn_id, self.peer)
        try:
            run_profiled("handler-%d" % self.conn_id, self._loop)
        finally:
            if not self.adopted:
                self.closed()

    def closed(self):
        """The connection is over (its handler thread or an I/O thread)."""
        if self.expired is not None:
            self._rejected(*self.expired)
        self.registry.connection_closed(self.name, self.conn_id, self.said_bye)
        log.info("connection %d from %s (%s) closed", self.conn_id, self.peer,
                 self.name or "no hello")

    def extend_deadline(self, gap):
        """The server was paused for ``gap`` s: that time is not the peer's."""
        deadline = self.deadline
        if deadline is not None:
            self.deadline = deadline + gap

    def expire_if_due(self, now):
        """Master tick: close the connection when its deadline passed. True if so."""
        deadline = self.deadline
        if deadline is None or now < deadline or self.expired is not None:
            return False
        if self.name is None:
            self.expired = (reg.REJECT_HELLO_TIMEOUT, "no hello within --hello-timeout "
                            "%g s of connecting; closing the connection"
                            % self.ctx.hello_timeout)
        else:
            self.expired = (reg.REJECT_READ_TIMEOUT, "no complete line for %g s "
                            "(--read-timeout); closing the connection"
                            % self.ctx.read_timeout)
        try:  # wakes the handler thread blocked in recv: it sees end of stream
            self.connection.shutdown(socket.SHUT_RDWR)
        except (socket.error, OSError):
            pass
        return True

    def _loop(self):
        """The handshake: receive until the hello is accepted, then hand the
        connection to the I/O threads (``self.adopted``; the thread ends).

        One ``recv`` per wake-up (no buffered reader: one call, and all the
        lines it holds are handled before sleeping again), and one record
        batch, one wait and one ack for those lines (``_flush``).
        """
        sock = self.connection
        ioloop = getattr(self.ctx, "ioloop", None)
        while True:
            try:
                data = sock.recv(RECV_BYTES)
            except (socket.error, IOError, OSError) as exc:
                log.info("connection %d from %s: read failed: %s", self.conn_id,
                         self.peer, exc)
                return
            if not self.received(data):
                return
            if self.name is not None and ioloop is not None:
                self.adopted = True   # process_request_thread hands it over
                return

    def received(self, data):
        """Handle one receive's bytes (b"": end of stream): every complete
        line they finish, in order, as one batch. False: close the connection.
        The same for both phases (handler thread, I/O thread)."""
        if self.expired is not None:
            return False
        limit = self.ctx.max_line_bytes
        rest = self.rest
        if not data:   # end of stream: a last line without newline is a line
            self.rest = b""
            if rest:
                if protocol.line_over(rest, limit):
                    self._too_long(limit)
                else:
                    self._lines([rest])
            return False
        if b"\n" not in data:
            rest += data
            self.rest = rest
            if protocol.pending_over(rest, limit):
                self._too_long(limit)
                return False
            return True
        lines = (rest + data).split(b"\n")
        rest = lines.pop()
        self.rest = rest
        if not self._lines([line + b"\n" for line in lines], limit):
            return False
        if protocol.pending_over(rest, limit):
            self._too_long(limit)
            return False
        return True

    def _too_long(self, limit):
        exc = protocol.LineTooLong(limit)
        self._rejected(exc.kind, exc.reason + "; closing the connection")

    def _lines(self, lines, limit=None):
        """Handle complete lines received together; False to close the connection."""
        now = monotonic()
        if self.name is not None:
            self.deadline = now + self.ctx.read_timeout
        recv_ts = runclock.wall_at(now)
        go_on = True
        try:
            for line in lines:
                if limit is not None and protocol.line_over(line, limit):
                    self._too_long(limit)
                    go_on = False
                    break
                try:
                    msg = protocol.decode(line, protocol.C2S, self.ctx.secret)
                    self.line = line              # what a NEW message records as is
                except protocol.ProtocolError as exc:
                    self._rejected(exc.kind, exc.reason)
                    if exc.kind in _FATAL_KINDS or (
                            exc.kind == protocol.ProtocolError.BAD_MAC and
                            self.name is None):
                        # Unsigned when the mac was the problem: the peer cannot
                        # check our mac anyway, and may at least show the reason.
                        self._refuse(exc.reason, signed=exc.kind !=
                                     protocol.ProtocolError.BAD_MAC,
                                     version=protocol.reply_version(exc))
                        go_on = False
                        break
                    continue
                handler = _DISPATCH.get(msg.type, Handler._on_message)
                try:
                    going = handler(self, msg, recv_ts)
                except Exception:   # a bug must cost this client, not the server
                    self._internal_error(msg)
                    going = False
                if not going:
                    go_on = False
                    break
        finally:  # what was accepted is recorded and acked, even on the way out
            self._flush()
        return go_on

    def _internal_error(self, msg):
        """Handling ``msg`` raised: logged with its traceback; its client is
        failed and refused (not acknowledged: the client keeps it), the run
        goes on."""
        log.exception("internal error handling %s #%d of %s from %s: failing that "
                      "client; the run goes on", msg.type, msg.seq, msg.name, self.peer)
        self.registry.count_rejected(reg.REJECT_INTERNAL)
        self.registry.internal_error(msg.name, "handling its %s #%d" % (msg.type, msg.seq),
                                     self.conn_id)
        self._refuse("the server could not handle your %s #%d (an internal error, in "
                     "its server.log); this client is failed, the run goes on: report "
                     "it to the server's operator" % (msg.type, msg.seq))

    def loop_failed(self):
        """Serving this connection in an I/O thread raised outside the
        dispatch (logged with its traceback by the caller): its client, if
        it has one, is failed and refused; the connection is then closed."""
        self.registry.count_rejected(reg.REJECT_INTERNAL)
        if self.name is not None:
            self.registry.internal_error(self.name, "serving its connection",
                                         self.conn_id)
        self._refuse("the server could not serve your connection (an internal error, "
                     "in its server.log); this client is failed, the run goes on: "
                     "report it to the server's operator")

    def go_failed(self, name):
        """The go of ``name`` (this connection's client) could not be made or
        sent (logged by send_go): that client is failed and refused."""
        self.registry.count_rejected(reg.REJECT_INTERNAL)
        self.registry.internal_error(name, "sending its go", self.conn_id)
        self._refuse("the server could not send your go (an internal error, in its "
                     "server.log); this client is failed, the run goes on: report it "
                     "to the server's operator")

    def _rejected(self, kind, reason):
        self.registry.count_rejected(kind)
        self.rejections += 1
        if self.rejections <= REJECT_LOG_MAX:
            log.warning("rejected message (%s) from %s%s: %s", kind, self.peer,
                        " (%s)" % self.name if self.name else "", reason)
        elif self.rejections == REJECT_LOG_MAX + 1:
            log.warning("more than %d rejected messages from %s: counting, no longer "
                        "logging them", REJECT_LOG_MAX, self.peer)

    # --- dispatch: return False to close the connection ------------------------------
    def _on_hello(self, msg, recv_ts):
        if self.name is not None and msg.name != self.name:
            self._rejected(reg.REJECT_NAME_IN_USE, "hello as %r on the connection of "
                           "%r" % (msg.name, self.name))
            return True
        outcome, why = self.registry.hello(msg, recv_ts, self.conn_id, self.peer,
                                           self.send)
        if outcome == reg.REJECT:
            log.warning("refused hello from %s: %s", self.peer, why)
            self._refuse(why)
            return False
        if self.name is None:
            self.name = msg.name
            self.deadline = monotonic() + self.ctx.read_timeout
            self.ctx.watch_connection(self)   # --read-timeout may be the shorter
        self._record_or_reack(msg, recv_ts, outcome)
        return True

    def _on_bye(self, msg, recv_ts):
        # a bye refused (a seq jump) is no bye: only one recorded or re-acked
        if self._on_message(msg, recv_ts) and msg.name == self.name and \
                self.outcome in (ledger.NEW, ledger.DUPLICATE):
            self.said_bye = True
        return True

    def _on_message(self, msg, recv_ts):
        if self.name is None or msg.name != self.name:
            if self.registry.is_replay(msg, self.conn_id):
                self._rejected(reg.REJECT_REPLAY, "replay: %s #%d of client %r was "
                               "already recorded and %r does not speak on this "
                               "connection; not recorded" % (msg.type, msg.seq,
                                                             msg.name, msg.name))
            else:
                self._rejected(reg.REJECT_NO_HELLO, "%s from %r before a hello on "
                               "this connection" % (msg.type, msg.name))
            return True
        outcome = self.outcome = self.registry.accept(msg, recv_ts, self.conn_id)
        if outcome == reg.NOT_BOUND:
            log.info("connection %d from %s: %s now speaks on a newer connection; "
                     "closing this one", self.conn_id, self.peer, self.name)
            return False
        self._record_or_reack(msg, recv_ts, outcome)
        return True

    def _record_or_reack(self, msg, recv_ts, outcome):
        if outcome == ledger.SEQ_JUMP:
            # Never acknowledged: the client keeps it and says so at its end.
            self._rejected(reg.REJECT_SEQ_JUMP, "%s #%d of %s is further ahead of its "
                           "last seq than it could have sent; not recorded, not "
                           "acknowledged" % (msg.type, msg.seq, msg.name))
            return
        self.queued_upto = max(self.queued_upto, msg.seq)
        self.pending_acks = True
        if outcome == ledger.NEW:
            self.new_seq = max(self.new_seq, msg.seq)
            self.pending.append(protocol.record_line(self.line, recv_ts, self.peer))
        elif self.ctx.secret and msg.type != protocol.HELLO:
            # Authenticated, so from a holder of the secret: a resend after a
            # lost ack, or a replay of a captured line. Never recorded twice.
            log.warning("duplicate %s #%d of %s from %s: already recorded, not "
                        "recorded again (a resend after a reconnect, or a replay)",
                        msg.type, msg.seq, self.name, self.peer)
        else:
            # Acked once whatever was queued before it is written (the first
            # copy may still be on its way to disk from an older connection).
            log.info("duplicate %s #%d from %s (%s) ignored (re-acked)", msg.type,
                     msg.seq, self.name, self.peer)

    def _flush(self):
        """Queue the records of the lines just handled (one batch) and ack
        them once written: one ack per batch, naming the highest seq."""
        if not self.pending_acks:
            return
        records, self.pending = self.pending, []
        seq, upto = self.new_seq, self.queued_upto
        self.new_seq = 0
        self.pending_acks = False
        def on_written():  # in the recorder thread, once the batch is written
            worker = getattr(self, "loop_worker", None)
            if worker is not None:
                worker.post_ack(self, seq, upto)   # sent by the socket's I/O thread
            else:
                self.send_ack(seq, upto)           # still in its handshake thread
        self.ctx.recorder.submit(records, on_written, key=self.conn_id)

    def send_ack(self, seq, upto, now=None):
        """Ack what is written on this connection; send GO where it is due.

        Only once the batch that wrote this connection's records is on disk:
        by the I/O thread that serves the connection (``ioloop._Worker.post_ack``:
        the recorder only hands it over, one wake-up per batch), or by the
        recorder thread itself while the connection is still in its handshake
        thread. The reading thread never waits for it (acks sent by each
        handler thread after waiting to be woken by the recorder fell seconds
        behind: docs/SCALING.md). A peer that does not read costs the others
        at most RECORDER_SEND_STALL_S (LOOP_SEND_STALL_S in an I/O thread), once.
        """
        if now is None:
            now = monotonic()
        go_list = self.registry.recorded(self.name, seq)
        self.acked = True
        stall = RECORDER_SEND_STALL_S
        self._send_line(protocol.ack_line(upto, self.ctx.secret, runclock.wall_at(now)),
                        stall)
        if go_list:
            send_go(go_list, self.ctx.run_id)
        self._ping_when_due(stall, now)

    def _ping_when_due(self, stall, now):
        """A ping whose nonce is its send time in microseconds: the pong
        carries it back, so nothing per ping is kept here."""
        if self.next_ping is not None and now < self.next_ping:
            return
        # jittered: clients that joined together are not pinged together ever after
        self.next_ping = now + PING_INTERVAL_S * random.uniform(*PING_JITTER)
        self._ping(stall)

    def ping_while_held(self):
        """The log dir cannot be written (the recorder holds its writes), so
        this connection's hello is neither acknowledged nor answered with a go
        until it can: ping it once (main thread; no disk needed), so its client
        hears a diskbench server and waits for the go instead of taking the
        silence for no server (client/supervisor.py). True if pinged."""
        if self.name is None or self.acked or self.held_pinged or self.send_dead:
            return False
        self.held_pinged = True
        self._ping(RECORDER_SEND_STALL_S)
        return True

    def _ping(self, stall):
        sent = runclock.wall()
        self._send_line(protocol.encode(protocol.make(
            protocol.PING, protocol.S2C, nonce=int(sent * protocol.PING_NONCE_PER_S),
            server_time=sent), self.ctx.secret), stall)

    # --- sending (handler and recorder threads) -----------------------------------
    def send(self, msg, signed=True, version=protocol.PROTOCOL_VERSION):
        """Send one message; never blocks longer than SEND_STALL_S. False if not sent."""
        return self._send_line(protocol.encode(msg, self.ctx.secret if signed else None,
                                               version))

    def _send_line(self, line, stall=SEND_STALL_S):
        with self.send_lock:
            if self.send_dead:
                return False
            try:
                _send_bounded(self.connection, line, stall)
                return True
            except (socket.error, IOError, OSError, ValueError) as exc:
                self.send_dead = True
                log.info("connection %d from %s: send failed (%s); closing it",
                         self.conn_id, self.peer, exc)
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except (socket.error, OSError):
            pass
        return False

    def _refuse(self, reason, signed=True, version=protocol.PROTOCOL_VERSION):
        msg = protocol.make(protocol.REJECTED, protocol.S2C, reason=reason, fatal=True)
        self.send(msg, signed, version)


def send_go(go_list, run_id):
    """Send each (name, sender, fields) of a registry go list its go: its
    own plan and start instant (Registry._go_fields). A go that cannot be
    built or sent fails that client alone (logged with its traceback)."""
    for name, sender, fields in go_list:
        try:
            sender(protocol.make(protocol.GO, protocol.S2C, run_id=run_id, **fields))
        except Exception:
            log.exception("internal error sending client %s its go; failing that "
                          "client, the run goes on", name)
            handler = getattr(sender, "__self__", None)   # the sender is Handler.send
            if isinstance(handler, Handler):
                handler.go_failed(name)


def _send_bounded(sock, data, limit):
    """sendall that gives up (socket.timeout) when the peer reads nothing for
    ``limit`` (at most LOOP_SEND_STALL_S in an I/O thread). The common case,
    all of it taken at once, is one ``send`` and nothing else."""
    done, deadline = 0, None
    while done < len(data):
        try:
            done += sock.send(data[done:] if done else data, socket.MSG_DONTWAIT)
        except socket.error as exc:
            if getattr(exc, "errno", None) not in _WOULD_BLOCK:
                raise
            if deadline is None:          # the peer is slow: how long it may be
                if in_io_thread():
                    limit = min(limit, LOOP_SEND_STALL_S)
                deadline = monotonic() + limit
            left = deadline - monotonic()
            if left <= 0 or not wait_writable(sock, left):
                raise socket.timeout("peer has not read for %g s" % limit)


_WOULD_BLOCK = (errno.EAGAIN, errno.EWOULDBLOCK)

_DISPATCH = {
    protocol.HELLO: Handler._on_hello,
    protocol.BYE: Handler._on_bye,
}
