"""The server's own log dir fills up (a 2 MiB tmpfs, root only): it keeps serving
but acknowledges nothing it could not write (said once, at once), holds what it
received and writes it once space returns; the report is still tried (json and
txt each on its own; on stdout when neither fits). tests/faults/test_trust_ack.py
checks each ack against the file and real clients."""
import errno
import json
import os
import re
import subprocess

import pytest

from diskbench import exitcodes, protocol
from diskbench.server.recorder import RETRY_S
from tests.helpers import wait_until
from tests.test_server_fakes import FakeClient, ServerProc, latency_sets, play_full_run


@pytest.fixture
def small_tmpfs(tmpdir):
    if os.geteuid() != 0:
        pytest.skip("mounting a 2 MiB tmpfs to fill the log dir needs root")
    path = str(tmpdir.mkdir("full"))
    if subprocess.call(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", path]) != 0:
        pytest.skip("cannot mount a tmpfs here (no CAP_SYS_ADMIN?)")
    try:
        yield path
    finally:
        subprocess.call(["umount", "-l", path])


def _fill(path):
    """Write a filler file until the filesystem is full; returns its path."""
    filler = os.path.join(path, "filler")
    block = b"\0" * 65536
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            try:
                if os.write(fd, block) < len(block):
                    block = block[:4096] if len(block) > 4096 else block[:1]
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(block) == 1:
                    return filler
                block = block[:max(1, len(block) // 16)]
    finally:
        os.close(fd)


def _run_one(port, name, seed, wait_acks=True):
    client = FakeClient(port, name)
    if wait_acks:
        play_full_run(client, latency_sets(seed, 30, 5), wait_go=False)
        client.close()
        return client
    client.hello()                         # the whole run, acks or not
    client.start()
    for i, lats in enumerate(latency_sets(seed, 30, 5)):
        client.perf(i, lats)
    client.stop(nbytes=0)
    client.send(protocol.BYE)
    return client


def test_log_dir_full_server_acks_nothing_and_prints_the_report(procs, small_tmpfs):
    """Nothing is acknowledged that is not on disk: with the log dir full the
    clients get no ack, the server says so once on stderr, exits
    SERVER_INCOMPLETE and prints the report (no file fits) saying what is not
    on disk."""
    logs = os.path.join(small_tmpfs, "logs")
    server = ServerProc(procs, logs, ["--clients", "2", "--quiet", "--idle-timeout", "0.3"])
    _fill(small_tmpfs)
    first = _run_one(server.port, "first", 1, wait_acks=False)
    second = _run_one(server.port, "second", 2, wait_acks=False)
    assert server.wait_exit(30) == exitcodes.SERVER_INCOMPLETE, server.stderr()
    assert not first.got(protocol.ACK) and not second.got(protocol.ACK)
    err = server.stderr()
    # (said of server.log or perf.jsonl: whichever the first batch that failed held)
    assert err.count("acknowledging nothing more") == 1, err
    assert re.search(r"cannot write (server\.log|perf\.jsonl) in %s \(No space left on "
                     r"device\)" % re.escape(logs), err), err
    assert "cannot write the report %s" % os.path.join(logs, "report.json") in err
    out = " ".join(server.stdout().split())   # neither file fits: the report is printed
    assert "diskbench report" in out and "client first: FINISHED" in out
    assert "records received are not in %s" % os.path.join(logs, "perf.jsonl") in out
    assert "Traceback" not in err
    assert not [n for n in os.listdir(logs) if ".tmp." in n]   # no temp files left


def test_log_dir_full_then_freed_writes_what_it_held_then_acks(procs, small_tmpfs):
    """Once space returns the records held meanwhile are written, each once and
    in order, then acknowledged; the report says writing failed and that
    nothing was acknowledged until it was on disk; the exit code is OK."""
    logs = os.path.join(small_tmpfs, "logs")
    server = ServerProc(procs, logs, ["--clients", "2", "--quiet", "--idle-timeout", "0.3"])
    filler = _fill(small_tmpfs)
    first = _run_one(server.port, "first", 1, wait_acks=False)
    wait_until(lambda: "acknowledging nothing more" in server.stderr(),
               what="the server to say it cannot write")
    assert not first.got(protocol.ACK)
    os.unlink(filler)                      # space again before the run ends
    first.wait_acked(first.seq - 1, timeout=10 * RETRY_S)
    first.close()
    _run_one(server.port, "second", 2).close()
    assert server.wait_exit() == exitcodes.OK, server.stderr()
    rep = server.report()
    warning = " ".join(rep["run"]["server_warnings"])
    assert "No space left on device" in warning
    assert "nothing was acknowledged until it was on disk" in warning
    by_name = dict((c["client"], c) for c in rep["clients"])
    assert by_name["first"]["perf_interval_count"] == 30
    assert by_name["second"]["perf_interval_count"] == 30
    with open(os.path.join(logs, "perf.jsonl")) as f:       # whole lines only
        lines = [json.loads(line) for line in f]
    for name in ("first", "second"):
        seqs = [obj["seq"] for obj in lines if obj["name"] == name]
        assert seqs == list(range(1, len(seqs) + 1)), (name, seqs)   # each once
    assert len([obj for obj in lines if obj["name"] == "first"]) == 34   # hello ... bye
    assert os.path.exists(os.path.join(logs, "report.txt"))


#: The clients' --connect-timeout in the hello test: the silence they must
#: outlive (the tester's run: 10 s, then both exited 13); room for a loaded host.
HELLO_WAIT_S = 4


def test_log_dir_full_at_hello_clients_wait_through_it_and_the_run_goes_on(
        procs, tmpdir, small_tmpfs):
    """The outside tester's case: the log dir is full when two real clients
    say hello (--clients 2), so no hello is acknowledged and no go sent. The
    server pings them (no disk needed), so they wait past --connect-timeout
    saying why instead of exiting 13 with 'not a diskbench server'; once
    space is back the hellos are written and acked, the go is sent, and the
    run ends with every client finished (exit 0 all round)."""
    from tests.faults.test_server_restart import client_log, real_client
    from tests.helpers import communicate, free_port
    port = free_port()
    logs = os.path.join(small_tmpfs, "logs")
    server = ServerProc(procs, logs, ["--port", str(port), "--clients", "2", "--quiet",
                                      "--idle-timeout", "0.3"])
    filler = _fill(small_tmpfs)
    names = ("h1", "h2")
    clients = [real_client(procs, tmpdir, port, name, duration=2,
                           extra=["--connect-timeout", str(HELLO_WAIT_S)])
               for name in names]
    wait_until(lambda: all("(it pings us) but has acknowledged nothing" in
                           client_log(tmpdir, name) for name in names),
               timeout=10 * HELLO_WAIT_S + 10, what="both clients to wait, saying why")
    assert "acknowledging nothing more" in server.stderr()
    assert all(c.poll() is None for c in clients), "a client gave up on the server"
    os.unlink(filler)
    for name, client in zip(names, clients):
        out, err = communicate(client, 60)
        assert client.returncode == exitcodes.OK, (name, err[-2000:])
        assert "not a diskbench server" not in client_log(tmpdir, name)
    assert server.wait_exit(30) == exitcodes.OK, server.stderr()
    assert "Traceback" not in server.stderr()
