"""The rules of the run's clocks and waits, tested so a flipped sign or a
forgotten term cannot pass.

- Clock offsets (client clock minus server clock): metrics.clock_ahead, the
  registry's estimates (timestamps and pongs), the report's use of them (the
  aggregate and first writes on the server's clock) and the client's (go's
  start instant put on its own clock), each with a client ahead AND behind.
- Fleet-sized constants, computed with thousands of clients in one process
  (not run): the end spread a go gives and the shutdown that waits for it,
  the synchronized start's lead, the rejoin grace and the stall rule.
"""
import itertools
import logging
import random

import pytest

from diskbench import metrics, plan, protocol
from diskbench.client import sender as sender_mod
from diskbench.client import supervisor as supervisor_mod
from diskbench.server import master as master_mod
from diskbench.server import go as go_mod
from diskbench import ledger
from diskbench.server import liveness
from diskbench import states as st
from diskbench.report import build as build_mod
from diskbench.report import figures as figures_mod
from tests.test_server_fakes import T0, hello_fields
from tests.test_server_units import Clock, Peer, _registry

#: A client clock this far ahead (+) or behind (-) of the server's: larger than
#: any delay below, so a flipped sign misses by twice it.
SKEW_S = 100.0
#: One-way network delays of a client's messages (s): the smallest is what
#: the estimate from timestamps is off by.
DELAYS_S = (0.040, 0.012, 0.300, 0.025)
#: A fleet, computed in one process (the size README's sizing is measured at).
FLEET = 5000
#: --shutdown-grace of the fleet shutdown: far shorter than the end spread at
#: fleet size, so a wait that forgets the spread loses most summaries.
GRACE_S = 1.0
SEED = 27


# --- clock offsets ------------------------------------------------------------------
@pytest.mark.parametrize("skew", [SKEW_S, -SKEW_S, 0.5, -0.5])
def test_clock_ahead_is_sender_minus_receiver_less_the_fastest_delay(skew):
    """clock_ahead's estimate is (sender clock - our clock) minus the smallest
    delay seen, in every order of arrival: its sign is the sender's (ahead:
    +, behind: -), and a message held back (a resend after an outage) never
    moves it."""
    truth = skew - min(DELAYS_S)
    for order in itertools.permutations(DELAYS_S):
        est = None
        for i, delay in enumerate(order):
            recv = T0 + 10 * i + delay
            est = metrics.clock_ahead(est, T0 + 10 * i + skew, recv)
        assert est == pytest.approx(truth, abs=1e-6)
        # resent 600 s late: sent - received is far lower, the estimate stays
        assert metrics.clock_ahead(est, T0 + skew, T0 + 600.0) == est


def _skewed_hello(r, name, skew, pid):
    """A hello from a client whose clock is ``skew`` s off, sent at T0."""
    p = Peer(r, name, pid=pid)
    m = protocol.make(protocol.HELLO, protocol.C2S, name=name, seq=1, ts=T0 + skew,
                      **hello_fields(pid=pid))
    assert r.hello(m, T0 + max(DELAYS_S), p.conn, "peer", p.sender)[0] == ledger.NEW
    r.recorded(name, 1)
    p.seq = 1
    return p


def _send_at(r, p, server_t, delay, skew, type_, **fields):
    """``p`` sends a message at server time ``server_t`` (its own clock says
    server_t + skew), received ``delay`` later."""
    p.seq += 1
    m = protocol.make(type_, protocol.C2S, name=p.name, seq=p.seq, ts=server_t + skew,
                      **fields)
    assert r.accept(m, server_t + delay, p.conn) == ledger.NEW
    r.recorded(p.name, p.seq)


def _perf_fields(t_start, t_end, nbytes):
    hist = metrics.LatencyHistogram()
    hist.add(0.01)
    return dict(t_start=t_start, t_end=t_end, bytes=nbytes, chunks=1, io_s=0.01,
                lat_min_s=0.01, lat_max_s=0.01, lat_hist=hist.to_wire(),
                sync_mode=protocol.SYNC_FSYNC, file_index=0)


