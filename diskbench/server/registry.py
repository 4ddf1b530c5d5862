"""Per-client state and accumulated figures, behind one lock.

States and the transitions between them are written down here and only here
(``_ALLOWED`` and ``Registry._transition``)::

     hello          start            stop(duration|server)
     -----> JOINED -------> RUNNING ----------------------> FINISHED
              |               |   \\--- error(fatal) / stop(error|signal) --> FAILED
              |               |
              |   silent for --heartbeat-timeout, or TCP closed while not terminal
              +---------------+------------------------------> WENT_AWAY
                           any message from it again ------> back to where it was
                                                            (logged "reconnected")

Liveness and completion read an injected ``clock`` (monotonic seconds), so
tests drive them without sleeping. Wall-clock times (``recv_ts``) are passed
in by the caller with each message.
"""
import copy
import itertools
import logging
import threading

from diskbench import metrics, protocol
from diskbench.compat import monotonic

JOINED = "joined"
RUNNING = "running"
FINISHED = "finished"
FAILED = "failed"
WENT_AWAY = "went away"
STATES = (JOINED, RUNNING, FINISHED, FAILED, WENT_AWAY)
LIVE = (JOINED, RUNNING)
TERMINAL = (FINISHED, FAILED, WENT_AWAY)

_ALLOWED = {
    JOINED: (RUNNING, FINISHED, FAILED, WENT_AWAY),
    RUNNING: (FINISHED, FAILED, WENT_AWAY),
    WENT_AWAY: (JOINED, RUNNING),   # back where it was, when it speaks again
    FINISHED: (),
    FAILED: (),
}

# Outcomes of Registry.accept / Registry.hello.
NEW = "new"               # first time this seq is seen: record it and apply it
DUPLICATE = "duplicate"   # seq already seen: re-ack, do not record or apply
NOT_BOUND = "not-bound"   # no accepted hello on this connection (or another name)
REJECT = "reject"         # hello refused (name already used by another process)

# Server-side rejection kinds (besides protocol.ProtocolError kinds).
REJECT_NO_HELLO = "no-hello"            # a message before any hello on the connection
REJECT_NAME_IN_USE = "name-in-use"      # a second process under a name already taken
REJECT_READ_TIMEOUT = "read-timeout"    # a connection silent past the socket timeout
REJECT_HELLO_TIMEOUT = "hello-timeout"  # no accepted hello within --hello-timeout
REJECT_REPLAY = "replay"                # an already-recorded seq from a stranger
REJECT_TOO_MANY_CLIENTS = "too-many-clients"          # --max-clients names
REJECT_TOO_MANY_CONNECTIONS = "too-many-connections"  # --max-connections
REJECT_TOO_MANY_FROM_ADDRESS = "too-many-from-address"  # --max-per-address

#: A client that failed (fatal error) but is still connected gets this long to
#: deliver its stop summary before the run may complete without it.
SUMMARY_GRACE_S = 10.0
#: Errors and notes kept per client for the report (the rest are only counted).
KEEP_TEXTS_MAX = 1000

log = logging.getLogger("diskbench.server")
event = logging.getLogger("diskbench.server.event")  # also printed on the console


