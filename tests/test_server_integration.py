"""The real server process over real TCP on 127.0.0.1, with protocol-built fake clients."""
import json
import os
import signal
import socket

from diskbench import exitcodes, metrics, protocol
from tests.helpers import wait_until
from tests.test_server_fakes import (FakeClient, ServerProc, hello_fields,
                                     latency_sets, play_full_run, run_in_threads)

FAST = ["--idle-timeout", "0.3", "--shutdown-grace", "0.5"]


def _logs(tmpdir):
    return str(tmpdir.join("logs"))


def _merged(lat_sets):
    hist = metrics.LatencyHistogram()
    for lats in lat_sets:
        for value in lats:
            hist.add(value)
    return hist


def _client(rep, name):
    return [c for c in rep["clients"] if c["client"] == name][0]


def test_server_report_counts_match_what_three_concurrent_clients_sent(procs, tmpdir):
    server = ServerProc(procs, _logs(tmpdir), ["--clients", "3"] + FAST)
    plans = dict(("node%d" % i, latency_sets(i + 1, 4 + i, 7 + i)) for i in range(3))
    sent = {}
    # they join in the reverse of name order, one after the other (each hello
    # acknowledged before the next), so a report in join order would show it
    fakes = {}
    for name in sorted(plans, reverse=True):
        fakes[name] = FakeClient(server.port, name)
        fakes[name].hello()
        fakes[name].wait_acked(1)

    def runner(name):
        def run():
            sent[name] = play_full_run(fakes[name], plans[name], rollovers=2, hello=False)
            fakes[name].close()
        return run

    run_in_threads([runner(n) for n in sorted(plans)])
    assert server.wait_exit() == exitcodes.OK, server.stderr()
    assert "Traceback" not in server.stderr()
    rep = server.report()
    assert [c["client"] for c in rep["clients"]] == sorted(plans)  # sorted by name
    assert [c["join_order"] for c in rep["clients"]] == [3, 2, 1]
    for name, lat_sets in plans.items():
        c = _client(rep, name)
        hist = _merged(lat_sets)
        assert c["state"] == "finished"
        assert c["written_mib"] == metrics.mib(sent[name])
        assert c["perf_interval_count"] == len(lat_sets)
        assert c["chunk_count"] == sum(len(x) for x in lat_sets)
        assert c["rollover_count"] == 2
        assert c["rollover_close_ms"]["max"] == 20.0
        assert c["latency_ms"]["sample_count"] == hist.count
        for pct in (50, 95, 99):
            assert abs(c["latency_ms"]["p%d" % pct] - hist.percentile(pct) * 1000) < 1e-9
        assert abs(c["latency_ms"]["max"] - hist.max * 1000) < 1e-9
        rates = [metrics.mib_per_s(len(x) << 20, 1.0) for x in lat_sets]
        assert c["throughput_mib_s"]["min"] == min(rates)
        assert c["throughput_mib_s"]["max"] == max(rates)
        assert abs(c["throughput_mib_s"]["mean"] - sum(rates) / len(rates)) < 1e-9
        assert c["writer_cpu_percent"] == dict(mean=30.0, max=40.0, sample_count=2)
        assert c["writer_rss_mib"] == dict(mean=20.0, max=30.0)
        assert c["last_heartbeat"]["writer_was_alive"] is True
        assert c["dropped_message_count"] == 0
    totals = rep["totals"]
    assert totals["finished_count"] == 3 and totals["rollover_count"] == 6
    assert totals["written_mib"] == metrics.mib(sum(sent.values()))
    # all three wrote from T0; the shortest (4 intervals) bounds the common period
    # (on the server's clock: each client's offset estimate moves it by its delay)
    assert abs(rep["aggregate"]["period_s"] - 4.0) < 0.05
    assert abs(rep["aggregate"]["throughput_mib_s"] - (7 + 8 + 9)) < 1e-9
    assert rep["aggregate"]["first_done"]["client"] == "node0"
    assert rep["aggregate"]["last_done"]["client"] == "node2"
    # every accepted message is in perf.jsonl exactly once, with receive time and peer
    records = server.records()
    per_client = {}
    for msg, recv_ts in records:
        assert recv_ts > 0
        per_client.setdefault(msg.name, []).append(msg.seq)
    for name in plans:
        assert sorted(per_client[name]) == list(range(1, len(per_client[name]) + 1))
    text = server.report_text()
    assert "MiB/s" in text and "aggregate throughput" in text and "node2" in text
    log = server.server_log()
    assert "node1 joined" in log and "node1 rollover #2" in log
    assert "client node1 joined" in server.stdout()


