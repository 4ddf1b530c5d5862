"""A wall clock that steps while a run lasts (an NTP step, a resumed VM,
``date -s``): on a real client or the real server, every timestamp keeps the
clock it had at the start (diskbench/runclock.py), the step is said once, and
the report's figures and verdict are those of a run without it.

The step is real to the processes: the netns tests' sitecustomize
(``netns.clock_shift_env``) moves ``time.time`` (and ``time_ns``) in every
process from the moment a trigger file exists, which the test creates once the
run has started. The monotonic clock is left alone, as the kernel does.
"""
import json
import os
import time

import pytest

from diskbench import exitcodes
from diskbench.compat import PY2
from diskbench import protocol as P
from tests import netns
from tests.helpers import communicate, wait_until
from tests.test_client_runs import client_args, of, records, start_server

#: The client's planned run (s): long enough to have intervals both sides of the step.
DURATION_S = 4.0
#: The step: an hour, either way.
STEPS = [-3600.0, 3600.0]

def step_env(tmpdir, by):
    """(environment, trigger path): the clock of a process started with it
    steps ``by`` seconds once the trigger file exists."""
    trigger = str(tmpdir.join("step-now"))
    return netns.clock_shift_env(tmpdir.mkdir("site"), by, step_file=trigger), trigger


@pytest.mark.parametrize("by", STEPS)
def test_client_clock_step_mid_run_moves_no_figure_and_is_said(procs, tmpdir, by):
    """A client whose wall clock steps an hour mid-run finishes with exit 0;
    its perf intervals stay in order and inside the run on the server's
    clock, the aggregate window is the run's length, not an hour, and the
    client says the step once (stderr, and a note in the report)."""
    slog = str(tmpdir.join("server-logs"))
    data = str(tmpdir.mkdir("data"))
    server, port = start_server(procs, slog, "--clients", "1")
    env, trigger = step_env(tmpdir, by)
    proc = procs.start(client_args(tmpdir, port, "stepper", data, duration=DURATION_S),
                       env=env)
    wait_until(lambda: of(records(slog), P.PERF, "stepper"), 30, what="a first perf interval")
    open(trigger, "w").close()             # the clock steps now, in every process
    out, err = communicate(proc, 60)
    assert proc.returncode == exitcodes.OK, err
    assert err.count("wall clock stepped 3600.0 s") == 1, err
    communicate(server, 60)
    with open(os.path.join(slog, "report.json")) as f:
        rep = json.load(f)
    client = rep["clients"][0]
    assert client["state"] == "finished"
    assert any("wall clock stepped" in n for n in client["notices"]), client["notices"]
    perfs = of(records(slog), P.PERF, "stepper")
    assert len(perfs) >= 2
    starts = [m.t_start for m in perfs]
    assert starts == sorted(starts)
    # the client's intervals span its run, not its run and an hour
    assert perfs[-1].t_end - perfs[0].t_start < DURATION_S + 2
    assert rep["aggregate"]["period_s"] < DURATION_S + 2, rep["aggregate"]
    assert abs(client["clock_offset_s"] or 0.0) < 1.0


@pytest.mark.parametrize("by", STEPS)
def test_server_clock_step_mid_run_moves_no_figure_and_is_said(procs, tmpdir, by):
    """The server's wall clock stepping an hour mid-run moves none of its
    receive times: the run's length, the aggregate window and the client's
    clock offset are those of a run without the step, the client finishes,
    and the report says the step once."""
    if PY2 and by < 0:
        pytest.skip("Python 2.7's timed waits (threading.Condition.wait) run on the wall "
                    "clock: one in progress when it steps back lasts the step longer")
    slog = str(tmpdir.join("server-logs"))
    data = str(tmpdir.mkdir("data"))
    env, trigger = step_env(tmpdir, by)
    server, port = start_server(procs, slog, "--clients", "1", env=env)
    proc = procs.start(client_args(tmpdir, port, "steady", data, duration=DURATION_S))
    wait_until(lambda: of(records(slog), P.PERF, "steady"), 30, what="a first perf interval")
    open(trigger, "w").close()
    out, err = communicate(proc, 60)
    assert proc.returncode == exitcodes.OK, err
    communicate(server, 60)
    with open(os.path.join(slog, "report.json")) as f:
        rep = json.load(f)
    client = rep["clients"][0]
    assert client["state"] == "finished"
    assert rep["aggregate"]["period_s"] < DURATION_S + 2, rep["aggregate"]
    assert abs(client["clock_offset_s"] or 0.0) < 1.0, client["clock_offset_s"]
    assert rep["run"]["run_duration_s"] < 60, rep["run"]
    # every record's receive time lies within the run, on one unstepped clock
    with open(os.path.join(slog, "perf.jsonl")) as f:
        received = [json.loads(line)["recv_ts"] for line in f if line.strip()]
    start, end = rep["run"]["start_ts"], rep["run"]["end_ts"]
    assert all(start - 1 <= ts <= end + 1 for ts in received), (start, end, received)
    assert sum("wall clock stepped" in w for w in rep["run"]["server_warnings"]) == 1
    with open(os.path.join(slog, "report.txt")) as f:
        text = f.read()
    assert text.count("server's wall clock stepped 3600.0 s") == 1, text


#: A clock this far behind the server's reads before 1970 (about 63 years back).
BEFORE_1970_S = -2e9
#: A refusal at start must come well before the client's --connect-timeout (5 s in
#: client_args) would have run out waiting for an answer that never comes.
REFUSAL_S = 4.0


def test_client_whose_clock_is_before_1970_says_so_at_start(procs, tmpdir):
    """A host whose clock reads before 1970 (no message can carry such a time: the
    server drops its hello without a word) is refused by the client itself at start,
    in one line naming the fix and exit 13, at once: it used to say hello, hear
    nothing, and after --connect-timeout blame the server ("not a diskbench server,
    or a stuck one; check --server"). The server sees no stranger's line, and the
    run goes on with the client whose clock is right."""
    slog = str(tmpdir.join("server-logs"))
    data = str(tmpdir.mkdir("data"))
    server, port = start_server(procs, slog, "--clients", "1")
    env = netns.clock_shift_env(tmpdir.mkdir("site"), BEFORE_1970_S)
    began = time.time()
    proc = procs.start(client_args(tmpdir, port, "past", data), env=env)
    out, err = communicate(proc, 60)
    took = time.time() - began
    assert proc.returncode == exitcodes.CLIENT_SERVER, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "clock says" in lines[0] and "before 1970" in lines[0] and \
        "set the clock" in lines[0], err
    assert "not a diskbench server" not in err and "Traceback" not in err
    assert took < REFUSAL_S, took
    out, err = communicate(procs.start(client_args(tmpdir, port, "now", data)), 60)
    communicate(server, 60)
    with open(os.path.join(slog, "report.json")) as f:
        rep = json.load(f)
    assert [(c["client"], c["state"]) for c in rep["clients"]] == [("now", "finished")]
    assert not rep["rejected_messages"], rep["rejected_messages"]
