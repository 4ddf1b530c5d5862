"""The server's log dir is removed during the run (a real ``rm -rf``): the
recorder checks after each batch, before its acks, that perf.jsonl is still
the file at its path, so nothing is acknowledged into a removed file; the
records acknowledged before the removal are lost with it and the report and
exit code say so; once the dir is made again the held records are written to
new files there, in order, each once, then acknowledged. And a report that
cannot be written is never an OK exit."""
import os
import re
import shutil

import pytest

from diskbench import exitcodes
from diskbench import protocol as P
from diskbench.server import recorder as rec
from tests.faults.test_server_restart import client_log, real_client
from tests.faults.test_trust_ack import NOTICE_S, Probe, _seqs_on_disk
from tests.helpers import PatchedServer, communicate, free_port, read_jsonl, wait_until
from tests.test_server_fakes import FakeClient, ServerProc, latency_sets, play_full_run

#: Perf samples acked before the removal, and sent after it.
BEFORE, AFTER = 3, 5
#: How long real clients run: long enough to be removed under.
CLIENT_RUN_S = 6
GONE = "is no longer the file at its path"


def _server(procs, logs, flags=()):
    return ServerProc(procs, logs, ["--clients", "1", "--quiet", "--idle-timeout",
                                    "0.3"] + list(flags))


def test_log_dir_removed_mid_run_acks_nothing_more_and_says_what_was_lost(procs, tmpdir):
    """rm -rf LOGDIR mid-run: no ack for a record written into the removed
    perf.jsonl (said at once, once, with how to go on); once the dir is made
    again the held records land in a new perf.jsonl, each once, then acked;
    the report counts the acknowledged records lost with the old file, names
    the client, and the exit code is SERVER_INCOMPLETE."""
    logs = str(tmpdir.join("logs"))
    perf = os.path.join(logs, rec.PERF_LOG)
    server = _server(procs, logs)
    probe = Probe(server.port, "probe", perf)
    probe.hello()
    probe.wait_for(P.GO)
    probe.start()
    probe.perfs(0, BEFORE)
    probe.wait_acked(probe.seq)
    acked = probe.seq                       # hello, start, the perfs
    shutil.rmtree(logs)                     # rm -rf
    probe.first = acked + 1                 # acked from now on: in the new file
    probe.perfs(BEFORE, AFTER)
    wait_until(lambda: GONE in server.stderr(), timeout=NOTICE_S,
               what="the server to say perf.jsonl is gone")
    err = server.stderr()
    assert "the %d records acknowledged into it are lost" % acked in err, err
    assert "create it to let the run go on" in err
    assert probe.acked() == acked, "acked into a removed perf.jsonl"
    os.mkdir(logs)                          # made again: the held records go
    probe.wait_acked(probe.seq, timeout=NOTICE_S)
    probe.stop(nbytes=0)
    probe.send(P.BYE)
    probe.wait_acked(probe.seq - 1)
    probe.close()
    assert server.wait_exit(NOTICE_S) == exitcodes.SERVER_INCOMPLETE, server.stderr()
    assert not probe.bad, "acks for records not in perf.jsonl: %r" % probe.bad[:3]
    assert _seqs_on_disk(perf, "probe") == list(range(acked + 1, probe.seq + 1))
    assert server.stderr().count("acknowledging nothing more") == 1
    warnings = " ".join(server.report()["run"]["server_warnings"])
    assert "%d records acknowledged as on disk were lost" % acked in warnings
    assert "by client: probe %d" % acked in warnings
    assert "Traceback" not in server.stderr()


def test_log_dir_removed_for_good_two_real_clients_keep_theirs_and_nothing_exits_0(
        procs, tmpdir):
    """The outside tester's case: rm -rf LOGDIR under two real clients, never
    made again. The clients keep every record not acknowledged and exit 13;
    the server cannot write its report files, says so, prints the report
    with the loss and exits SERVER_INCOMPLETE, never 'every client
    finished'."""
    port = free_port()
    logs = str(tmpdir.join("logs"))
    perf = os.path.join(logs, rec.PERF_LOG)
    server = ServerProc(procs, logs, ["--port", str(port), "--clients", "2",
                                      "--quiet", "--idle-timeout", "0.3"])
    clients = [real_client(procs, tmpdir, port, name, duration=CLIENT_RUN_S,
                           extra=["--deliver-timeout", "3"]) for name in ("r1", "r2")]
    wait_until(lambda: all(len(_seqs_on_disk(perf, n)) >= 4 for n in ("r1", "r2")),
               timeout=40, what="both clients' first reports on disk")
    shutil.rmtree(logs)
    for name, client in zip(("r1", "r2"), clients):
        out, err = communicate(client, 60)
        assert client.returncode == exitcodes.CLIENT_SERVER, err[-2000:]
        assert "did not acknowledge" in client_log(tmpdir, name)
        kept = read_jsonl(str(tmpdir.join("client-logs",
                                          "client-%s.undelivered.jsonl" % name)))
        assert kept, "%s kept nothing although nothing more was acked" % name
    assert server.wait_exit(NOTICE_S + 10) == exitcodes.SERVER_INCOMPLETE, server.stderr()
    err = server.stderr()
    assert GONE in err and "cannot write the report %s" % os.path.join(
        logs, "report.json") in err
    text = " ".join(server.stdout().split())   # no file: the report on stdout
    assert "records acknowledged as on disk were lost" in text
    assert "every client finished" not in text and "exit code 5" in text
    assert "Traceback" not in err


