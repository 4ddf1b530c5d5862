"""The run's ledger: every client's record, built from its accepted messages,
behind one lock.

States and the transitions between them are written down here and only here
(``states.ALLOWED`` and ``Ledger._transition``)::

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

Dedup is by the set of seqs seen (``seqset``), and a seq may not jump further
ahead than a client could have sent (``max_seq_jump``); what an accepted
message does is ``effects.py``'s.

Shared: the server's ``registry.Registry`` is a Ledger with connections,
liveness, the plan and go added (its hooks ``_seen``, ``_unseen``,
``_awaiting``, ``_apply_hello``); the report's re-render replays perf.jsonl
into a plain Ledger (``restore_all``). It imports neither. Times come from
an injected ``clock`` (monotonic seconds); wall-clock times (``recv_ts``) are
passed in with each message.
"""
import logging
import threading

from diskbench import plan, protocol, seqset
from diskbench.clientstate import Client, RunView
from diskbench.compat import acquire_in_turn, monotonic
from diskbench.effects import APPLY, Effects, event, log, verbose
from diskbench.states import ALLOWED, STALLED, TERMINAL, WENT_AWAY

# Outcomes of accepting a message (the registry's hello and accept add theirs).
NEW = "new"               # first time this seq is seen: record it and apply it
DUPLICATE = "duplicate"   # seq already seen: re-ack, do not record or apply
SEQ_JUMP = "seq-jump"     # seq further ahead than the client could have sent: refused


#: A seq may be at most this much ahead of the client's highest one ...
SEQ_JUMP_BASE = 1000
#: ... plus this many per second since its last message (a client sends a
#: few per second; the rest of a gap is what it dropped while cut off).
SEQ_RATE_MAX = 200


class _LockAndSay(object):
    """The ledger's one lock (the registry's). Log lines said under it (``say``) are emitted
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


class Ledger(Effects):
    """Every client of one run by name, from its accepted messages; thread-safe
    (one lock); clock injected."""

    def __init__(self, expected_clients=None, clock=monotonic,
                 stall_timeout=plan.STALL_TIMEOUT_S, plan_given=None):
        self.lock = _LockAndSay()
        self.say = self.lock.say
        self.clock = clock
        # the server's run plan (plan.resolve's ``server``): chunk_bytes a list
        self.plan_given = plan_given or {}
        self.expected_clients = expected_clients
        self.stall_timeout = stall_timeout
        self.paused_s = 0.0           # time the server itself was stopped/starved
        self.notes = []               # sentences for the report (said once each)
        self.unsettled = 0            # clients not in a TERMINAL state (O(1) completion)
        self.clients = {}
        self.order = []               # names in hello order
        self.order_index = {}         # name -> position in order
        self.rejected = {}            # kind -> count
        self.connections = 0
        self.last_activity = clock()  # a connection opened or a client changed state
        self.restored = 0             # records replayed by restore()

    def _plan_for(self, msg):
        """(values, sources) of the plan of the client whose first hello is
        ``msg``: it is the next to arrive (the chunk list's order)."""
        own = dict((k, msg.data.get(k)) for k in protocol.PLAN_FIELDS)
        return plan.resolve(own, msg.fixed, self.plan_given, len(self.order))

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
        apply = getattr(self, APPLY[msg.type])   # total: tests/test_protocol.py
        apply(client, msg, recv_ts)
        return NEW

    def _seen(self, client):
        """``client`` spoke now (the registry watches its silence from here)."""
        client.last_seen = self.clock()

    def _unseen(self, client):
        """``client`` is known from records read back, not from hearing it."""
        client.last_seen = None

    @staticmethod
    def max_seq_jump(client, recv_ts):
        """How far past its highest seq a client's next seq may be: what it
        could have sent (and dropped) since its last message, with slack."""
        since = max(0.0, recv_ts - client.last_ts) if client.last_seq else 0.0
        return SEQ_JUMP_BASE + int(SEQ_RATE_MAX * since)

    # --- replay: records read back from perf.jsonl --------------------------------
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
            # the go it had (and the start instant it carried) is no record
            client.start_at_unknown = True
            self._unseen(client)
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

    def _awaiting(self, client, flag):
        """Whether ``client`` waits for go (the registry keeps who does)."""
        client.awaiting_go = flag

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

    def _note(self, text):
        if text not in self.notes:
            self.notes.append(text)
            self.say(event.info, "%s", text)

    def snapshot(self):
        with self.lock:
            view = RunView([self.clients[n].snapshot() for n in self.order],
                           dict(self.rejected), self.connections, self.expected_clients,
                           self.restored)
            view.notes = list(self.notes)
            view.paused_s = self.paused_s
            return view


class _Mute(logging.Filter):
    """Drops every record (see Ledger.restore_all)."""

    def filter(self, record):
        return False
