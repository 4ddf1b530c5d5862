"""A wall clock that steps while a run lasts (an NTP step, a resumed VM,
``date -s``): on a real client, every timestamp keeps the clock it had at the
start (diskbench/runclock.py), the step is said once, and the report's figures
and verdict are those of a run without it.

The step is real to the processes: a sitecustomize moves ``time.time`` (and
``time_ns``) by STEP_BY seconds in every process of the client from the moment
a trigger file exists, which the test creates once the run has started. The
monotonic clock is left alone, as the kernel does.
"""
import json
import os

import pytest

from diskbench import exitcodes
from diskbench import protocol as P
from tests.helpers import communicate, env_for_child, wait_until
from tests.test_client_runs import client_args, of, records, start_server

#: The client's planned run (s): long enough to have intervals both sides of the step.
DURATION_S = 4.0
#: The step: an hour, either way.
STEPS = [-3600.0, 3600.0]

STEP_SITECUSTOMIZE = '''"""Test clock step (tests/faults/test_clock_step.py)."""
import os
import time

_trigger = os.environ.get("DISKBENCH_TEST_STEP_FILE")
if _trigger:
    _by = float(os.environ["DISKBENCH_TEST_STEP_BY"])
    _real = time.time

    def _stepped():
        return _real() + (_by if os.path.exists(_trigger) else 0.0)
    time.time = _stepped
    if hasattr(time, "time_ns"):
        time.time_ns = lambda: int(_stepped() * 1e9)
'''


def step_env(tmpdir, by):
    where = tmpdir.mkdir("site")
    where.join("sitecustomize.py").write(STEP_SITECUSTOMIZE)
    trigger = str(tmpdir.join("step-now"))
    env = {"PYTHONPATH": os.pathsep.join([str(where), env_for_child()["PYTHONPATH"]]),
           "DISKBENCH_TEST_STEP_FILE": trigger, "DISKBENCH_TEST_STEP_BY": repr(by)}
    return env, trigger


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
