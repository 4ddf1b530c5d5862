"""Server units with injected clocks and no sleeps: registry state machine, liveness,
completion rule, GO release, dedup; report arithmetic; recorder ack ordering."""
import collections
import json
import os
import resource
import threading
import time

import pytest

from diskbench import metrics, protocol
from diskbench.server import recorder as rec
from diskbench.server import registry as reg
from diskbench import clientstate
from diskbench import effects
from diskbench.server import go as go_mod
from diskbench import ledger
from diskbench.server import liveness
from diskbench import states as st
from diskbench.server.deadlines import Deadlines
from diskbench.report import build as build_mod
from diskbench.report import figures as figures_mod
from diskbench import report as outputs
from diskbench.report import text as text_mod
from tests.helpers import LogLines, wait_until
from tests.test_server_fakes import T0, hello_fields, latency_sets


class Clock(object):
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


class Peer(object):
    """Plays one client against a Registry directly (no sockets)."""

    def __init__(self, registry, name, conn=None, pid=4242):
        self.registry, self.name, self.pid = registry, name, pid
        self.conn = conn if conn is not None else registry.connection_opened()
        self.seq = 0
        self.sent = []

    def sender(self, msg):
        self.sent.append(msg)

    def msg(self, type_, **fields):
        self.seq += 1
        return protocol.make(type_, protocol.C2S, name=self.name, seq=self.seq,
                             ts=T0, **fields)

    def hello(self, **fields):
        m = self.msg(protocol.HELLO, **hello_fields(pid=self.pid, **fields))
        outcome = self.registry.hello(m, T0, self.conn, "127.0.0.1:1", self.sender)
        if outcome[0] == ledger.NEW:
            self.registry.recorded(self.name, m.seq)
        return outcome

    def send(self, type_, **fields):
        return self.send_msg(self.msg(type_, **fields))

    def send_msg(self, m):
        outcome = self.registry.accept(m, T0, self.conn)
        if outcome == ledger.NEW:
            self.registry.recorded(self.name, m.seq)
        return outcome

    def start(self):
        return self.send(protocol.START, writer_pid=self.pid, sync_mode=protocol.SYNC_FSYNC,
                         preallocate=True, block_bytes=512)

    def perf(self, t_start, t_end, nbytes, lats=(0.001,)):
        hist = metrics.LatencyHistogram()
        for v in lats:
            hist.add(v)
        return self.send(protocol.PERF, t_start=t_start, t_end=t_end, bytes=nbytes,
                         chunks=len(lats), io_s=sum(lats), lat_min_s=min(lats),
                         lat_max_s=max(lats), lat_hist=hist.to_wire(),
                         sync_mode=protocol.SYNC_FSYNC, file_index=0)

    def stop(self, reason=protocol.STOP_DURATION):
        return self.send(protocol.STOP, reason=reason, bytes_written=0, chunks_written=0,
                         rollovers=0, elapsed_s=1.0, io_s=1.0, dropped_messages=3)

    def state(self):
        return self.registry.clients[self.name].state


def _registry(**kw):
    clock = Clock()
    kw.setdefault("heartbeat_timeout", 10.0)
    kw.setdefault("idle_timeout", 5.0)
    return reg.Registry(clock=clock, **kw), clock


# --- state machine ---------------------------------------------------------------------
def test_registry_hello_start_stop_duration_reaches_finished():
    r, _ = _registry()
    p = Peer(r, "a")
    assert p.hello() == (ledger.NEW, None)
    assert p.state() == st.JOINED
    p.start()
    assert p.state() == st.RUNNING
    p.stop()
    assert p.state() == st.FINISHED
    assert r.all_finished()


def test_registry_fatal_error_then_stop_error_is_failed_with_reason():
    r, _ = _registry()
    p = Peer(r, "a")
    p.hello()
    p.start()
    p.send(protocol.ERROR, source="writer", reason="No space left on device", errno=28,
           fatal=True)
    assert p.state() == st.FAILED
    p.stop(protocol.STOP_ERROR)
    client = r.clients["a"]
    assert client.state == st.FAILED and "No space left" in client.reason
    assert client.stop is not None  # the summary is still kept


def test_registry_stop_by_client_signal_is_failed_and_by_server_is_finished():
    r, _ = _registry()
    a, b, c = Peer(r, "a"), Peer(r, "b", pid=1), Peer(r, "c", pid=2)
    for p in (a, b, c):
        p.hello()
        p.start()
    b.perf(T0, T0 + 1.0, 1 << 20)
    a.stop(protocol.STOP_SIGNAL)
    b.stop(protocol.STOP_SERVER)
    c.stop(protocol.STOP_SERVER)     # before it wrote a byte: nothing was measured
    assert (a.state(), b.state(), c.state()) == (st.FAILED, st.FINISHED, st.FAILED)
    assert r.clients["c"].reason.endswith(effects.STOPPED_UNWRITTEN)


def test_registry_terminal_state_never_changes():
    r, _ = _registry()
    p = Peer(r, "a")
    p.hello()
    p.start()
    p.stop()
    p.send(protocol.ERROR, source="x", reason="late", errno=None, fatal=True)
    r.connection_closed("a", p.conn, said_bye=False)
    assert p.state() == st.FINISHED


def test_registry_connection_closed_without_stop_is_went_away():
    r, _ = _registry()
    p = Peer(r, "a")
    p.hello()
    p.start()
    r.connection_closed("a", p.conn, said_bye=False)
    assert p.state() == st.WENT_AWAY
    assert "without stop" in r.clients["a"].reason


def test_registry_close_of_an_old_connection_does_not_affect_the_new_one():
    r, _ = _registry()
    p = Peer(r, "a")
    p.hello()
    old = p.conn
    p.conn = r.connection_opened()
    p.hello()                       # reconnect on a new connection
    r.connection_closed("a", old, said_bye=False)
    assert p.state() == st.JOINED
    assert r.clients["a"].reconnects == 1


def test_registry_went_away_client_speaking_again_goes_back_to_running():
    r, clock = _registry()
    p = Peer(r, "a")
    p.hello()
    p.start()
    clock.t += 11
    assert r.check_liveness() == ["a"]
    assert p.state() == st.WENT_AWAY
    p.perf(T0, T0 + 1, 1 << 20)
    client = r.clients["a"]
    assert client.state == st.RUNNING and client.reconnects == 1
    assert client.went_away_count == 1


def test_registry_liveness_marks_only_clients_silent_past_the_timeout():
    r, clock = _registry(heartbeat_timeout=10.0)
    a, b = Peer(r, "a"), Peer(r, "b", pid=1)
    for p in (a, b):
        p.hello()
        p.start()
    clock.t += 9
    b.send(protocol.NOTE, text="alive")
    assert r.check_liveness() == []
    clock.t += 1.5              # a: 10.5 s silent; b: 1.5 s
    assert r.check_liveness() == ["a"]
    assert (a.state(), b.state()) == (st.WENT_AWAY, st.RUNNING)
    assert "silent for 10.5 s" in r.clients["a"].reason


