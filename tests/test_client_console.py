"""The client's console on a real terminal (tmux): one progress line updated
in place, cleared before the closing line, which gives the report's figures."""
import os
import re

import pytest

from diskbench import exitcodes
from tests.helpers import wait_until
from tests.test_client_runs import client_args, start_server
from tests.test_server_console import TMUX, Pane

PROGRESS_RE = re.compile(r"\d+ s of 4 s \(\d+ s left\): [\d.]+ MiB/s now, [\d.]+ MiB "
                         r"written, \d+ rollovers")


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed (apt-get install tmux)")
def test_client_progress_line_updates_in_place_on_a_terminal(procs, tmpdir):
    slog = str(tmpdir.join("server-logs"))
    data = str(tmpdir.mkdir("data"))
    server, port = start_server(procs, slog, "--clients", "1")
    args = client_args(tmpdir, port, "tty", data, duration=4)[2:]  # without -m ...
    pane = Pane(tmpdir, args, module="diskbench.client")
    try:
        seen, counts = [], []

        def progress_rows():
            rows = [line for line in pane.lines() if PROGRESS_RE.search(line)]
            counts.append(len(rows))
            if rows and (not seen or rows[-1] != seen[-1]):
                seen.append(rows[-1])
            return len(seen) >= 3
        wait_until(progress_rows, 20, interval=0.1, what="the progress line to change")
        # one line rewritten in place: it changed 3 times, yet never more than one
        # progress line was on the screen (a scrolling one would pile up)
        assert max(counts) == 1, (counts, seen)
        wait_until(pane.dead, 30, what="the client to exit")
        text = pane.tmux("capture-pane", "-p", "-J", "-t", "t")  # -J: unwrapped
        assert not PROGRESS_RE.search(text), "the progress line was not cleared: %r" % text
        line = [ln for ln in text.split("\n") if "stop (duration)" in ln][0]
        assert "throughput (wall)" in line and "in write+fsync calls" in line
        assert "exit code %d" % exitcodes.OK in line
        # rollovers go to the client log only: never one on the terminal (the
        # whole scrollback, -S -), though the log shows the run had many
        history = pane.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "t")
        assert not re.search(r"rollover: file \d+ closed", history), history
        with open(str(tmpdir.join("logs", "client-tty.log"))) as f:
            assert len(re.findall(r"rollover: file \d+ closed", f.read())) >= 2
    finally:
        pane.close()
    assert os.listdir(data) == []