def test_server_client_dropping_connection_is_reported_went_away(procs, tmpdir):
    server = ServerProc(procs, _logs(tmpdir), ["--clients", "1"] + FAST)
    client = FakeClient(server.port, "dropper")
    client.hello()
    client.wait_for(protocol.GO)
    client.start()
    client.perf(0, [0.002, 0.003])
    client.wait_acked(client.seq)
    client.close()
    assert server.wait_exit() == exitcodes.SERVER_INCOMPLETE
    c = _client(server.report(), "dropper")
    assert c["state"] == "went away"
    assert "closed without stop" in c["state_why"]
    assert c["perf_interval_count"] == 1
    assert "Traceback" not in server.stderr()


def test_server_silent_client_went_away_after_heartbeat_timeout(procs, tmpdir):
    server = ServerProc(procs, _logs(tmpdir),
                        ["--clients", "1", "--heartbeat-timeout", "1"] + FAST)
    client = FakeClient(server.port, "quiet")
    client.hello()
    client.wait_for(protocol.GO)
    client.start()
    client.wait_acked(client.seq)
    # connected, sends nothing more
    assert server.wait_exit() == exitcodes.SERVER_INCOMPLETE
    c = _client(server.report(), "quiet")
    assert c["state"] == "went away"
    assert "silent for" in c["state_why"] and "--heartbeat-timeout 1" in c["state_why"]
    client.close()


def test_server_bad_lines_rejected_and_logged_while_other_clients_unaffected(procs, tmpdir):
    server = ServerProc(procs, _logs(tmpdir), ["--clients", "2"] + FAST)
    messy = FakeClient(server.port, "messy")
    longline = FakeClient(server.port, "long")
    good = FakeClient(server.port, "good")
    unknown = json.loads(protocol.encode(messy.build(protocol.NOTE, text="x")).decode())
    messy.seq -= 1
    unknown["type"] = "launch-missiles"
    messy.raw(b"this is not json\n")
    messy.raw(b"\xff\xfe\xfd{}\n")
    messy.raw(json.dumps(unknown).encode("ascii") + b"\n")
    messy.raw(b"\n")
    try:
        longline.raw(b"a" * (1 << 20))
    except (socket.error, OSError):
        pass  # the server may already have closed it
    wait_until(lambda: longline.closed_by_server, what="the server to close the long line")
    # the messy connection goes on: it now runs a whole, valid client
    plans = latency_sets(5, 3, 5)
    run_in_threads([lambda: play_full_run(messy, plans),
                    lambda: play_full_run(good, latency_sets(6, 3, 5))])
    assert server.wait_exit() == exitcodes.OK, server.stderr()
    rep = server.report()
    assert rep["rejected_messages"] == {"not-json": 2, "not-utf8": 1,
                                       "unknown-type": 1, "too-long": 1}
    assert rep["rejected_count"] == 5
    for name in ("messy", "good"):
        c = _client(rep, name)
        assert c["state"] == "finished" and c["perf_interval_count"] == 3
    log = server.server_log()
    for sock, kind in ((messy.sock, "not-json"), (messy.sock, "not-utf8"),
                       (messy.sock, "unknown-type"), (longline.sock, "too-long")):
        peer = "127.0.0.1:%d" % sock.getsockname()[1]
        assert "rejected message (%s) from %s" % (kind, peer) in log
    assert "rejected messages: 5" in server.report_text()
    for c in (messy, longline, good):
        c.close()


def test_server_wrong_protocol_version_hello_gets_rejected_naming_both(procs, tmpdir):
    server = ServerProc(procs, _logs(tmpdir), ["--clients", "1"] + FAST)
    client = FakeClient(server.port, "oldie")
    obj = json.loads(protocol.encode(client.build(
        protocol.HELLO, **hello_fields())).decode("ascii"))
    obj["v"] = 99
    client.raw(json.dumps(obj).encode("ascii") + b"\n")
    rejected = client.wait_for(protocol.REJECTED)
    assert "99" in rejected.reason and "protocol version %d" % protocol.PROTOCOL_VERSION \
        in rejected.reason
    assert rejected.fatal is True
    wait_until(lambda: client.closed_by_server, what="the server to close")
    wait_until(lambda: "bad-version" in server.server_log(), what="the refusal logged")
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait_exit() == exitcodes.SERVER_INTERRUPTED
    assert server.report()["rejected_messages"] == {"bad-version": 1}


