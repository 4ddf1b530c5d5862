"""The server's own log dir fills up (a 2 MiB tmpfs, root only): it keeps serving
and acknowledging, warns once, and still tries the report (json and txt each on
its own; on stdout when neither fits)."""
import errno
import json
import os
import subprocess

import pytest

from diskbench import exitcodes
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


def _run_one(port, name, seed):
    client = FakeClient(port, name)
    play_full_run(client, latency_sets(seed, 30, 5), wait_go=False)
    client.close()


def test_log_dir_full_server_keeps_serving_and_prints_the_report(procs, small_tmpfs):
    logs = os.path.join(small_tmpfs, "logs")
    server = ServerProc(procs, logs, ["--clients", "2", "--quiet", "--idle-timeout", "0.3"])
    _fill(small_tmpfs)
    _run_one(server.port, "first", 1)      # every message still acknowledged
    _run_one(server.port, "second", 2)
    assert server.wait_exit() == exitcodes.OK, server.stderr()
    err = server.stderr()
    assert err.count("warning: cannot write to %s" % logs) == 1
    assert "No space left on device" in err
    assert "cannot write the report %s" % os.path.join(logs, "report.json") in err
    out = server.stdout()                  # neither file fits: the report is printed
    assert "diskbench report" in out and "client first: FINISHED" in out
    assert "server warning: writing to the log dir" in out and "lost" in out
    assert "Traceback" not in err
    assert not [n for n in os.listdir(logs) if ".tmp." in n]   # no temp files left


def test_log_dir_full_then_freed_report_says_what_was_lost(procs, small_tmpfs):
    logs = os.path.join(small_tmpfs, "logs")
    server = ServerProc(procs, logs, ["--clients", "2", "--quiet", "--idle-timeout", "0.3"])
    filler = _fill(small_tmpfs)
    _run_one(server.port, "first", 1)
    os.unlink(filler)                      # space again before the run ends
    _run_one(server.port, "second", 2)
    assert server.wait_exit() == exitcodes.OK, server.stderr()
    rep = server.report()
    warning = " ".join(rep["run"]["server_warnings"])
    assert "No space left on device" in warning and "lines of perf.jsonl" in warning
    assert "every figure in this report comes from memory" in warning
    by_name = dict((c["client"], c) for c in rep["clients"])
    assert by_name["first"]["perf_interval_count"] == 30    # complete in memory
    assert by_name["second"]["perf_interval_count"] == 30
    with open(os.path.join(logs, "perf.jsonl")) as f:       # whole lines only
        lines = [json.loads(line) for line in f]
    assert len(lines) >= 30 + 1                              # all of "second" at least
    assert os.path.exists(os.path.join(logs, "report.txt"))
