"""Trust, round 3 (issue 25), the file bullets: files we read come back hostile,
CSV cells that a spreadsheet would run, peers that hold the control socket, and
words the launcher hands to a remote shell.

Real files, the real report CLI, a real server's control.sock with real silent and
slow peers, and the real launcher through a fake ssh that runs the remote command
with ``sh -c`` as sshd's far side would.
"""
import csv
import io
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from diskbench import exitcodes, launch
from diskbench import protocol as P
from diskbench.compat import PY2, monotonic
from diskbench.report import csvout
from diskbench.server import control
from tests.helpers import REPO, communicate, wait_until
from tests.report_runs import Crafted, by_client, load_report, run_report
from tests.test_control import NOBODY, _request, _server, ctl
from tests.test_control import open_dir  # noqa: F401 (a fixture)
from tests.test_launch import TAG_VAR, fake_ssh_dir, tag, write_hosts  # noqa: F401 (fixture)


# --- spreadsheet-safe CSV ------------------------------------------------------------------
def _read_csv(path):
    if PY2:
        with open(path, "rb") as f:
            return [dict((k, v.decode("utf-8")) for k, v in row.items())
                    for row in csv.DictReader(f)]
    with io.open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


#: Client text that a spreadsheet would run as a formula (each rule's first character).
HOSTILE = ("=HYPERLINK(\"http://x\",\"y\")", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)")


def test_csv_text_cells_that_start_a_formula_are_neutralised_numbers_stay_numbers(
        procs, tmpdir):
    """Every text cell of clients.csv and timeseries.csv that a client chose (name,
    host, directory, fs, python, os) and that begins with = + - @ is written with a
    single quote in front (OWASP), so a spreadsheet shows it as text; a negative
    number (a clock offset) is still written as a number."""
    run = Crafted(str(tmpdir.join("csv")))
    for text in HOSTILE:
        run.client(text, text, 100, 0.004, intervals=2)
    hellos = [line for line in run.lines if '"hello"' in line]
    assert len(hellos) == len(HOSTILE)
    # every other free-text field of the hello: a hostile string each
    assert all(line.count('"directory": "/mnt/test"') == 1 for line in hellos)
    run.lines = [line.replace('"directory": "/mnt/test"', '"directory": "=A1"')
                 .replace('"fs_type": "ext4"', '"fs_type": "+ext4"')
                 .replace('"python_version": "3.x"', '"python_version": "-3"')
                 .replace('"platform": "Linux-test"', '"platform": "@os"')
                 for line in run.lines]
    code, out, err = run_report(procs, run.save())
    assert code == exitcodes.OK, err
    entries = by_client(load_report(run.log_dir))
    assert sorted(entries) == sorted(HOSTILE)
    rows = _read_csv(os.path.join(run.log_dir, csvout.CLIENTS_CSV))
    text_columns = ("client", "host", "target_dir", "fs", "python", "os")
    for row in rows:
        e = entries[row["client"][1:]]
        for column in text_columns:
            assert row[column][:1] == csvout.FORMULA_GUARD, (column, row[column])
        assert [row[c][1:] for c in text_columns] == [
            e["client"], e["host"], e["target_dir"], e["fs"], e["python"], e["os"]]
        assert e["target_dir"] == "=A1" and e["fs"] == "+ext4"
        # the clock offset is negative here (received 10 ms after sent): a number
        assert e["clock_offset_s"] < 0
        assert row["clock_offset_s"].startswith("-")
        assert float(row["clock_offset_s"]) == e["clock_offset_s"]
        for column, value in row.items():   # nothing else starts a formula
            assert column in text_columns or column == "clock_offset_s" or \
                not value.startswith(csvout.FORMULA_STARTS), (column, value)
    series = _read_csv(os.path.join(run.log_dir, csvout.TIMESERIES_CSV))
    assert sorted(set(r["client"] for r in series)) == sorted("'" + t for t in HOSTILE)
    for r in series:
        assert float(r["mib_s"]) > 0


