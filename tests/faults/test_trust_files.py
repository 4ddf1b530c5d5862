"""Trust, round 3 (issue 25), the file bullets: files we read come back hostile,
CSV cells that a spreadsheet would run, peers that hold the control socket, and
words the launcher hands to a remote shell.

Real files, the real report CLI, a real server's control.sock with real silent and
slow peers, and the real launcher through a fake ssh that runs the remote command
with ``sh -c`` as sshd's far side would.
"""
import csv
import io
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from diskbench import exitcodes, launchargs
from diskbench import protocol as P
from diskbench.compat import PY2, monotonic
from diskbench.report import compare as compare_mod
from diskbench.report import csvout, htmlout, rerender, write_all
from diskbench.report import series as series_mod
from diskbench.protocol import ctl as channel
from diskbench.server import control
from diskbench.server import ctl as ctl_command
from diskbench.report import build as build_mod
from diskbench.report import text as text_mod
from tests.helpers import REPO, Procs, communicate, ctl_request, wait_until
from tests.report_runs import Crafted, by_client, load_report, real_run, run_report
from tests.test_control import NOBODY, _server, ctl
from tests.test_control import open_dir  # noqa: F401 (a fixture)
from tests.test_launch import (TAG_VAR, fake_ssh_dir, summary_rows, tag,  # noqa: F401
                               write_hosts)


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
    assert summary_rows(out)["fake3"][0] == str(launchargs.REMOTE_NOT_FOUND), out
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
    path = os.path.join(logs, channel.SOCKET_NAME)
    alone = 0.0                               # ctl's own start-up on this machine
    for _ in range(2):
        t0 = monotonic()
        code, out, err = ctl(procs, logs, "list")
        alone = max(alone, monotonic() - t0)
        assert code == exitcodes.OK, err

    os.chmod(path, 0o666)                     # so that another user can connect at all
    foreign = procs.start(["-c", _SILENT_AS_NOBODY, path])
    silent = [_silent(path) for _ in range(3)]
    slow = [SlowPeer(path, control.REQUEST_S / 4) for _ in range(3)]
    t0 = monotonic()                          # ctl's own code here, without its start-up
    assert ctl_command.main(["--log-dir", logs, "list"]) == exitcodes.OK
    assert monotonic() - t0 < control.REQUEST_S
    t0 = monotonic()                          # and the real command
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
    path = os.path.join(logs, channel.SOCKET_NAME)
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
    for shift, said in ((-2 * channel.MAX_AGE_S, "s ago"),
                        (2 * channel.MAX_AGE_S, "s ahead of the server's clock")):
        old = P.make(P.CTL_LIST, P.CTL_REQUEST, ts=time.time() + shift)
        done = ctl_request(logs, P.encode(old, secret))[-1]
        assert done.code == exitcodes.CTL_REFUSED and said in done.text, done.text
    fresh = P.make(P.CTL_LIST, P.CTL_REQUEST, ts=time.time())
    done = ctl_request(logs, P.encode(fresh, secret))[-1]
    assert done.code == exitcodes.OK, done.text
    assert server.proc.poll() is None


# --- every file we read is validated like the wire: fuzz both readers ----------------------
#: Mutants per reader and interpreter (each one read in this process).
FUZZ_MUTANTS = 10000
#: Every mutant is read; every FUZZ_JSON_EVERY-th's report.json is made (in memory)
#: and parsed strictly, every FUZZ_RENDER_EVERY-th's text, HTML and CSV too, and
#: every FUZZ_WRITE_EVERY-th's files are written by write_all (the CLI's path) and
#: read back. (Rendering is most of the time on Python 2.7: all of it for each of
#: 10,000 mutants did not fit the time budget on a loaded machine.)
FUZZ_JSON_EVERY = 2
FUZZ_RENDER_EVERY = 10
FUZZ_WRITE_EVERY = 200
#: Mutants also run through the real CLI, a process each.
FUZZ_CLI = 4
FUZZ_SEED = 25
#: A number written as nan or inf in text, HTML or CSV (Python's spelling).
_NOT_FINITE = re.compile(r"(?<![A-Za-z])[-+]?(?:nan|inf)(?![A-Za-z])")
#: Values swapped in for a value of the file.
_VALUES = ["x", "", "12", 1e308, -1e308, 2 ** 64, -1, 0, 5e-324, True, False, None, [],
           {}, [[1, 2]], {"a": 1}, 10 ** 30, u"\u2028\u202e", u"=cmd", "a" * 5000]
