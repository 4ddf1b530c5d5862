"""Many hosts for real: the server and three clients in four network namespaces.

One run (shared by the tests of this module) of the real server in namespace
``dbs-*`` on 10.231.0.1 and three real clients in ``dbc1-*``..``dbc3-*`` on
10.231.0.11-13, joined by veth pairs to a bridge (tests/netns.py). During the run
node1's only link is cut (``ip link set eth0 down``) until the server has reported it
went away, then restored; node3 runs with its wall clock 5 s ahead (Python's
time.time in all its processes, the monotonic clock left alone: tests/netns.py says why
not libfaketime). The server holds the run plan (chunk sizes 10, 20, 30 MiB handed out
in order of arrival, file size, duration, intervals): the three client commands are the
same but for the name and data directory, and the clients start writing together at the
instant the server's go names. Skipped with the reason without root or ``ip netns``.
"""
import json
import os
import re

import pytest

from diskbench import exitcodes
from tests import netns
from tests.helpers import Procs, communicate, read_jsonl, wait_until

#: Client run length: long enough for the outage (went away after 3 x 0.5 s heartbeats)
#: and the rejoin to fall inside it, short enough for a quick test.
DURATION_S = 6.0
HEARTBEAT_S = 0.5
#: Margin over the went-away timeout (3 heartbeats) for the server to say so.
WENT_AWAY_WAIT_S = 3 * HEARTBEAT_S + 8.0
#: How long the server waits for a went-away client (much longer than the outage).
REJOIN_GRACE_S = 30.0
CLOCK_SKEW_S = 5.0
CLOCK_TOLERANCE_S = 0.5
CUT = 0  # node1
SKEWED = 2  # node3
#: The server's chunk list: each client gets a different size.
CHUNKS_MB = (10, 20, 30)
#: The issue's bound: first writes within this of each other (server clock).
START_SPREAD_MAX_MS = 100.0


def _server_port(proc, console):
    """The port from the server's listening line (its console goes to a file: a pipe
    nobody reads fills up and blocks the server)."""
    m = re.search(r"listening on \S+:(\d+)", _log_text(console))
    if m:
        return int(m.group(1))
    assert proc.poll() is None, "server exited: %s" % _log_text(console)
    return None


def _log_text(path):
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        return f.read()


@pytest.fixture(scope="module")
def fleet_run(tmpdir_factory):
    why = netns.unavailable()
    if why:
        pytest.skip(why)
    tmp = tmpdir_factory.mktemp("netns")
    log_dir = str(tmp.join("server-logs"))
    procs = Procs()
    fleet = netns.Fleet(clients=3)
    try:
        console = str(tmp.join("server-console.txt"))
        with open(console, "wb") as out:
            server = fleet.start(procs, fleet.server_ns, [
                procs.python, "-m", "diskbench.server", "--host", netns.SERVER_ADDR,
                "--port", "0", "--clients", "3", "--log-dir", log_dir,
                "--start-timeout", "20", "--rejoin-grace", str(REJOIN_GRACE_S),
                "--idle-timeout", "0.5", "--progress-interval", "60", "--verbose",
                # the run plan: the clients' commands say none of it
                "--chunk-mb", ",".join(str(c) for c in CHUNKS_MB), "--file-mb", "60",
                "--duration", str(DURATION_S), "--heartbeat-interval", str(HEARTBEAT_S),
                "--perf-interval", "0.5", "--stats-interval", "1"],
                stdout=out)
        port = wait_until(lambda: _server_port(server, console), 20,
                          what="the server's listening line")
        clients = []
        tmp.mkdir("client-logs")  # clients starting together race to make it (see test_launch)
        for i, ns in enumerate(fleet.client_ns):
            env = None
            if i == SKEWED:
                env = netns.clock_shift_env(tmp.mkdir("clock"), CLOCK_SKEW_S)
            clients.append(fleet.start(procs, ns, [
                procs.python, "-m", "diskbench.client",
                "--server", "%s:%d" % (netns.SERVER_ADDR, port), "--name", "node%d" % (i + 1),
                "--force", "--connect-timeout", "10",
                "--log-dir", str(tmp.join("client-logs")), str(tmp.mkdir("data%d" % i))],
                env=env))
        server_log = os.path.join(log_dir, "server.log")
        wait_until(lambda: _log_text(server_log).count("started writing") == 3, 30,
                   what="three clients writing")
        fleet.link(CUT, up=False)
        cut_log = wait_until(
            lambda: re.search(r"client node1 went away", _log_text(server_log)),
            WENT_AWAY_WAIT_S, what="node1 reported went away while its link is down")
        fleet.link(CUT, up=True)
        results = {"clients": [], "went_away_live": bool(cut_log)}
        for proc in clients:
            out, err = communicate(proc, 60)
            results["clients"].append((proc.returncode, out, err))
        wait_until(lambda: server.poll() is not None, 60, what="the server's end")
        results["server"] = (server.returncode, _log_text(console),
                             server.stderr.read().decode("utf-8", "replace"))
        results["server_log"] = _log_text(server_log)
        with open(os.path.join(log_dir, "report.json")) as f:
            results["report"] = json.load(f)
        results["records"] = read_jsonl(os.path.join(log_dir, "perf.jsonl"))
        yield results
    finally:
        procs.cleanup()
        fleet.close()


