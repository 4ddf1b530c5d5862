# -*- coding: utf-8 -*-
"""A log dir whose path is not ASCII (``/srv/résultats``), on both Pythons.

On Python 2.7 a path from the command line is bytes: joined to or formatted
with unicode text, or encoded as if it were text, it is decoded as ASCII and
raises. Real processes: the server binds its control socket there, ctl
answers through it, a client runs and logs there, the report is written
and ``compare`` reads the run back; the launcher's run over a fake ssh is in
tests/test_launch.py.
"""
import os

from diskbench import exitcodes
from diskbench.compat import PY2
from tests.helpers import communicate, wait_until
from tests.test_client_runs import CLIENT, FAST, start_server

#: How long the server may take from its listening line to its control socket.
CONTROL_SOCKET_WAIT_S = 15
#: A whole short run (one client, 2 s of writing), and each command around it.
RUN_TIMEOUT_S = 60


def non_ascii(base, name):
    """``base``/``name`` as a path of the interpreter's own kind (2.7: UTF-8
    bytes, as argv gives them)."""
    return os.path.join(str(base), name.encode("utf-8") if PY2 else name)


def test_non_ascii_log_dir_server_ctl_client_report_and_compare(procs, tmpdir):
    slog = non_ascii(tmpdir, u"résultats-serveur")
    clog = non_ascii(tmpdir, u"journaux-client-ü")
    data = str(tmpdir.mkdir("data"))
    server, port = start_server(procs, slog, "--clients", "1", "--duration", "2",
                                "--chunk-mb", "10", "--file-mb", "20")
    sock = os.path.join(slog, b"control.sock" if PY2 else "control.sock")

    def control_up():
        assert server.poll() is None, "server died: %s" % communicate(server, 5)[1]
        return os.path.exists(sock)
    wait_until(control_up, CONTROL_SOCKET_WAIT_S, what="the server's control socket")
    code, out, err = procs.run(["-m", "diskbench.server", "ctl", "--log-dir", slog, "list"],
                               timeout=RUN_TIMEOUT_S)
    assert code == exitcodes.OK and "Traceback" not in err, (out, err)
    code, out, err = procs.run(CLIENT + FAST + [
        "--server", "127.0.0.1:%d" % port, "--name", "ü-client", "--force",
        "--log-dir", clog, data], timeout=RUN_TIMEOUT_S)
    assert code == exitcodes.OK and "Traceback" not in err, err
    out, err = communicate(server, RUN_TIMEOUT_S)
    assert server.returncode == exitcodes.OK and "Traceback" not in err, err
    assert os.path.exists(os.path.join(slog, b"report.json" if PY2 else "report.json"))
    code, out, err = procs.run(["-m", "diskbench.report", "compare", slog, slog, "--out",
                                non_ascii(tmpdir, u"compare-é.html")], timeout=RUN_TIMEOUT_S)
    assert code == exitcodes.OK and "Traceback" not in err, err
    assert u"résultats-serveur" in out, out