#: Raw JSON text swapped in (what json.dumps would not write).
_TOKENS = [b"Infinity", b"-Infinity", b"NaN", b"1e400", b"-1e999", b"9" * 400,
           b'"\\ud800"', b"[" * 50000 + b"]" * 50000, b"[" * 200 + b"]" * 200]
_HOLE = "@@diskbench-fuzz@@"


def _strict(data):
    """report.json's bytes parse as strict JSON (no NaN or Infinity)."""
    def refuse(name):
        raise ValueError("%s in a JSON file we wrote" % name)
    return json.loads(data.decode("utf-8"), parse_constant=refuse)


def _paths(obj, path=()):
    yield path
    if isinstance(obj, dict):
        for k, v in obj.items():
            for p in _paths(v, path + (k,)):
                yield p
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            for p in _paths(v, path + (i,)):
                yield p


def _mutate_json(rnd, text):
    """One JSON-level mutation of the document ``text`` (bytes): a value swapped for
    another type, a huge number, Infinity/NaN, deep nesting; a key dropped or added;
    another protocol or report version."""
    try:
        obj = json.loads(text.decode("utf-8"))
    except (ValueError, RuntimeError):   # RuntimeError: nested deeper than json takes
        return text
    paths = [p for p in _paths(obj) if p]
    if not paths:
        return text
    path = rnd.choice(paths)
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    how = rnd.randrange(6)
    token = None
    if how == 0 and isinstance(parent, dict):
        del parent[path[-1]]
    elif how == 1 and isinstance(parent, dict):
        parent["unknown_%d" % rnd.randrange(9)] = rnd.choice(_VALUES)
    elif how == 2 and "v" in obj:
        obj["v"] = rnd.choice([0, 2, 4, 99, "3", None])
    elif how == 3 and "report_format" in obj:
        fmt = build_mod.REPORT_FORMAT   # another version, or its number in another type
        obj["report_format"] = rnd.choice([fmt - 1, fmt + 1, True, "%d" % fmt, float(fmt),
                                           None])
    elif how == 4:
        parent[path[-1]], token = _HOLE, rnd.choice(_TOKENS)
    else:
        parent[path[-1]] = rnd.choice(_VALUES)
    data = json.dumps(obj).encode("utf-8")
    return data.replace(json.dumps(_HOLE).encode("utf-8"), token) if token else data