def test_csv_tab_and_carriage_return_cells_are_neutralised(tmpdir):
    """A text cell beginning with a tab or a carriage return is neutralised too
    (the wire refuses both in names, so this writes the CSV directly); a negative
    number in the same row is written as a number."""
    path = str(tmpdir.join("ts.csv"))
    row = dict((c, -1.5) for c in csvout.TIMESERIES_COLUMNS)
    rows = [dict(row, client="\t=1+1"), dict(row, client="\r=1+1")]
    csvout.write_timeseries(path, rows)
    got = _read_csv(path)
    assert [r["client"] for r in got] == ["'\t=1+1", "'\r=1+1"]
    assert all(r["mib_s"] == "-1.5" for r in got)


# --- no text reaches a remote shell unquoted -------------------------------------------
#: A stand-in Python on the "remote" host: passes the launcher's import check, then
#: writes the argv it was given (NUL-separated) and one variable, and exits.
FAKE_PYTHON = """#!/bin/sh
if [ "$1" = -c ]; then exit 0; fi
out="$ARGV_DIR/argv.$$"
for a in "$@"; do printf '%s\\0' "$a"; done > "$out"
printf '%s' "$PAYLOAD" > "$out.env"
"""
#: Shell syntax that would run something if any word reached the shell unquoted.
SHELL_PAYLOAD = "`touch {m}1` $(touch {m}2) '; touch {m}3; ' \"; touch {m}4; \" " \
    "x && touch {m}5 ;touch {m}6\ntouch {m}7 | touch {m}8 * $HOME \\`touch {m}9\\`"
#: The same, without white space (a hosts file splits its fields on it).
WORD_PAYLOAD = "`>{m}w1`$(>{m}w2)';>{m}w3;'\";>{m}w4;\"&&>{m}w5|>{m}w6*"


def _fake_python(directory):
    path = os.path.join(directory, "py")
    with open(path, "w") as f:
        f.write(FAKE_PYTHON)
    os.chmod(path, 0o755)
    return path


def test_launcher_quotes_every_word_it_sends_over_ssh(tmpdir, tag):
    """Every word the launcher hands to the remote shell (--python, a host's python=,
    dir= and name=, client flags such as paths and the secret file's, --remote-env
    values) arrives as the very same
    word, and none of backticks, $(), quotes, ;, &&, |, newlines or globs in them is
    run: also not in the line that says no Python was found."""
    marks = str(tmpdir.mkdir("marks"))   # the remote shells' working directory
    shell_text, word_text = SHELL_PAYLOAD.format(m="M"), WORD_PAYLOAD.format(m="M")
    argv_dir = str(tmpdir.mkdir("argv " + shell_text))
    py1 = _fake_python(str(tmpdir.mkdir("py1 " + shell_text)))
    py2 = _fake_python(str(tmpdir.mkdir("py2" + word_text)))
    dir1 = os.path.join(str(tmpdir), "d" + word_text)
    no_python = "/nonexistent/" + word_text
    hosts = write_hosts(tmpdir, "fake1 name=n1%s dir=%s\nfake2 name=n2 python=%s\n"
                        "fake3 name=n3 python=%s\n" % (word_text, dir1, py2, no_python))
    client_log = os.path.join(str(tmpdir), "clients " + shell_text)
    secret_file = os.path.join(str(tmpdir), "secret " + shell_text)
    client_flags = ["--duration", "1", "--log-dir", client_log, "--secret-file",
                    secret_file]
    logs = str(tmpdir.join("logs"))
    argv = [sys.executable, "-m", "diskbench.launch", "--hosts", hosts, "--port", "0",
            "--server-host", "127.0.0.1", "--log-dir", logs, "--python", py1,
            "--remote-env", "ARGV_DIR=" + argv_dir, "--remote-env", "PAYLOAD=" + shell_text,
            "--remote-env", "%s=%s" % (TAG_VAR, tag), "--server-grace", "0.5",
            "--start-timeout", "60", "--"] + client_flags + [str(tmpdir.join("default"))]
    env = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
    env[TAG_VAR] = tag
    env["PATH"] = fake_ssh_dir(tmpdir) + os.pathsep + env.get("PATH", "")
    # the remote shells run here: a relative `touch` would land among the marks
    proc = subprocess.Popen(argv, cwd=marks, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True,
                            preexec_fn=os.setsid)
    out, err = communicate(proc, 60)
    assert proc.returncode not in (None, exitcodes.INTERNAL), (out, err)
    assert "Traceback" not in out + err
    assert os.listdir(marks) == [], (os.listdir(marks), out, err)

    got = {}
    for name in os.listdir(argv_dir):
        if name.endswith(".env"):
            continue
        with open(os.path.join(argv_dir, name), "rb") as f:
            words = [w.decode("utf-8") for w in f.read().split(b"\0")[:-1]]
        with open(os.path.join(argv_dir, name + ".env"), "rb") as f:
            assert f.read().decode("utf-8") == shell_text
        got[words[words.index("--name") + 1]] = words
    assert sorted(got) == ["n1" + word_text, "n2"], (got, out, err)
    for name, directory in (("n1" + word_text, dir1), ("n2", str(tmpdir.join("default")))):
        words = got[name]
        assert words[:3] == ["-m", "diskbench.client", "--server"]
        assert words[3].startswith("127.0.0.1:")
        assert words[4:] == client_flags + ["--name", name, directory]
    # fake3: no Python there; the line saying so names it as it was written
    assert launch.REMOTE_NOT_FOUND != 0
    assert "(tried %s)" % no_python in out + err, (out, err)