class Client(object):
    """Everything known about one client (by name). Mutated under Registry.lock."""

    def __init__(self, name, hello, recv_ts, peer):
        self.name = name
        self.hello = hello            # the first accepted hello (Message)
        self.peer = peer
        self.state = JOINED
        self.reason = "joined, not started yet"
        self.previous_state = None    # where a WENT_AWAY client goes back to
        self.conn_id = None           # the connection currently speaking for it
        self.sender = None            # callable(Message) on that connection
        self.last_seq = 0             # highest seq accepted (dedup / replay rule)
        self.recorded_seq = 0         # highest seq the recorder wrote (acks)
        self.first_ts = recv_ts
        self.last_ts = recv_ts
        self.last_seen = None         # clock() of the last message
        self.start_ts = None
        self.start = None             # the start Message
        self.stop_ts = None
        self.stop = None              # the stop summary Message
        self.last_heartbeat = None    # (recv_ts, heartbeat Message)
        self.close_times = []         # timed fsync+close of each rollover (s)
        self.rollover_bytes = 0
        self.intervals = []           # (t_start, t_end, bytes) per perf message
        self.perf_bytes = 0
        self.perf_chunks = 0
        self.io_s = 0.0
        self.hist = metrics.LatencyHistogram()
        self.cpu_samples = []         # writer CPU% per stats message
        self.rss_samples = []         # writer RSS bytes per stats message
        self.errors = []              # error Messages
        self.notes = []
        self.messages = 0             # accepted (non-duplicate) messages
        self.duplicates = 0
        self.reconnects = 0
        self.went_away_count = 0
        self.awaiting_go = False
        self.restart_pending = False  # known from a resumed run, not back yet
        self.texts_dropped = 0        # errors/notes beyond KEEP_TEXTS_MAX
        self.terminal_at = None       # clock() when it reached a terminal state

    def snapshot(self):
        """A detached copy for the report (Messages are never mutated)."""
        view = copy.copy(self)
        view.sender = None
        view.close_times = list(self.close_times)
        view.intervals = list(self.intervals)
        view.cpu_samples = list(self.cpu_samples)
        view.rss_samples = list(self.rss_samples)
        view.errors = list(self.errors)
        view.notes = list(self.notes)
        view.hist = metrics.LatencyHistogram()
        view.hist.merge(self.hist)
        return view


class RunView(object):
    """What the report needs from the registry, detached from its lock."""

    def __init__(self, clients, rejected, connections, expected_clients, restored=0):
        self.clients = clients
        self.rejected = rejected
        self.connections = connections
        self.expected_clients = expected_clients
        self.restored = restored      # records read back after a server restart