def _skewed_writer(r, name, skew, pid):
    """Client ``name`` (clock ``skew`` off) writes 1 MiB a second over server
    time [T0 + 10, T0 + 20), reporting in its own clock's times."""
    p = _skewed_hello(r, name, skew, pid)
    _send_at(r, p, T0 + 10.0, DELAYS_S[0], skew, protocol.START, writer_pid=pid,
             sync_mode=protocol.SYNC_FSYNC, preallocate=True, block_bytes=512,
             started_at=T0 + 10.0 + skew)
    for i in range(10):
        a, b = T0 + 10.0 + i, T0 + 11.0 + i
        _send_at(r, p, b, DELAYS_S[i % len(DELAYS_S)], skew, protocol.PERF,
                 **_perf_fields(a + skew, b + skew, 1 << 20))
    return p


def test_registry_offset_from_timestamps_has_the_clients_sign_ahead_and_behind():
    """The registry's offset from timestamps is client minus server clock
    (less the fastest delay), for a client ahead and one behind."""
    r, _ = _registry()
    _skewed_writer(r, "ahead", SKEW_S, 1)
    _skewed_writer(r, "behind", -SKEW_S, 2)
    for name, skew in (("ahead", SKEW_S), ("behind", -SKEW_S)):
        value, how = r.clients[name].offset()
        assert how == "timestamps"
        assert value == pytest.approx(skew - min(DELAYS_S), abs=1e-6)


@pytest.mark.parametrize("skew", [2.5, -2.5])
def test_registry_ping_offset_is_client_time_minus_the_round_trips_middle(skew):
    """From pongs: offset = the client's time minus the middle of the round
    trip (the shortest one), with the client's sign, ahead or behind."""
    r, _ = _registry()
    p = Peer(r, "a")
    p.hello()
    for sent, rtt in ((T0 + 10.0, 0.080), (T0 + 20.0, 0.010), (T0 + 30.0, 0.050)):
        m = p.msg(protocol.PONG, nonce=int(sent * protocol.PING_NONCE_PER_S),
                  client_time=sent + rtt / 2 + skew)
        assert r.accept(m, sent + rtt, p.conn) == ledger.NEW
    c = r.clients["a"]
    assert c.offset()[1] == "ping" and c.rtt_s == pytest.approx(0.010, abs=1e-6)
    assert c.ping_offset_s == pytest.approx(skew, abs=1e-6)


def test_report_puts_skewed_clients_on_the_server_clock_ahead_and_behind():
    """Two clients writing the same 10 s of server time, one SKEW_S ahead and
    one behind: the report moves both onto the server's clock (the all-writing
    period is those 10 s, not empty; first writes at the same instant) and
    says each offset with its own sign."""
    r, _ = _registry()
    _skewed_writer(r, "ahead", SKEW_S, 1)
    _skewed_writer(r, "behind", -SKEW_S, 2)
    view = r.snapshot()
    rep = build_mod.build(view, T0, T0 + 30.0)
    agg = rep["aggregate"]
    fast = min(DELAYS_S)
    assert agg["throughput_mib_s"] is not None, agg["period_note"]
    assert agg["period_start_ts"] == pytest.approx(T0 + 10.0 + fast, abs=1e-6)
    assert agg["period_end_ts"] == pytest.approx(T0 + 20.0 + fast, abs=1e-6)
    assert agg["throughput_mib_s"] == pytest.approx(2.0, rel=1e-6)
    entries = dict((e["client"], e) for e in rep["clients"])
    assert entries["ahead"]["clock_offset_s"] == pytest.approx(SKEW_S - fast)
    assert entries["behind"]["clock_offset_s"] == pytest.approx(-SKEW_S - fast)
    firsts = [figures_mod.first_write_ts(c) for c in view.clients]
    assert firsts == [pytest.approx(T0 + 10.0 + fast, abs=1e-6)] * 2


class _Go(object):
    def __init__(self, ts, start_at, clock_offset_s):
        self.ts, self.start_at, self.clock_offset_s = ts, start_at, clock_offset_s


