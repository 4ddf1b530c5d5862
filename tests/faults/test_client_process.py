"""Process faults on the client: real processes, real signals, real TCP.

- kill -9 of the client's main process: the real server (heartbeat timeout
  1.5 s, client heartbeat every 0.5 s) reports it went away within 3 heartbeat
  intervals; the orphaned writer, stats and heartbeat processes notice their
  parent is gone and exit, the writer removing its data files: nothing of the
  client's process group and no data file is left.
- kill -9 of the stats or heartbeat child (the writer's case is in
  test_client_runs): the main process notices within about a second, sends an
  ERROR naming the child, stops cleanly and exits CLIENT_CHILD_DIED.
- a child that cannot be started (the open-file limit reached for real, right
  before its pipe is made): one line naming the limit to raise, the children
  already started stopped, their files removed, CLIENT_CHILD_DIED, no
  traceback and no client left running.
"""
import os
import re
import signal
import time

import pytest

from diskbench import exitcodes
from diskbench import protocol as P
from tests.helpers import communicate, wait_until
from tests.test_client_fakeserver import FakeServer
from tests.test_client_runs import client_args, client_log, of, records, start_server

HEARTBEAT_S = 0.5
CHILDREN = re.compile(r"children started: writer pid (\d+), stats pid (\d+), "
                      r"heartbeat pid (\d+)")


def live_group_members(pgid):
    """PIDs (not zombies) whose process group is ``pgid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (IOError, OSError):
            continue  # gone while we looked
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            out.append(int(entry))
    return out


def children_of(tmpdir, name):
    m = wait_until(lambda: CHILDREN.search(client_log(tmpdir, name)), 20,
                   what="the client's children pids in its log")
    return dict(zip(("writer", "stats", "heartbeat"), map(int, m.groups())))


def test_kill_9_client_main_went_away_and_nothing_left_behind(procs, tmpdir):
    slog = str(tmpdir.join("server-logs"))
    data = str(tmpdir.mkdir("data"))
    server, port = start_server(procs, slog, "--clients", "1", "--heartbeat-timeout",
                                str(3 * HEARTBEAT_S))
    client = procs.start(client_args(tmpdir, port, "doomed", data, duration=60))
    wait_until(lambda: of(records(slog), P.HEARTBEAT), 20, what="a heartbeat recorded")
    wait_until(lambda: os.listdir(data), 10, what="a data file")
    kids = children_of(tmpdir, "doomed")
    assert sorted(live_group_members(client.pid)) == sorted([client.pid] +
                                                            list(kids.values()))
    os.kill(client.pid, signal.SIGKILL)
    t_kill = time.time()
    client.wait()

    def went_away():
        with open(os.path.join(slog, "server.log")) as f:
            return "client doomed went away" in f.read()
    wait_until(went_away, 3 * HEARTBEAT_S + 0.5, what="the server to say went away")
    assert time.time() - t_kill <= 3 * HEARTBEAT_S + 0.5
    # the orphans exit on their own (nobody signals them) and clean up
    wait_until(lambda: not live_group_members(client.pid), 10,
               what="no process of the client left (had %s)" % kids)
    wait_until(lambda: os.listdir(data) == [], 5, what="no data file left")
    out, err = communicate(server, 30)  # --clients 1: the run is complete
    assert server.returncode == exitcodes.SERVER_INCOMPLETE, err


@pytest.mark.parametrize("role", ["stats", "heartbeat"])
def test_kill_9_of_a_child_main_stops_cleanly_exit_15(procs, tmpdir, role):
    fake = FakeServer()
    try:
        data = str(tmpdir.mkdir("data"))
        proc = procs.start(client_args(tmpdir, fake.port, "hurt", data, duration=60))
        wait_until(lambda: fake.of_type(P.START), 20, what="start")
        wait_until(lambda: os.listdir(data), 10, what="a data file")
        kids = children_of(tmpdir, "hurt")
        os.kill(kids[role], signal.SIGKILL)
        t_kill = time.time()
        error = wait_until(lambda: fake.of_type(P.ERROR), 3, what="the error")[0]
        assert time.time() - t_kill < 1.5  # noticed within about a second
        out, err = communicate(proc, 30)
        assert proc.returncode == exitcodes.CLIENT_CHILD_DIED, err
        assert "Traceback" not in err
        text = "%s process (pid %d) died unexpectedly (killed by signal 9)" % (
            role, kids[role])
        assert error.source == role and error.fatal and error.reason == text
        assert text in err
        stop = fake.of_type(P.STOP)[0]
        assert stop.reason == P.STOP_ERROR and stop.bytes_written > 0
        assert fake.of_type(P.BYE)
        assert os.listdir(data) == []
        assert not live_group_members(proc.pid)  # the writer and the other child too
    finally:
        fake.close()


#: Runs the real client with its open-file limit lowered, right before the
#: pipe of the child named by argv[1] is made, to its lowest free descriptor:
#: no descriptor can be made from then on (EMFILE, for real), so that child
#: cannot be started; those started before it run on.
NOFILE_CLIENT = """
import os, resource, sys
from diskbench.client import supervisor
role = sys.argv.pop(1)
spawn = supervisor.Supervisor._spawn
def spawn_at_the_limit(self, ctx, name, target, args):
    if name == role:
        lowest = os.dup(0)
        os.close(lowest)
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest, hard))
    return spawn(self, ctx, name, target, args)
supervisor.Supervisor._spawn = spawn_at_the_limit
from diskbench.client.__main__ import main
sys.exit(main(sys.argv[1:]))
"""
#: The whole client ends within this once a child cannot be started.
UNSTARTED_TIMEOUT_S = 40.0


@pytest.mark.parametrize("role", ["writer", "stats"])
def test_a_child_that_cannot_be_started_is_one_line_exit_15(procs, tmpdir, role):
    fake = FakeServer()
    try:
        data = str(tmpdir.mkdir("data"))
        args = client_args(tmpdir, fake.port, "nofd", data, duration=30)
        proc = procs.start(["-c", NOFILE_CLIENT, role] + args[2:],
                           env={"DISKBENCH_START_METHOD": "fork"})
        out, err = communicate(proc, UNSTARTED_TIMEOUT_S)
        assert proc.returncode == exitcodes.CLIENT_CHILD_DIED, err
        assert "Traceback" not in err
        text = ("cannot start the %s process (EMFILE: Too many open files); raise the "
                "open-file limit (ulimit -n)" % role)
        [line] = [ln for ln in err.splitlines() if ": stop (" in ln]
        assert "stop (error): " + text in line and "exit code 15" in line, line
        error = [e for e in fake.of_type(P.ERROR) if e.fatal]
        assert error and error[0].source == role and error[0].reason.startswith(text)
        assert fake.of_type(P.STOP)[0].reason == P.STOP_ERROR
        assert fake.of_type(P.BYE)
        assert os.listdir(data) == []
        assert not live_group_members(proc.pid)
    finally:
        fake.close()
