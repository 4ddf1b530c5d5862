"""Per-client state and accumulated figures, behind one lock.

States and the transitions between them are written down here and only here
(``states.ALLOWED`` and ``Registry._transition``)::

     hello          start            stop(duration|server)
     -----> JOINED -------> RUNNING ----------------------> FINISHED
              |             |    ^  \\--- error(fatal) / stop(error|signal) --> FAILED
              |   heartbeat:|    |progress again
              |  no progress v    |
              |           STALLED (live: the writer makes no progress)
              |               |
              |   silent for its went-away timeout, or TCP closed while not terminal
              +---------------+------------------------------> WENT_AWAY
                           any message from it again ------> back to where it was
                                                            (logged "reconnected")

A client's went-away timeout is HEARTBEAT_LIVENESS missed beats of the
heartbeat interval it announced in hello, at most MAX_WENT_AWAY_S
(--heartbeat-timeout overrides it).
A went-away client may come back within --rejoin-grace: until then the run
is not complete. Dedup is by the set of seqs seen (``seqset``), and a seq may
not jump further ahead than a client could have sent (``max_seq_jump``).

Liveness and completion read an injected ``clock`` (monotonic seconds), so
tests drive them without sleeping. Wall-clock times (``recv_ts``) are passed
in by the caller with each message.
"""
import array
import collections
import copy
import itertools
import logging
import threading

from diskbench import metrics, plan, protocol, runclock
from diskbench.compat import acquire_in_turn, monotonic
from diskbench.server import event, log, verbose
from diskbench.server.deadlines import Deadlines
from diskbench.server import seqset
from diskbench.metrics import count
from diskbench.server.seqset import SeqSet
from diskbench.stamp import kinds_text

from diskbench.server.states import (  # noqa: F401 - re-exported for callers
    ALLOWED, FAILED, FINISHED, JOINED, LIVE, RUNNING, STALLED, TERMINAL, WENT_AWAY)

# Outcomes of Registry.accept / Registry.hello.
NEW = "new"               # first time this seq is seen: record it and apply it
DUPLICATE = "duplicate"   # seq already seen: re-ack, do not record or apply
NOT_BOUND = "not-bound"   # no accepted hello on this connection (or another name)
REJECT = "reject"         # hello refused (name already used by another process)
SEQ_JUMP = "seq-jump"     # seq further ahead than the client could have sent: refused

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

#: A client is went away after this many heartbeat intervals (its own, from
#: hello) without any message, unless --heartbeat-timeout gives a fixed time.
HEARTBEAT_LIVENESS = 3
#: Least went-away timeout, whatever interval a client announces.
MIN_WENT_AWAY_S = 1.0
#: Most went-away timeout, whatever interval a client announces (it says 1e9
#: s: the run would wait for ever): the server's bound on every wait derived
#: from a client (rejoin grace, a resumed run's wait); --heartbeat-timeout
#: overrides it. master.run_end_bound_s adds up the waits.
MAX_WENT_AWAY_S = 300.0
#: Default --rejoin-grace, in went-away timeouts of the client: how long a run
#: waits for a went-away client to come back before it may complete.
REJOIN_GRACE_TIMEOUTS = 2
#: A seq may be at most this much ahead of the client's highest one ...
SEQ_JUMP_BASE = 1000
#: ... plus this many per second since its last message (a client sends a
#: few per second; the rest of a gap is what it dropped while cut off).
SEQ_RATE_MAX = 200
#: Clocks differing by more than this (client vs server) are warned about.
CLOCK_SKEW_WARN_S = 1.0
#: A pong later than this after its ping is not used for the clock.
PING_RTT_MAX_S = 60.0
#: Pongs within 2 x the shortest round trip plus this count for the drift.
PING_RTT_SLACK_S = 0.002
#: A client whose measured offset moves more than this during the run is flagged.
CLOCK_DRIFT_WARN_S = 0.05
#: Messages seen before a skew is said live (early ones may have queued).
SKEW_SAMPLES_MIN = 10
#: Silence is looked for this often (a went-away verdict may come this much
#: after the timeout); each look only visits the clients whose timeout may
#: have come (deadlines.py), never all of them.
LIVENESS_CHECK_S = 1.0
#: A client that failed (fatal error) but is still connected gets this long to
#: deliver its stop summary before the run may complete without it.
SUMMARY_GRACE_S = 10.0
#: Errors and notes kept per client for the report (the rest are only counted).
KEEP_TEXTS_MAX = 1000
#: Perf intervals kept per client for the console's "MiB/s now" (a ring: O(1)
#: per message; the console looks at those received in its last few seconds).
RECENT_PERF_MAX = 16
#: Synchronized start: when go is released to --clients N, the common start
#: instant is this far ahead on the server's clock (every client must get its
#: go, start its writer -- a fresh interpreter under spawn -- open its first
#: file and fill its buffer by then) ...
START_LEAD_S = 2.0
#: ... plus this much per client (sending N go messages takes time).
START_LEAD_PER_CLIENT_S = 0.001
#: The go's end_spread_s (protocol.POLICY's PACED_END): the fleet's stop
#: summaries are spread over this much per client (up to
#: protocol.END_SPREAD_MAX_S): 1,000 clients' ends a second. An end is three
#: messages (the last perf, stop, bye) and three log lines (stopped, finished,
#: closed), so that is about the load of 5,000 clients' steady reports; all
#: at once they held the acks back (docs/SCALING.md).
END_SPREAD_PER_CLIENT_S = 0.001
#: A go sent less than this before the common instant carries no instant:
#: that client starts at once (it could not be ready in time).
START_AHEAD_MIN_S = 0.5