def test_registry_went_away_timeout_is_counted_in_each_clients_own_heartbeats():
    """Without --heartbeat-timeout a client is went away after HEARTBEAT_LIVENESS
    of the heartbeat intervals it announced; the flag overrides it for all."""
    r, clock = _registry(heartbeat_timeout=None)
    fast, slow = Peer(r, "fast"), Peer(r, "slow", pid=1)
    fast.hello(heartbeat_interval_s=1.0)
    slow.hello(heartbeat_interval_s=4.0)
    for p in (fast, slow):
        p.start()
    clock.t += liveness.HEARTBEAT_LIVENESS * 1.0 + 0.5
    assert r.check_liveness() == ["fast"]
    clock.t += liveness.HEARTBEAT_LIVENESS * 3.0
    assert r.check_liveness() == ["slow"]
    fixed, clock = _registry(heartbeat_timeout=20.0)
    for name, interval in (("fast", 1.0), ("slow", 4.0)):
        p = Peer(fixed, name, pid=int(interval))
        p.hello(heartbeat_interval_s=interval)
        p.start()
    clock.t += 19.0
    assert fixed.check_liveness() == []
    clock.t += 1.5
    assert sorted(fixed.check_liveness()) == ["fast", "slow"]


def test_deadlines_come_once_in_order_and_follow_moves():
    d = Deadlines()
    d.watch("a", 5.0)
    d.watch("b", 3.0)
    d.watch("a", 9.0)                  # later: no new entry, a still comes at 5
    assert d.due_now(2.9) == []
    assert d.due_now(5.0) == ["b", "a"]
    assert d.due_now(100.0) == [] and len(d) == 0
    d.watch("c", 8.0)
    d.watch("c", 4.0)                  # sooner: the sooner one counts, once
    assert d.due_now(4.0) == ["c"] and d.due_now(8.0) == []
    d.watch("e", 1.0)
    d.forget("e")
    assert d.due_now(2.0) == []


def test_registry_liveness_looks_only_at_clients_whose_timeout_came():
    """No scan of every client per check (issue 13): clients that keep talking
    are looked at about once per timeout, and talking adds no heap entries."""
    r, clock = _registry(heartbeat_timeout=10.0)
    peers = [Peer(r, "c%d" % i, pid=i + 1) for i in range(50)]
    for p in peers:
        p.hello()
        p.start()
    looked = []
    timeout = r.went_away_timeout
    for _ in range(20):
        clock.t += 1.0
        for p in peers:
            p.send(protocol.NOTE, text="alive")
        r.went_away_timeout = lambda client: looked.append(client.name) or timeout(client)
        assert r.check_liveness() == []
        del r.went_away_timeout
    assert len(looked) <= 3 * len(peers)       # a scan: 20 x 50
    assert len(r._silence._heap) <= 2 * len(peers)
    clock.t += 10.5                            # now every one of them is silent
    assert sorted(r.check_liveness()) == sorted(p.name for p in peers)


def test_registry_client_waiting_for_go_is_exempt_from_liveness():
    r, clock = _registry(expected_clients=2, heartbeat_timeout=1.0, start_timeout=60.0)
    p = Peer(r, "a")
    p.hello()
    clock.t += 30
    assert r.check_liveness() == []
    assert p.state() == st.JOINED


def test_registry_silence_counts_from_the_start_instant_after_a_long_wait_for_go():
    """A client that waited for go longer than its went-away timeout is not went
    away when go comes: its heartbeats start with its writer at the start
    instant, so its silence counts from there (it once failed at the go)."""
    r, clock = _registry(expected_clients=2, heartbeat_timeout=1.0, start_timeout=60.0,
                         wall=clock_wall)
    a = Peer(r, "a")
    a.hello()
    clock.t += 30                    # a waits, exempt, with only its hello on record
    b = Peer(r, "b", pid=2)
    b.hello()                        # releases go; b gets its own at its ack
    assert r.check_liveness() == []  # a's go is released, not yet sent: still exempt
    assert [n for n, _, _ in r.release_go()] == ["a"]
    assert r.check_liveness() == []  # go sent: a is not went away at once
    lead = r.start_at - clock_wall()
    assert lead > 0
    clock.t += lead + 0.9            # still within 1 s of the start instant
    assert r.check_liveness() == []
    clock.t += 0.2 + liveness.LIVENESS_CHECK_S   # 1 s past the start instant, no beat
    assert sorted(r.check_liveness()) == ["a", "b"]


def clock_wall():
    return 1.7e9


def test_registry_duplicate_seq_is_not_applied_twice():
    r, _ = _registry()
    p = Peer(r, "a")
    p.hello()
    m = p.msg(protocol.ROLLOVER, file_index=0, file_bytes=1 << 20, close_s=0.1)
    assert p.send_msg(m) == ledger.NEW
    assert p.send_msg(m) == ledger.DUPLICATE
    older = protocol.make(protocol.NOTE, protocol.C2S, name="a", seq=1, text="replay")
    assert p.send_msg(older) == ledger.DUPLICATE
    client = r.clients["a"]
    assert client.close_times == [0.1] and client.duplicates == 2
    assert r.clients["a"].recorded_seq == m.seq


def test_registry_same_name_from_another_process_is_rejected():
    r, _ = _registry()
    Peer(r, "a", pid=1).hello()
    outcome, why = Peer(r, "a", pid=2).hello()
    assert outcome == reg.REJECT and "already used" in why
    assert r.rejected == {reg.REJECT_NAME_IN_USE: 1}


def test_registry_message_on_unbound_connection_is_not_bound():
    r, _ = _registry()
    p = Peer(r, "a")
    p.hello()
    stranger = protocol.make(protocol.NOTE, protocol.C2S, name="a", seq=9, text="x")
    assert r.accept(stranger, T0, r.connection_opened()) == reg.NOT_BOUND


# --- GO --------------------------------------------------------------------------------
def test_registry_go_at_once_without_expected_clients():
    r, _ = _registry()
    p = Peer(r, "a")
    p.hello()
    assert r.clients["a"].awaiting_go is False   # its GO went out at the ack
    r2, _ = _registry()
    q = Peer(r2, "b")
    m = q.msg(protocol.HELLO, **hello_fields())
    r2.hello(m, T0, q.conn, "peer", q.sender)
    go = r2.recorded("b", m.seq)
    assert [n for n, _, _ in go] == ["b"]


def test_registry_go_held_until_n_hellos():
    r, _ = _registry(expected_clients=3)
    peers = [Peer(r, n, pid=i + 1) for i, n in enumerate("abc")]
    gos = []
    for p in peers:
        m = p.msg(protocol.HELLO, **hello_fields(pid=p.pid))
        r.hello(m, T0, p.conn, "peer", p.sender)
        gos.append([n for n, _, _ in r.recorded(p.name, m.seq)])
    # the hello that released go gets its own at its ack; the others get
    # theirs from the main loop's release_go, not from the recorder thread
    assert gos == [[], [], ["c"]]
    assert [n for n, _, _ in r.release_go()] == ["a", "b"]
    assert r.release_go() == []