class _GoSender(object):
    def __init__(self, go, wall, mono):
        self.go_msg, self.go_wall, self.go_mono = go, wall, mono


@pytest.mark.parametrize("skew", [0.4, -0.4])
def test_client_puts_the_start_instant_on_its_clock_by_the_servers_offset(skew,
                                                                          monkeypatch):
    """go's start instant (server clock) becomes the client's monotonic time
    by the offset the server measured, with its sign: the client waits the
    server's lead less the go's delay, whether its clock is ahead or behind."""
    sent, lead, delay, mono = T0, 2.0, 0.05, 5000.0
    go = _Go(ts=sent, start_at=sent + lead, clock_offset_s=skew)
    sup = object.__new__(supervisor_mod.Supervisor)
    sup.sender = _GoSender(go, wall=sent + delay + skew, mono=mono)
    sup.log = logging.getLogger("diskbench.tests.rules")
    monkeypatch.setattr(supervisor_mod, "monotonic", lambda: mono)
    assert sup._start_instant() == pytest.approx(mono + lead - delay, abs=1e-6)
    # without a measured offset: by the go's send time (one delay late)
    go.clock_offset_s = None
    assert sup._start_instant() == pytest.approx(mono + lead, abs=1e-6)


# --- the synchronized start at fleet size ---------------------------------------------
def _fleet(r, n, start=False, gos=None):
    """n clients say hello (and start): their Peers; the gos sent at their
    hellos are appended to ``gos``."""
    peers = []
    for i in range(n):
        p = Peer(r, "c%05d" % i, pid=i + 1)
        m = p.msg(protocol.HELLO, **hello_fields(pid=p.pid))
        assert r.hello(m, T0, p.conn, "peer", p.sender)[0] == ledger.NEW
        got = r.recorded(p.name, m.seq)
        if gos is not None:
            gos.extend(got)
        if start:
            p.start()
        peers.append(p)
    return peers


def test_start_lead_grows_with_the_fleet_and_late_hellos_meet_it_to_the_bound():
    """--clients N at fleet size: go's common instant is START_LEAD_S plus
    START_LEAD_PER_CLIENT_S per client ahead (seconds at 5,000), the same for
    all; a late hello START_AHEAD_MIN_S before it still gets it, one just past
    starts at once."""
    wall = Clock()
    r, _ = _registry(expected_clients=FLEET, wall=wall)
    gos = []
    _fleet(r, FLEET, gos=gos)
    gos += r.release_go()
    lead = go_mod.START_LEAD_S + go_mod.START_LEAD_PER_CLIENT_S * FLEET
    assert lead >= go_mod.START_LEAD_S + 1.0     # the fleet's share is not negligible
    assert len(gos) == FLEET
    assert set(g[2]["start_at"] for g in gos) == set([wall.t + lead])
    at = wall.t + lead
    wall.t = at - go_mod.START_AHEAD_MIN_S
    (late,) = _fleet_extra(r, "late")
    assert late[2]["start_at"] == at
    wall.t += 1e-3
    (too_late,) = _fleet_extra(r, "too-late")
    assert "start_at" not in too_late[2]


def _fleet_extra(r, name):
    p = Peer(r, name, pid=len(r.clients) + 1)
    m = p.msg(protocol.HELLO, **hello_fields(pid=p.pid))
    r.hello(m, T0, p.conn, "peer", p.sender)
    return r.recorded(name, m.seq)


# --- the end spread at fleet size -----------------------------------------------------
@pytest.mark.parametrize("n", [1, 10, 999, 1000, 4999, FLEET, 12000])
def test_end_spread_is_per_client_up_to_the_protocols_cap(n, monkeypatch):
    """end_spread_s = min(END_SPREAD_MAX_S, END_SPREAD_PER_CLIENT_S x clients),
    and a go carrying it is valid on the wire (computed for n clients)."""
    r, _ = _registry()
    monkeypatch.setattr(r, "clients", dict(("c%d" % i, None) for i in range(n)))
    want = min(protocol.END_SPREAD_MAX_S, go_mod.END_SPREAD_PER_CLIENT_S * n)
    assert r.end_spread_s == pytest.approx(want)
    protocol.make(protocol.GO, protocol.S2C, run_id="r", end_spread_s=r.end_spread_s,
                  **_plan())