#: One client's line on the live console (registry.progress_view): plain
#: values copied under the lock; ``recent`` is ((clock(), seconds, bytes), ...)
#: of its last perf intervals.
ClientProgress = collections.namedtuple("ClientProgress", (
    "name", "host", "state", "reason", "bytes", "rollovers", "heartbeat_ts",
    "clock_offset_s", "recent", "start_ts", "duration_s", "peer"))


def unbelieved_offset(name, offset):
    """The report's sentence for a pong offset beyond CLOCK_OFFSET_MAX_S."""
    return ("client %s's clock is %s the server's (over %g s, "
            "protocol.CLOCK_OFFSET_MAX_S): offset not used; its go carried none and "
            "its figures are put on the server's clock by when its messages arrived"
            % (name, metrics.describe_offset(offset), protocol.CLOCK_OFFSET_MAX_S))


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


class _LockAndSay(object):
    """The registry's one lock. Log lines said under it (``say``) are emitted
    after it is released, so no handler thread waits for the lock while
    another formats or queues a log line. Not reentrant."""

    def __init__(self):
        self._lock = threading.Lock()
        self._said = []

    def __enter__(self):
        acquire_in_turn(self._lock)

    def __exit__(self, *exc_info):
        said, self._said = self._said, []
        self._lock.release()
        for func, args in said:
            func(*args)

    def say(self, func, *args):
        self._said.append((func, args))


class Intervals(object):
    """A client's perf intervals, (t_start, t_end, bytes) each, packed into
    one array of doubles: 24 bytes an interval where a list of tuples took
    about 160 (docs/SCALING.md) and one object
    for the garbage collector, not three per message. Bytes are exact up to
    2**53 in one interval (8 PiB)."""

    __slots__ = ("_flat",)

    def __init__(self):
        self._flat = array.array("d")

    def append(self, t_start, t_end, nbytes):
        self._flat.extend((t_start, t_end, nbytes))

    def copy(self):
        other = Intervals()
        other._flat = array.array("d", self._flat)
        return other

    def __iadd__(self, items):
        for item in items:
            self.append(*item)
        return self

    def __len__(self):
        return len(self._flat) // 3

    def __iter__(self):
        flat = self._flat
        for i in range(0, len(flat), 3):
            yield flat[i], flat[i + 1], int(flat[i + 2])