def test_registry_start_timeout_releases_go_to_those_present():
    r, clock = _registry(expected_clients=3, start_timeout=60.0)
    a = Peer(r, "a")
    a.hello()
    clock.t += 59
    assert r.release_go() == []
    clock.t += 1
    assert [n for n, _, _ in r.release_go()] == ["a"]
    assert r.release_go() == []     # only once
    b = Peer(r, "b", pid=2)
    m = b.msg(protocol.HELLO, **hello_fields(pid=2))
    r.hello(m, T0, b.conn, "peer", b.sender)
    assert [n for n, _, _ in r.recorded("b", m.seq)] == ["b"]  # late: at once


# --- completion ------------------------------------------------------------------------
def test_completion_with_expected_clients_needs_n_hellos_and_all_terminal():
    r, clock = _registry(expected_clients=2)
    assert not r.is_complete()
    a = Peer(r, "a")
    a.hello()
    a.start()
    a.stop()
    assert not r.is_complete()       # only 1 of 2 came
    b = Peer(r, "b", pid=2)
    b.hello()
    assert not r.is_complete()       # b still joined
    r.connection_closed("b", b.conn, said_bye=False)
    grace = r.rejoin_grace_for(r.clients["b"])
    assert grace == liveness.REJOIN_GRACE_TIMEOUTS * 10.0
    clock.t += grace - 0.1
    assert not r.is_complete()       # b went away, but may still come back
    clock.t += 0.2
    assert r.is_complete()
    assert not r.all_finished()
    assert any("--rejoin-grace" in n for n in r.notes)


def test_completion_without_expected_clients_waits_idle_timeout():
    r, clock = _registry(idle_timeout=5.0)
    clock.t += 100
    assert not r.is_complete()       # nobody came yet, however long
    a = Peer(r, "a")
    a.hello()
    a.start()
    clock.t += 50
    a.stop()                         # terminal at t
    assert not r.is_complete()
    clock.t += 4.9
    assert not r.is_complete()
    r.connection_opened()            # somebody new connects: the idle clock restarts
    clock.t += 4.9
    assert not r.is_complete()
    clock.t += 0.2
    assert r.is_complete() and r.all_finished()


def test_completion_waits_for_the_stop_summary_of_a_failed_connected_client():
    r, clock = _registry(expected_clients=1)
    p = Peer(r, "a")
    p.hello()
    p.start()
    p.send(protocol.ERROR, source="writer", reason="ENOSPC", errno=28, fatal=True)
    assert p.state() == st.FAILED
    assert not r.is_complete()          # its stop summary is on the way
    p.stop(protocol.STOP_ERROR)
    assert r.is_complete()
    assert r.clients["a"].stop.dropped_messages == 3


def test_completion_gives_up_on_a_missing_summary_after_the_grace():
    r, clock = _registry(expected_clients=2, rejoin_grace=1.0)
    a, b = Peer(r, "a"), Peer(r, "b")
    for p in (a, b):
        p.hello()
        p.start()
    a.send(protocol.ERROR, source="writer", reason="EIO", errno=5, fatal=True)
    r.connection_closed("b", b.conn, said_bye=False)   # b: gone, nothing to wait for
    clock.t += liveness.SUMMARY_GRACE_S - 0.1
    assert not r.is_complete()
    clock.t += 0.2
    assert r.is_complete()


def test_completion_without_expected_clients_blocked_by_a_live_client():
    r, clock = _registry(idle_timeout=1.0)
    a, b = Peer(r, "a"), Peer(r, "b", pid=2)
    for p in (a, b):
        p.hello()
        p.start()
    a.stop()
    clock.t += 5
    assert not r.is_complete()


# --- report arithmetic -------------------------------------------------------------------
def test_report_percentiles_from_merged_histograms_match_local_merge_and_exact():
    r, _ = _registry()
    p = Peer(r, "a")
    p.hello()
    p.start()
    sets = latency_sets(7, 5, 40)
    for i, lats in enumerate(sets):
        p.perf(T0 + i, T0 + i + 1, len(lats) << 20, lats)
    p.stop()
    entry = build_mod.build(r.snapshot(), 0.0, 10.0)["clients"][0]
    every = [v for lats in sets for v in lats]
    local = metrics.LatencyHistogram()
    for v in every:
        local.add(v)
    for pct in (50, 95, 99):
        got = entry["latency_ms"]["p%d" % pct]
        assert abs(got - local.percentile(pct) * 1000) < 1e-9
        exact = metrics.percentile(every, pct) * 1000
        assert abs(got - exact) / exact < 0.025
    assert abs(entry["latency_ms"]["max"] - max(every) * 1000) < 1e-9
    assert abs(entry["latency_ms"]["mean"] - sum(every) / len(every) * 1000) < 1e-9
    assert entry["latency_ms"]["sample_count"] == 200


def test_report_throughput_mean_is_bytes_over_interval_time_not_mean_of_rates():
    r, _ = _registry()
    p = Peer(r, "a")
    p.hello()
    p.start()
    p.perf(T0, T0 + 1, 100 << 20)         # 100 MiB/s for 1 s
    p.perf(T0 + 1, T0 + 4, 60 << 20)      # 20 MiB/s for 3 s
    p.send(protocol.STATS, writer_pid=1, cpu_percent=95.0, rss_bytes=10 << 20,
           source="proc", interval_s=1.0)
    p.send(protocol.STATS, writer_pid=1, cpu_percent=97.0, rss_bytes=20 << 20,
           source="proc", interval_s=1.0)
    p.stop()
    e = build_mod.build(r.snapshot(), 0.0, 10.0)["clients"][0]
    assert e["throughput_mib_s"]["mean"] == 40.0           # 160 MiB / 4 s
    assert e["throughput_mib_s"]["min"] == 20.0
    assert e["throughput_mib_s"]["max"] == 100.0
    assert e["throughput_mib_s"]["p50"] == 20.0            # nearest rank of 2 values
    assert e["written_mib"] == 160.0 and e["perf_interval_count"] == 2
    # over time: every interval from the first start, and 10 slices of 0.4 s
    assert list(e["throughput_timeline"]) == [dict(t_s=0.0, length_s=1.0, mib_s=100.0),
                                           dict(t_s=1.0, length_s=3.0, mib_s=20.0)]
    tenths = e["throughput_tenths_mib_s"]
    assert len(tenths) == 10
    assert tenths[:2] == pytest.approx([100.0, 100.0], rel=1e-5)
    assert tenths[3:] == pytest.approx([20.0] * 7, rel=1e-5)
    assert tenths[2] == pytest.approx((0.2 * 100 + 0.2 * 20) / 0.4, rel=1e-5)  # straddles 1 s
    assert sum(t * 0.4 for t in tenths) == pytest.approx(160.0, rel=1e-5)
    assert e["writer_cpu_percent"]["mean"] == 96.0 and e["cpu_bound"] is True
    assert e["writer_rss_mib"] == dict(mean=15.0, max=20.0)
    assert e["dropped_message_count"] == 3