def _mutate_lines(rnd, data, json_level):
    """1 to 3 mutations of a file: bit flips, truncation, a line duplicated, deleted,
    moved or replaced by garbage, and (``json_level``) the JSON ones of a line."""
    for _ in range(rnd.randint(1, 3)):
        lines = data.split(b"\n")
        i = rnd.randrange(len(lines))
        how = rnd.randrange(9)
        if how == 0 and data:
            flipped = bytearray(data)
            flipped[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
            data = bytes(flipped)
            continue
        if how == 1 and data:
            data = data[:rnd.randrange(len(data))]
            continue
        if how == 2:
            lines.insert(i, lines[i])
        elif how == 3:
            del lines[i]
        elif how == 4:
            lines.insert(rnd.randrange(len(lines) + 1), lines.pop(i))
        elif how == 5:
            lines[i] = rnd.choice([b"\xff\xfe garbage", b"{}", b"[1, 2]", b"null",
                                   b'"text"', b"x" * 70000, b"{" * 3000])
        else:
            lines[i] = _mutate_json(rnd, lines[i]) if json_level else lines[i][::-1]
        data = b"\n".join(lines)
    return bytes(data)


def _outputs_in_memory(rep, series, every_file):
    """report.json's content (``every_file``: every report file's) as write_all
    makes it, without the disk."""
    series_mod.attach(rep, series)
    out = dict(json=b"".join(build_mod.json_chunks(rep)))
    if not every_file:
        return out
    out.update(txt=text_mod.render_text(rep),
               html="".join(htmlout.render_pieces(rep, series)))
    out["csv"] = b"".join(csvout._chunks([c for c, _ in csvout.CLIENT_COLUMNS], (
        [get(e) for _, get in csvout.CLIENT_COLUMNS] for e in rep["clients"]))) + \
        b"".join(csvout._chunks(csvout.TIMESERIES_COLUMNS, (
            [r[c] for c in csvout.TIMESERIES_COLUMNS]
            for r in series_mod.timeseries_rows(series, rep["run"]["start_ts"]))))
    return out


def _finite_text(text, what):
    if not isinstance(text, str):
        text = text.decode("utf-8", "replace")
    found = _NOT_FINITE.search(text)
    assert not found, "%s prints %r: ...%s..." % (what, found.group(0), text[
        max(0, found.start() - 80):found.end() + 80])


@pytest.fixture(scope="module")
def real_run_dir(tmpdir_factory):
    """A real run (real server, two real clients), once for the fuzz tests: its
    perf.jsonl, run.json and report.json are what the mutants are made from."""
    keeper = Procs()
    try:
        tmp = tmpdir_factory.mktemp("fuzzrun")
        log_dir = real_run(keeper, tmp, str(tmp.join("run")), names=("fa", "fb"),
                           duration=1)
    finally:
        keeper.cleanup()
    return log_dir


def _fail_with(tmpdir, name, data, index, exc):
    path = str(tmpdir.join(name))
    with open(path, "wb") as f:
        f.write(data)
    raise AssertionError("mutant %d (seed %d, kept as %s) broke the reader: %s" % (
        index, FUZZ_SEED, path, exc))


def test_perf_jsonl_reader_survives_ten_thousand_mutants_of_a_real_file(
        real_run_dir, tmpdir, procs, summary_lines):
    """perf.jsonl (read by re-render and by the server's resume: one parser) may come
    back damaged, truncated, hostile or another version's: for every mutant of a real
    run's file (one client's records of it) the reader either reports the run (bad lines skipped and counted in a
    warning) or refuses the file as one Unreadable (exit 2); never another exception,
    and no report file it writes holds NaN or Infinity (report.json parses strictly;
    text, HTML and CSV print no nan/inf). A few mutants go through the real CLI too."""
    with open(os.path.join(real_run_dir, series_mod.PERF_LOG), "rb") as f:
        # one client's records (every one of them, in order): half the reading per
        # mutant, so that 10,000 fit the time budget on Python 2.7 too
        original = b"".join(line for line in f if b'"name":"fa"' in line)
    assert original.count(b"\n") > 20
    rnd = random.Random(FUZZ_SEED)
    log_dir = str(tmpdir.mkdir("mutant"))
    out_dir = str(tmpdir.mkdir("out"))
    shutil.copy(os.path.join(real_run_dir, "run.json"), log_dir)
    path = os.path.join(log_dir, series_mod.PERF_LOG)
    refused = reported = lines_skipped = 0
    started = time.time()
    for index in range(FUZZ_MUTANTS):
        data = _mutate_lines(rnd, original, True)
        with open(path, "wb") as f:
            f.write(data)
        warned = []
        try:
            rep, series = rerender.load(log_dir, warned.append)
            if index % FUZZ_WRITE_EVERY == 0:
                written, failed = write_all(log_dir, rep, out_dir=out_dir, series=series)
                assert not failed, failed
                with open(os.path.join(out_dir, "report.json"), "rb") as f:
                    _strict(f.read())
                for name in ("report.txt", "report.html", "clients.csv", "timeseries.csv"):
                    with open(os.path.join(out_dir, name), "rb") as f:
                        _finite_text(f.read(), name)
            elif index % FUZZ_JSON_EVERY == 0:
                out = _outputs_in_memory(rep, series, index % FUZZ_RENDER_EVERY == 0)
                _strict(out["json"])
                for what in ("txt", "html", "csv"):
                    if what in out:
                        _finite_text(out[what], what)
        except rerender.Unreadable:
            refused += 1
            continue
        except Exception as exc:  # noqa: B902 - any other is the bug this test finds
            _fail_with(tmpdir, "perf-mutant.jsonl", data, index, "%s: %s" % (
                type(exc).__name__, exc))
        reported += 1
        said = [w for w in rep["run"]["server_warnings"] if "damaged lines of" in w]
        if said:
            lines_skipped += int(said[0].split()[0])
    took = time.time() - started
    # the real CLI on a handful: exit 0 or 2, one line, no traceback, strict JSON out
    for index in range(FUZZ_CLI):
        cli_dir = str(tmpdir.mkdir("cli%d" % index))
        shutil.copy(os.path.join(real_run_dir, "run.json"), cli_dir)
        with open(os.path.join(cli_dir, series_mod.PERF_LOG), "wb") as f:
            f.write(_mutate_lines(rnd, original, True) if index else b"\x00garbage\n")
        code, out, err = run_report(procs, cli_dir)
        assert code in (exitcodes.OK, exitcodes.USAGE), (code, err)
        assert "Traceback" not in err, err
        if code == exitcodes.OK:
            with open(os.path.join(cli_dir, "report.json"), "rb") as f:
                _strict(f.read())
        else:
            assert len(err.strip().splitlines()) == 1, err
    summary_lines.append(
        "perf.jsonl reader (Python %d.%d): %d mutants in %.1f s: %d reported (%d damaged "
        "lines skipped and counted), %d refused as a whole (exit 2), 0 tracebacks; %d "
        "more through the CLI" % (sys.version_info[0], sys.version_info[1], FUZZ_MUTANTS,
                                  took, reported, lines_skipped, refused, FUZZ_CLI))
    assert reported and refused and lines_skipped    # the mutants reached every path


def test_report_json_reader_survives_ten_thousand_mutants_of_a_real_file(
        real_run_dir, tmpdir, procs, summary_lines):
    """report.json (read by compare) may come back damaged, truncated, hostile or of
    another version: for every mutant of a real run's report.json, compare either
    compares (a damaged client entry left out and counted in a warning) or refuses
    the document as one Unreadable (exit 2); never another exception, and its text
    and HTML print no nan/inf. A few mutants go through the real CLI too."""
    with open(os.path.join(real_run_dir, "report.json"), "rb") as f:
        original = f.read()
    base = compare_mod.load_run(os.path.join(real_run_dir, "report.json"), None)
    rnd = random.Random(FUZZ_SEED)
    path = str(tmpdir.join("report.json"))
    refused = compared = entries_left_out = 0
    started = time.time()
    for index in range(FUZZ_MUTANTS):
        data = _mutate_json(rnd, original) if rnd.random() < 0.7 else \
            _mutate_lines(rnd, original, False)
        with open(path, "wb") as f:
            f.write(data)
        warned = []
        try:
            rep = compare_mod.load_run(path, warned.append)
            for a, b in ((base, rep), (rep, base)):
                result = compare_mod.compare(a, b)
                _finite_text(compare_mod.render_text(result, "A", "B"), "compare text")
                _finite_text(compare_mod.render_html(result, "A", "B"), "compare.html")
        except rerender.Unreadable:
            refused += 1
            continue
        except Exception as exc:  # noqa: B902 - any other is the bug this test finds
            _fail_with(tmpdir, "report-mutant.json", data, index, "%s: %s" % (
                type(exc).__name__, exc))
        compared += 1
        entries_left_out += len(warned)
    took = time.time() - started
    good = str(tmpdir.join("good.json"))
    shutil.copy(os.path.join(real_run_dir, "report.json"), good)
    for index in range(FUZZ_CLI):
        bad = str(tmpdir.join("cli%d.json" % index))
        with open(bad, "wb") as f:
            f.write(_mutate_json(rnd, original) if index else b"[" * 100000)
        code, out, err = run_report(procs, "compare", good, bad, "--out",
                                    str(tmpdir.join("compare%d.html" % index)))
        assert code in (exitcodes.OK, exitcodes.USAGE), (code, err)
        assert "Traceback" not in err, err
        _finite_text(out, "compare's output")
        if code == exitcodes.USAGE:
            assert len(err.strip().splitlines()) == 1, err
    summary_lines.append(
        "report.json reader (Python %d.%d): %d mutants in %.1f s: %d compared (%d with "
        "damaged client entries left out and counted), %d refused as a whole (exit 2), "
        "0 tracebacks; %d more through the CLI" % (
            sys.version_info[0], sys.version_info[1], FUZZ_MUTANTS, took, compared,
            entries_left_out, refused, FUZZ_CLI))
    assert compared and refused and entries_left_out


#: Mutants of run.json's report facts re-rendered in this process (each a full
#: re-render of the real run), and of them through the real CLI.
FACTS_MUTANTS = 300
FACTS_CLI = 3
#: What a re-render says, once, when run.json's report facts cannot be used.
FACTS_UNUSABLE = "holds report facts that cannot be used"


def _mutate_facts(rnd, marker):
    """run.json ``marker`` (a dict) with one value under its report facts swapped for
    another type, a key dropped or an unknown one added (the file stays JSON)."""
    obj = json.loads(json.dumps(marker))
    paths = [p for p in _paths(obj) if p[:1] == (build_mod.FACTS_KEY,)]
    path = rnd.choice(paths)
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    how = rnd.randrange(3)
    if how == 0 and isinstance(parent, dict) and len(path) > 1:
        del parent[path[-1]]
    elif how == 1 and isinstance(parent[path[-1]], dict):
        parent[path[-1]]["unknown_%d" % rnd.randrange(9)] = rnd.choice(_VALUES)
    else:
        parent[path[-1]] = rnd.choice(_VALUES)
    return obj


def test_rerender_with_damaged_report_facts_falls_back_once_without_a_traceback(
        real_run_dir, tmpdir, procs):
    """run.json's report facts are a file we read: each mutant of a real run's facts
    (a value of another type or out of bounds, a key missing or unknown) is checked
    like the wire before it is used; facts that fail make a re-render without them,
    said in one warning naming the bad value, never a traceback; the report is whole
    (every client, strict JSON). Through the real CLI: exit 0, the warning once."""
    with open(os.path.join(real_run_dir, "run.json"), "rb") as f:
        marker = json.loads(f.read().decode("utf-8"))
    assert build_mod.FACTS_KEY in marker
    want = sorted(e["client"] for e in load_report(real_run_dir)["clients"])
    log_dir = str(tmpdir.mkdir("facts"))
    shutil.copy(os.path.join(real_run_dir, series_mod.PERF_LOG), log_dir)
    path = os.path.join(log_dir, "run.json")
    rnd = random.Random(FUZZ_SEED)
    fell_back = 0
    for index in range(FACTS_MUTANTS):
        mutant = _mutate_facts(rnd, marker)
        data = json.dumps(mutant).encode("utf-8")
        with open(path, "wb") as f:
            f.write(data)
        warned = []
        try:
            rep, series = rerender.load(log_dir, warned.append)
            out = _outputs_in_memory(rep, series, False)
        except Exception as exc:  # noqa: B902 - any exception is the bug this test finds
            _fail_with(tmpdir, "facts-mutant.json", data, index, "%s: %s" % (
                type(exc).__name__, exc))
        said = [w for w in warned if FACTS_UNUSABLE in w]
        assert len(said) <= 1, warned
        fell_back += len(said)
        assert sorted(e["client"] for e in _strict(out["json"])["clients"]) == want
        # how the run ended is a fact only the server knew: used or not, as said
        assert (rep["run"]["exit_meaning"] == rerender.NO_REPORT_MEANING) == bool(said), \
            (index, warned)
    assert fell_back > FACTS_MUTANTS // 2, fell_back
    for index in range(FACTS_CLI):
        cli_dir = str(tmpdir.mkdir("facts-cli%d" % index))
        shutil.copy(os.path.join(real_run_dir, series_mod.PERF_LOG), cli_dir)
        mutant = dict(marker)
        mutant[build_mod.FACTS_KEY] = dict(marker[build_mod.FACTS_KEY])
        mutant[build_mod.FACTS_KEY][("start_ts", "clients", "build")[index]] = \
            ("yesterday", [1, 2], {"exit_code": "0"})[index]
        with open(os.path.join(cli_dir, "run.json"), "w") as f:
            json.dump(mutant, f)
        code, out, err = run_report(procs, cli_dir)
        assert code == exitcodes.OK and "Traceback" not in err, err
        assert err.count(FACTS_UNUSABLE) == 1, err
        with open(os.path.join(cli_dir, "report.json"), "rb") as f:
            assert sorted(e["client"] for e in _strict(f.read())["clients"]) == want


def _bad_lines(good):
    """Damaged perf.jsonl lines of every kind, made from the good record line ``good``."""
    rec = json.loads(good.decode("utf-8"))

    def changed(**over):
        obj = dict(rec, **over)
        return json.dumps(obj).encode("utf-8")
    no_recv = dict(rec)
    del no_recv["recv_ts"]
    return [
        changed(recv_ts=_HOLE).replace(b'"%s"' % _HOLE.encode(), b"Infinity"),
        changed(recv_ts=_HOLE).replace(b'"%s"' % _HOLE.encode(), b"NaN"),
        changed(ts=_HOLE).replace(b'"%s"' % _HOLE.encode(), b"1e400"),
        changed(ts="yesterday"),
        changed(v=99),
        changed(data=dict(rec["data"], unknown_key=1)),
        changed(data=[[[[[]]]]]),
        json.dumps(no_recv).encode("utf-8"),
        b"[" * 100000 + b"]" * 100000,
        b"\xff\xfe not text",
        b"x" * 70000,
        b'{"level": "info", "msg": "another tool\'s log"}',
    ]


def test_rerender_skips_damaged_lines_names_a_few_counts_all_and_drops_no_good_record(
        real_run_dir, tmpdir, procs):
    """A perf.jsonl with damaged lines of every kind (Infinity, NaN, 1e400, a string for
    a number, another version, unknown keys, deep nesting, not UTF-8, over-long, another
    tool's) re-renders: exit 0, the first SKIPPED_NAMED bad lines named on stderr and one
    warning counting all, the count in the report's warnings, no traceback, report.json
    strict JSON, and every good record counted as in the undamaged file. A file of
    only such lines is refused: exit 2, one line."""
    with open(os.path.join(real_run_dir, series_mod.PERF_LOG), "rb") as f:
        lines = f.read().splitlines()
    bad = _bad_lines(lines[3])
    clean, damaged = str(tmpdir.mkdir("clean")), str(tmpdir.mkdir("damaged"))
    for d, body in ((clean, lines), (damaged, lines[:5] + bad + lines[5:])):
        shutil.copy(os.path.join(real_run_dir, "run.json"), d)
        with open(os.path.join(d, series_mod.PERF_LOG), "wb") as f:
            f.write(b"".join(line + b"\n" for line in body))
    code, out, err = run_report(procs, clean)
    assert code == exitcodes.OK, err
    code, out, err = run_report(procs, damaged)
    assert code == exitcodes.OK and "Traceback" not in err, err
    named = [line for line in err.splitlines() if " skipped: " in line]
    assert len(named) == series_mod.SKIPPED_NAMED, err
    assert "%d bad lines skipped in all" % len(bad) in err, err
    with open(os.path.join(damaged, "report.json"), "rb") as f:
        rep = _strict(f.read())
    assert "%d damaged lines of perf.jsonl were skipped" % len(bad) in \
        " ".join(rep["run"]["server_warnings"])
    want = by_client(load_report(clean))
    for name, e in by_client(rep).items():
        for key in ("written_mib", "chunk_count", "perf_interval_count", "state"):
            assert e[key] == want[name][key], (name, key)

    only_bad = str(tmpdir.mkdir("only-bad"))
    with open(os.path.join(only_bad, series_mod.PERF_LOG), "wb") as f:
        f.write(b"".join(line + b"\n" for line in bad))
    code, out, err = run_report(procs, only_bad)
    assert code == exitcodes.USAGE, err
    assert err.strip().count("\n") == 0 and "holds no diskbench record" in err, err


def test_server_resume_on_a_damaged_perf_jsonl_and_run_json_keeps_every_good_record(
        real_run_dir, tmpdir, procs):
    """The server restarted on a log dir whose perf.jsonl has damaged lines (the same
    kinds) and whose run.json has a start of 1e400 resumes: no traceback, the bad lines
    skipped and counted in its warnings, run.json said unreadable, every good record
    restored, and its report.json is strict JSON."""
    with open(os.path.join(real_run_dir, series_mod.PERF_LOG), "rb") as f:
        lines = f.read().splitlines()
    bad = _bad_lines(lines[3])
    logs = str(tmpdir.mkdir("logs"))
    with open(os.path.join(logs, series_mod.PERF_LOG), "wb") as f:
        f.write(b"".join(line + b"\n" for line in lines[:5] + bad + lines[5:]))
    with open(os.path.join(real_run_dir, "run.json"), "rb") as f:
        marker = json.loads(f.read().decode("utf-8"))
    with open(os.path.join(logs, "run.json"), "wb") as f:
        f.write(json.dumps(dict(marker, started_ts=_HOLE)).replace(
            '"%s"' % _HOLE, "1e400").encode("utf-8"))
    server = _server(procs, logs, "--clients", "2", "--idle-timeout", "0.3")
    code = server.wait_exit(timeout=60)
    err = "".join(server.err)
    assert code in (exitcodes.OK, exitcodes.SERVER_INCOMPLETE), err
    assert "Traceback" not in err + server.server_log()
    with open(os.path.join(logs, "report.json"), "rb") as f:
        rep = _strict(f.read())
    said = " ".join(rep["run"]["server_warnings"])
    assert "run.json unreadable" in said and "1e400" in said, said
    assert "%d bad lines skipped in all" % len(bad) in said, said
    assert rep["run"]["records_restored_count"] == len(lines)


def test_compare_leaves_out_a_damaged_entry_and_refuses_a_damaged_document(
        real_run_dir, tmpdir, procs):
    """compare reads report.json like the wire: a client entry with a string for its
    throughput, or a figure too small to believe, is left out with one warning counting
    it, and the rest compared (exit 0, no inf printed); NaN or 1e400 in a run figure, another report format (also `true` for its number) or
    nesting deeper than the parser takes is a damaged document: exit 2, one line,
    no traceback."""
    with open(os.path.join(real_run_dir, "report.json"), "rb") as f:
        original = f.read()
    good = str(tmpdir.join("good.json"))
    shutil.copy(os.path.join(real_run_dir, "report.json"), good)
    rep = json.loads(original.decode("utf-8"))
    rep["clients"][0]["throughput_mib_s"]["mean"] = "fast"
    left_out = rep["clients"][0]["client"]
    damaged = str(tmpdir.join("entry.json"))
    with open(damaged, "w") as f:
        json.dump(rep, f)
    code, out, err = run_report(procs, "compare", good, damaged, "--out",
                                str(tmpdir.join("c.html")))
    assert code == exitcodes.OK and "Traceback" not in err, err
    assert "1 of 2 client entries left out" in err and "throughput_mib_s.mean" in err, err
    # its row in each client table (after the '*'/' ' plan mark): matched to none
    rows = [line for line in out.splitlines() if line[:1] in " *" and
            line[1:].startswith(left_out + " ")]
    assert len(rows) == 2 and all(row.split()[1] == "none" for row in rows), out
    # a figure too small to believe (5e-324 ms: a change in % of it is beyond a float)
    rep = json.loads(original.decode("utf-8"))
    rep["clients"][1]["latency_ms"]["p99"] = 5e-324
    tiny = str(tmpdir.join("tiny.json"))
    with open(tiny, "w") as f:
        json.dump(rep, f)
    code, out, err = run_report(procs, "compare", tiny, good, "--out",
                                str(tmpdir.join("c.html")))
    assert code == exitcodes.OK and "1 of 2 client entries left out" in err, err
    _finite_text(out, "compare's output")

    def doc(name, data):
        path = str(tmpdir.join(name))
        with open(path, "wb") as f:
            f.write(data)
        return path
    agg = json.dumps(json.loads(original.decode("utf-8"))["aggregate"]["throughput_mib_s"])
    hole = b'"throughput_mib_s": ' + agg.encode("utf-8")
    pretty = json.dumps(json.loads(original.decode("utf-8")), sort_keys=True).encode("utf-8")
    fmt = b'"report_format": %d' % build_mod.REPORT_FORMAT
    assert hole in pretty and fmt in pretty
    for name, data, words in (
            ("nan.json", pretty.replace(hole, b'"throughput_mib_s": NaN', 1), "NaN"),
            ("big.json", pretty.replace(hole, b'"throughput_mib_s": 1e400', 1), "1e400"),
            ("format.json", pretty.replace(fmt, b'"report_format": true'),
             "not a report.json of format %d" % build_mod.REPORT_FORMAT),
            ("deep.json", b"[" * 100000 + b"]" * 100000, "nested too deeply")):
        code, out, err = run_report(procs, "compare", good, doc(name, data), "--out",
                                    str(tmpdir.join("c.html")))
        assert code == exitcodes.USAGE, (name, err)
        assert err.strip().count("\n") == 0 and words in err, (name, err)


def test_rerender_of_a_perf_jsonl_cut_or_emptied_after_the_run_says_what_it_lost(
        real_run_dir, tmpdir, procs):
    """run.json's facts say how the run ended (every client finished); they
    also count what the server held of each client. A perf.jsonl cut after
    the run keeps that verdict but says, in the warnings and the headline's
    meaning, which clients lost records and how many (their figures are
    from what is left); one holding none of them is refused, exit 2."""
    with open(os.path.join(real_run_dir, series_mod.PERF_LOG), "rb") as f:
        lines = f.read().splitlines(True)
    with open(os.path.join(real_run_dir, "run.json"), "rb") as f:
        held = json.loads(f.read().decode("utf-8"))[build_mod.FACTS_KEY]["records"]
    assert sorted(held) == ["fa", "fb"] and all(held.values()), held
    whole = load_report(real_run_dir)
    assert whole["run"]["exit_code"] == exitcodes.OK
    kept_fa = [line for line in lines if b'"fa"' in line][:3]   # fa's first 3; no fb
    for name, data in (("cut", b"".join(lines[:len(lines) // 2])),
                       ("one", b"".join(kept_fa))):
        log_dir = str(tmpdir.mkdir(name))
        shutil.copy(os.path.join(real_run_dir, "run.json"), log_dir)
        with open(os.path.join(log_dir, series_mod.PERF_LOG), "wb") as f:
            f.write(data)
        code, out, err = run_report(procs, log_dir)
        assert code == exitcodes.OK, err
        rep = load_report(log_dir)
        said = " ".join(rep["run"]["server_warnings"])
        assert rep["run"]["exit_meaning"].endswith(rerender.INCOMPLETE_MEANING), rep["run"]
        assert rerender.INCOMPLETE_MEANING in out   # the headline says it
        if name == "one":
            assert "fa (3 of %d)" % held["fa"] in said, said
            assert "holds no record of 1 client of the server's report: fb" in said, said
            assert [e["client"] for e in rep["clients"]] == ["fa"]
        else:
            assert "fewer records than the server" in said, said
    empty = str(tmpdir.mkdir("empty"))
    shutil.copy(os.path.join(real_run_dir, "run.json"), empty)
    open(os.path.join(empty, series_mod.PERF_LOG), "w").close()
    code, out, err = run_report(procs, empty)
    assert code == exitcodes.USAGE and len(err.strip().splitlines()) == 1, err
    assert "holds none of the %d records" % sum(held.values()) in err, err
    # the whole file: nothing said
    code, out, err = run_report(procs, real_run_dir, "--out", str(tmpdir.join("whole")))
    assert code == exitcodes.OK and rerender.INCOMPLETE_MEANING not in out, out