def _plan():
    from diskbench import plan
    return plan.defaults()


@pytest.mark.parametrize("spread", [0.0, 0.3, 1.0, protocol.END_SPREAD_MAX_S])
def test_client_end_offset_is_its_phase_over_the_gos_spread(spread):
    """A client's end offset is its phase over max(report window, the go's
    end spread): never past the spread (or the window), and the whole spread
    is used (a phase near 1 ends near its end)."""
    rng = random.Random(SEED)
    phases = [0.0, 0.5, 0.999999] + [rng.random() for _ in range(50)]
    for perf_s in (0.5, 1.0, 10.0):
        window = min(perf_s, sender_mod.SEND_OFFSET_MAX_S)
        for phase in phases:
            send, end = sender_mod.offsets(phase, perf_s, spread)
            assert send == pytest.approx(phase * window)
            assert end == pytest.approx(phase * max(window, spread))
            assert 0 <= end < max(window, spread)


class _FleetStop(object):
    """The master's wake event in a fake time: each wait advances the clock
    and delivers the stop summaries of the clients whose end offset passed
    (each was told to stop at time 0 and holds its end for its offset)."""

    def __init__(self, clock, peers, offsets):
        self.clock, self.due = clock, sorted(zip(offsets, range(len(peers))))
        self.peers, self.t0, self.delivered = peers, clock.t, 0

    def clear(self):
        pass

    def set(self):
        pass

    def wait(self, timeout):
        self.clock.t += timeout
        while self.delivered < len(self.due) and \
                self.due[self.delivered][0] <= self.clock.t - self.t0:
            self.peers[self.due[self.delivered][1]].stop(reason=protocol.STOP_SERVER)
            self.delivered += 1
        return False


class _Args(object):
    shutdown_grace = GRACE_S


class _NoSignals(object):
    count = 0


def _master_of(r, wall, wake):
    m = object.__new__(master_mod.Master)
    m.registry, m.wall, m.wake, m.args = r, wall, wake, _Args()
    m.signals, m.ends, m.finishing = _NoSignals(), 0, False
    m.interrupted_by = "SIGINT"
    return m


def test_fleet_shutdown_waits_for_the_end_spread_and_loses_no_summary():
    """Interrupted with FLEET clients running, the server waits
    --shutdown-grace plus the end spread the go gave (END_SPREAD_MAX_S at
    this size): every client, holding its end up to that spread (its phase
    over it), gets its stop summary in and finishes; the wait is not longer
    than that; `ctl end` quotes the same wait."""
    wall = Clock()
    r, _ = _registry(wall=wall)
    peers = _fleet(r, FLEET, start=True)
    for p in peers:       # each wrote (one stopped before its first byte is failed)
        p.perf(T0, T0 + 1.0, 1 << 20)
    spread = r.end_spread_s
    assert spread == protocol.END_SPREAD_MAX_S > GRACE_S
    rng = random.Random(SEED)
    offsets = [sender_mod.offsets(rng.random(), 1.0, spread)[1] for _ in peers]
    offsets[-1] = spread - 1e-3                 # one phase at the very end
    wake = _FleetStop(wall, peers, offsets)
    m = _master_of(r, wall, wake)
    said = m.operator_end()
    assert "up to %g s" % (GRACE_S + spread) in said
    t0 = wall.t
    m._interrupted()
    assert wake.delivered == FLEET
    assert set(c.state for c in r.clients.values()) == set([st.FINISHED])
    assert wall.t - t0 <= GRACE_S + spread + master_mod.TICK_S