def test_report_aggregate_sums_only_the_all_writing_period_with_pro_rating():
    # a writes [0, 10) at 10 MiB/s; b writes [4, 20) at 5 MiB/s (2-s intervals,
    # the one straddling 10 is pro-rated); all writing = [4, 10], 6 s.
    a = [(T0 + i, T0 + i + 1, 10 << 20) for i in range(10)]
    b = [(T0 + 4 + 2 * i, T0 + 6 + 2 * i, 10 << 20) for i in range(8)]
    b[2] = (T0 + 8.5, T0 + 10.5, 10 << 20)   # straddles the end: 1.5 of 2 s inside
    b[1] = (T0 + 6, T0 + 8.5, 10 << 20)      # 2.5 s inside
    agg = figures_mod.aggregate(dict(a=a, b=b))
    assert agg["period_start_ts"] == T0 + 4 and agg["period_end_ts"] == T0 + 10
    assert agg["period_s"] == 6.0
    a_bytes = 6 * (10 << 20)
    b_bytes = (10 << 20) + (10 << 20) + (10 << 20) * 1.5 / 2
    assert abs(agg["per_client_mib_s"]["a"] - metrics.mib(a_bytes) / 6) < 1e-9
    assert abs(agg["per_client_mib_s"]["b"] - metrics.mib(b_bytes) / 6) < 1e-9
    assert abs(agg["throughput_mib_s"] - metrics.mib(a_bytes + b_bytes) / 6) < 1e-9
    assert agg["first_done"] == dict(client="a", at_ts=T0 + 10)
    assert agg["last_done"]["client"] == "b" and agg["done_spread_s"] == 10.0
    # ranking is by chunk size (figures_mod.by_chunk_size), never across the aggregate
    assert figures_mod.rank(dict(a=20.0, b=5.0, c=None)) == ("b", "a", 0.25)
    assert "when b started" in agg["period_note"] and "when a ended" in agg["period_note"]


def test_report_aggregate_without_overlap_says_so_and_gives_no_number():
    agg = figures_mod.aggregate(dict(a=[(T0, T0 + 1, 1 << 20)], b=[(T0 + 5, T0 + 6, 1 << 20)]))
    assert agg["throughput_mib_s"] is None and "never all wrote" in agg["period_note"]
    assert agg["first_done"]["client"] == "a"


def test_report_aggregate_ignores_clients_that_never_wrote():
    agg = figures_mod.aggregate(dict(a=[(T0, T0 + 2, 2 << 20)], idle=[]))
    assert agg["client_count"] == 1 and agg["throughput_mib_s"] == 1.0


def test_report_totals_and_text_and_atomic_files(tmpdir):
    r, clock = _registry()
    peers = [Peer(r, n, pid=i + 1) for i, n in enumerate(("a", "b", "c"))]
    for i, p in enumerate(peers):
        p.hello()
        p.start()
        p.perf(T0, T0 + 2, (i + 1) << 20, (0.001, 0.002))
        p.send(protocol.ROLLOVER, file_index=0, file_bytes=1 << 20, close_s=0.004)
    peers[0].stop()
    peers[1].send(protocol.ERROR, source="writer", reason="EIO", errno=5, fatal=True)
    r.connection_closed("c", peers[2].conn, said_bye=False)
    r.count_rejected(protocol.ProtocolError.NOT_JSON)
    rep = build_mod.build(r.snapshot(), 100.0, 160.0, run_label="t", exit_code=5,
                       exit_meaning="incomplete")
    t = rep["totals"]
    assert (t["client_count"], t["finished_count"], t["failed_count"], t["went_away_count"]) == (3, 1, 1, 1)
    assert t["written_mib"] == 6.0 and t["rollover_count"] == 3 and t["chunk_count"] == 6
    assert rep["run"]["run_duration_s"] == 60.0
    assert rep["rejected_messages"] == {"not-json": 1} and rep["rejected_count"] == 1
    paths, failed = outputs.write(str(tmpdir), rep)
    assert failed == []
    assert sorted(os.listdir(str(tmpdir))) == ["report.json", "report.txt"]
    with open(paths[0]) as f:
        assert json.load(f)["totals"]["finished_count"] == 1
    with open(paths[1]) as f:
        text = f.read()
    for needle in ("throughput MiB/s", "chunk latency ms", "RSS MiB", "FAILED",
                   "WENT AWAY", "aggregate throughput MiB/s", "MiB = 2^20 bytes",
                   "rejected messages: 1", "sync fsync", "preallocate yes"):
        assert needle in text, needle


def test_report_percentiles_are_stated_once_in_report_pcts(monkeypatch):
    """Changing figures_mod.PCTS changes report.json and report.txt alike (no crash,
    no leftover p99 anywhere)."""
    monkeypatch.setattr(figures_mod, "PCTS", (10, 90))
    r, _ = _registry()
    peers = [Peer(r, n, pid=i + 1) for i, n in enumerate(("a", "b"))]
    for p in peers:
        p.hello()
        p.start()
        p.perf(T0, T0 + 2, 1 << 20, (0.001, 0.002, 0.003))
    peers[0].stop()
    rep = build_mod.build(r.snapshot(), T0, T0 + 10, run_label="t")
    for e in rep["clients"]:
        assert set(e["latency_ms"]) == set(["min", "mean", "p10", "p90", "max",
                                            "sample_count"])
        assert set(e["throughput_mib_s"]) == set(["mean", "in_write_calls", "min", "p10",
                                                  "p90", "max"])
    assert "p10" in rep["totals"]["latency_ms"] and "p99" not in rep["totals"]["latency_ms"]
    text = text_mod.render_text(rep)
    assert "p10 ms" in text and "p90 ms" in text and "p99" not in text and "p50" not in text
    assert "chunk latency ms: p10 1.00 p90 3.00 max" in text.replace("1.01", "1.00")
    json.loads(build_mod.render_json(rep))


def test_report_with_no_clients_is_still_written(tmpdir):
    r, _ = _registry()
    rep = build_mod.build(r.snapshot(), 1.0, 2.0, interrupted_by="SIGTERM")
    paths, failed = outputs.write(str(tmpdir), rep)
    assert failed == []
    assert sorted(os.path.basename(p) for p in paths) == ["report.json", "report.txt"]
    with open(os.path.join(str(tmpdir), "report.json")) as f:
        on_disk = json.load(f)
    assert on_disk["totals"]["client_count"] == 0 and on_disk["clients"] == []
    assert "no client reported" in on_disk["aggregate"]["period_note"]
    with open(os.path.join(str(tmpdir), "report.txt")) as f:
        assert "no client reported" in f.read()


# --- recorder --------------------------------------------------------------------------
def _line_count(path):
    with open(path) as f:
        return sum(1 for _ in f)