def _clients(results):
    return dict((c["client"], c) for c in results["report"]["clients"])


def test_three_namespaces_reported_apart_with_their_own_addresses(fleet_run):
    for code, _out, err in fleet_run["clients"]:
        assert code == exitcodes.OK, (code, err[-3000:])
        assert "Traceback" not in err
    assert fleet_run["server"][0] == exitcodes.OK, fleet_run["server"]
    clients = _clients(fleet_run)
    assert sorted(clients) == ["node1", "node2", "node3"]
    for i in range(3):
        c = clients["node%d" % (i + 1)]
        assert c["peer"].split(":")[0] == "10.231.0.%d" % (netns.FIRST_CLIENT_HOST + i), c
        assert c["state"] == "finished" and c["written_mib"] > 0


def test_cut_link_went_away_then_rejoined_with_nothing_lost(fleet_run):
    assert fleet_run["went_away_live"]
    log = fleet_run["server_log"]
    after = log[log.index("client node1 went away"):]
    assert re.search(r"client node1 (is back|reconnected)", after), after[:2000]
    node1 = _clients(fleet_run)["node1"]
    assert node1["went_away_count"] >= 1 and node1["state"] == "finished"
    # every message node1 sent is recorded once: its seqs run 1..last without a gap
    seqs = sorted(r["seq"] for r in fleet_run["records"] if r.get("name") == "node1")
    assert seqs == list(range(1, seqs[-1] + 1)), "missing seqs: %s" % sorted(
        set(range(1, seqs[-1] + 1)) - set(seqs))
    assert node1["dropped_message_count"] == 0
    assert node1["written_mib"] == pytest.approx(node1["client_summary_written_mib"],
                                                 abs=1e-6)


def test_clock_offset_of_a_skewed_client_is_measured_and_aligned(fleet_run):
    clients = _clients(fleet_run)
    assert clients["node3"]["clock_offset_s"] == pytest.approx(CLOCK_SKEW_S,
                                                               abs=CLOCK_TOLERANCE_S)
    for name in ("node1", "node2"):
        assert abs(clients[name]["clock_offset_s"]) < CLOCK_TOLERANCE_S
    # unaligned, node3's intervals would overlap the others' by DURATION_S - 5 s at most
    period = fleet_run["report"]["aggregate"]["period_s"]
    assert period > DURATION_S - 1.5, period
    assert re.search(r"client node3: its clock is \+5\.\d s off", fleet_run["server_log"])


def test_server_plan_gives_each_client_its_chunk_and_they_start_together(fleet_run):
    clients = _clients(fleet_run)
    assert sorted(c["chunk_mib"] for c in clients.values()) == list(CHUNKS_MB)
    for c in clients.values():
        assert c["plan_source"]["chunk_bytes"] == "server"
        assert c["planned_run_s"] == DURATION_S and c["file_mib"] == 60
    sync = fleet_run["report"]["run"]["synchronized_start"]
    assert sync["client_count"] == 3 and sync["first_write_known_count"] == 3, sync
    assert sync["first_write_spread_ms"] < START_SPREAD_MAX_MS, sync
    # node3's clock is 5 s ahead: its first write is on the server's clock too
    for c in clients.values():
        assert abs(c["first_write_ts"] - sync["start_at_ts"]) * 1000 < START_SPREAD_MAX_MS, c