class Client(object):
    """Everything known about one client (by name). Mutated under Registry.lock."""

    def __init__(self, name, hello, recv_ts, peer, plan_values, plan_sources):
        self.name = name
        self.hello = hello            # the first accepted hello (Message)
        self.peer = peer
        self.state = JOINED
        self.reason = "joined, not started yet"
        self.previous_state = None    # where a WENT_AWAY client goes back to
        self.conn_id = None           # the connection currently speaking for it
        self.sender = None            # callable(Message) on that connection
        self.seen = SeqSet()          # every seq accepted (dedup / replay rule)
        self.last_seq = 0             # highest seq accepted
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
        self.intervals = Intervals()  # (t_start, t_end, bytes) per perf message
        # (clock(), seconds, bytes) of the last perf messages (console MiB/s now)
        self.recent = collections.deque(maxlen=RECENT_PERF_MAX)
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
        self.quiet_until = None       # clock() its go said it starts (silence counts after)
        self.restart_pending = False  # known from a resumed run, not back yet
        self.texts_dropped = 0        # errors/notes beyond KEEP_TEXTS_MAX
        self.terminal_at = None       # clock() when it reached a terminal state
        self.said_bye = False         # it left on purpose: no rejoin expected
        self.takeovers = 0            # hellos on a new connection while one was open
        self.seq_jumps = 0            # messages refused for a seq too far ahead
        # How far the client's clock is ahead of the server's: the largest
        # send time minus receive time seen (network delay only lowers it).
        self.clock_offset_s = None
        # From pongs (NTP-style): the shortest round trip seen, the offset
        # measured in it, and the spread of offsets measured in round trips
        # close to the shortest (a clock that drifts or steps during the run).
        self.rtt_s = None
        self.ping_offset_s = None
        self.offset_low = self.offset_high = None
        self.skew_warned = False
        self.offset_unbelieved = None   # the last pong offset beyond belief
        self.drift_warned = False
        # The run plan (plan.resolve at the first hello; what start says it
        # ran replaces it), where each setting came from, and the start: the
        # common instant its go carried (server clock) and the client's clock
        # at its first write.
        self.plan, self.plan_sources = plan_values, plan_sources
        self.start_at = None
        self.started_at = None
        self.join_order = None        # 1: the first client to say hello
        # --verify (plan.resolve_verify) and what its read-backs said
        self.verify, self.verify_source = False, plan.FROM_DEFAULT
        self.read_files = 0
        self.read_bytes = 0
        self.read_file_bytes = 0      # what those files should have held
        self.read_io_s = 0.0
        self.read_hist = metrics.LatencyHistogram()
        self.read_modes = set()
        self.bad_counts = dict((kind, 0) for kind in protocol.BAD_KINDS)
        self.bad_blocks = []          # BAD_BLOCK Messages (the first KEEP_TEXTS_MAX)

    @property
    def heartbeat_interval_s(self):
        """The heartbeat interval of its plan (None: not said)."""
        return self.plan["heartbeat_interval_s"] or None

    def offset(self):
        """(client clock minus server clock in s, how it was measured), or
        (None, None): from pongs when it answered any, else from timestamps."""
        if self.ping_offset_s is not None:
            return self.ping_offset_s, "ping"
        if self.clock_offset_s is not None:
            return self.clock_offset_s, "timestamps"
        return None, None

    def snapshot(self):
        """A detached copy for the report (Messages are never mutated)."""
        view = copy.copy(self)
        view.sender = None
        view.close_times = list(self.close_times)
        view.intervals = self.intervals.copy()
        view.recent = None
        view.cpu_samples = list(self.cpu_samples)
        view.rss_samples = list(self.rss_samples)
        view.errors = list(self.errors)
        view.notes = list(self.notes)
        view.hist = metrics.LatencyHistogram()
        view.hist.merge(self.hist)
        view.seen = None
        view.plan = dict(self.plan)
        view.read_hist = metrics.LatencyHistogram()
        view.read_hist.merge(self.read_hist)
        view.read_modes = set(self.read_modes)
        view.bad_counts = dict(self.bad_counts)
        view.bad_blocks = list(self.bad_blocks)
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

    def __init__(self, expected_clients=None, heartbeat_timeout=None, idle_timeout=5.0,
                 start_timeout=60.0, clock=monotonic, max_clients=None,
                 rejoin_grace=None, stall_timeout=plan.STALL_TIMEOUT_S, require_all=False,
                 plan_given=None, wall=runclock.wall):
        self.lock = _LockAndSay()
        self.say = self.lock.say
        self.clock = clock
        self.wall = wall              # the server's clock, for the start instant
        # the server's run plan (plan.resolve's ``server``): chunk_bytes a list
        self.plan_given = plan_given or {}
        self.start_at = None          # the common start instant (server clock)
        self.expected_clients = expected_clients
        self.heartbeat_timeout = heartbeat_timeout   # None: per client, from hello
        self.idle_timeout = idle_timeout
        self.start_timeout = start_timeout
        self.rejoin_grace = rejoin_grace             # None: per client, derived
        self.stall_timeout = stall_timeout
        self.require_all = require_all
        self.short_start = None       # "k of N": go released by --start-timeout
        self.aborted = None           # why the run was aborted (--require-all)
        self.paused_s = 0.0           # time the server itself was stopped/starved
        self.notes = []               # sentences for the report (said once each)
        self.unsettled = 0            # clients not in a TERMINAL state (O(1) completion)
        self._next_liveness = None    # clock() of the next silence check
        self.clients = {}
        self.order = []               # names in hello order
        self.order_index = {}         # name -> position in order
        self._waiting = set()         # names of clients waiting for GO
        self._silence = Deadlines()   # name -> when its went-away timeout may come
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

    def _plan_for(self, msg):
        """(values, sources) of the plan of the client whose first hello is
        ``msg``: it is the next to arrive (the chunk list's order)."""
        own = dict((k, msg.data.get(k)) for k in protocol.PLAN_FIELDS)
        return plan.resolve(own, msg.fixed, self.plan_given, len(self.order))

    def _plan_refusal(self, msg, values, sources):
        """None, or why the client of hello ``msg`` cannot run ``values``: sizes
        that cannot run, or fewer than two rollovers at the speed it calibrated
        (--force on the client: run anyway, said in the report)."""
        where = "the run plan for client %s (%s)" % (msg.name, plan.describe(values, sources))
        # what the client's own command line fixed, the client checked itself
        own = set(k for k, v in sources.items() if v == plan.FROM_CLIENT)
        problem = None
        if set(["chunk_bytes", "file_bytes"]) - own:
            problem = plan.size_problem(values["chunk_bytes"], values["file_bytes"])
        if problem:
            return "%s cannot run: %s" % (where, problem)
        if set(["duration_s", "file_bytes"]) - own:
            problem = plan.plan_rollover_problem(values, msg.calibration_mib_s)
        if problem is None:
            return None
        if msg.force:
            self._note("%s: %s; the client runs it anyway (--force)" % (where, problem))
            return None
        return "%s on its disk: %s" % (where, problem)

    def _add_client(self, msg, recv_ts, peer, values, sources):
        client = Client(msg.name, msg, recv_ts, peer, values, sources)
        client.join_order = len(self.order) + 1   # the plan's order of arrival
        client.verify, client.verify_source = plan.resolve_verify(
            msg.data.get(plan.VERIFY), self.plan_given)
        self.clients[msg.name] = client
        self.unsettled += 1
        self.order_index[msg.name] = len(self.order)
        self.order.append(msg.name)
        return client

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

    def _accept_locked(self, client, msg, recv_ts):
        if msg.seq in client.seen:
            self._seen(client)
            client.duplicates += 1
            return DUPLICATE
        if msg.seq > client.last_seq + self.max_seq_jump(client, recv_ts):
            client.seq_jumps += 1
            return SEQ_JUMP
        self._seen(client)
        compacted = client.seen.compacted
        client.seen.add(msg.seq)
        if client.seen.compacted != compacted and not compacted:
            self._note("client %s's seqs have more than %d gaps (seqset.MAX_RANGES): "
                       "its oldest gaps now count as seen (messages it dropped; one "
                       "arriving now would be taken for a duplicate); every later "
                       "message is recorded" % (client.name, seqset.MAX_RANGES))
        client.last_seq = client.seen.high
        client.last_ts = recv_ts
        client.messages += 1
        self._clock_sample(client, msg, recv_ts)
        apply = getattr(self, _APPLY[msg.type])   # total: tests/test_protocol.py
        apply(client, msg, recv_ts)
        return NEW

    def _seen(self, client):
        """``client`` spoke now: its silence is watched from here (O(1))."""
        client.last_seen = now = self.clock()
        self._silence.watch(client.name, now + self.went_away_timeout(client))

    @staticmethod
    def max_seq_jump(client, recv_ts):
        """How far past its highest seq a client's next seq may be: what it
        could have sent (and dropped) since its last message, with slack."""
        since = max(0.0, recv_ts - client.last_ts) if client.last_seq else 0.0
        return SEQ_JUMP_BASE + int(SEQ_RATE_MAX * since)

    def _clock_sample(self, client, msg, recv_ts):
        client.clock_offset_s = metrics.clock_ahead(client.clock_offset_s, msg.ts, recv_ts)
        if not client.skew_warned and abs(client.clock_offset_s) > CLOCK_SKEW_WARN_S \
                and client.messages >= SKEW_SAMPLES_MIN:
            client.skew_warned = True
            self.say(event.info, "client %s: its clock is %+.1f s off the server's (or its "
                     "messages are that late); its times are put on the server's "
                     "clock in the report", client.name, client.clock_offset_s)

    def is_replay(self, msg, conn_id):
        """True when ``msg`` repeats a recorded seq of a client that speaks on
        another connection (someone sending a captured line again)."""
        with self.lock:
            client = self.clients.get(msg.name)
            return client is not None and client.conn_id != conn_id and \
                msg.seq in client.seen

    # --- resume after a server restart ------------------------------------------
    def restore(self, msg, recv_ts):
        """Replay one record read back from perf.jsonl; False if it was skipped."""
        with self.lock:
            client = self.clients.get(msg.name)
            if client is None:
                if msg.type != protocol.HELLO:
                    return False  # no hello on record: cannot be a client of this run
                values, sources = self._plan_for(msg)
                client = self._add_client(msg, recv_ts, None, values, sources)
            try:
                if self._accept_locked(client, msg, recv_ts) != NEW:
                    return False
            except Exception:   # as when it came: that record, not the resume
                log.exception("internal error replaying %s #%d of client %s; skipped",
                              msg.type, msg.seq, msg.name)
                return False
            client.recorded_seq = client.last_seq
            client.last_seen = None
            self._silence.forget(client.name)
            client.recent.clear()     # replayed figures are not "now"
            self.restored += 1
            return True

    def restore_all(self, records):
        """``restore`` each (msg, recv_ts) with the server's logging muted (what
        the records say is already in server.log); returns how many were skipped."""
        mute = _Mute()
        for logger in (log, event, verbose):
            logger.addFilter(mute)
        try:
            return sum(1 for msg, recv_ts in records if not self.restore(msg, recv_ts))
        finally:
            for logger in (log, event, verbose):
                logger.removeFilter(mute)

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

    def recorded(self, name, seq):
        """The recorder wrote ``seq`` of ``name``. Returns [(name, sender,
        fields)]: its own GO when due, nothing else.

        Cheap: a client not waiting for GO costs no lock. When this hello
        released go to everyone, the others get theirs from the main loop
        (``release_go``): a big fleet's fan-out from the recorder thread
        made every ack wait behind it.
        """
        client = self.clients.get(name)
        if client is None:
            return []
        if seq > client.recorded_seq:  # only the recorder thread writes it
            client.recorded_seq = seq
        if name not in self._waiting:
            return []
        with self.lock:
            if not self.go_released or name not in self._waiting or \
                    client.sender is None or client.recorded_seq < 1:
                return []
            self._awaiting(client, False)
            return self._go_entry(client)

    def _awaiting(self, client, flag):
        """The one place a client starts or stops waiting for GO."""
        client.awaiting_go = flag
        if flag:
            self._waiting.add(client.name)
        else:
            self._waiting.discard(client.name)

    # --- apply: one method per message type ------------------------------------
    def _apply_hello(self, client, msg, recv_ts):
        if self.expected_clients is not None and not self.go_released and \
                len(self.clients) >= self.expected_clients:
            self._release()
            self.say(log.info, "all %d expected clients said hello: sending go",
                     self.expected_clients)

    def _apply_start(self, client, msg, recv_ts):
        client.start_ts = recv_ts
        client.start = msg
        client.started_at = msg.started_at
        for key in ("chunk_bytes", "file_bytes", "duration_s"):  # as run, when said
            if msg.data.get(key) is not None:
                client.plan[key] = msg.data[key]
        if msg.data.get(plan.VERIFY):  # as run (a re-render has no go to say it)
            client.verify = True
            client.verify_source = plan.FROM_CLIENT if client.hello.data.get(plan.VERIFY) \
                else plan.FROM_SERVER
        if client.state == JOINED:
            self._transition(client, RUNNING, "writing")
        self.say(event.info,
                 "client %s started writing (writer pid %d, %s, preallocate %s)",
                 client.name, msg.writer_pid, msg.sync_mode, msg.preallocate)

    def _apply_perf(self, client, msg, recv_ts):
        client.intervals.append(msg.t_start, msg.t_end, msg.bytes)
        client.recent.append((client.last_seen, msg.t_end - msg.t_start, msg.bytes))
        client.perf_bytes += msg.bytes
        client.perf_chunks += msg.chunks
        client.io_s += msg.io_s
        client.hist.merge(metrics.LatencyHistogram.from_wire(
            msg.lat_hist, total=msg.io_s, lo=msg.lat_min_s, hi=msg.lat_max_s))

    def _apply_readback(self, client, msg, recv_ts):
        client.read_files += 1
        client.read_bytes += msg.bytes
        client.read_file_bytes += msg.file_bytes
        client.read_io_s += msg.io_s
        client.read_modes.add(msg.read_mode)
        client.read_hist.merge(metrics.LatencyHistogram.from_wire(
            msg.lat_hist, total=msg.io_s, lo=msg.lat_min_s, hi=msg.lat_max_s))
        bad = 0
        for kind in protocol.BAD_KINDS:
            client.bad_counts[kind] += msg.data[kind]
            bad += msg.data[kind]
        if bad:
            self.say(event.info, "client %s: file %d read back with %d bad blocks (%s)",
                     client.name, msg.file_index, bad, kinds_text(msg.data))

    def _apply_bad_block(self, client, msg, recv_ts):
        if len(client.bad_blocks) < KEEP_TEXTS_MAX:
            client.bad_blocks.append(msg)
        self.say(log.warning, "client %s bad block (%s) in %s at offset %d: expected "
                 "%s, found %s", client.name, msg.kind, msg.path, msg.offset,
                 msg.expected, msg.found)

    def _apply_heartbeat(self, client, msg, recv_ts):
        client.last_heartbeat = (recv_ts, msg)
        stuck = msg.progress_age_s >= self.stall_timeout or not msg.writer_alive
        why = "writer %s" % ("no progress for %.1f s" % msg.progress_age_s
                             if msg.writer_alive else "process is not alive")
        if self._after_its_run(client, msg):
            pass  # sampled after the writer's run ended: an idle writer is no stall
        elif stuck and client.state == RUNNING:
            self._transition(client, STALLED, why)
        elif stuck and client.state == STALLED:
            client.reason = why  # the stall's true length so far
        elif not stuck and client.state == STALLED:
            self._transition(client, RUNNING, "writer progressing again")
        if not msg.writer_alive:  # (every heartbeat itself is in perf.jsonl)
            self.say(log.warning,
                     "client %s heartbeat: its writer %d is NOT alive", client.name,
                     msg.writer_pid)

    @staticmethod
    def _after_its_run(client, msg):
        """True when heartbeat ``msg`` was sampled (its ts: the client's clock
        when the heartbeat process looked) at or after the end of the writer's
        run (its start message's started_at + duration, the same clock): a
        beat that waited in a paused client's pipe is judged by when it was
        taken, not by when it came."""
        duration = client.plan.get("duration_s")
        if client.started_at is None or not duration:
            return False
        return msg.ts >= client.started_at + duration

    def _apply_stats(self, client, msg, recv_ts):
        client.cpu_samples.append(msg.cpu_percent)
        client.rss_samples.append(msg.rss_bytes)

    def _apply_rollover(self, client, msg, recv_ts):
        client.close_times.append(msg.close_s)
        self.say(verbose.info,
                 "client %s rollover #%d (file %d, %.1f MiB, fsync+close %.1f ms)",
                 client.name, len(client.close_times), msg.file_index,
                 metrics.mib(msg.file_bytes), msg.close_s * 1000.0)

    def _apply_stop(self, client, msg, recv_ts):
        client.stop_ts = recv_ts
        client.stop = msg
        self.say(event.info, "client %s stopped (%s): %.1f MiB in %.1f s, %d rollovers, "
                 "%d dropped messages", client.name, msg.reason,
                 metrics.mib(msg.bytes_written), msg.elapsed_s, msg.rollovers,
                 msg.dropped_messages)
        if client.state in TERMINAL:
            return
        bad = sum(client.bad_counts.values())
        if bad:  # whatever its speed
            self._transition(client, FAILED, "its data did not come back: %d bad blocks "
                             "read back (%s)" % (bad, kinds_text(client.bad_counts)))
        elif client.state == STALLED:
            self._transition(client, FAILED, "stopped while stalled (%s): its last "
                             "figures may predate the stall" % client.reason)
        elif msg.reason == protocol.STOP_DURATION:
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
        self.say(log.warning,
                 "client %s error from %s: %s (errno %s, fatal %s)", client.name,
                 msg.source, msg.reason, msg.errno, msg.fatal)
        if msg.fatal and client.state in LIVE:
            self._transition(client, FAILED, "%s error: %s" % (msg.source, msg.reason))

    def _apply_note(self, client, msg, recv_ts):
        if len(client.notes) >= KEEP_TEXTS_MAX:
            client.texts_dropped += 1
            return
        client.notes.append(msg.text)
        self.say(log.info, "client %s note: %s", client.name, msg.text)

    def _apply_pong(self, client, msg, recv_ts):
        """Round trip = receive - send of the ping (its nonce); the client's
        clock at the middle of it says how far ahead of ours it is."""
        sent = msg.nonce / float(protocol.PING_NONCE_PER_S)
        rtt = recv_ts - sent
        if not 0.0 <= rtt <= PING_RTT_MAX_S:
            return  # not a pong to one of our pings (or absurdly late)
        offset = msg.client_time - (sent + recv_ts) / 2.0
        if abs(offset) > protocol.CLOCK_OFFSET_MAX_S:
            # beyond belief: never sent in a go nor used for its figures
            if client.offset_unbelieved is None:
                self._note(unbelieved_offset(client.name, offset))
            client.offset_unbelieved = offset
            return
        if client.rtt_s is None or rtt < client.rtt_s:
            client.rtt_s, client.ping_offset_s = rtt, offset
        if rtt <= 2 * client.rtt_s + PING_RTT_SLACK_S:
            low, high = client.offset_low, client.offset_high
            client.offset_low = offset if low is None else min(low, offset)
            client.offset_high = offset if high is None else max(high, offset)
            drift = client.offset_high - client.offset_low
            if drift > CLOCK_DRIFT_WARN_S and not client.drift_warned:
                client.drift_warned = True
                self.say(event.info, "client %s: its clock moved %.3f s against the "
                         "server's during the run", client.name, drift)

    def _apply_bye(self, client, msg, recv_ts):
        client.said_bye = True

    # --- transitions: the one place a state changes ---------------------------
    def _transition(self, client, new, reason):
        old = client.state
        if new not in ALLOWED[old]:
            self.say(log.warning, "client %s: ignored impossible transition %s -> %s (%s)",
                     client.name, old, new, reason)
            return False
        if new == WENT_AWAY:
            client.previous_state = old
            client.went_away_count += 1
            self._awaiting(client, False)
        if old == WENT_AWAY:
            client.restart_pending = False
        client.state = new
        client.reason = reason
        self.unsettled += (old in TERMINAL) - (new in TERMINAL)
        self.last_activity = self.clock()
        if new in TERMINAL:
            client.terminal_at = self.last_activity
        if new in TERMINAL or old == WENT_AWAY or STALLED in (old, new):
            self.say(event.info, "client %s %s: %s", client.name, new, reason)
        return True

    # --- the main loop's questions ----------------------------------------------
    def went_away_timeout(self, client):
        """Silence after which ``client`` is went away: --heartbeat-timeout, or
        HEARTBEAT_LIVENESS of the heartbeat intervals it announced."""
        if self.heartbeat_timeout is not None:
            return self.heartbeat_timeout
        return min(MAX_WENT_AWAY_S, self._heartbeats_timeout(client))

    @staticmethod
    def _heartbeats_timeout(client):
        """HEARTBEAT_LIVENESS of the heartbeat intervals ``client`` announced
        (at least MIN_WENT_AWAY_S), before the server's cap."""
        if client.heartbeat_interval_s:
            return max(MIN_WENT_AWAY_S, HEARTBEAT_LIVENESS * client.heartbeat_interval_s)
        return max(MIN_WENT_AWAY_S, HEARTBEAT_LIVENESS * plan.HEARTBEAT_INTERVAL_S)

    def _timeout_source(self, client, limit):
        if self.heartbeat_timeout is not None:
            return "--heartbeat-timeout %g s" % limit
        beat = client.heartbeat_interval_s or plan.HEARTBEAT_INTERVAL_S
        if limit < HEARTBEAT_LIVENESS * beat:
            return "%g s, the server's cap (MAX_WENT_AWAY_S) on %d heartbeats of %g s" % (
                limit, HEARTBEAT_LIVENESS, beat)
        return "%g s: %d heartbeats of %g s missed" % (limit, HEARTBEAT_LIVENESS, beat)

    def rejoin_grace_for(self, client):
        if self.rejoin_grace is not None:
            return self.rejoin_grace
        return REJOIN_GRACE_TIMEOUTS * self.went_away_timeout(client)

    def check_liveness(self):
        """Mark WENT_AWAY every live client silent for longer than its timeout.

        A client waiting for go (--clients N not reached yet) is exempt: its
        heartbeats start with its writer.
        """
        now = self.clock()
        gone = []
        if self._next_liveness is not None and now < self._next_liveness:
            return gone
        self._next_liveness = now + LIVENESS_CHECK_S
        with self.lock:   # only the clients whose timeout may have come: no scan
            for name in self._silence.due_now(now):
                client = self.clients.get(name)
                if client is None or client.state not in LIVE or client.last_seen is None:
                    continue      # watched again when it next speaks
                try:
                    if self._check_silence(client, now):
                        gone.append(client.name)
                except Exception:   # one client's state must not stop the loop
                    log.exception("internal error checking whether client %s went "
                                  "away", name)
                    self._internal_error_locked(client, "checking its liveness")
        return gone

    def _check_silence(self, client, now):
        """True when ``client`` is now went away (else watched again)."""
        limit = self.went_away_timeout(client)
        if client.awaiting_go:     # its go not sent yet, released or not: exempt
            self._silence.watch(client.name, now + limit)
            return False
        since = max(client.last_seen, client.quiet_until or client.last_seen)
        silent = now - since
        if silent > limit:
            self._transition(client, WENT_AWAY, "silent for %.1f s (over %s)" % (
                silent, self._timeout_source(client, limit)))
            return True
        self._silence.watch(client.name, since + limit)
        return False

    def internal_error(self, name, what, conn_id=None):
        """Handling client ``name`` raised (logged with its traceback by the
        caller): that client is failed, the run goes on. With ``conn_id``,
        only when that connection speaks for it (a stranger's line naming a
        client fails nobody but the stranger)."""
        with self.lock:
            client = self.clients.get(name)
            if client is not None and (conn_id is None or client.conn_id == conn_id):
                self._internal_error_locked(client, what)

    def _internal_error_locked(self, client, what):
        self._awaiting(client, False)
        self._silence.forget(client.name)
        if client.state == WENT_AWAY:
            self._transition(client, client.previous_state, "back for its failure")
        if client.state in LIVE:
            self._transition(client, FAILED, "the server failed %s (an internal "
                             "error, in server.log with its traceback)" % what)

    def server_paused(self, gap):
        """The server itself did not run for ``gap`` seconds (SIGSTOP, a frozen
        VM, starvation): nobody's silence in that time counts against them."""
        with self.lock:
            self.paused_s += gap     # (a silence entry now comes early: looked at, re-armed)
            for client in self.clients.values():
                if client.last_seen is not None:
                    client.last_seen += gap
                if client.terminal_at is not None:
                    client.terminal_at += gap
            self.last_activity += gap
            for attr in ("first_hello", "resumed_at"):
                if getattr(self, attr) is not None:
                    setattr(self, attr, getattr(self, attr) + gap)

    def release_go(self):
        """[(name, sender, fields)] that should get GO now: the fan-out to
        everyone waiting once go is released (start-timeout may release it).

        When --start-timeout passes with fewer than --clients hellos, the run
        goes on with those present (or, with --require-all, is aborted: the
        senders to tell are in ``self.aborted``'s caller, see ``abort``).
        """
        with self.lock:
            if not self.go_released and self.first_hello is not None and \
                    self.clock() - self.first_hello >= self.start_timeout:
                self.short_start = "%d of %d" % (len(self.clients), self.expected_clients)
                if self.require_all:
                    return []
                self._release()
                self._note("--start-timeout %g s passed with %s expected clients: the "
                           "run went on with those present" % (self.start_timeout,
                                                               self.short_start))
            return self._go_list_locked()

    def not_coming(self, host, why):
        """The launcher knows ``host``'s client will not come (its ssh failed):
        the run waits for one client fewer, so a dead host does not cost
        --start-timeout. Returns what happened, in words (said in the report)."""
        with self.lock:
            if self.expected_clients is None or self.go_released:
                return "go was already sent: the run waits for no more clients"
            was = self.expected_clients
            self.expected_clients = max(1, was - 1)
            self._note("host %s will not come (%s): the run waits for %s, not %d" % (
                host, why, count(self.expected_clients, "client"), was))
            if len(self.clients) >= self.expected_clients:
                self._release()
                return "all %s expected are here: go is sent" % count(
                    self.expected_clients, "client")
            return "the run now waits for %s" % count(self.expected_clients, "client")

    def _go_list_locked(self):
        if not self.go_released:
            return []
        out = []
        for name in sorted(self._waiting, key=self.order_index.get):
            client = self.clients[name]
            if client.sender is not None and client.recorded_seq >= 1:
                self._awaiting(client, False)
                out += self._go_entry(client)
        return out

    def _go_entry(self, client):
        """[(name, sender, go fields)] of ``client``, or [] when they cannot
        be made (that client is failed; logged with the traceback)."""
        try:
            fields = self._go_fields(client)
        except Exception:
            log.exception("internal error making client %s's go; failing that client, "
                          "the run goes on", client.name)
            self._internal_error_locked(client, "sending its go")
            return []
        # its heartbeats start with its writer, at the start instant: the
        # silence it kept while exempt (waiting for go) and the lead do not count
        lead = client.start_at - self.wall() if client.start_at is not None else 0.0
        client.quiet_until = self.clock() + max(0.0, lead)
        return [(client.name, client.sender, fields)]

    def _release(self):
        """Go is released to the clients of --clients N: the common start
        instant is set (its lead grows with the number of clients)."""
        self.go_released = True
        self.start_at = self.wall() + START_LEAD_S + \
            START_LEAD_PER_CLIENT_S * len(self.clients)

    @property
    def end_spread_s(self):
        """The end spread a go gives now, the longest any gave (clients are
        never removed): END_SPREAD_PER_CLIENT_S per client known."""
        return min(
            protocol.END_SPREAD_MAX_S, END_SPREAD_PER_CLIENT_S * len(self.clients))

    def _go_fields(self, client):
        """The body of ``client``'s go (but the run id): its plan, the common
        start instant while it can still make it, and its clock offset when
        pongs measured it (else the client converts by the go's send time)."""
        fields = dict(client.plan)
        fields["end_spread_s"] = self.end_spread_s
        if client.verify:
            fields[plan.VERIFY] = True
        if self.start_at is not None and client.start is None and \
                self.wall() <= self.start_at - START_AHEAD_MIN_S:
            client.start_at = fields["start_at"] = self.start_at
            fields["clock_offset_s"] = client.ping_offset_s
        return fields

    def abort(self, reason):
        """End the run before it started (--require-all): every client FAILED
        with ``reason``; returns [(name, sender)] to send a stop to."""
        with self.lock:
            self.aborted = reason
            self._note("the run was aborted: %s" % reason)
            out = []
            for name in self.order:
                client = self.clients[name]
                self._awaiting(client, False)
                if client.state in LIVE:
                    self._transition(client, FAILED, "aborted: %s" % reason)
                if client.sender is not None:
                    out.append((name, client.sender))
            return out

    def _note(self, text):
        if text not in self.notes:
            self.notes.append(text)
            self.say(event.info, "%s", text)

    def is_complete(self):
        """The run-completion rule (docs/ARCHITECTURE.md)."""
        with self.lock:
            if not self.clients or self.unsettled:
                return False  # (O(1): the scans below only run at the very end)
            if any(self._summary_due(c) for c in self.clients.values()):
                return False  # a failed client is still sending its stop summary
            if self.resumed_at is not None and any(
                    c.restart_pending and self.clock() - self.resumed_at <
                    self.went_away_timeout(c) for c in self.clients.values()):
                return False  # a resumed run waits for its clients to come back
            if self.aborted is None and any(self._may_rejoin(c)
                                            for c in self.clients.values()):
                return False
            if self.expected_clients is not None and self.short_start is None:
                return len(self.clients) >= self.expected_clients
            return self.clock() - self.last_activity >= self.idle_timeout

    def _may_rejoin(self, client):
        """A went-away client that did not say bye, still within --rejoin-grace."""
        if client.state != WENT_AWAY or client.said_bye:
            return False
        grace = self.rejoin_grace_for(client)
        waited = self.clock() - client.terminal_at
        if waited < grace:
            return True
        self._note("waited %g s (--rejoin-grace) for went-away clients to come back "
                   "before completing the run" % grace)
        return False

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

    def snapshot(self):
        with self.lock:
            view = RunView([self.clients[n].snapshot() for n in self.order],
                           dict(self.rejected), self.connections, self.expected_clients,
                           self.restored)
            view.notes = list(self.notes)
            view.paused_s = self.paused_s
            return view

    def link(self, name):
        """(state, sender) of client ``name``, or (None, None): ctl stop."""
        with self.lock:
            c = self.clients.get(name)
            return (None, None) if c is None else (c.state, c.sender)


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
    protocol.BYE: "_apply_bye",
    protocol.PONG: "_apply_pong",
    protocol.READBACK: "_apply_readback",
    protocol.BAD_BLOCK: "_apply_bad_block",
}


class _Mute(logging.Filter):
    """Drops every record (see Registry.restore_all)."""

    def filter(self, record):
        return False
