"""Authentication faults against the real server: a client with the wrong secret,
a raw connection without a mac, and replays of captured signed lines."""
import json
import os
import signal
import time

import pytest

from diskbench import exitcodes
from diskbench import protocol as P
from tests.faults.test_server_restart import real_client
from tests.helpers import communicate, connect, wait_until
from tests.test_server_fakes import FakeClient, ServerProc

SECRET = "s3cret-for-tests"


def _secret_server(procs, tmpdir, extra=()):
    path = tmpdir.join("secret")
    path.write(SECRET + "\n")
    return ServerProc(procs, str(tmpdir.join("logs")), [
        "--secret-file", str(path), "--idle-timeout", "0.3", "--shutdown-grace", "0.5",
        "--quiet"] + list(extra))


def _stop(server):
    os.kill(server.proc.pid, signal.SIGTERM)
    assert server.wait_exit() == exitcodes.SERVER_INTERRUPTED
    return server.report()


def test_real_client_with_the_wrong_secret_is_refused_and_exits_13(procs, tmpdir):
    server = _secret_server(procs, tmpdir)
    started = time.time()
    proc = real_client(procs, tmpdir, server.port, "intruder", duration=3,
                       extra=["--connect-timeout", "60"],
                       env={"DISKBENCH_SECRET": "not-" + SECRET})
    out, err = communicate(proc, 90)
    assert proc.returncode == exitcodes.CLIENT_SERVER, err[-2000:]
    assert "Traceback" not in err
    # The server's refusal is sent unsigned (it could not check our mac); the
    # client believes it before the link is up, so it says why at once instead
    # of retrying until --connect-timeout.
    assert "wrong mac" in err and "same secret" in err, err[-2000:]
    assert time.time() - started < 30
    log = server.server_log()
    assert "rejected message (bad-mac) from 127.0.0.1:" in log
    assert "wrong mac" in log
    rep = _stop(server)
    assert rep["rejected_messages"]["bad-mac"] >= 1
    assert rep["clients"] == []          # nothing of it was recorded


def test_raw_connection_without_mac_is_rejected_logged_and_counted(procs, tmpdir):
    server = _secret_server(procs, tmpdir)
    fake = FakeClient(server.port, "nomac")          # speaks without any mac
    fake.hello()
    refused = fake.wait_for(P.REJECTED)
    assert "missing mac" in refused.reason and refused.fatal
    wait_until(lambda: fake.closed_by_server, what="the server to close it")
    wait_until(lambda: "missing mac" in server.server_log(), what="the rejection logged")
    log = server.server_log()
    assert "rejected message (bad-mac) from 127.0.0.1:%d" % fake.sock.getsockname()[1] \
        in log
    assert "missing mac" in log
    rep = _stop(server)
    assert rep["rejected_messages"] == {"bad-mac": 1} and rep["clients"] == []
    assert server.records() == []


def test_replayed_signed_lines_are_refused_and_never_recorded(procs, tmpdir):
    server = _secret_server(procs, tmpdir, ["--clients", "1"])
    client = FakeClient(server.port, "victim", secret=SECRET)
    client.hello()
    client.wait_for(P.GO)
    client.start()
    perf = client.perf(0, [0.001, 0.002])
    client.wait_acked(client.seq)
    captured = P.encode(perf, SECRET)                # what an eavesdropper saw

    # 1. the captured line on a connection of its own
    thief = connect(server.port)
    thief.sendall(captured)
    wait_until(lambda: "(replay) from 127.0.0.1:%d" % thief.getsockname()[1]
               in server.server_log(), what="the replay to be logged")
    # 2. the captured line with its seq changed: the mac no longer fits
    obj = json.loads(captured.decode("ascii"))
    obj["seq"] += 100
    thief.sendall(P.canonical(obj) + b"\n")
    wait_until(lambda: "wrong mac" in server.server_log(), what="the forgery logged")
    thief.close()
    # 3. the captured line again on the victim's own connection
    client.send_msg(perf)
    wait_until(lambda: "duplicate perf #%d of victim" % perf.seq in server.server_log(),
               what="the duplicate logged as a possible replay")
    client.perf(1, [0.003])
    client.stop(nbytes=3 << 20)
    client.send(P.BYE)
    client.wait_acked(client.seq)
    client.close()
    assert server.wait_exit() == exitcodes.OK, server.stderr()
    seqs = [m.seq for m, _ in server.records()]
    assert sorted(seqs) == list(range(1, client.seq + 1)) and len(seqs) == client.seq
    rep = server.report()
    assert rep["rejected_messages"] == {"replay": 1, "bad-mac": 1}
    c = rep["clients"][0]
    assert c["perf_interval_count"] == 2 and c["written_mib"] == 3.0
    assert c["duplicate_message_count"] == 1


def test_server_without_secret_warns_at_start(procs, tmpdir):
    server = ServerProc(procs, str(tmpdir.join("logs")), ["--quiet"])
    wait_until(lambda: "anyone who can reach port %d can submit results" % server.port
               in server.stderr(), what="the warning")
    # and it is true: an unsigned client is accepted and its messages recorded
    client = FakeClient(server.port, "open")
    client.hello()
    client.wait_for(P.GO)
    client.wait_acked(client.seq)
    assert [(m.name, m.type) for m, _ in server.records()] == [("open", P.HELLO)]
    assert server.stderr().count("can submit results") == 1


@pytest.mark.parametrize("content,why", [
    (b"", "is empty"), (b" \n\t\n", "is empty"),
    (b"caf\xe9-latin1", "is not UTF-8 text"),
    (b"abc\x00def", "holds control or binary characters")])
def test_server_reads_the_secret_by_the_clients_rule(procs, tmpdir, content, why):
    """The server reads --secret-file with cli.read_secret, like the client: the
    same refusals, one line, exit 2."""
    path = str(tmpdir.join("secret"))
    with open(path, "wb") as f:
        f.write(content)
    code, out, err = procs.run(["-m", "diskbench.server", "--port", "0", "--log-dir",
                                str(tmpdir.join("logs")), "--secret-file", path])
    assert code == exitcodes.USAGE, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "python -m diskbench.server: error: --secret-file %s %s" % (path, why)), err
    assert not os.path.exists(str(tmpdir.join("logs")))


def test_server_strips_ascii_whitespace_from_the_secret_like_the_client(procs, tmpdir):
    path = tmpdir.join("secret")
    path.write_binary(b"\t " + SECRET.encode("ascii") + b" \r\n\x0b")
    server = ServerProc(procs, str(tmpdir.join("logs")), [
        "--secret-file", str(path), "--clients", "1", "--quiet"])
    client = FakeClient(server.port, "padded", secret=SECRET)
    client.hello()
    client.wait_for(P.GO)
    client.wait_acked(client.seq)
    assert [m.name for m, _ in server.records()] == ["padded"]