def test_server_duplicate_seq_recorded_once_and_reacked_after_record(procs, tmpdir):
    server = ServerProc(procs, _logs(tmpdir), ["--clients", "1"] + FAST)
    perf_path = os.path.join(server.log_dir, "perf.jsonl")
    seen_at_ack = []

    def on_ack(ack):  # runs in the client's reader thread, as the ack arrives
        with open(perf_path) as f:
            seqs = [json.loads(line)["seq"] for line in f if line.strip()]
        seen_at_ack.append((ack.upto_seq, max(seqs) if seqs else 0))

    client = FakeClient(server.port, "dup", on_ack=on_ack)
    client.hello()
    client.wait_for(protocol.GO)
    client.start()
    perf = client.perf(0, [0.004, 0.005, 0.006])
    client.wait_acked(perf.seq)
    acks_before = len(client.got(protocol.ACK))
    client.send_msg(perf)          # resend: same seq
    wait_until(lambda: len(client.got(protocol.ACK)) > acks_before, what="a re-ack")
    assert client.got(protocol.ACK)[-1].upto_seq == perf.seq
    client.stop(nbytes=3 << 20)
    client.send(protocol.BYE)
    client.wait_acked(client.seq)
    client.close()
    assert server.wait_exit() == exitcodes.OK
    c = _client(server.report(), "dup")
    assert c["perf_interval_count"] == 1 and c["duplicate_message_count"] == 1
    assert c["written_mib"] == 3.0
    seqs = [msg.seq for msg, _ in server.records()]
    assert seqs == sorted(set(seqs)) and perf.seq in seqs
    assert seen_at_ack and all(on_disk >= upto for upto, on_disk in seen_at_ack)
    assert "duplicate" in server.server_log()


def test_server_sigterm_mid_run_writes_complete_report_and_exits_interrupted(procs, tmpdir):
    server = ServerProc(procs, _logs(tmpdir), ["--clients", "2"] + FAST)
    polite = FakeClient(server.port, "polite")
    deaf = FakeClient(server.port, "deaf")
    for client in (polite, deaf):
        client.hello()
    for client in (polite, deaf):
        client.wait_for(protocol.GO)
        client.start()
        client.perf(0, [0.002, 0.004])
        client.wait_acked(client.seq)
    server.proc.send_signal(signal.SIGTERM)
    polite.wait_for(protocol.STOP)          # the server asks live clients to stop
    polite.stop(reason=protocol.STOP_SERVER, nbytes=2 << 20)
    polite.send(protocol.BYE)
    assert server.wait_exit() == exitcodes.SERVER_INTERRUPTED
    assert "Traceback" not in server.stderr()
    rep = server.report()
    assert rep["run"]["interrupted_by"] == "SIGTERM"
    assert _client(rep, "polite")["state"] == "finished"
    d = _client(rep, "deaf")
    assert d["state"] == "running" and "interrupted" in d["state_why"]
    assert d["perf_interval_count"] == 1 and d["written_mib"] == 2.0
    assert "INTERRUPTED by SIGTERM" in server.report_text()
    assert not [n for n in os.listdir(server.log_dir) if ".tmp" in n]
    deaf.close()
    polite.close()


def test_server_clients_n_holds_go_until_n_hellos(procs, tmpdir):
    server = ServerProc(procs, _logs(tmpdir), ["--clients", "2"] + FAST)
    first = FakeClient(server.port, "first")
    first.hello()
    first.wait_acked(1)
    first.send(protocol.NOTE, text="waiting")
    first.wait_acked(2)  # a GO sent after ack 1 would precede ack 2 on the same stream
    assert first.got(protocol.GO) == []
    second = FakeClient(server.port, "second")
    second.hello()
    go1, go2 = first.wait_for(protocol.GO), second.wait_for(protocol.GO)
    assert go1.run_id == go2.run_id
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait_exit() == exitcodes.SERVER_INTERRUPTED
    first.close()
    second.close()


def test_server_start_timeout_releases_go_to_those_present(procs, tmpdir):
    server = ServerProc(procs, _logs(tmpdir),
                        ["--clients", "3", "--start-timeout", "0.5"] + FAST)
    client = FakeClient(server.port, "lonely")
    client.hello()
    client.wait_for(protocol.GO, timeout=10)
    assert "--start-timeout" in wait_until(
        lambda: "--start-timeout" in server.server_log() and server.server_log())
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait_exit() == exitcodes.SERVER_INTERRUPTED
    client.close()