# --- the operator is never locked out ------------------------------------------------------
class SlowPeer(object):
    """A peer on control.sock that sends one byte of a request every ``every`` seconds
    and never the newline (slowloris); ``closed_after`` is how long the server let it
    stay, from its connect."""

    def __init__(self, path, every):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.connected = monotonic()
        self.every = every
        self.closed_after = None
        self.thread = threading.Thread(target=self._trickle)
        self.thread.daemon = True
        self.thread.start()

    def _trickle(self):
        self.sock.settimeout(self.every)
        try:
            while monotonic() - self.connected < 60:
                self.sock.sendall(b"{")
                try:
                    if not self.sock.recv(4096):
                        break           # the server closed it
                except socket.timeout:
                    pass
        except (socket.error, OSError):
            pass                        # reset by the server: closed too
        self.closed_after = monotonic() - self.connected
        self.sock.close()


def _silent(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return sock


#: A peer of another user (nobody) that connects and says nothing: prints how long
#: the server took to answer it, and the answer.
_SILENT_AS_NOBODY = """
import os, socket, sys, time
# the codecs loaded now: nobody may not read the interpreter's files
u"".encode("ascii"), b"".decode("utf-8")
os.setgid(%d)
os.setuid(%d)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(30)
s.connect(sys.argv[1])
t0 = time.time()
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
sys.stdout.write("%%.3f %%s" %% (time.time() - t0, data.decode("utf-8")))
""" % (NOBODY, NOBODY)


@pytest.mark.skipif(os.geteuid() != 0, reason="a peer of another user needs root")
def test_ctl_answers_within_a_second_past_silent_slow_and_foreign_peers(procs, open_dir):
    """Silent peers, slowloris peers (a byte every quarter of REQUEST_S: a per-read
    timeout would never fire) and a silent peer of another user on control.sock do
    not delay `ctl list` by more than REQUEST_S (1 s); each slow or silent peer is cut
    off REQUEST_S after its connect, and the foreign one is refused at once, before it
    says anything (its uid is checked before reading)."""
    logs = os.path.join(open_dir, "logs")
    server = _server(procs, logs)
    os.chmod(logs, 0o755)
    path = os.path.join(logs, control.SOCKET_NAME)
    t0 = monotonic()
    code, out, err = ctl(procs, logs, "list")
    alone = monotonic() - t0                  # ctl's own start-up on this machine
    assert code == exitcodes.OK, err

    os.chmod(path, 0o666)                     # so that another user can connect at all
    foreign = procs.start(["-c", _SILENT_AS_NOBODY, path])
    silent = [_silent(path) for _ in range(3)]
    slow = [SlowPeer(path, control.REQUEST_S / 4) for _ in range(3)]
    t0 = monotonic()
    code, out, err = ctl(procs, logs, "list")
    took = monotonic() - t0
    assert code == exitcodes.OK and "no client has said hello yet" in out, err
    assert took < alone + control.REQUEST_S, (took, alone)

    # every slow peer is cut off by the whole-request deadline, not kept by its bytes
    bound = control.REQUEST_S + control.POLL_S + 1.0      # + a loaded machine's delay
    wait_until(lambda: all(p.closed_after is not None for p in slow), 3 * bound,
               what="the slow peers to be closed")
    assert all(control.REQUEST_S * 0.9 <= p.closed_after < bound for p in slow), \
        [p.closed_after for p in slow]
    for sock in silent:
        sock.settimeout(bound)
        assert sock.recv(4096) == b""         # closed, without an answer
        sock.close()
    out, err = communicate(foreign, 30)
    assert foreign.returncode == 0, err
    waited, answer = out.split(" ", 1)
    assert float(waited) < control.REQUEST_S, out
    assert P.decode(answer.splitlines()[0], P.CTL_REPLY).code == exitcodes.CTL_REFUSED
    assert "serves uid 0 (the server's user) only" in answer
    wait_until(lambda: server.server_log().count(
        "no whole request within %g s" % control.REQUEST_S) >= len(silent + slow), 10,
        what="each silent and slow peer's cut-off logged")
    assert server.proc.poll() is None


def test_control_requests_beyond_the_cap_are_refused_at_once_and_slots_come_back(
        procs, tmpdir):
    """At most MAX_REQUESTS control requests are served at once: one more connection
    is refused "busy" at once (never a thread more); the silent ones holding the slots
    are cut off after REQUEST_S, and ctl is served again."""
    logs = str(tmpdir.join("logs"))
    server = _server(procs, logs)
    path = os.path.join(logs, control.SOCKET_NAME)
    holders = [_silent(path) for _ in range(control.MAX_REQUESTS)]
    extra = _silent(path)
    extra.settimeout(control.REQUEST_S / 2)   # answered before the holders are cut off
    done = P.decode(extra.recv(4096).splitlines()[0], P.CTL_REPLY)
    assert done.code == exitcodes.CTL_REFUSED and "busy" in done.text
    extra.close()
    for sock in holders:
        sock.settimeout(control.REQUEST_S + 10)
        assert sock.recv(4096) == b""
        sock.close()
    code, out, err = ctl(procs, logs, "list")
    assert code == exitcodes.OK, err
    wait_until(lambda: "refused a connection: %d requests in flight" % control.MAX_REQUESTS
               in server.server_log(), 10, what="the busy refusal logged")


def test_ctl_requests_signed_too_long_ago_or_ahead_are_refused(procs, tmpdir):
    """A signed request is served only within MAX_AGE_S of the server's clock in
    both directions: one signed long ago (a replay) and one signed ahead (kept for
    later, or a clock set wrong) are refused with exit 9's code; a fresh one is served."""
    secret = "trust-files-secret"
    secret_file = tmpdir.join("secret")
    secret_file.write(secret + "\n")
    logs = str(tmpdir.join("logs"))
    server = _server(procs, logs, "--secret-file", str(secret_file))
    for shift, said in ((-2 * control.MAX_AGE_S, "s ago"),
                        (2 * control.MAX_AGE_S, "s ahead of the server's clock")):
        old = P.make(P.CTL_LIST, P.CTL_REQUEST, ts=time.time() + shift)
        done = _request(logs, P.encode(old, secret))[-1]
        assert done.code == exitcodes.CTL_REFUSED and said in done.text, done.text
    fresh = P.make(P.CTL_LIST, P.CTL_REQUEST, ts=time.time())
    done = _request(logs, P.encode(fresh, secret))[-1]
    assert done.code == exitcodes.OK, done.text
    assert server.proc.poll() is None