def test_recorder_callback_runs_after_record_is_in_file(tmpdir):
    r = rec.Recorder(str(tmpdir))
    r.open()
    r.start()
    path = os.path.join(str(tmpdir), rec.PERF_LOG)
    seen = []
    for i in range(50):
        r.record({"i": i}, on_written=lambda i=i: seen.append((i, _line_count(path))))
    r.log_line("hello log")
    r.close()
    assert seen and all(on_disk >= i + 1 for i, on_disk in seen)
    assert _line_count(path) == 50
    with open(os.path.join(str(tmpdir), rec.SERVER_LOG)) as f:
        assert f.read() == "hello log\n"


def test_recorder_coalesces_callbacks_with_the_same_key_per_batch(tmpdir):
    r = rec.Recorder(str(tmpdir))
    r.open()                         # not started: close() writes one batch
    calls = []
    for i in range(5):
        r.record({"i": i}, on_written=lambda i=i: calls.append(("k", i)), key="k")
    r.record({"x": 1}, on_written=lambda: calls.append(("other", 0)), key="o")
    r.close()
    assert calls == [("k", 4), ("other", 0)]


def test_recorder_stuck_in_a_write_is_said_falling_behind_while_it_lasts(tmpdir):
    """A write that does not return (a stalled log disk) holds up every ack:
    the main loop's look (check_lag, each tick) says the server is falling
    behind while the write lasts, once, and the report keeps the wait; once
    the write returns, the ack follows and nothing more is said."""
    r = rec.Recorder(str(tmpdir))
    r.open()
    stalled, entered = threading.Event(), threading.Event()

    def stalling_write(fd, data):
        entered.set()
        stalled.wait()
        return os.write(fd, data)
    r.write_fd = stalling_write
    acked = threading.Event()
    with LogLines("diskbench.server.event") as said:
        r.start()
        r.record({"i": 1}, on_written=acked.set)
        try:
            assert entered.wait(10), "the recorder never wrote"
            r.check_lag()                         # just queued: not behind
            assert r.behind_since is None
            wait_until(lambda: r.check_lag() or r.behind_since is not None,
                       timeout=rec.FALL_BEHIND_S + 10, what="the lag to be said")
            assert not acked.is_set()             # still in the write: said live
            assert len(said.lines) == 1 and "records have waited" in said.lines[0], \
                said.lines
        finally:
            stalled.set()
        assert acked.wait(10)
        r.check_lag()
        r.close()
    assert [line for line in said.lines if "falling behind" in line] == said.lines[:1]
    assert r.worst_wait_s > rec.FALL_BEHIND_S and "fell behind" in r.falling_behind()


def _enospc(fd, data):
    raise OSError(28, "No space left on device")


class _Sink(object):
    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s

    def flush(self):
        pass


#: Producers left waiting for room in the back-pressure test, and how long.
FULL_WAITERS, FULL_WATCH_S = 300, 1.0


def test_recorder_producers_waiting_for_room_sleep_and_all_get_in():
    """A full queue makes its producers wait without polling (a timed wait
    polls on 2.7: thousands of them starved the consumer for good), and the
    consumer's takes let every one of them in."""
    q = rec._Fifo(1)
    q.put((rec._RAW, b"first\n", None, 1.0), wait=True)       # full from now on
    threads = [threading.Thread(target=q.put_many, args=(
        [(rec._RAW, b"%d\n" % i, None, 1.0)],)) for i in range(FULL_WAITERS)]
    for t in threads:
        t.daemon = True
        t.start()
    wait_until(lambda: q.full_waits == FULL_WAITERS, what="every producer waiting")
    switches = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw   # every thread's
    time.sleep(FULL_WATCH_S)              # the time being watched, not a wait for an event
    woke = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - switches
    # polling: each waiter sleeps and wakes 20+ times a second; blocked: never
    assert woke < FULL_WAITERS, "%d wake-ups of %d waiting threads in %g s" % (
        woke, FULL_WAITERS, FULL_WATCH_S)
    # room for one record lets one producer in, and wakes no crowd
    switches = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
    assert len(q.take(1)) == 1
    wait_until(lambda: len(q) == 1 and q.room_waiters == FULL_WAITERS - 1,
               what="one producer let in")
    time.sleep(FULL_WATCH_S / 4)          # watched: would the others wake?
    woke = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - switches
    assert woke < FULL_WAITERS / 2, "%d wake-ups to let one producer in" % woke
    taken = 1
    while taken < FULL_WAITERS + 1:
        taken += len(q.take(1000))
    for t in threads:
        t.join(5)
    assert not any(t.is_alive() for t in threads) and not len(q)


def test_recorder_queue_put_with_room_takes_no_lock():
    """A handler's put, with room and the consumer busy, never waits for the
    queue's lock (on 2.7 every acquire gives the GIL away: one more turn at
    the back of the crowd per message)."""
    q = rec._Fifo(10)
    done = []
    with q.ready:                          # someone holds the lock throughout
        t = threading.Thread(target=lambda: done.append(q.put_many(
            [(rec._RAW, b"a\n", None, 1.0)]) or q.put((rec._LOG, "x", None, None))))
        t.daemon = True
        t.start()
        t.join(5)
        assert done and len(q) == 2, "a put with room waited for the lock"
    assert [item[1] for item in q.take(10)] == [b"a\n", "x"]


class _AppendsDuringTheLook(collections.deque):
    """The consumer's look at an empty queue, with a producer's whole put
    landing right after it (before the consumer says it is idle)."""

    def __init__(self, put):
        collections.deque.__init__(self)
        self.put = put

    def __len__(self):
        n = collections.deque.__len__(self)
        if self.put is not None:
            put, self.put = self.put, None
            put()
        return n


def test_recorder_queue_consumer_never_sleeps_on_an_item_put_as_it_looked():
    q = rec._Fifo(10)
    q.items = _AppendsDuringTheLook(lambda: q.put((rec._LOG, "late", None, None)))
    got = []
    t = threading.Thread(target=lambda: got.extend(q.take(10)))
    t.daemon = True
    t.start()
    t.join(5)
    assert [item[1] for item in got] == ["late"], "the consumer slept on a queued item"


def test_recorder_queue_wakes_the_consumer_waiting_for_items():
    q = rec._Fifo(10)
    got = []
    t = threading.Thread(target=lambda: got.extend(q.take(10)))
    t.daemon = True
    t.start()
    wait_until(lambda: q.idle, what="the consumer waiting")
    q.put_many([(rec._RAW, b"a\n", None, 1.0)])
    t.join(5)
    assert [item[1] for item in got] == [b"a\n"], "the waiting consumer was not woken"