def test_report_file_that_cannot_be_written_is_never_an_ok_exit(procs, tmpdir):
    """A clean run whose report.json cannot be written (a directory is in its
    way): SERVER_INCOMPLETE, said on stderr, and report.txt, written, says
    that code and why."""
    logs = str(tmpdir.join("logs"))
    server = _server(procs, logs)
    os.makedirs(os.path.join(logs, "report.json", "in-the-way"))
    client = FakeClient(server.port, "c")
    play_full_run(client, latency_sets(1, 5, 4))
    client.close()
    assert server.wait_exit() == exitcodes.SERVER_INCOMPLETE, server.stderr()
    assert "cannot write the report %s" % os.path.join(logs, "report.json") in \
        server.stderr()
    text = " ".join(server.report_text().split())
    assert "the report files report.json could not be written" in text
    assert "exit code 5" in text and "every client finished" not in text
    assert "Traceback" not in server.stderr()


def test_perf_jsonl_replaced_by_a_directory_holds_everything_and_the_report_says_it(
        procs, tmpdir):
    """perf.jsonl replaced (here by a directory, before anything was
    acknowledged) is noticed at the first batch: nothing is acknowledged,
    the file cannot be opened again, and at the end the report (written: the
    log dir itself is fine) counts the records not in perf.jsonl, with no
    acknowledged record lost, and the exit code is SERVER_INCOMPLETE."""
    from tests.faults.test_server_logdir_full import _run_one
    logs = str(tmpdir.join("logs"))
    server = _server(procs, logs)
    perf = os.path.join(logs, rec.PERF_LOG)
    os.unlink(perf)
    os.mkdir(perf)
    client = _run_one(server.port, "c", 1, wait_acks=False)
    assert server.wait_exit(NOTICE_S + 10) == exitcodes.SERVER_INCOMPLETE, server.stderr()
    assert not client.got(P.ACK)
    assert "replaced by another file" in server.stderr()
    warnings = " ".join(server.report()["run"]["server_warnings"])
    assert re.search(r"\b%d records received are not in %s" % (client.seq, re.escape(perf)),
                     warnings), warnings
    assert "acknowledged as on disk were lost" not in warnings
    assert "Traceback" not in server.stderr()


#: Run in the server before its main: the first time the report files are
#: written (after the last batch: every record is on disk and acknowledged),
#: perf.jsonl is removed, replaced by a copy (another inode, the same bytes) or
#: cut (the same inode), as an operator's rm, cp+mv or truncate would do then.
_AT_THE_REPORT = '''
import os, shutil
from diskbench import report as _report
_write_all, _done = _report.write_all, []

def _write_all_after_a_change(log_dir, rep, *args, **kw):
    if not _done:
        _done.append(1)
        perf = os.path.join(log_dir, "perf.jsonl")
        how = %r
        if how == "removed":
            os.unlink(perf)
        elif how == "replaced":
            shutil.copyfile(perf, perf + ".copy")
            os.rename(perf + ".copy", perf)
        else:
            with open(perf, "r+b") as f:
                f.truncate(os.path.getsize(perf) // 2)
    return _write_all(log_dir, rep, *args, **kw)
_report.write_all = _write_all_after_a_change
'''
#: What the server says of each change.
CHANGED = {"removed": "removed or moved away", "replaced": "replaced by another file",
           "cut": "cut to "}


@pytest.mark.parametrize("how", sorted(CHANGED))
def test_perf_jsonl_changed_while_the_report_is_written_is_said_and_never_exit_0(
        procs, tmpdir, how):
    """A clean run whose perf.jsonl is removed, replaced or cut after the last
    batch, while the report is being written: nothing acks or writes after
    that, so only the end's check sees it. The server says so in one line,
    the report (rewritten) says it with exit code 5, and it exits
    SERVER_INCOMPLETE, never 'every client finished'."""
    logs = str(tmpdir.join("logs"))
    perf = os.path.join(logs, rec.PERF_LOG)
    server = ServerProc(PatchedServer(procs, _AT_THE_REPORT % how), logs,
                        ["--clients", "1", "--quiet", "--idle-timeout", "0.3"])
    client = FakeClient(server.port, "c")
    play_full_run(client, latency_sets(1, 5, 4))
    assert client.got(P.ACK)
    client.close()
    assert server.wait_exit() == exitcodes.SERVER_INCOMPLETE, server.stderr()
    err = server.stderr()
    said = [line for line in err.splitlines() if "no longer the file" in line]
    assert len(said) == 1 and "%s (%s" % (perf, CHANGED[how]) in said[0], err
    assert "leave the log dir alone until the server has exited" in said[0]
    rep = server.report()
    assert rep["run"]["exit_code"] == exitcodes.SERVER_INCOMPLETE
    assert any("%s (%s" % (perf, CHANGED[how]) in w
               for w in rep["run"]["server_warnings"]), rep["run"]["server_warnings"]
    text = " ".join(server.report_text().split())
    assert "exit code 5" in text and "every client finished" not in text
    assert "Traceback" not in err
