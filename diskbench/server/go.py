"""Plan and go: the run plan each client gets at hello (and why one is
refused: sizes, two rollovers, the server's --max-duration), the hold on go
until --clients N said hello (or --start-timeout passed), the go's common
start instant and end spread, and the abort of a run that cannot start
(--require-all).

A mixin of ``registry.Registry`` (the public methods take its lock, the
``_locked`` and hook ones run under it): one responsibility, apart from the
connections and the ledger it shares state with.
"""
from diskbench import plan, protocol
from diskbench.metrics import count
from diskbench.server import log
from diskbench.states import FAILED, LIVE

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
#: closed), so that is about the load of 5,000 clients' steady reports. All
#: at once, 5,000 clients' ends put a 3.11 server's ack p99 at 238 ms; spread,
#: 41 ms (make bench-server). A 2.7 server fell behind at the end either way.
END_SPREAD_PER_CLIENT_S = 0.001
#: A go sent less than this before the common instant carries no instant:
#: that client starts at once (it could not be ready in time).
START_AHEAD_MIN_S = 0.5


class GoRelease(object):
    """Plan and go, for ``registry.Registry``."""

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
        # the server's cap on every plan (its own flag or the client's; --force
        # does not lift it): what bounds how long a run can last
        problem = plan.duration_problem(values["duration_s"], self.max_duration)
        if problem:
            return "%s cannot run: %s" % (where, problem)
        if set(["duration_s", "file_bytes"]) - own:
            problem = plan.plan_rollover_problem(values, msg.calibration_mib_s)
        if problem is None:
            return None
        if msg.force:
            self._note("%s: %s; the client runs it anyway (--force)" % (where, problem))
            return None
        return "%s on its disk: %s%s" % (where, problem, plan.FORCE_HINT)

    def _apply_hello(self, client, msg, recv_ts):
        if self.expected_clients is not None and not self.go_released and \
                len(self.clients) >= self.expected_clients:
            self._release()
            self.say(log.info, "all %d expected clients said hello: sending go",
                     self.expected_clients)

    def recorded(self, name, seq):
        """The recorder wrote ``seq`` of ``name``. Returns [(name, sender,
        fields)]: its own GO when due, nothing else.

        Cheap: a client not waiting for GO costs no lock. When this hello
        released go to everyone, the others get theirs from the main loop
        (``release_go``): at 5,000 clients that fan-out took the recorder
        thread most of a second, and every ack waited behind it.
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

    def not_coming(self, host, why, client=None):
        """The launcher knows ``host``'s client will not come (its ssh failed,
        its client exited before hello): the run waits for one client fewer,
        so a dead host does not cost --start-timeout. When none is left to
        wait for and none came, the run ends at once (``none_coming``): no
        hello would ever start --start-timeout. ``client``: its client's
        name, when the launcher knows it: a client of that name that said
        hello came (it counts among those present, and its state says how it
        ended), so the count stays: lowering it would send go before another
        host's client came, and the report would say a host that came did
        not. Returns what happened, in words (said in the report)."""
        with self.lock:
            if self.expected_clients is None or self.go_released:
                return "go was already sent: the run waits for no more clients"
            if client is not None and client in self.clients:
                self.say(log.info, "host %s's session ended (%s), but its client %s said "
                         "hello: it came, and the run still waits for %s", host, why,
                         client, count(self.expected_clients, "client"))
                return "its client %s said hello: it came, and the run still waits for " \
                    "%s" % (client, count(self.expected_clients, "client"))
            was = self.expected_clients
            self.expected_clients = max(0, was - 1)
            if self.expected_clients == 0 and not self.clients:
                self.none_coming = True
                self._note("host %s will not come (%s): no client came and no more will "
                           "(the run waited for %s): the run ends with none" % (
                               host, why, count(was, "client")))
                return "no client came and none will: the run ends"
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
        self._watch_overrun(client, client.quiet_until)   # its planned end, once
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
