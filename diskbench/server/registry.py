"""The server's registry: every client of the run behind one lock, as the
handlers, the recorder and the main loop see it.

A ``ledger.Ledger`` (each client's record and its state machine, shared with
the report's re-render) with what only a live server has: connections and
which one speaks for a client, hello's refusals, resume after a restart, and
the console's view; plan and go (``go.py``) and liveness and completion
(``liveness.py``) are mixins of their own, over the same state and lock.

Liveness and completion read an injected ``clock`` (monotonic seconds), so
tests drive them without sleeping. Wall-clock times (``recv_ts``) are passed
in by the caller with each message.
"""
import collections
import itertools

from diskbench import plan, runclock
from diskbench.compat import monotonic
from diskbench.ledger import Ledger
from diskbench.server import event, log
from diskbench.server.deadlines import Deadlines
from diskbench.server.go import GoRelease
from diskbench.server.liveness import Liveness
from diskbench.states import FINISHED, LIVE, WENT_AWAY

# Outcomes of Registry.accept / Registry.hello besides ledger.NEW, DUPLICATE, SEQ_JUMP.
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
REJECT_SEQ_JUMP = "seq-jump"            # a seq too far ahead of the client's last
REJECT_FD_EXHAUSTED = "fd-exhausted"    # accept() failed: out of file descriptors
REJECT_PLAN = "plan"                    # the run plan cannot run on that client
REJECT_INTERNAL = "internal-error"      # handling it raised: that client is failed


#: One client's line on the live console (registry.progress_view): plain
#: values copied under the lock; ``recent`` is ((clock(), seconds, bytes), ...)
#: of its last perf intervals.
ClientProgress = collections.namedtuple("ClientProgress", (
    "name", "host", "state", "reason", "bytes", "rollovers", "heartbeat_ts",
    "clock_offset_s", "recent", "start_ts", "duration_s", "peer"))


class ProgressView(object):
    """What the live console shows, copied under the lock in O(clients)."""

    def __init__(self, now, clients, notes, expected_clients, go_released, verified=None):
        self.now = now                # the registry's clock() when copied
        self.clients = clients        # [ClientProgress] in hello order
        self.notes = notes
        self.expected_clients = expected_clients
        self.go_released = go_released
        # --verify: (files, bytes read back, bad blocks) over every client so
        # far; None when no client verifies
        self.verified = verified