def test_recorder_write_failure_says_it_at_once_and_acks_nothing(tmpdir):
    """An ack means on disk: when every write fails, no callback runs, stderr
    says so at once (once), and the report counts the records never written."""
    sink = _Sink()
    r = rec.Recorder(str(tmpdir), stderr=sink)
    r.open()
    r.write_fd = _enospc
    r.start()
    acked = []
    for i in range(3):
        r.record({"i": i}, on_written=lambda i=i: acked.append(i))
    wait_until(lambda: "cannot write perf.jsonl" in sink.text, what="the failure said")
    assert acked == []
    r.close()
    assert acked == []
    assert sink.text.count("acknowledging nothing more") == 1 and "No space left" in sink.text
    assert "3 records received were never written" in r.trouble()


def test_recorder_short_write_then_enospc_keeps_whole_lines_only(tmpdir):
    """A record written in part before ENOSPC is cut back at close (never
    acknowledged), so a later server appends on a fresh line; the records
    written whole before it are acknowledged (else their client would keep
    them too: the same seq on disk and in its undelivered file)."""
    sink = _Sink()
    r = rec.Recorder(str(tmpdir), stderr=sink)
    r.open()
    budget = [60]                      # like tmpfs: a short write, then ENOSPC
    r.write_fd = _tight_writer(budget)
    acked = []
    for i in range(5):                 # 29 bytes a line: 2 fit whole; 2-4 unacked
        r.record({"i": i, "pad": "x" * 10},
                 on_written=(lambda i=i: acked.append(i)) if i < 2 else None)
    r.close()
    r2 = rec.Recorder(str(tmpdir), stderr=sink)
    r2.open()
    r2.record({"i": 99})               # space is back: appends on a fresh line
    r2.close()
    with open(os.path.join(str(tmpdir), rec.PERF_LOG)) as f:
        lines = f.read().split("\n")
    assert [json.loads(x)["i"] for x in lines if x] == [0, 1, 99]
    assert acked == [0, 1]             # whole on disk; 2 in part (cut at close), 3, 4 not
    assert "3 records received were never written" in r.trouble()
    assert "No space left" in r.trouble()
    assert r2.trouble() is None


def test_read_back_cuts_a_torn_last_line_and_skips_garbage(tmpdir):
    from diskbench import protocol as P
    from tests.test_protocol import build
    good = [P.record(build(P.PERF), 1.0), P.record(build(P.NOTE), 2.0)]
    path = os.path.join(str(tmpdir), rec.PERF_LOG)
    with open(path, "wb") as f:
        f.write((json.dumps(good[0]) + "\n").encode())
        f.write(b"not json at all\n")
        f.write((json.dumps(good[1]) + "\n").encode())
        f.write(b'{"type":"perf","da')          # the server died mid-write
    warnings = []
    got = rec.read_back(str(tmpdir), warnings.append)
    assert [(m.type, ts) for m, ts in got] == [(P.PERF, 1.0), (P.NOTE, 2.0)]
    assert len(warnings) == 2
    assert "torn last line of 18 bytes" in warnings[0] and "line 2 skipped" in warnings[1]
    with open(path, "rb") as f:
        assert f.read().endswith(b"}\n")      # appends start on a fresh line


# --- resume, limits, replay (registry level) ------------------------------------------
def _recording_peer(registry, name):
    """A Peer whose messages are also kept, as perf.jsonl would keep them."""
    p = Peer(registry, name)
    kept = []
    original = p.msg

    def msg(type_, **fields):
        m = original(type_, **fields)
        kept.append(m)
        return m
    p.msg = msg
    return p, kept


def test_registry_restore_rebuilds_state_and_waits_for_reconnect_or_grace():
    live, clock = _registry(expected_clients=2, heartbeat_timeout=10.0)
    a, kept_a = _recording_peer(live, "a")
    b, kept_b = _recording_peer(live, "b")
    for p in (a, b):
        p.hello()
        p.start()
        p.perf(T0, T0 + 1, 5 << 20)
    b.stop()
    # the server dies; a new one replays the records (file order)
    r, clock = _registry(expected_clients=2, heartbeat_timeout=10.0)
    for m in kept_a + kept_b + [kept_a[1]]:          # a repeated record is skipped
        r.restore(m, T0)
    assert r.restored == len(kept_a) + len(kept_b)
    r.resumed("the server restarted")
    assert r.clients["a"].state == st.WENT_AWAY and r.clients["a"].restart_pending
    assert r.clients["a"].went_away_count == 0        # the server went away, not "a"
    assert r.clients["b"].state == st.FINISHED
    assert r.clients["a"].perf_bytes == 5 << 20 and r.clients["a"].last_seq == 3
    assert r.go_released
    assert not r.is_complete()                        # "a" may still come back
    # "a" reconnects: its hello is a duplicate, re-acked up to what is on record
    again = Peer(r, "a")
    outcome, _ = again.hello()
    assert outcome == ledger.DUPLICATE and r.clients["a"].recorded_seq == 3
    assert r.clients["a"].state == st.RUNNING and not r.clients["a"].restart_pending
    again.seq = 3                                     # it goes on where it was
    assert again.perf(T0 + 1, T0 + 2, 1 << 20) == ledger.NEW
    assert r.clients["a"].perf_bytes == 6 << 20
    # a client that never comes back: the run completes after the grace
    r2, clock2 = _registry(expected_clients=2, heartbeat_timeout=10.0)
    for m in kept_a + kept_b:
        r2.restore(m, T0)
    r2.resumed("the server restarted")
    assert not r2.is_complete()
    clock2.t += 10.5
    assert not r2.is_complete()                       # within --rejoin-grace
    clock2.t += r2.rejoin_grace_for(r2.clients["a"]) - 10.0
    assert r2.is_complete()


def test_registry_restore_skips_records_without_a_hello():
    r, _ = _registry()
    orphan = protocol.make(protocol.NOTE, protocol.C2S, name="ghost", seq=2, ts=T0,
                           text="x")
    assert r.restore(orphan, T0) is False and "ghost" not in r.clients


def test_registry_max_clients_refuses_new_names_only():
    r, _ = _registry(max_clients=1)
    assert Peer(r, "a").hello()[0] == ledger.NEW
    outcome, why = Peer(r, "b", pid=7).hello()
    assert outcome == reg.REJECT and "--max-clients" in why
    assert r.rejected == {reg.REJECT_TOO_MANY_CLIENTS: 1}
    assert Peer(r, "a").hello()[0] == ledger.DUPLICATE   # a known name may come back


def test_registry_replay_is_a_recorded_seq_from_another_connection():
    r, _ = _registry()
    a = Peer(r, "a")
    a.hello()
    perf = a.msg(protocol.NOTE, text="hi")
    a.send_msg(perf)
    stranger = r.connection_opened()
    assert r.is_replay(perf, stranger)
    assert not r.is_replay(perf, a.conn)              # its own connection: a duplicate
    later = protocol.make(protocol.NOTE, protocol.C2S, name="a", seq=9, ts=T0, text="x")
    assert not r.is_replay(later, stranger)           # not recorded yet: no-hello


