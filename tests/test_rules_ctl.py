"""The control socket's time window, in BOTH directions: a signed request made
more than channel.MAX_AGE_S ago (a captured one, replayed) or dated more than
that ahead (one made on a clock set forward, kept for later) is refused and
does nothing; one inside the window is served.

Against a real server's control.sock, with requests dated relative to now
(DELIVERY_MARGIN_S inside and outside each bound), and against a control
server whose clock is fixed, at each bound exactly and just past it.
"""
import os
import time

import pytest

from diskbench import exitcodes
from diskbench import protocol as P
from diskbench.protocol import ctl as channel
from diskbench.server import control
from diskbench.server import registry as reg
from tests.helpers import ctl_request, wait_until
from tests.test_server_fakes import ServerProc

SECRET = "rules-ctl-secret"
#: How long a request may take from being dated here to being checked by the
#: server on a loaded 2-core machine (milliseconds when quiet): requests are
#: dated this far inside or outside each bound.
DELIVERY_MARGIN_S = channel.MAX_AGE_S / 2
#: Past a bound by this much in the fixed-clock checks ("just past").
JUST_PAST_S = 1e-3
#: The socket answers within this (control.IO_TIMEOUT_S per line, with room).
ANSWER_S = 2 * control.IO_TIMEOUT_S
#: The fixed clock of the in-process control server.
NOW = 1765000000.0


def _dated(type_, ts):
    return P.encode(P.make(type_, P.CTL_REQUEST, ts=ts), SECRET)


def _done(log_dir, type_, ts):
    return ctl_request(log_dir, _dated(type_, ts), ANSWER_S)[-1]


def test_ctl_window_refuses_old_and_future_requests_on_a_real_server(procs, tmpdir):
    """A real server with a secret: correctly signed requests dated
    MAX_AGE_S - margin ago or ahead are served; dated MAX_AGE_S + margin ago
    or ahead they are refused naming the replay, and a refused `end` from the
    future does not end the run."""
    secret_file = tmpdir.join("secret")
    secret_file.write(SECRET + "\n")
    logs = str(tmpdir.join("logs"))
    server = ServerProc(procs, logs, ["--quiet", "--secret-file", str(secret_file)])
    wait_until(lambda: os.path.exists(channel.socket_path(logs)), 20,
               what="the control socket")
    inside = channel.MAX_AGE_S - DELIVERY_MARGIN_S
    outside = channel.MAX_AGE_S + DELIVERY_MARGIN_S
    for sign, when in ((-1, "ago"), (+1, "ahead")):
        done = _done(logs, P.CTL_LIST, time.time() + sign * inside)
        assert done.code == exitcodes.OK, (when, done.text)
        done = _done(logs, P.CTL_END, time.time() + sign * outside)
        assert done.code == exitcodes.CTL_REFUSED, (when, done.text)
        assert "replayed" in done.text
        assert server.proc.poll() is None      # the refused end did nothing
    log = wait_until(lambda: server.server_log().count("request signed") >= 2 and
                     server.server_log(), 10, what="both refusals logged")
    assert log.count("refused a end request signed") == 2
    done = _done(logs, P.CTL_END, time.time())
    assert done.code == exitcodes.OK, done.text
    assert server.wait_exit() == exitcodes.SERVER_INTERRUPTED


@pytest.fixture
def fixed_clock_control(tmpdir):
    logs = str(tmpdir.mkdir("logs"))
    ends = []
    server = control.ControlServer(logs, SECRET, reg.Registry(), lambda name: None,
                                   lambda: ends.append(1) or "ending", "run-x",
                                   clock=lambda: NOW)
    server.open()
    yield logs, ends
    server.close()


@pytest.mark.parametrize("offset,served", [
    (-channel.MAX_AGE_S, True),
    (-channel.MAX_AGE_S - JUST_PAST_S, False),
    (channel.MAX_AGE_S, True),
    (channel.MAX_AGE_S + JUST_PAST_S, False),
    (0.0, True),
])
def test_ctl_window_at_and_just_past_each_bound(fixed_clock_control, offset, served):
    """With the server's clock fixed: a request dated exactly MAX_AGE_S ago or
    ahead is served, one a millisecond further either way is refused (and an
    `end` so refused does not end the run)."""
    logs, ends = fixed_clock_control
    done = _done(logs, P.CTL_END, NOW + offset)
    assert done.code == (exitcodes.OK if served else exitcodes.CTL_REFUSED), done.text
    assert ends == ([1] if served else [])