def test_fleet_shutdown_gives_up_after_the_grace_and_spread():
    """Clients that never send their summary are waited for --shutdown-grace
    plus the end spread, no less (at fleet size, seconds more than the
    grace), then marked unfinished."""
    wall = Clock()
    r, _ = _registry(wall=wall)
    peers = _fleet(r, FLEET, start=True)
    wake = _FleetStop(wall, peers, [float("inf")] * FLEET)
    m = _master_of(r, wall, wake)
    t0 = wall.t
    m._interrupted()
    waited = wall.t - t0
    assert GRACE_S + protocol.END_SPREAD_MAX_S <= waited
    assert waited <= GRACE_S + protocol.END_SPREAD_MAX_S + master_mod.TICK_S
    assert all(c.state == st.RUNNING and "had not finished" in c.reason
               for c in r.clients.values())


# --- rejoin grace and stall -----------------------------------------------------------
@pytest.mark.parametrize("heartbeat_s", [0.1, 1.0, 5.0, 30.0])
def test_rejoin_grace_is_timeouts_of_each_clients_own_heartbeat_to_the_bound(heartbeat_s):
    """A went-away client holds completion for exactly REJOIN_GRACE_TIMEOUTS of
    its own went-away timeout (HEARTBEAT_LIVENESS of the interval it
    announced, at least MIN_WENT_AWAY_S): not complete just before, complete
    at it."""
    r, clock = _registry(heartbeat_timeout=None, idle_timeout=0.0)
    p = Peer(r, "a")
    p.hello(heartbeat_interval_s=heartbeat_s)
    p.start()
    r.connection_closed("a", p.conn, said_bye=False)
    assert p.state() == st.WENT_AWAY
    timeout = max(liveness.MIN_WENT_AWAY_S, liveness.HEARTBEAT_LIVENESS * heartbeat_s)
    assert r.went_away_timeout(r.clients["a"]) == pytest.approx(timeout)
    grace = liveness.REJOIN_GRACE_TIMEOUTS * timeout
    t0 = clock.t
    clock.t = t0 + grace - 1e-3
    assert not r.is_complete()
    clock.t = t0 + grace
    assert r.is_complete()


def test_rejoin_grace_of_a_mixed_fleet_waits_for_the_longest():
    """Went-away clients with different heartbeats: the run waits until the
    last one's own grace has passed (each client's, not one for all)."""
    r, clock = _registry(heartbeat_timeout=None, idle_timeout=0.0)
    graces = []
    for i, hb in enumerate((0.2, 2.0, 7.0)):
        p = Peer(r, "c%d" % i, pid=i + 1)
        p.hello(heartbeat_interval_s=hb)
        p.start()
        r.connection_closed(p.name, p.conn, said_bye=False)
        graces.append(liveness.REJOIN_GRACE_TIMEOUTS *
                      max(liveness.MIN_WENT_AWAY_S, liveness.HEARTBEAT_LIVENESS * hb))
    t0 = clock.t
    clock.t = t0 + max(graces) - 1e-3
    assert not r.is_complete()
    clock.t = t0 + max(graces)
    assert r.is_complete()


def _heartbeat(p, age, alive=True):
    return p.send(protocol.HEARTBEAT, writer_pid=p.pid, writer_alive=alive,
                  bytes_written=0, chunks_written=0, progress_age_s=age)


@pytest.mark.parametrize("age,alive,state", [
    (0.0, True, st.RUNNING),
    (plan.STALL_TIMEOUT_S - 1e-3, True, st.RUNNING),
    (plan.STALL_TIMEOUT_S, True, st.STALLED),
    (10 * plan.STALL_TIMEOUT_S, True, st.STALLED),
    (0.0, False, st.STALLED),
])
def test_stall_rule_at_and_around_the_default_timeout(age, alive, state):
    """A heartbeat makes a running client STALLED exactly when its writer made
    no progress for the stall timeout (the default, at the bound) or is not
    alive; progress again makes it RUNNING; a stop while stalled is FAILED."""
    r, _ = _registry()
    p = Peer(r, "a")
    p.hello()
    p.start()
    _heartbeat(p, age, alive)
    assert p.state() == state
    _heartbeat(p, 0.0)
    assert p.state() == st.RUNNING
    _heartbeat(p, age, alive)
    p.stop()
    assert p.state() == (st.FAILED if state == st.STALLED else st.FINISHED)