def test_registry_keeps_at_most_keep_texts_max_notes():
    r, _ = _registry()
    a = Peer(r, "a")
    a.hello()
    old = effects.KEEP_TEXTS_MAX
    effects.KEEP_TEXTS_MAX = 3
    try:
        for i in range(5):
            a.send(protocol.NOTE, text="n%d" % i)
    finally:
        effects.KEEP_TEXTS_MAX = old
    assert r.clients["a"].notes == ["n0", "n1", "n2"] and r.clients["a"].texts_dropped == 2


def test_registry_pong_gives_ntp_offset_from_the_shortest_round_trip_and_flags_drift():
    """offset = client time - middle of the round trip, from the pong with the
    shortest round trip; offsets that move over CLOCK_DRIFT_WARN_S are flagged."""
    r, _ = _registry()
    p = Peer(r, "a")
    p.hello()

    def pong(sent, recv, client_time):
        m = p.msg(protocol.PONG, nonce=int(sent * protocol.PING_NONCE_PER_S),
                  client_time=client_time)
        assert r.accept(m, recv, p.conn) == ledger.NEW
    # the client's clock is 5 s ahead; round trips of 40 ms, then 10 ms
    pong(T0 + 10.0, T0 + 10.040, T0 + 15.020)
    pong(T0 + 20.0, T0 + 20.010, T0 + 25.005)
    c = r.clients["a"]
    assert abs(c.rtt_s - 0.010) < 1e-6 and abs(c.ping_offset_s - 5.0) < 1e-6
    assert c.offset() == (c.ping_offset_s, "ping") and not c.drift_warned
    # a later sample in a short round trip says 5.2 s: the clock moved
    pong(T0 + 30.0, T0 + 30.011, T0 + 35.2055)
    assert c.drift_warned and abs(c.offset_high - c.offset_low - 0.2) < 1e-3
    # a pong to no ping of ours (a round trip of minus a second) is ignored
    pong(T0 + 41.0, T0 + 40.0, T0 + 99.0)
    assert abs(c.ping_offset_s - 5.0) < 1e-6


# --- the run plan and the synchronized start ------------------------------------------
MIB = 1 << 20


def test_plan_resolve_client_flags_win_then_server_then_default():
    from diskbench import plan
    server = dict(chunk_bytes=[10 * MIB, 20 * MIB], duration_s=30.0, file_bytes=None)
    own = dict(chunk_bytes=10 * MIB, file_bytes=100 * MIB, duration_s=60.0,
               heartbeat_interval_s=2.0)
    sizes = [plan.resolve(own, [], server, i)[0]["chunk_bytes"] for i in range(5)]
    assert sizes == [10 * MIB, 20 * MIB, 10 * MIB, 20 * MIB, 10 * MIB]  # arrival order
    values, sources = plan.resolve(own, ["duration_s"], server, 1)
    assert values["duration_s"] == 60.0 and sources["duration_s"] == plan.FROM_CLIENT
    assert values["chunk_bytes"] == 20 * MIB and sources["chunk_bytes"] == plan.FROM_SERVER
    # no --file-mb anywhere: ten chunks of the chunk it will write
    assert values["file_bytes"] == 200 * MIB and sources["file_bytes"] == plan.FROM_DEFAULT
    # a hello that says nothing of what it fixed: everything is its own
    values, sources = plan.resolve(own, None, server, 1)
    assert values["chunk_bytes"] == 10 * MIB and values["duration_s"] == 60.0
    assert [k for k, v in sorted(sources.items()) if v == plan.FROM_CLIENT] == [
        "chunk_bytes", "duration_s", "file_bytes", "heartbeat_interval_s"]


def test_registry_go_carries_the_plan_and_one_start_instant_while_it_can_be_met():
    wall = Clock()
    r, _ = _registry(expected_clients=2, wall=wall, plan_given=dict(
        chunk_bytes=[10 * MIB, 20 * MIB], duration_s=7.0))
    a, b = Peer(r, "a", pid=1), Peer(r, "b", pid=2)
    for p in (a, b):
        m = p.msg(protocol.HELLO, **hello_fields(pid=p.pid, fixed=[]))
        r.hello(m, T0, p.conn, "peer", p.sender)
        gos = r.recorded(p.name, m.seq)
    gos += r.release_go()
    assert [g[0] for g in gos] == ["b", "a"]
    fields = dict((name, f) for name, _, f in gos)
    lead = go_mod.START_LEAD_S + 2 * go_mod.START_LEAD_PER_CLIENT_S
    for name, chunk in (("a", 10), ("b", 20)):
        assert fields[name]["chunk_bytes"] == chunk * MIB
        assert fields[name]["duration_s"] == 7.0
        assert fields[name]["start_at"] == pytest.approx(wall.t + lead)
        assert fields[name]["clock_offset_s"] is None   # no pong yet: by go's send time
        # the fleet's ends are spread over a time that grows with the fleet
        assert fields[name]["end_spread_s"] == 2 * go_mod.END_SPREAD_PER_CLIENT_S
    # a late client still in time gets the instant; one too late starts at once
    c = Peer(r, "c", pid=3)
    m = c.msg(protocol.HELLO, **hello_fields(pid=3, fixed=[]))
    r.hello(m, T0, c.conn, "peer", c.sender)
    (late,) = r.recorded("c", m.seq)
    assert late[2]["start_at"] == fields["a"]["start_at"] and late[2]["chunk_bytes"] == 10 * MIB
    assert late[2]["end_spread_s"] == r.end_spread_s == 3 * go_mod.END_SPREAD_PER_CLIENT_S
    wall.t += lead - go_mod.START_AHEAD_MIN_S + 0.01
    d = Peer(r, "d", pid=4)
    m = d.msg(protocol.HELLO, **hello_fields(pid=4, fixed=[]))
    r.hello(m, T0, d.conn, "peer", d.sender)
    (too_late,) = r.recorded("d", m.seq)
    assert "start_at" not in too_late[2]


def test_registry_end_spread_stops_at_what_the_protocol_allows(monkeypatch):
    monkeypatch.setattr(go_mod, "END_SPREAD_PER_CLIENT_S", protocol.END_SPREAD_MAX_S)
    r, _ = _registry()
    gos = []
    for pid, name in enumerate("ab", 1):
        p = Peer(r, name, pid=pid)
        m = p.msg(protocol.HELLO, **hello_fields(pid=pid))
        r.hello(m, T0, p.conn, "peer", p.sender)
        gos += r.recorded(name, m.seq)
    assert [g[2]["end_spread_s"] for g in gos] == [protocol.END_SPREAD_MAX_S] * 2
    # and the go that says so is valid on the wire
    protocol.make(protocol.GO, protocol.S2C, run_id="r", **gos[1][2])