class Registry(Liveness, GoRelease, Ledger):
    """All clients of one run; thread-safe (one lock); clock injected."""

    def __init__(self, expected_clients=None, heartbeat_timeout=None, idle_timeout=5.0,
                 start_timeout=60.0, clock=monotonic, max_clients=None,
                 rejoin_grace=None, stall_timeout=plan.STALL_TIMEOUT_S, require_all=False,
                 plan_given=None, wall=runclock.wall, max_duration=plan.MAX_RUN_S):
        Ledger.__init__(self, expected_clients, clock, stall_timeout, plan_given)
        self.wall = wall              # the server's clock, for the start instant
        self.start_at = None          # the common start instant (server clock)
        self.heartbeat_timeout = heartbeat_timeout   # None: per client, from hello
        self.idle_timeout = idle_timeout
        self.start_timeout = start_timeout
        self.rejoin_grace = rejoin_grace             # None: per client, derived
        self.require_all = require_all
        self.short_start = None       # "k of N": go released by --start-timeout
        self.aborted = None           # why the run was aborted (--require-all)
        self.none_coming = False      # every expected host will not come, none came
        self._next_liveness = None    # clock() of the next silence check
        self._waiting = set()         # names of clients waiting for GO
        self._silence = Deadlines()   # name -> when its went-away timeout may come
        self.max_duration = max_duration   # --max-duration: the cap on every plan
        self._overrun = {}            # name -> liveness.Overrun, from its first go
        self._overrun_due = Deadlines()   # name -> when to look at its overrun
        self._next_overrun = None     # clock() of the next overrun check
        self._conn_ids = itertools.count(1)
        self.first_hello = None       # clock() of the first accepted hello
        self.go_released = expected_clients is None
        self.max_clients = max_clients
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
            self._awaiting(client, False)
            if client.state in LIVE:
                why = ("connection closed after bye but before stop" if said_bye
                       else "connection closed without stop")
                self._transition(client, WENT_AWAY, why)

    def count_rejected(self, kind):
        with self.lock:
            self._count_rejected_locked(kind)

    def _count_rejected_locked(self, kind):
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
                    self._count_rejected_locked(REJECT_TOO_MANY_CLIENTS)
                    return REJECT, (
                        "this run already has %d clients (the server's --max-clients); "
                        "ask its operator to raise --max-clients" % len(self.clients))
                values, sources = self._plan_for(msg)
                refusal = self._plan_refusal(msg, values, sources)
                if refusal is not None:
                    self._count_rejected_locked(REJECT_PLAN)
                    return REJECT, refusal
                client = self._add_client(msg, recv_ts, peer, values, sources)
                if self.first_hello is None:
                    self.first_hello = self.clock()
                self.last_activity = self.clock()
                self.say(event.info,
                         "client %s joined from %s (host %s, %s, python %s, %s)",
                         msg.name, peer, msg.hostname, msg.fs_type,
                         msg.python_version, msg.sync_mode)
            else:
                # host name and pid repeat (containers): only the process's
                # random instance id says it is the same client
                if client.hello.instance_id != msg.instance_id:
                    # Never say who owns the name: that would tell a peer what
                    # to claim in order to take it over.
                    self._count_rejected_locked(REJECT_NAME_IN_USE)
                    self.say(log.warning,
                             "refused a hello as %s from %s (host %s pid %s instance "
                             "%s): the name belongs to another process of this run",
                             msg.name, peer, msg.hostname, msg.pid, msg.instance_id)
                    return REJECT, (
                        "client name %r is already used in this run by another "
                        "process; give each client its own name (--name)" % msg.name)
                if client.conn_id != conn_id:
                    if client.conn_id is not None:
                        client.takeovers += 1
                        self.say(log.warning,
                                 "hello of %s on connection %d from %s while connection "
                                 "%d from %s is still open: a reconnect, or a replay of "
                                 "its hello; connection %d now speaks for it", msg.name,
                                 conn_id, peer, client.conn_id, client.peer, conn_id)
                    client.reconnects += 1
                    self.say(event.info, "client %s reconnected from %s", msg.name, peer)
                    if client.state == WENT_AWAY:
                        self._transition(client, client.previous_state, "reconnected")
                client.peer = peer
            client.conn_id = conn_id
            client.sender = sender
            if client.state in LIVE:
                self._awaiting(client, True)  # GO again after a reconnect (ignored by it)
            return self._accept_locked(client, msg, recv_ts), None

    def accept(self, msg, recv_ts, conn_id):
        """Dedup and apply a non-hello message; NEW, DUPLICATE or NOT_BOUND."""
        with self.lock:
            client = self.clients.get(msg.name)
            if client is None or client.conn_id != conn_id:
                return NOT_BOUND
            if client.state == WENT_AWAY:
                client.reconnects += 1
                self.say(event.info, "client %s is back (reconnected)", client.name)
                self._transition(client, client.previous_state, "reconnected")
            return self._accept_locked(client, msg, recv_ts)

    def is_replay(self, msg, conn_id):
        """True when ``msg`` repeats a recorded seq of a client that speaks on
        another connection (someone sending a captured line again)."""
        with self.lock:
            client = self.clients.get(msg.name)
            return client is not None and client.conn_id != conn_id and \
                msg.seq in client.seen

    # --- resume after a server restart (the records: Ledger.restore_all) --------
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
                self._awaiting(client, False)
                if client.state in LIVE:
                    self._transition(client, WENT_AWAY, reason)
                    client.went_away_count -= 1  # the server went away, not the client
                    client.restart_pending = True
            if not self.go_released and (
                    len(self.clients) >= self.expected_clients or
                    any(c.start is not None for c in self.clients.values())):
                self.go_released = True

    # --- the main loop's and the console's questions ---------------------------
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

    def bad_data(self):
        """Names of the clients whose read-back found a bad block."""
        with self.lock:
            return sorted(c.name for c in self.clients.values()
                          if any(c.bad_counts.values()))

    def all_finished(self):
        with self.lock:
            return bool(self.clients) and all(
                c.state == FINISHED for c in self.clients.values())

    def progress_view(self):
        """The live console's copy: O(clients) under the lock, once per refresh
        (never per message or per tick)."""
        with self.lock:
            return ProgressView(self.clock(), [ClientProgress(
                c.name, c.hello.hostname, c.state, c.reason, c.perf_bytes,
                len(c.close_times), c.last_heartbeat[0] if c.last_heartbeat else None,
                c.clock_offset_s, tuple(c.recent), c.start_ts,
                c.plan["duration_s"], c.peer)
                for c in (self.clients[n] for n in self.order)], list(self.notes),
                self.expected_clients, self.go_released, self._verified_locked())

    def _verified_locked(self):
        """ProgressView.verified: O(clients), with the rest of the copy."""
        clients = [c for c in self.clients.values() if c.verify or c.read_files]
        if not clients:
            return None
        return (sum(c.read_files for c in clients), sum(c.read_bytes for c in clients),
                sum(sum(c.bad_counts.values()) for c in clients))

    def link(self, name):
        """(state, sender) of client ``name``, or (None, None): ctl stop."""
        with self.lock:
            c = self.clients.get(name)
            return (None, None) if c is None else (c.state, c.sender)
