"""The client's one TCP connection to the server, in threads of the main process.

- Every message gets the next ``seq`` (1, 2, 3 ... across reconnects) and
  stays in a bounded buffer until the server acknowledges it (``ack`` carries
  the highest seq recorded).
- The buffer holds at most BUFFER_MAX messages. On overflow the oldest ``perf``
  sample is dropped first, then the oldest heartbeat/stats/note/pong; hello,
  start, stop, rollover, error and bye are never dropped. Drops are counted
  (``dropped``, reported in ``stop.dropped_messages``) and logged (the first
  drop, then every DROP_LOG_EVERY-th). A buffer of only never-dropped
  messages may exceed BUFFER_MAX: they are few (one per rollover).
- At the end, ``close(timeout)`` waits a bounded time for the last ack;
  ``unacked_lines()`` then gives what was never acknowledged (the supervisor
  saves it next to the client log).
- On a broken connection the I/O thread reconnects with capped, jittered
  backoff for as long as the sender is open (the whole run). The backoff is
  reset only when the server has said something valid on a connection (a
  server that accepts and at once closes is not hammered), and a connection
  counts as "up" for ``disconnected_for()`` only from then on. It sends the
  hello again (the original line, seq 1: the server re-acks a seq it has seen
  and so knows this connection is us again, and a restarted server records
  it fresh), then resends everything unacknowledged in seq order.
- A reader thread per connection decodes server messages: ack, go, stop, ping
  (answered with pong), rejected (fatal: no more reconnects).
- Once paced (``pace``), the reports (protocol.POLICY's ``paced``: start,
  perf, heartbeat, stats, rollover) go out this client's own fixed offset
  after they were made, random in [0, min(perf interval, SEND_OFFSET_MAX_S)):
  a fleet that starts together (the synchronized start) would otherwise send
  thousands of reports to the server within the same millisecond, every
  interval. Its end (stop, bye) goes out its end offset after it was made:
  the same random phase, over the go's end_spread_s when that is longer (the
  server widens it with the fleet: a fleet started together ends together,
  and a big fleet's last reports at once held a server's acks back).
  Their figures are timed by their own fields, not by when they are sent.
  Any other message (an error, a note, a pong) goes at once, and everything
  queued before it with it (the order of seqs is kept).

Nothing here ever blocks the caller of ``send()``: it appends and returns.
"""
import collections
import json
import random
import socket
import threading

from diskbench import protocol, runclock
from diskbench.cli import join_host_port, printable
from diskbench.compat import monotonic
from diskbench.pollio import wait_readable

#: Most unacknowledged messages kept (about 2.7 hours of 1 s perf samples
#: with the server gone; each is at most a few KiB).
BUFFER_MAX = 10000
#: Message types held for the send offset, and for the end offset
#: (protocol.POLICY decides).
PACED = protocol.paced_types(protocol.PACED_REPORT)
PACED_END = protocol.paced_types(protocol.PACED_END)
#: The longest send offset (see the module docstring).
SEND_OFFSET_MAX_S = 1.0
#: What a full buffer drops, first to go first (protocol.POLICY decides).
DROP_ORDER = protocol.drop_order()
#: Messages whose acknowledgement nobody waits for at the end (protocol.POLICY).
NO_ACK_NEEDED = protocol.no_ack_needed()
#: One connection attempt may take this long.
CONNECT_ATTEMPT_TIMEOUT_S = 2.0
#: A send that makes no progress for this long counts as a broken connection.
SEND_TIMEOUT_S = 10.0
#: Reconnect backoff: first wait, growth factor, longest wait (the cap), and
#: jitter (each wait is shortened by up to this fraction, so many clients of
#: a restarted server do not reconnect in lockstep). Retries never give up
#: while the run lasts.
BACKOFF_FIRST_S = 0.1
BACKOFF_FACTOR = 2.0
BACKOFF_MAX_S = 2.0
BACKOFF_JITTER = 0.25
#: After the first dropped message, log again every this many drops.
DROP_LOG_EVERY = 1000
#: How often idle threads look at the closing flag.
IDLE_TICK_S = 0.25
#: Before any diskbench message was heard from it, a peer that closed this
#: many connections in a row without a word is not a diskbench server (or one
#: refusing connections: its --max-connections): a fatal refusal, not retried.
SILENT_CLOSES_MAX = 3
#: At most this much of a foreign peer's first answer is quoted.
FOREIGN_QUOTE_CHARS = 60
_RECV_BYTES = 65536