class Registry(object):
    """All clients of one run; thread-safe (one lock); clock injected."""

    def __init__(self, expected_clients=None, heartbeat_timeout=15.0, idle_timeout=5.0,
                 start_timeout=60.0, clock=monotonic, max_clients=None):
        self.lock = threading.RLock()
        self.clock = clock
        self.expected_clients = expected_clients
        self.heartbeat_timeout = heartbeat_timeout
        self.idle_timeout = idle_timeout
        self.start_timeout = start_timeout
        self.clients = {}
        self.order = []               # names in hello order
        self.rejected = {}            # kind -> count
        self._conn_ids = itertools.count(1)
        self.connections = 0
        self.last_activity = clock()  # a connection opened or a client changed state
        self.first_hello = None       # clock() of the first accepted hello
        self.go_released = expected_clients is None
        self.max_clients = max_clients
        self.restored = 0             # records replayed by restore()
        self.resumed_at = None        # clock() when a resumed run went live

    # --- connections ---------------------------------------------------------
    def connection_opened(self):
        with self.lock:
            self.connections += 1
            self.last_activity = self.clock()
            return next(self._conn_ids)

    def connection_closed(self, name, conn_id, said_bye):
        """The TCP connection ``conn_id`` of client ``name`` (or None) ended."""
        with self.lock:
            client = self.clients.get(name)
            if client is None or client.conn_id != conn_id:
                return  # not bound, or a newer connection speaks for it
            client.sender = None
            client.conn_id = None
            client.awaiting_go = False
            if client.state in LIVE:
                why = ("connection closed after bye but before stop" if said_bye
                       else "connection closed without stop")
                self._transition(client, WENT_AWAY, why)

    def count_rejected(self, kind):
        with self.lock:
            self.rejected[kind] = self.rejected.get(kind, 0) + 1

    # --- messages ------------------------------------------------------------
    def hello(self, msg, recv_ts, conn_id, peer, sender):
        """Bind connection ``conn_id`` to the client named in hello ``msg``.

        Returns (outcome, detail): NEW (record it), DUPLICATE (seen: re-ack), or
        REJECT with a reason to send back.
        """
        with self.lock:
            client = self.clients.get(msg.name)
            if client is None:
                if self.max_clients is not None and len(self.clients) >= self.max_clients:
                    self.count_rejected(REJECT_TOO_MANY_CLIENTS)
                    return REJECT, (
                        "this run already has %d clients (the server's --max-clients); "
                        "ask its operator to raise --max-clients" % len(self.clients))
                client = Client(msg.name, msg, recv_ts, peer)
                self.clients[msg.name] = client
                self.order.append(msg.name)
                if self.first_hello is None:
                    self.first_hello = self.clock()
                self.last_activity = self.clock()
                event.info("client %s joined from %s (host %s, %s, python %s, %s)",
                           msg.name, peer, msg.hostname, msg.fs_type,
                           msg.python_version, msg.sync_mode)
            else:
                same = (client.hello.hostname, client.hello.pid) == (msg.hostname, msg.pid)
                if not same:
                    self.count_rejected(REJECT_NAME_IN_USE)
                    return REJECT, (
                        "client name %r is already used in this run by pid %s on %s; "
                        "give each client its own name" % (
                            msg.name, client.hello.pid, client.hello.hostname))
                if client.conn_id != conn_id:
                    if client.conn_id is not None:
                        log.warning(
                            "hello of %s on connection %d from %s while connection %d "
                            "from %s is still open: a reconnect, or a replay of its "
                            "hello; connection %d now speaks for it", msg.name, conn_id,
                            peer, client.conn_id, client.peer, conn_id)
                    client.reconnects += 1
                    event.info("client %s reconnected from %s", msg.name, peer)
                    if client.state == WENT_AWAY:
                        self._transition(client, client.previous_state, "reconnected")
                client.peer = peer
            client.conn_id = conn_id
            client.sender = sender
            if client.state in LIVE:
                client.awaiting_go = True  # GO again after a reconnect (ignored by it)
            return self._accept_locked(client, msg, recv_ts), None

    def accept(self, msg, recv_ts, conn_id):
        """Dedup and apply a non-hello message; NEW, DUPLICATE or NOT_BOUND."""
        with self.lock:
            client = self.clients.get(msg.name)
            if client is None or client.conn_id != conn_id:
                return NOT_BOUND
            if client.state == WENT_AWAY:
                client.reconnects += 1
                event.info("client %s is back (reconnected)", client.name)
                self._transition(client, client.previous_state, "reconnected")
            return self._accept_locked(client, msg, recv_ts)

    def _accept_locked(self, client, msg, recv_ts):
        client.last_seen = self.clock()
        if msg.seq <= client.last_seq:
            client.duplicates += 1
            return DUPLICATE
        client.last_seq = msg.seq
        client.last_ts = recv_ts
        client.messages += 1
        apply = getattr(self, _APPLY.get(msg.type, "_apply_other"))
        apply(client, msg, recv_ts)
        return NEW

    def is_replay(self, msg, conn_id):
        """True when ``msg`` repeats a recorded seq of a client that speaks on
        another connection (someone sending a captured line again)."""
        with self.lock:
            client = self.clients.get(msg.name)
            return client is not None and client.conn_id != conn_id and \
                msg.seq <= client.last_seq

    def current_peer(self, name):
        """(conn_id, peer) of the connection speaking for ``name`` now."""
        with self.lock:
            client = self.clients.get(name)
            return (client.conn_id, client.peer) if client else (None, None)

    # --- resume after a server restart ------------------------------------------
    def restore(self, msg, recv_ts):
        """Replay one record read back from perf.jsonl; False if it was skipped."""
        with self.lock:
            client = self.clients.get(msg.name)
            if client is None:
                if msg.type != protocol.HELLO:
                    return False  # no hello on record: cannot be a client of this run
                client = Client(msg.name, msg, recv_ts, None)
                self.clients[msg.name] = client
                self.order.append(msg.name)
            if self._accept_locked(client, msg, recv_ts) != NEW:
                return False
            client.recorded_seq = client.last_seq
            client.last_seen = None
            self.restored += 1
            return True

    def resumed(self, reason):
        """The records are replayed: every client that was live waits to reconnect.

        Until each is back, or --heartbeat-timeout passed, the run cannot complete.
        """
        with self.lock:
            now = self.clock()
            self.resumed_at = now
            self.last_activity = now
            if self.clients:
                self.first_hello = now
            for client in self.clients.values():
                client.awaiting_go = False
                if client.state in LIVE:
                    self._transition(client, WENT_AWAY, reason)
                    client.went_away_count -= 1  # the server went away, not the client
                    client.restart_pending = True
            if not self.go_released and (
                    len(self.clients) >= self.expected_clients or
                    any(c.start is not None for c in self.clients.values())):
                self.go_released = True

    def recorded(self, name, seq):
        """The recorder wrote ``seq`` of ``name``. Returns (ack upto, [(name, sender)] to GO)."""
        with self.lock:
            client = self.clients.get(name)
            if client is None:
                return seq, []
            client.recorded_seq = max(client.recorded_seq, seq)
            return client.recorded_seq, self._go_list_locked()

    def ack_point(self, name):
        """Highest recorded seq of ``name`` (what a re-ack says)."""
        with self.lock:
            client = self.clients.get(name)
            return client.recorded_seq if client else 0

    # --- apply: one method per message type ------------------------------------
    def _apply_hello(self, client, msg, recv_ts):
        if self.expected_clients is not None and not self.go_released and \
                len(self.clients) >= self.expected_clients:
            self.go_released = True
            log.info("all %d expected clients said hello: sending go", self.expected_clients)

    def _apply_start(self, client, msg, recv_ts):
        client.start_ts = recv_ts
        client.start = msg
        if client.state == JOINED:
            self._transition(client, RUNNING, "writing")
        event.info("client %s started writing (writer pid %d, %s, preallocate %s)",
                   client.name, msg.writer_pid, msg.sync_mode, msg.preallocate)

    def _apply_perf(self, client, msg, recv_ts):
        client.intervals.append((msg.t_start, msg.t_end, msg.bytes))
        client.perf_bytes += msg.bytes
        client.perf_chunks += msg.chunks
        client.io_s += msg.io_s
        client.hist.merge(metrics.LatencyHistogram.from_wire(
            msg.lat_hist, total=msg.io_s, lo=msg.lat_min_s, hi=msg.lat_max_s))

    def _apply_heartbeat(self, client, msg, recv_ts):
        client.last_heartbeat = (recv_ts, msg)
        if msg.writer_alive:
            log.info("client %s heartbeat: writer %d alive, %.1f MiB written, last "
                     "progress %.1f s ago", client.name, msg.writer_pid,
                     metrics.mib(msg.bytes_written), msg.progress_age_s)
        else:
            log.warning("client %s heartbeat: its writer %d is NOT alive", client.name,
                        msg.writer_pid)

    def _apply_stats(self, client, msg, recv_ts):
        client.cpu_samples.append(msg.cpu_percent)
        client.rss_samples.append(msg.rss_bytes)

    def _apply_rollover(self, client, msg, recv_ts):
        client.close_times.append(msg.close_s)
        client.rollover_bytes += msg.file_bytes
        event.info("client %s rollover #%d (file %d, %.1f MiB, fsync+close %.1f ms)",
                   client.name, len(client.close_times), msg.file_index,
                   metrics.mib(msg.file_bytes), msg.close_s * 1000.0)

    def _apply_stop(self, client, msg, recv_ts):
        client.stop_ts = recv_ts
        client.stop = msg
        event.info("client %s stopped (%s): %.1f MiB in %.1f s, %d rollovers, "
                   "%d dropped messages", client.name, msg.reason,
                   metrics.mib(msg.bytes_written), msg.elapsed_s, msg.rollovers,
                   msg.dropped_messages)
        if client.state in TERMINAL:
            return
        if msg.reason == protocol.STOP_DURATION:
            self._transition(client, FINISHED, "ran its full duration")
        elif msg.reason == protocol.STOP_SERVER:
            self._transition(client, FINISHED, "stopped early at the server's request")
        elif msg.reason == protocol.STOP_SIGNAL:
            self._transition(client, FAILED, "interrupted by a signal on the client")
        else:
            last = client.errors[-1].reason if client.errors else "no error message"
            self._transition(client, FAILED, "stopped by an error: %s" % last)

    def _apply_error(self, client, msg, recv_ts):
        if len(client.errors) < KEEP_TEXTS_MAX:
            client.errors.append(msg)
        else:
            client.texts_dropped += 1
        log.warning("client %s error from %s: %s (errno %s, fatal %s)", client.name,
                    msg.source, msg.reason, msg.errno, msg.fatal)
        if msg.fatal and client.state in LIVE:
            self._transition(client, FAILED, "%s error: %s" % (msg.source, msg.reason))

    def _apply_note(self, client, msg, recv_ts):
        if len(client.notes) >= KEEP_TEXTS_MAX:
            client.texts_dropped += 1
            return
        client.notes.append(msg.text)
        log.info("client %s note: %s", client.name, msg.text)

    def _apply_other(self, client, msg, recv_ts):
        pass  # recorded in perf.jsonl; nothing to accumulate (pong, bye)

    # --- transitions: the one place a state changes ---------------------------
    def _transition(self, client, new, reason):
        old = client.state
        if new not in _ALLOWED[old]:
            log.warning("client %s: ignored impossible transition %s -> %s (%s)",
                        client.name, old, new, reason)
            return False
        if new == WENT_AWAY:
            client.previous_state = old
            client.went_away_count += 1
            client.awaiting_go = False
        if old == WENT_AWAY:
            client.restart_pending = False
        client.state = new
        client.reason = reason
        self.last_activity = self.clock()
        if new in TERMINAL:
            client.terminal_at = self.last_activity
        if new in TERMINAL or old == WENT_AWAY:
            event.info("client %s %s: %s", client.name, new, reason)
        return True

    # --- the main loop's questions ----------------------------------------------
    def check_liveness(self):
        """Mark WENT_AWAY every live client silent for longer than the timeout.

        A client waiting for go (--clients N not reached yet) is exempt: its
        heartbeats start with its writer.
        """
        now = self.clock()
        gone = []
        with self.lock:
            for client in self.clients.values():
                if client.state not in LIVE or client.last_seen is None:
                    continue
                if client.awaiting_go and not self.go_released:
                    continue
                silent = now - client.last_seen
                if silent > self.heartbeat_timeout:
                    self._transition(client, WENT_AWAY, "silent for %.1f s (over "
                                     "--heartbeat-timeout %g s)" % (
                                         silent, self.heartbeat_timeout))
                    gone.append(client.name)
        return gone

    def release_go(self):
        """[(name, sender)] that should get GO now (start-timeout may release it)."""
        with self.lock:
            if not self.go_released and self.first_hello is not None and \
                    self.clock() - self.first_hello >= self.start_timeout:
                self.go_released = True
                log.warning("--start-timeout %g s passed with %d of %d clients: "
                            "sending go to those here", self.start_timeout,
                            len(self.clients), self.expected_clients)
            return self._go_list_locked()

    def _go_list_locked(self):
        if not self.go_released:
            return []
        out = []
        for name in self.order:
            client = self.clients[name]
            if client.awaiting_go and client.sender is not None and \
                    client.recorded_seq >= 1:
                client.awaiting_go = False
                out.append((name, client.sender))
        return out

    def is_complete(self):
        """The run-completion rule (docs/ARCHITECTURE.md)."""
        with self.lock:
            if not self.clients:
                return False
            if any(c.state not in TERMINAL for c in self.clients.values()):
                return False
            if any(self._summary_due(c) for c in self.clients.values()):
                return False  # a failed client is still sending its stop summary
            if self.resumed_at is not None and \
                    any(c.restart_pending for c in self.clients.values()) and \
                    self.clock() - self.resumed_at < self.heartbeat_timeout:
                return False  # a resumed run waits for its clients to come back
            if self.expected_clients is not None:
                return len(self.clients) >= self.expected_clients
            return self.clock() - self.last_activity >= self.idle_timeout

    def _summary_due(self, client):
        """A failed client still connected, whose stop has not arrived yet."""
        return (client.state == FAILED and client.stop is None and
                client.conn_id is not None and
                self.clock() - client.terminal_at < SUMMARY_GRACE_S)

    def live_senders(self):
        with self.lock:
            return [(c.name, c.sender) for c in self.clients.values()
                    if c.state in LIVE and c.sender is not None]

    def mark_unfinished(self, reason):
        """At an interrupted shutdown: say why live clients never finished."""
        with self.lock:
            for client in self.clients.values():
                if client.state in LIVE:
                    client.reason = reason

    def all_finished(self):
        with self.lock:
            return bool(self.clients) and all(
                c.state == FINISHED for c in self.clients.values())

    def snapshot(self):
        with self.lock:
            return RunView([self.clients[n].snapshot() for n in self.order],
                           dict(self.rejected), self.connections, self.expected_clients,
                           self.restored)


_APPLY = {
    protocol.HELLO: "_apply_hello",
    protocol.START: "_apply_start",
    protocol.PERF: "_apply_perf",
    protocol.HEARTBEAT: "_apply_heartbeat",
    protocol.STATS: "_apply_stats",
    protocol.ROLLOVER: "_apply_rollover",
    protocol.STOP: "_apply_stop",
    protocol.ERROR: "_apply_error",
    protocol.NOTE: "_apply_note",
}
