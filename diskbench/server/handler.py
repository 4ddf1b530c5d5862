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
"""
import logging
import socket
import threading
import time

from diskbench import protocol
from diskbench.compat import socketserver
from diskbench.server import registry as reg

#: A connection that sends nothing for this long is closed (its client, if it
#: had one, is then marked went away). Set from --read-timeout.
READ_TIMEOUT_S = 300.0
#: Rejections logged per connection; further ones are only counted.
REJECT_LOG_MAX = 20

log = logging.getLogger("diskbench.server")

# Kinds after which a connection is closed (with a REJECTED message first when
# the peer is a diskbench client that can print it).
_FATAL_KINDS = (protocol.ProtocolError.BAD_VERSION,)


class Handler(socketserver.StreamRequestHandler):
    """``self.server.ctx`` is the Master: registry, recorder, secret, run_id."""

    timeout = READ_TIMEOUT_S

    def setup(self):
        ctx = self.server.ctx
        self.timeout = ctx.read_timeout
        socketserver.StreamRequestHandler.setup(self)
        self.ctx = ctx
        self.registry = ctx.registry
        self.peer = "%s:%s" % tuple(self.client_address[:2])
        self.send_lock = threading.Lock()
        self.name = None
        self.said_bye = False
        self.rejections = 0
        self.conn_id = self.registry.connection_opened()

    # --- the receive loop ------------------------------------------------------
    def handle(self):
        log.info("connection %d from %s", self.conn_id, self.peer)
        try:
            self._loop()
        finally:
            self.registry.connection_closed(self.name, self.conn_id, self.said_bye)
            log.info("connection %d from %s (%s) closed", self.conn_id, self.peer,
                     self.name or "no hello")

    def _loop(self):
        while True:
            try:
                line = protocol.read_line(self.rfile)
            except protocol.LineTooLong as exc:
                self._rejected(exc.kind, exc.reason + "; closing the connection")
                return
            except socket.timeout:
                self._rejected(reg.REJECT_READ_TIMEOUT, "nothing received for %g s; "
                               "closing the connection" % self.timeout)
                return
            except (socket.error, IOError, OSError) as exc:
                log.info("connection %d from %s: read failed: %s", self.conn_id,
                         self.peer, exc)
                return
            if not line:
                return
            recv_ts = time.time()
            try:
                msg = protocol.decode(line, protocol.C2S, self.ctx.secret)
            except protocol.ProtocolError as exc:
                self._rejected(exc.kind, exc.reason)
                if exc.kind in _FATAL_KINDS or (
                        exc.kind == protocol.ProtocolError.BAD_MAC and self.name is None):
                    self._refuse(exc.reason)
                    return
                continue
            handler = _DISPATCH.get(msg.type, Handler._on_message)
            if not handler(self, msg, recv_ts):
                return

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
        self.name = msg.name
        self._record_or_reack(msg, recv_ts, outcome)
        return True

    def _on_bye(self, msg, recv_ts):
        if self._on_message(msg, recv_ts) and msg.name == self.name:
            self.said_bye = True
        return True

    def _on_message(self, msg, recv_ts):
        if self.name is None or msg.name != self.name:
            self._rejected(reg.REJECT_NO_HELLO, "%s from %r before a hello on this "
                           "connection" % (msg.type, msg.name))
            return True
        outcome = self.registry.accept(msg, recv_ts, self.conn_id)
        if outcome == reg.NOT_BOUND:
            log.info("connection %d from %s: %s now speaks on a newer connection; "
                     "closing this one", self.conn_id, self.peer, self.name)
            return False
        self._record_or_reack(msg, recv_ts, outcome)
        return True

    def _record_or_reack(self, msg, recv_ts, outcome):
        if outcome == reg.NEW:
            seq = msg.seq
            self.ctx.recorder.record(protocol.record(msg, recv_ts, self.peer),
                                     on_written=lambda: self._recorded(seq),
                                     key=self.conn_id)
        else:
            log.info("duplicate %s #%d from %s ignored (re-acked)", msg.type, msg.seq,
                     self.name)
            self._recorded(0)

    def _recorded(self, seq):
        """Recorder callback: ack what is written; send GO where it is due."""
        upto, go_list = self.registry.recorded(self.name, seq)
        if upto:
            self.send(protocol.make(protocol.ACK, protocol.S2C, upto_seq=upto))
        for _name, sender in go_list:
            sender(protocol.make(protocol.GO, protocol.S2C, run_id=self.ctx.run_id))

    # --- sending (handler and recorder threads) -----------------------------------
    def send(self, msg):
        line = protocol.encode(msg, self.ctx.secret)
        with self.send_lock:
            try:
                self.connection.sendall(line)
                return True
            except (socket.error, IOError, OSError):
                return False

    def _refuse(self, reason):
        self.send(protocol.make(protocol.REJECTED, protocol.S2C, reason=reason,
                                fatal=True))


_DISPATCH = {
    protocol.HELLO: Handler._on_hello,
    protocol.BYE: Handler._on_bye,
}
