"""Liveness and completion: when a silent client is went away, how long a
went-away client may still come back, a server pause that counts as nobody's
silence, a client failed by the server's own error, and the rule that
completes the run.

A client's went-away timeout is HEARTBEAT_LIVENESS missed beats of the
heartbeat interval it announced in hello, at most MAX_WENT_AWAY_S
(--heartbeat-timeout overrides it). A went-away client may come back within
--rejoin-grace: until then the run is not complete. Silence is found when it
comes (``deadlines.py``), never by a scan; so is an overrun: a client still
live OVERRUN_GRACE_S after its planned end (from its go) is asked to stop,
and failed when it is still live OVERRUN_GRACE_S later, so a client that
keeps talking cannot hold the run open either. A mixin of ``registry.Registry``
(the public methods take its lock; ``_seen`` and ``_unseen`` are the
ledger's hooks, run under it).
"""
from diskbench import plan
from diskbench.server import log
from diskbench.states import FAILED, FINISHED, LIVE, WENT_AWAY

#: A client is went away after this many heartbeat intervals (its own, from
#: hello) without any message, unless --heartbeat-timeout gives a fixed time.
HEARTBEAT_LIVENESS = 3
#: Least went-away timeout, whatever interval a client announces.
MIN_WENT_AWAY_S = 1.0
#: Most went-away timeout, whatever interval a client announces (it says 1e9
#: s: the run would wait for ever): the server's bound on every wait derived
#: from a client (rejoin grace, a resumed run's wait); --heartbeat-timeout
#: overrides it. master.silence_bound_s adds up the waits.
MAX_WENT_AWAY_S = 300.0
#: Default --rejoin-grace, in went-away timeouts of the client: how long a run
#: waits for a went-away client to come back before it may complete.
REJOIN_GRACE_TIMEOUTS = 2
#: Silence is looked for this often (a went-away verdict may come this much
#: after the timeout); each look only visits the clients whose timeout may
#: have come (deadlines.py), never all of them.
LIVENESS_CHECK_S = 1.0
#: A client that failed (fatal error) but is still connected gets this long to
#: deliver its stop summary before the run may complete without it.
SUMMARY_GRACE_S = 10.0
#: A client still live this long after its planned end (its go's start instant
#: + its planned duration + the go's end spread) is asked to stop (the
#: server's stop, as `ctl stop` sends it); one still live this long after that
#: is failed. Room for what a client does after its writer's run: its
#: children's stop (at most 21 s: the supervisor's stop, SIGTERM and SIGKILL
#: timeouts), the last file's fsync and close, its summary's delivery.
OVERRUN_GRACE_S = 60.0
#: A client that reads its files back (--verify) does so after its run: its
#: planned end allows this many times its planned duration more for it (a disk
#: reads back what it kept at least as fast as it wrote it).
READBACK_ALLOWANCE = 1.0


class Overrun(object):
    """When a client's run should be over (registry clock), and whether the
    server has asked it to stop."""
    __slots__ = ("due", "end", "planned_s", "asked")

    def __init__(self, due, end, planned_s):
        self.due = due                # when to look at it next
        self.end = end                # its planned end: start + planned duration
        self.planned_s = planned_s    # its planned duration (read-back included)
        self.asked = None             # clock() when the server asked it to stop

    def text(self, now):
        """'wrote past its planned 60 s by 30 s'."""
        return "wrote past its planned %g s by %.0f s" % (self.planned_s, now - self.end)


class Liveness(object):
    """Liveness and completion, for ``registry.Registry``."""

    def _seen(self, client):
        """``client`` spoke now: its silence is watched from here (O(1))."""
        client.last_seen = now = self.clock()
        self._silence.watch(client.name, now + self.went_away_timeout(client))

    def _unseen(self, client):
        """Known from records read back: not watched until it speaks."""
        client.last_seen = None
        self._silence.forget(client.name)

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

    # --- overrun: a client live past its planned end ---------------------------
    def _watch_overrun(self, client, start):
        """``client``'s first go set its start (clock()): its run should be
        over by its planned duration (at most --max-duration; with --verify,
        READBACK_ALLOWANCE more) and the end spread later; it is looked at
        OVERRUN_GRACE_S after that. A later go (after a reconnect) moves nothing."""
        if client.name in self._overrun:
            return
        planned = min(client.plan["duration_s"], self.max_duration)
        if client.verify:
            planned *= 1 + READBACK_ALLOWANCE
        end = start + planned
        entry = Overrun(end + self.end_spread_s + OVERRUN_GRACE_S, end, planned)
        self._overrun[client.name] = entry
        self._overrun_due.watch(client.name, entry.due)

    def check_overrun(self):
        """[(name, sender, reason)]: the clients to send a stop to now, as
        still live OVERRUN_GRACE_S after their planned end; a client asked
        OVERRUN_GRACE_S ago and still live is failed. Only the clients whose
        time came are looked at (deadlines.py), never all of them."""
        now = self.clock()
        out = []
        if self._next_overrun is not None and now < self._next_overrun:
            return out
        self._next_overrun = now + LIVENESS_CHECK_S
        with self.lock:
            for name in self._overrun_due.due_now(now):
                client = self.clients.get(name)
                if client is None:
                    continue
                try:
                    self._check_overrun(client, self._overrun[name], now, out)
                except Exception:   # nor one client's plan
                    log.exception("internal error checking whether client %s overran "
                                  "its plan", name)
                    self._internal_error_locked(client, "checking its planned end")
        return out

    def _check_overrun(self, client, entry, now, out):
        if client.state not in LIVE and client.state != WENT_AWAY:
            return                       # finished or failed: nothing to bound
        if now < entry.due:              # moved by a server pause
            self._overrun_due.watch(client.name, entry.due)
            return
        if client.state == WENT_AWAY:    # silent: the silence bound runs; if it
            self._overrun_due.watch(client.name, now + LIVENESS_CHECK_S)  # comes back
            return
        if entry.asked is None:
            entry.asked = now
            entry.due = now + OVERRUN_GRACE_S
            self._overrun_due.watch(client.name, entry.due)
            why = "%s: stopped by the server" % entry.text(now)
            self._note("client %s %s (OVERRUN_GRACE_S %g s after its planned end)"
                       % (client.name, why, OVERRUN_GRACE_S))
            if client.sender is not None:
                out.append((client.name, client.sender, why))
            return
        self._transition(client, FAILED, "%s and did not stop when the server asked "
                         "%.0f s before: failed by the server" % (
                             entry.text(now), now - entry.asked))

    def _apply_stop(self, client, msg, recv_ts):
        """A stop after the server asked for it (an overrun): finished, and
        the reason says it overran."""
        super(Liveness, self)._apply_stop(client, msg, recv_ts)
        entry = self._overrun.get(client.name)
        if entry is not None and entry.asked is not None and client.state == FINISHED \
                and client.stop is msg:
            client.reason = "%s: stopped by the server" % entry.text(self.clock())

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
            for entry in self._overrun.values():   # (early entries: re-armed)
                entry.due += gap
                entry.end += gap
            for attr in ("first_hello", "resumed_at"):
                if getattr(self, attr) is not None:
                    setattr(self, attr, getattr(self, attr) + gap)

    def is_complete(self):
        """The run-completion rule (docs/ARCHITECTURE.md)."""
        with self.lock:
            if not self.clients:
                return self.none_coming   # the launcher said no host's client will come
            if self.unsettled:
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
