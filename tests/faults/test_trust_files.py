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

from diskbench import exitcodes
from diskbench.compat import PY2
from diskbench.report import csvout
from tests.report_runs import Crafted, by_client, load_report, run_report


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