def test_registry_refuses_a_server_plan_that_cannot_run_on_that_client():
    r, _ = _registry(plan_given=dict(chunk_bytes=[10 * MIB], file_bytes=1000 * MIB,
                                     duration_s=1.0))
    p = Peer(r, "slow")
    outcome, why = p.hello(fixed=[], calibration_mib_s=100.0)
    assert outcome == reg.REJECT and r.rejected == {reg.REJECT_PLAN: 1}
    assert "at 100 MiB/s, 1 s gives ~0.1 rollovers of 1000 MiB files" in why
    assert "slow" not in r.clients
    q = Peer(r, "forced")
    assert q.hello(fixed=[], calibration_mib_s=100.0, force=True)[0] == ledger.NEW
    assert any("runs it anyway (--force)" in n for n in r.notes)


def test_intervals_are_packed_24_bytes_each_and_read_back_exactly():
    iv = clientstate.Intervals()
    for i in range(1000):
        iv.append(T0 + i, T0 + i + 1.000001, (10 << 20) + i)
    iv += [(T0, T0 + 1, 2 ** 53)]
    assert len(iv) == 1001
    back = list(iv)
    assert back[0] == (T0, T0 + 1.000001, 10 << 20) and back[999][2] == (10 << 20) + 999
    assert back[-1] == (T0, T0 + 1, 2 ** 53) and isinstance(back[-1][2], int)
    import sys
    assert sys.getsizeof(iv._flat) < 1001 * 3 * 8 * 1.2    # no per-interval objects


def test_io_thread_acks_are_sent_in_order_and_never_lost_when_its_loop_ends():
    """Acks the recorder hands to an I/O thread are sent by it, in order; one
    posted once that thread's loop is over is sent by its poster at once, so
    an ack can never be left in a queue nobody reads."""
    from diskbench.server import ioloop

    class Conn(object):
        conn_id, peer = 1, "127.0.0.1:1"

        def __init__(self):
            self.sent = []

        def send_ack(self, seq, upto, now=None):
            self.sent.append((seq, upto))

    import os
    worker = ioloop._Worker(None, 0)
    conn = Conn()

    def wake_bytes():
        try:
            return os.read(worker.wake_r, 100)
        except OSError:           # (non-blocking) nothing written
            return b""
    worker.post_ack(conn, 1, 1)
    worker.post_ack(conn, 3, 4)
    assert conn.sent == [] and worker.wake_pending   # the loop's to send...
    assert wake_bytes() == b"x"                      # ...woken once for both
    worker._woken()
    assert conn.sent == [(1, 1), (3, 4)] and not worker.wake_pending
    worker.post_ack(conn, 4, 5)                      # after a wake-up: woken again
    assert wake_bytes() == b"x"
    worker._woken()
    assert conn.sent[-1] == (4, 5)
    # A post racing with the wake-up's drain of the pipe: handled now or
    # woken for later, never a flag left set over an empty pipe (a lost
    # wake-up: a join storm's connections were never served).
    drain = worker._drain_wake_pipe

    def racing_drain():
        worker.post_ack(conn, 6, 6)
        drain()
    worker.post_ack(conn, 5, 5)
    worker._drain_wake_pipe = racing_drain
    worker._woken()
    worker._drain_wake_pipe = drain
    assert conn.sent[-2:] == [(5, 5), (6, 6)]
    assert not worker.wake_pending or wake_bytes() == b"x"
    worker.post_ack(conn, 7, 7)
    assert wake_bytes() == b"x"                      # the next post still wakes
    worker._woken()
    assert conn.sent[-1] == (7, 7)
    worker.exited = True                           # the loop is over
    worker.post_ack(conn, 5, 5)
    assert conn.sent[-1] == (5, 5)


def test_recorder_short_write_leaves_no_record_whose_ack_cannot_be_sent(tmpdir):
    """One handler's batch shares one ack: when a write stops inside it, its
    records already written are cut back and held with the rest (on disk and
    never acked, its client would keep them too: the same seq twice); batches
    written whole are acked. Once there is room, the rest is written once, in
    order, and acked."""
    sink = _Sink()
    r = rec.Recorder(str(tmpdir), stderr=sink)
    r.open()
    line = b'{"r":%d,"pad":"xxxxxxxxxxxxxxxxxxxx"}\n'   # 36 bytes
    budget = [36 * 3 + 10]             # room for 3 records and a part of one
    r.write_fd = _tight_writer(budget)
    acked = []
    r.submit([line % 1], lambda: acked.append("a"), key="a")
    r.submit([line % 2, line % 3, line % 4], lambda: acked.append("b"), key="b")
    r.submit([line % 5], lambda: acked.append("c"), key="c")
    r.start()
    wait_until(lambda: "acknowledging nothing more" in sink.text, what="the hold said")
    path = os.path.join(str(tmpdir), rec.PERF_LOG)
    with open(path, "rb") as f:
        assert f.read() == line % 1    # 2 and 3 were written, then cut back
    assert acked == ["a"]
    budget[0] = 1 << 20                # room again
    wait_until(lambda: acked == ["a", "b", "c"], timeout=5 * rec.RETRY_S,
               what="the held batches written and acked")
    r.close()
    with open(path, "rb") as f:
        assert f.read() == b"".join(line % i for i in range(1, 6))


def test_recorder_ack_boundary_keeps_coalesced_batches_whole():
    held = rec._Held([(30, 200, "a"), (10, 120, "c")], [])
    # a (records at 30-40 and 150-200) is cut at 150: c (10-30, 100-120) too
    assert held.ack_boundary(150) == 10
    assert held.ack_boundary(200) == 200
    plain = rec._Held([(0, 40, "x"), (40, 90, "y")], [])
    assert plain.ack_boundary(70) == 40 and plain.ack_boundary(40) == 40


def _tight_writer(budget):
    """A write_fd with ``budget[0]`` bytes of room: short, then ENOSPC (tmpfs)."""
    def tight(fd, data):
        if budget[0] <= 0:
            raise OSError(28, "No space left on device")
        n = os.write(fd, data[:budget[0]])
        budget[0] -= n
        return n
    return tight


def test_recorder_unwritten_count_is_records_only_and_one_figure(tmpdir, monkeypatch):
    """What drain() reports as not written (the report's figure) counts
    records only, not the log lines, calls and marks queued with them, and
    is the figure close() says on stderr and trouble() gives."""
    monkeypatch.setattr(rec, "HELD_DRAIN_S", 0.2)
    sink = _Sink()
    r = rec.Recorder(str(tmpdir), stderr=sink)
    r.open()
    r.write_fd = _enospc
    r.start()
    for i in range(4):
        r.record({"i": i}, on_written=lambda: None)
        r.log_line("a log line %d" % i)
        r.call_after(lambda: None)
    r.submit([b'{"i":9}\n', b'{"i":10}\n'], lambda: None)
    wait_until(lambda: r.held is not None, what="the write to be held")
    for i in range(3):                 # queued behind the held write
        r.log_line("another log line %d" % i)
        r.record({"j": i})
    count = r.drain(5)
    assert count == 9, count
    assert r.unwritten_text(count, 5).startswith("9 records received are not in")
    r.close()
    assert "error: 9 records received were never written" in sink.text, sink.text
    assert r.trouble().startswith("9 records received were never written")