class Sender(object):
    def __init__(self, host, port, name, hello_fields, secret=None, log=None,
                 buffer_max=BUFFER_MAX):
        self.host, self.port, self.name, self.secret = host, port, name, secret
        self.where = join_host_port(host, port)   # as said in every line ([::1]:7878)
        self.log = log
        self.buffer_max = buffer_max
        self.cond = threading.Condition()
        self.buffer = collections.deque()   # (seq, type, line), seq ascending
        self.send_offset_s = 0.0            # how long paced messages are held (pace)
        self.end_offset_s = 0.0             # ... and the end (stop, bye)
        self.due = {}                       # seq -> monotonic() it may go, while held
        self.next_seq = 1
        self.dropped = 0
        self.sent_upto = 0                  # highest seq written on this connection
        self.sent_ever = 0                  # ... on any connection (the server may hold it)
        self.sock = None
        self.gen = 0                        # connection generation
        self.connects = 0
        self.last_error = None
        self.disconnected_at = monotonic()  # when a healthy link was lost (or born)
        self.healthy = False                # the server spoke on this connection
        self.backoff = BACKOFF_FIRST_S      # the next reconnect wait
        self.closed = False
        self.said_bye = False               # bye is the last message we send
        self.go = threading.Event()
        self.run_id = None
        self.go_msg = self.go_wall = self.go_mono = None  # the go, and when it came
        self.rejected = None                # the server's reason, when refused
        self.fatal = None                   # why this peer cannot be our server
        self.ever_healthy = False           # a diskbench message was ever heard
        self.ever_acked = False             # the server ever acknowledged us
        self.silent_closes = 0              # connections closed without a word
        self.retry_said = False             # the one "retrying" line was said
        self.ack_beyond = None              # (acked seq, our last seq) of a bogus ack
        self.server_stop = None             # the server's reason, when it asked
        # Resent as the very same line (seq 1) on every reconnect: the server
        # treats it as a duplicate and rebinds the connection to this client.
        self.hello_line = protocol.encode(self.send(protocol.HELLO, **hello_fields),
                                          self.secret)
        self._io = threading.Thread(target=self._io_loop, name="diskbench-sender")
        self._io.daemon = True
        self._readers = []

    # --- the API of the main loop ------------------------------------------------
    def start(self):
        self._io.start()

    def send(self, type_, **fields):
        """Queue one message; returns it (None if invalid, or after the bye).
        Never blocks on the network."""
        with self.cond:
            if self.said_bye:  # e.g. a pong to a ping that crossed our bye
                self._log("debug", "not sent after the bye: %s", type_)
                return None
            seq = self.next_seq
            try:
                msg = protocol.make(type_, name=self.name, seq=seq, **fields)
                line = protocol.encode(msg, self.secret)
            except protocol.ProtocolError as exc:  # a bug: keep running, say so
                self._log("error", "not sent (%s): %s", type_, exc)
                return None
            self.next_seq += 1
            self.said_bye = type_ == protocol.BYE
            self.buffer.append((seq, type_, line))
            hold = self.send_offset_s if type_ in PACED else \
                self.end_offset_s if type_ in PACED_END else 0.0
            if hold > 0:
                self.due[seq] = monotonic() + hold
            else:
                self.due.clear()    # in seq order: what was held goes with it
            dropped = None
            if len(self.buffer) > self.buffer_max:
                dropped = self._drop_one()
            self.cond.notify_all()
            count = self.dropped
        if dropped is not None and (count == 1 or count % DROP_LOG_EVERY == 0):
            self._log("warning", "unacknowledged buffer full (%d messages; last "
                      "connection error: %s): dropped %s seq %d, %d dropped so far "
                      "(oldest perf samples first; start/stop/rollover/error are never "
                      "dropped)", self.buffer_max, self.last_error or "none yet",
                      dropped[1], dropped[0], count)
        return msg

    def pace(self, perf_interval_s, end_spread_s=None, rng=random):
        """Hold the paced reports from now on for this client's send offset,
        and its end for its end offset (module docstring); returns both, in
        seconds."""
        with self.cond:
            self.send_offset_s, self.end_offset_s = offsets(
                rng.random(), perf_interval_s, end_spread_s)
            return self.send_offset_s, self.end_offset_s

    def make_room(self, n):
        """Drop now what ``n`` more messages would push out, so a summary
        built next (stop.dropped_messages) counts every drop."""
        with self.cond:
            while len(self.buffer) + n > self.buffer_max and self._drop_one():
                pass
            return self.dropped

    def connected(self):
        with self.cond:
            return self.sock is not None

    def wait_connected(self, timeout, give_up=None):
        """True once connected (or ever connected); False after ``timeout``,
        or within IDLE_TICK_S of ``give_up()`` turning true (a signal)."""
        deadline = monotonic() + timeout
        with self.cond:
            while self.connects == 0 and self.rejected is None and self.fatal is None:
                left = deadline - monotonic()
                if left <= 0 or (give_up is not None and give_up()):
                    return False
                self.cond.wait(min(left, IDLE_TICK_S))
            return True

    def disconnected_for(self):
        """Seconds since the connection was lost (0 while connected)."""
        with self.cond:
            if self.sock is not None and self.healthy:
                return 0.0
            return monotonic() - self.disconnected_at

    def pending(self):
        with self.cond:
            return len(self.buffer)

    def unacked_lines(self):
        """The wire lines the server has not acknowledged, in seq order."""
        with self.cond:
            return [line for _, _, line in self.buffer]

    def unacked_sent(self):
        """The seqs of the unacknowledged messages that were written to a
        connection at least once, in order: the server may have received and
        recorded them and been unable to say so (frozen, gone before its ack)."""
        with self.cond:
            return [seq for seq, _, _ in self.buffer if seq <= self.sent_ever]

    def _undelivered(self):
        """True while a message that needs an ack is buffered (lock held)."""
        for _, type_, _ in self.buffer:
            if type_ not in NO_ACK_NEEDED:
                return True
        return False

    def wait_delivered(self, timeout, everything=False):
        """Wait up to ``timeout`` for every message to be acknowledged.

        Returns True when nothing is left unacknowledged (but NO_ACK_NEEDED);
        with ``everything``, waits for those too (the result is the same).
        """
        deadline = monotonic() + timeout
        with self.cond:
            while (self.buffer if everything else self._undelivered()) and \
                    self.rejected is None:
                left = deadline - monotonic()
                if left <= 0:
                    break
                self.cond.wait(min(left, IDLE_TICK_S))
            return not self._undelivered()

    def close(self, timeout):
        """Wait up to ``timeout`` for everything to be acknowledged, then close.

        Returns True when the server acknowledged every message.
        """
        self.wait_delivered(timeout)
        with self.cond:
            done = not self._undelivered()
            self.closed = True
            sock, self.sock = self.sock, None
            self.cond.notify_all()
        _close_socket(sock)
        # Join the threads (bounded) so none runs on during interpreter shutdown.
        for thread in [self._io] + self._readers:
            if thread.is_alive():
                thread.join(CONNECT_ATTEMPT_TIMEOUT_S + 1.0)
        return done

    # --- internals ---------------------------------------------------------------------
    def _log(self, level, fmt, *args):
        if self.log is not None:
            getattr(self.log, level)(fmt, *args)

    def _drop_one(self):
        """Drop the oldest droppable message (caller holds the lock).

        Returns the dropped (seq, type), or None when nothing may be dropped.
        The message being sent (the newest) is never the one dropped while an
        older one of its kind is buffered. A seq the I/O thread already wrote
        to the socket may be dropped too: the server may or may not have it.
        """
        for kinds in DROP_ORDER:
            for i, item in enumerate(self.buffer):
                if item[1] in kinds:
                    del self.buffer[i]
                    self.due.pop(item[0], None)
                    self.dropped += 1
                    return item[0], item[1]
        return None

    def _connect(self):
        # every address the name resolves to (IPv6 and IPv4), in the resolver's order
        sock = socket.create_connection((self.host, self.port), CONNECT_ATTEMPT_TIMEOUT_S)
        sock.settimeout(SEND_TIMEOUT_S)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, socket.error):
            pass
        sock.sendall(self.hello_line)
        return sock

    def _io_loop(self):
        attempts = 0
        while True:
            with self.cond:
                if self.closed or self.rejected is not None or (
                        self.fatal is not None and self.sock is None):
                    return
                sock, gen = self.sock, self.gen
                if sock is None and attempts:  # back off before every retry
                    until = monotonic() + self.backoff * (
                        1.0 - BACKOFF_JITTER * random.random())
                    while not self.closed and monotonic() < until:
                        self.cond.wait(until - monotonic())  # send() notifies
                    self.backoff = min(self.backoff * BACKOFF_FACTOR, BACKOFF_MAX_S)
                    if self.closed:
                        return
            if sock is None:
                attempts += 1
                try:
                    sock = self._connect()
                except socket.gaierror as exc:
                    self._connect_failed(exc, unresolvable=getattr(
                        exc, "errno", None) != socket.EAI_AGAIN)
                    continue
                except UnicodeError as exc:   # Python 3: a name IDNA refuses (2.7: gaierror)
                    self._connect_failed(exc, unresolvable=True)
                    continue
                except (OSError, socket.error) as exc:
                    self._connect_failed(exc)
                    continue
                with self.cond:
                    if self.closed:
                        _close_socket(sock)
                        return
                    self.sock = sock
                    self.healthy = False
                    self.gen += 1
                    gen = self.gen
                    self.connects += 1
                    self.sent_upto = 1  # the hello line went first
                    self.cond.notify_all()
                if self.connects == 1 or self.ever_healthy:
                    self._log("info", "%s server %s", "connected to" if
                              self.connects == 1 else "reconnected to", self.where)
                reader = threading.Thread(target=self._read_loop, args=(sock, gen),
                                          name="diskbench-reader")
                reader.daemon = True
                reader.start()
                self._readers = [t for t in self._readers if t.is_alive()] + [reader]
                continue
            with self.cond:
                todo, wait = self._sendable()
                if not todo:
                    self.cond.wait(min(IDLE_TICK_S, wait))
                    continue
            for seq, line in todo:
                try:
                    sock.sendall(line)
                except (OSError, socket.error) as exc:
                    self._broken(gen, "send failed: %s" % (exc,))
                    break
                with self.cond:
                    if gen != self.gen:
                        break
                    self.sent_upto = max(self.sent_upto, seq)
                    self.sent_ever = max(self.sent_ever, seq)
                    self.due.pop(seq, None)

    def _connect_failed(self, exc, unresolvable=False):
        """A connection attempt failed: before the first connection, an
        unresolvable name is fatal at once, anything else is said once and
        retried (a server may be starting); later, retried quietly."""
        why = getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
        where = self.where
        with self.cond:
            self.last_error = why
            first = self.connects == 0
            if first and unresolvable:
                self.fatal = ("cannot resolve the server's host name %s (%s); fix "
                              "--server" % (self.host, why))
                self.cond.notify_all()
                return
            say = first and not self.retry_said
            self.retry_said = self.retry_said or say
        if say:
            self._log("info", "cannot connect to the server at %s yet (%s); "
                      "retrying quietly until --connect-timeout", where, why)

    def _closed_silently(self):
        """A connection closed before the peer said a word: SILENT_CLOSES_MAX
        in a row before any diskbench message is a peer that is not ours."""
        with self.cond:
            self.silent_closes += 1
            silent = self.silent_closes
        if silent >= SILENT_CLOSES_MAX:
            self._foreign("it closed %d connections in a row without a word; or a "
                          "diskbench server refusing connections at its "
                          "--max-connections" % silent)

    def _foreign(self, answer):
        """The peer's first answer is not diskbench's: fatal, said once."""
        with self.cond:
            if self.ever_healthy or self.fatal is not None:
                return False
            if isinstance(answer, bytes):
                answer = answer.decode("utf-8", "replace")
            self.fatal = "%s is not a diskbench server (%s); fix --server" % (
                self.where, answer)
            self.cond.notify_all()
        return True

    def _quote(self, data):
        return "it answered '%s'%s" % (printable(data[:FOREIGN_QUOTE_CHARS].strip()),
                                       "..." if len(data) > FOREIGN_QUOTE_CHARS else "")

    def _sendable(self):
        """([(seq, line)] unsent and due, in seq order, up to the first one
        still held; seconds until that one is due, or IDLE_TICK_S). Lock held."""
        todo, now = [], monotonic()
        for seq, _, line in self.buffer:
            if seq <= self.sent_upto:
                continue
            due = self.due.get(seq)
            if due is not None and due > now:
                return todo, due - now
            todo.append((seq, line))
        return todo, IDLE_TICK_S

    def _broken(self, gen, why):
        with self.cond:
            if gen != self.gen or self.sock is None:
                return
            sock, self.sock = self.sock, None
            self.last_error = why
            if self.healthy:
                self.disconnected_at = monotonic()
            self.healthy = False
            self.cond.notify_all()
            # a peer that never spoke diskbench: one line says so elsewhere
            closing = self.closed or self.fatal is not None or not self.ever_healthy
        _close_socket(sock)
        if not closing:
            self._log("warning", "connection to server lost (%s); reconnecting", why)

    def _read_loop(self, sock, gen):
        buf, got = b"", False
        while True:
            with self.cond:
                if gen != self.gen or self.closed or self.sock is not sock:
                    return
            if b"\n" not in buf:
                try:  # the socket may be closed under us by close()/_broken()
                    if not wait_readable([sock], IDLE_TICK_S):
                        continue
                    data = sock.recv(_RECV_BYTES)
                except socket.timeout:
                    continue
                except (OSError, socket.error, ValueError) as exc:
                    if not got:  # (a reset: it closed without reading our hello)
                        self._closed_silently()
                    self._broken(gen, "receive failed: %s" % (exc,))
                    return
                if not data:
                    if not got:
                        self._closed_silently()
                    self._broken(gen, "server closed the connection")
                    return
                got = True
                buf += data
                if not self.ever_healthy and not buf.lstrip().startswith(b"{") and \
                        buf.strip() and self._foreign(self._quote(buf)):
                    self._broken(gen, "not a diskbench server")
                    return
                if b"\n" not in buf and protocol.pending_over(buf):
                    self._broken(gen, "server line over %d bytes" % protocol.MAX_LINE_BYTES)
                    return
                continue
            line, buf = buf.split(b"\n", 1)
            try:
                msg = protocol.decode(line, protocol.S2C, self.secret)
            except protocol.ProtocolError as exc:
                if self.fatal is not None:
                    continue  # said once already; the link ends
                peer_v = exc.peer_version
                if exc.kind == protocol.ProtocolError.BAD_VERSION and not self.healthy \
                        and isinstance(peer_v, int) and not isinstance(peer_v, bool):
                    # another diskbench version: nothing it says can be read,
                    # so its refusal is ours to word (both versions named)
                    self._on_rejected(protocol.make(protocol.REJECTED, protocol.S2C,
                                                    reason=exc.reason, fatal=True))
                    continue
                if self._unsigned_refusal(line, exc) or self._unsigned_server(line, exc):
                    continue
                if not self.ever_healthy and exc.kind != protocol.ProtocolError.BAD_MAC:
                    if self._foreign(self._quote(line)):
                        self._broken(gen, "not a diskbench server")
                        return
                self._log("warning", "ignored a server message: %s", exc)
                continue
            with self.cond:
                if gen == self.gen and not self.healthy:
                    self.healthy = True  # a real server: reset the backoff
                    self.backoff = BACKOFF_FIRST_S
                self.ever_healthy = True
                self.silent_closes = 0
            self._handle(msg)

    def _unsigned_refusal(self, line, exc):
        """Take an unsigned ``rejected`` before the link is up (True if it was one).

        A server that cannot verify our mac (secrets differ, or it has none)
        answers unsigned; believing that refusal only before the server has
        spoken properly gives an attacker nothing it could not do by closing
        the connection, and lets the user read the real reason at once.
        """
        if exc.kind != protocol.ProtocolError.BAD_MAC or self.healthy:
            return False
        try:
            msg = protocol.decode(line, protocol.S2C)
        except protocol.ProtocolError:
            return False
        if msg.type != protocol.REJECTED:
            return False
        self._handle(protocol.make(protocol.REJECTED, protocol.S2C, ts=msg.ts,
                                   reason="%s (an unsigned reply: check that server "
                                   "and client use the same secret)" % msg.reason,
                                   fatal=msg.fatal))
        return True

    def _unsigned_server(self, line, exc):
        """A server without a secret answers a client with one unsigned (the
        server ignores our macs): we cannot trust its acks, so the run cannot
        go on. Fatal (True) once; the server is told why (an error message,
        which it records), so both sides name the same cause."""
        if exc.kind != protocol.ProtocolError.BAD_MAC or self.ever_healthy or \
                self.fatal is not None:
            return False
        try:
            protocol.decode(line, protocol.S2C)
        except protocol.ProtocolError:
            return False
        try:
            signed = "mac" in json.loads(line.decode("utf-8"))
        except (ValueError, TypeError, UnicodeError):
            return False
        if signed:
            return False  # signed with another secret: a wrong mac, not none
        text = ("the server at %s has no secret (its replies are unsigned, so its "
                "acknowledgements cannot be trusted) but this client has one: give the "
                "server the same --secret-file, or run the client without one"
                % self.where)
        self.send(protocol.ERROR, source="client", reason=text, errno=None, fatal=True)
        with self.cond:
            self.fatal = text
            self.cond.notify_all()
        return True

    def wait_sent(self, timeout):
        """Wait up to ``timeout`` until everything queued was written to the
        socket (not acknowledged); True if it was."""
        deadline = monotonic() + timeout
        with self.cond:
            while self.sock is not None and self.buffer and \
                    self.sent_upto < self.buffer[-1][0]:
                left = deadline - monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, IDLE_TICK_S))
            return self.sock is not None

    def _handle(self, msg):
        handler = _ON_SERVER_MESSAGE.get(msg.type)
        if handler is None:  # decode refuses unknown types; never crash on one anyway
            self._log("warning", "ignored server message of type %s", msg.type)
            return
        handler(self, msg)

    def _on_ack(self, msg):
        with self.cond:
            upto, ours = msg.upto_seq, self.next_seq - 1
            if upto > ours:  # never sent: not ours, so nothing of ours is acked
                first = self.ack_beyond is None
                self.ack_beyond = (upto, ours)
                self.cond.notify_all()
        if upto > ours:
            if first:
                self._log("error", "the server acknowledged seq %d but this client "
                          "has only sent up to seq %d: another peer may have taken "
                          "over the name %s, and our results may not be recorded; "
                          "keeping them (see the undelivered file at the end)",
                          upto, ours, self.name)
            return
        with self.cond:
            self.ever_acked = True
            while self.buffer and self.buffer[0][0] <= upto:
                self.buffer.popleft()
            self.cond.notify_all()

    def _on_go(self, msg):
        if not self.go.is_set():
            # when it came, on both clocks: the start instant is converted from it
            self.go_msg, self.go_wall, self.go_mono = msg, runclock.wall(), monotonic()
            self.run_id = msg.run_id
            self.go.set()

    def _on_ping(self, msg):
        self.send(protocol.PONG, nonce=msg.nonce, client_time=runclock.wall())

    def _on_stop(self, msg):
        with self.cond:
            if self.server_stop is None:
                self.server_stop = msg.reason
            self.cond.notify_all()

    def _on_rejected(self, msg):
        with self.cond:
            self.rejected = msg.reason
            self.cond.notify_all()


#: Every server -> client type and what the sender does with it (a test checks
#: that each type in protocol.SPECS[S2C] has its entry).
_ON_SERVER_MESSAGE = {
    protocol.ACK: Sender._on_ack,
    protocol.GO: Sender._on_go,
    protocol.PING: Sender._on_ping,
    protocol.STOP: Sender._on_stop,
    protocol.REJECTED: Sender._on_rejected,
}


def offsets(phase, perf_interval_s, end_spread_s=None):
    """(send offset, end offset) of a client whose random ``phase`` is in
    [0, 1): the same phase over the report window and over the end window,
    so the clients that report first also end first."""
    window = min(perf_interval_s, SEND_OFFSET_MAX_S)
    return phase * window, phase * max(window, end_spread_s or 0.0)


def _close_socket(sock):
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except (OSError, socket.error):
        pass
    try:
        sock.close()
    except (OSError, socket.error):
        pass