def test_server_without_clients_flag_completes_after_idle_timeout_quietly(procs, tmpdir):
    server = ServerProc(procs, _logs(tmpdir), FAST + ["--quiet"])
    client = FakeClient(server.port, "solo")
    play_full_run(client, latency_sets(9, 2, 3))
    client.close()
    assert server.wait_exit() == exitcodes.OK
    assert _client(server.report(), "solo")["state"] == "finished"
    assert len(server.stdout().splitlines()) == 1      # only the listening line
    log = server.server_log()
    assert "client solo joined" in log and "client solo finished" in log


def test_server_secret_refuses_unsigned_hello_and_accepts_signed(procs, tmpdir):
    server = ServerProc(procs, _logs(tmpdir), ["--clients", "1"] + FAST,
                        env={"DISKBENCH_SECRET": "s3cret"})
    assert "no shared secret" not in server.stderr()
    intruder = FakeClient(server.port, "intruder")
    intruder.hello()
    wait_until(lambda: intruder.closed_by_server, what="the unsigned hello to be refused")
    wait_until(lambda: "bad-mac" in server.server_log(), what="the refusal logged")
    friend = FakeClient(server.port, "friend", secret="s3cret")
    play_full_run(friend, latency_sets(3, 2, 2))
    friend.close()
    assert server.wait_exit() == exitcodes.OK
    rep = server.report()
    assert [c["client"] for c in rep["clients"]] == ["friend"]
    assert rep["rejected_messages"] == {"bad-mac": 1}


def test_server_reconnect_after_went_away_resends_and_is_deduplicated(procs, tmpdir):
    server = ServerProc(procs, _logs(tmpdir), ["--clients", "2"] + FAST)
    anchor = FakeClient(server.port, "anchor")  # keeps the run open meanwhile
    anchor.hello()
    first = FakeClient(server.port, "flaky")
    first.hello()
    first.wait_for(protocol.GO)
    first.start()
    perf = first.perf(0, [0.002])
    first.wait_acked(perf.seq)
    first.close()
    wait_until(lambda: "flaky went away" in server.server_log(), what="went away")
    again = FakeClient(server.port, "flaky", seq=perf.seq)
    again.hello()
    again.send_msg(perf)             # an unacked resend (duplicate)
    again.perf(1, [0.003])
    again.stop(nbytes=2 << 20)
    again.send(protocol.BYE)
    again.wait_acked(again.seq)
    assert again.got(protocol.GO)    # a reconnecting client gets go again
    anchor.start()
    anchor.stop()
    anchor.wait_acked(anchor.seq)
    assert server.wait_exit() == exitcodes.OK
    c = _client(server.report(), "flaky")
    assert c["state"] == "finished" and c["reconnect_count"] == 1
    assert c["went_away_count"] == 1 and c["duplicate_message_count"] == 1
    assert c["perf_interval_count"] == 2
    assert "reconnected" in server.server_log()
    for x in (anchor, again):
        x.close()


def test_server_port_in_use_exits_bind_with_one_line(procs, tmpdir):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        code, out, err = procs.run(["-m", "diskbench.server", "--host", "127.0.0.1",
                                    "--port", str(port), "--log-dir", _logs(tmpdir)])
    finally:
        holder.close()
    assert code == exitcodes.SERVER_BIND
    assert len(err.strip().splitlines()) == 1 and "in use" in err and "--port" in err
    # nothing was recorded: no run marker is left, so the next start is a fresh run
    assert not os.path.exists(os.path.join(_logs(tmpdir), "run.json"))


def test_server_unwritable_log_dir_exits_log_dir_with_one_line(procs, tmpdir):
    afile = tmpdir.join("a-file")
    afile.write("not a directory")
    for log_dir in (str(afile), str(afile.join("sub"))):
        code, out, err = procs.run(["-m", "diskbench.server", "--port", "0",
                                    "--log-dir", log_dir])
        assert code == exitcodes.SERVER_LOG_DIR, err
        assert len(err.strip().splitlines()) == 1 and "--log-dir" in err


def test_server_bad_flag_exits_usage_with_one_line(procs, tmpdir):
    for flags in (["--clients", "0"], ["--port", "70000"], ["--no-such-flag"],
                  ["--heartbeat-timeout", "soon"], ["--max-connections", "0"],
                  ["--max-line-bytes", "100"], ["--hello-timeout", "-1"]):
        code, out, err = procs.run(["-m", "diskbench.server", "--log-dir",
                                    _logs(tmpdir)] + flags)
        assert code == exitcodes.USAGE, (flags, err)
        assert len(err.strip().splitlines()) == 1 and "--help" in err
