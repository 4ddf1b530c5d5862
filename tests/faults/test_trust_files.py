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
import subprocess
import sys

from diskbench import exitcodes, launch
from diskbench.compat import PY2
from diskbench.report import csvout
from tests.helpers import REPO, communicate
from tests.report_runs import Crafted, by_client, load_report, run_report
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
