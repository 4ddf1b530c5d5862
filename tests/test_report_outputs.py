"""Report outputs: report.txt layout, JSON format 2 and its documentation, the CSV files,
re-rendering a killed server's run, compare. Real server and clients where a run is needed;
crafted perf.jsonl files (protocol-built messages) where exact figures are needed."""
import csv
import json
import os
import re

from diskbench import exitcodes, metrics
from diskbench import protocol as P
from diskbench.metrics import MIB
from diskbench.compat import PY2
from diskbench.report import rerender
from tests.helpers import REPO
from tests.report_runs import (T0, Crafted, by_client, copy_run, load_report, real_run,
                               run_report)
from tests.test_server_fakes import ServerProc

FIGURES = ("written_mib", "rollover_count", "perf_interval_count", "chunk_count")


def _read_csv(path):
    if PY2:
        with open(path, "rb") as f:
            return [dict((k, v.decode("utf-8")) for k, v in row.items())
                    for row in csv.DictReader(f)]
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _num(text):
    return None if text == "" else float(text)


def _near(texts, values, rel=0.025):
    """Histogram percentiles (p99) are within ~2.2% of the true value."""
    return all(abs(float(t) - v) <= abs(v) * rel for t, v in zip(texts, values))


def _paths(obj, prefix=""):
    """Every key path of a report ('clients[].latency_ms.p99'), maps of names skipped."""
    out = set()
    if isinstance(obj, dict):
        for key, value in obj.items():
            path = "%s.%s" % (prefix, key) if prefix else key
            out.add(path)
            if key not in ("per_client_mib_s", "rejected_messages"):
                out |= _paths(value, path)
    elif isinstance(obj, list):
        for value in obj:
            out |= _paths(value, prefix + "[]")
    return out


def test_report_killed_server_rerenders_to_the_figures_of_a_completed_run(procs, tmpdir):
    killed = real_run(procs, tmpdir, str(tmpdir.join("killed")), kill_server=True)
    assert not os.path.exists(os.path.join(killed, "report.json"))
    # the same records, finished by the real server (it resumes them, then completes)
    done = copy_run(killed, str(tmpdir.join("done")))
    server = ServerProc(procs, done, ["--idle-timeout", "0.3", "--heartbeat-timeout", "1"])
    assert server.wait_exit(30) == exitcodes.OK, server.stderr()
    # the server's closing lines are the headline and the table
    out = server.stdout()
    assert "aggregate: " in out and re.search(r"client\s+host\s+state\s+chunk MiB\s+MiB/s", out)
    completed = load_report(done)

    code, out, err = run_report(procs, killed)
    assert code == 0, err
    assert "aggregate: " in out and "now holds report.json" in out
    rerendered = load_report(killed)
    assert rerendered["run"]["exit_meaning"] == rerender.NO_REPORT_MEANING
    assert any("without a report from the server" in w
               for w in rerendered["run"]["server_warnings"])
    a, b = by_client(completed), by_client(rerendered)
    assert sorted(a) == sorted(b) == ["ra", "rb"]
    for name in a:
        for key in FIGURES:
            assert a[name][key] == b[name][key], (name, key)
        assert a[name]["perf_interval_count"] >= 2 and a[name]["rollover_count"] >= 1
        assert a[name]["throughput_mib_s"] == b[name]["throughput_mib_s"]
        assert a[name]["latency_ms"] == b[name]["latency_ms"]
        assert b[name]["state"] == "finished"   # its stop summary is in perf.jsonl
        assert len(b[name]["latency_timeline"]) == b[name]["perf_interval_count"]
    assert completed["aggregate"]["throughput_mib_s"] == \
        rerendered["aggregate"]["throughput_mib_s"]
    for name in ("report.txt", "report.html", "clients.csv", "timeseries.csv"):
        assert os.path.getsize(os.path.join(killed, name)) > 0

    # a re-render of the completed run keeps the server's facts and figures
    code, out, err = run_report(procs, done, "--out", str(tmpdir.mkdir("again")))
    assert code == 0, err
    again = load_report(str(tmpdir.join("again")))
    assert again["run"]["exit_code"] == completed["run"]["exit_code"] == 0
    assert again["clients"] == completed["clients"]


def test_report_without_stop_summaries_says_unfinished_server_did_not_see_the_end(
        procs, tmpdir):
    run = Crafted(str(tmpdir.join("cut")))
    run.client("early", "h1", 100, 0.004)
    run.client("cut", "h2", 50, 0.004, stop=False)
    code, out, err = run_report(procs, run.save())
    assert code == 0, err
    rep = load_report(run.log_dir)
    c = by_client(rep)
    assert c["early"]["state"] == "finished"
    assert c["cut"]["state"] in ("joined", "running")
    assert c["cut"]["state_why"] == rerender.NO_END_REASON
    assert rep["totals"]["unfinished_count"] == 1
    assert re.search(r"^cut\s+h2\s+unfinished\s", out, re.M), out
    assert rep["run"]["exit_code"] is None


def test_report_csv_files_load_and_agree_with_report_json(procs, tmpdir):
    run = Crafted(str(tmpdir.join("csv")))
    run.client("n1", "h1", 100, 0.004, intervals=5)
    run.client("n2", "h2", 40, 0.020, intervals=3)
    code, out, err = run_report(procs, run.save())
    assert code == 0, err
    rep = load_report(run.log_dir)
    entries = by_client(rep)
    clients = _read_csv(os.path.join(run.log_dir, "clients.csv"))
    assert sorted(r["client"] for r in clients) == ["n1", "n2"]
    for row in clients:
        e = entries[row["client"]]
        assert _num(row["written_mib"]) == e["written_mib"]
        assert abs(_num(row["throughput_mean_mib_s"]) - e["throughput_mib_s"]["mean"]) < 1e-6
        assert abs(_num(row["latency_p99_ms"]) - e["latency_ms"]["p99"]) < 1e-6
        assert int(row["rollover_count"]) == e["rollover_count"]
        assert row["host"] == e["host"] and row["fs"] == e["fs"]
    series = _read_csv(os.path.join(run.log_dir, "timeseries.csv"))
    for name, e in entries.items():
        rows = [r for r in series if r["client"] == name]
        assert len(rows) == e["perf_interval_count"]
        assert sum(int(r["bytes"]) for r in rows) == e["written_mib"] * metrics.MIB
        assert [round(_num(r["mib_s"]), 6) for r in rows] == \
            [round(x["mib_s"], 6) for x in e["throughput_timeline"]]
        assert [_num(r["latency_p99_ms"]) for r in rows] == \
            [x["p99_ms"] for x in e["latency_timeline"]]
        # crafted: in each interval p50 is the common chunk time, p99 the slow chunks'
        # (histogram percentiles are within ~2.2% of the true value)
        slow = e["latency_ms"]["max"]
        assert all(abs(_num(r["latency_p99_ms"]) / slow - 1) < 0.025 for r in rows)
        assert all(abs(_num(r["latency_p50_ms"]) * 3 / slow - 1) < 0.025 for r in rows)
        assert all(_num(r["writer_cpu_percent"]) == 10.0 for r in rows)
        # server clock: the crafted messages arrived 10 ms after they were sent,
        # so the client's clock reads as 10 ms behind (within the delay)
        assert abs(e["clock_offset_s"] + 0.01) < 1e-6
        assert abs(_num(rows[0]["t_run_s"]) - (2.0 + 0.01)) < 1e-3


def test_report_json_format_2_every_key_documented_and_text_fits_120_columns(procs, tmpdir):
    run = Crafted(str(tmpdir.join("doc")))
    run.client("n1", "h1", 100, 0.004)
    run.add("n1", P.HEARTBEAT, T0 + 3.0, writer_pid=42, writer_alive=True,
            bytes_written=200 * MIB, chunks_written=20, progress_age_s=0.25)
    run.client("a-client-name-that-is-far-too-long-for-any-table-column", "h2", 30, 0.01,
               stop=False)
    code, out, err = run_report(procs, run.save())
    assert code == 0, err
    rep = load_report(run.log_dir)
    assert rep["report_format"] == 2
    e = by_client(rep)["n1"]
    assert set(e["throughput_timeline"][0]) == set(["t_s", "length_s", "mib_s"])
    assert e["last_heartbeat"]["progress_age_s"] == 0.25
    assert e["last_heartbeat"]["progress_mib"] == 200.0
    with open(os.path.join(REPO, "docs", "REPORT-FORMAT.md")) as f:
        doc = f.read()
    documented = set(re.findall(r"`([a-z_\[\]\.0-9]+)`", doc))
    paths = _paths(rep) | set("clients[].error_list[].%s" % k for k in (
        "origin", "what", "os_errno", "is_fatal")) | set(["clients[].last_heartbeat.%s" % k
                                                          for k in ("at_ts", "utc")])
    missing = sorted(p for p in paths if p not in documented)
    assert not missing, "keys not in docs/REPORT-FORMAT.md: %s" % missing
    with open(os.path.join(run.log_dir, "report.txt")) as f:
        text = f.read()
    lines = text.splitlines()
    assert lines[0].startswith("diskbench report crafted: ")
    assert lines[1] == "exit code -: " + rerender.NO_REPORT_MEANING
    assert lines[2] == "clients: 2 (1 finished, 1 unfinished)"
    assert lines[3].startswith("aggregate: ") and lines[4].startswith("slowest: ")
    head = [i for i, line in enumerate(lines) if re.match(
        r"client\s+host\s+state\s+chunk MiB\s+MiB/s\s+p50 ms\s+p99 ms\s+rollovers\s+CPU%$", line)]
    assert head and head[0] < 8, lines[:10]   # the table comes right after the headline
    assert re.match(r"a-client-name-that-is-fa~\s+h2\s+unfinished\s+1\s+30\.0\s",
                    lines[head[0] + 1])
    assert re.match(r"n1\s+h1\s+finished\s+1\s+100\.0\s+[34]\.\d\d\s+1[12]\.\d\d\s+1\s+10$",
                    lines[head[0] + 2])
    assert max(len(line) for line in lines) <= 120
    assert "Comparing with your own fio run" in text.replace("\n    ", " ")


def test_report_compare_gives_the_deltas_of_two_crafted_runs(procs, tmpdir):
    a = Crafted(str(tmpdir.join("a")))
    a.client("n1", "h1", 100, 0.004)
    a.client("n2", "h2", 200, 0.010)
    a.client("gone", "h9", 50, 0.010)
    b = Crafted(str(tmpdir.join("b")))
    b.client("n1", "h1", 150, 0.002)
    b.client("n2-renamed", "h2", 100, 0.020)   # matched by host
    b.client("new", "h3", 10, 0.010)
    a.save()
    b.save()
    run_report(procs, a.log_dir)                 # A from its report.json,
    html = str(tmpdir.join("cmp.html"))          # B rebuilt from perf.jsonl on the fly
    code, out, err = run_report(procs, "compare", a.log_dir, b.log_dir, "--out", html)
    assert code == 0, err
    rows = dict((line.split()[0], line.split()) for line in out.splitlines() if line.strip())
    # client (A / B), match, MiB/s A, B, B-A, change, p99 A, B, B-A, change
    assert rows["n1"][1:6] == ["name", "100.0", "150.0", "+50.0", "+50.0%"]
    assert _near(rows["n1"][6:9], [12.0, 6.0, -6.0]) and rows["n1"][9] == "-50.0%"
    n2 = [line for line in out.splitlines() if line.startswith("n2 / n2-renamed")][0]
    assert n2.split()[3:8] == ["host", "200.0", "100.0", "-100.0", "-50.0%"]
    assert _near(n2.split()[8:11], [30.0, 60.0, 30.0]) and n2.split()[11] == "+100.0%"
    assert [line for line in out.splitlines() if line.startswith("gone / -")]
    assert [line for line in out.splitlines() if line.startswith("- / new")]
    agg = [line for line in out.splitlines() if line.startswith("aggregate MiB/s")][0]
    assert agg.split()[-4:] == ["350.0", "260.0", "-90.0", "-25.7%"]
    with open(html) as f:
        page = f.read()
    assert "n2-renamed" in page and "+50.0%" in page and "-25.7%" in page


def test_report_cli_refuses_what_is_not_a_run_with_one_line_and_exit_2(procs, tmpdir):
    empty = str(tmpdir.mkdir("empty"))
    for args, words in (([str(tmpdir.join("nowhere"))], "is not a directory"),
                        ([empty], "has no perf.jsonl"),
                        (["compare", str(tmpdir.join("nowhere")), empty], "cannot read"),
                        (["compare", empty, empty], "has no perf.jsonl")):
        code, out, err = run_report(procs, *args)
        assert code == exitcodes.USAGE, (args, err)
        assert len(err.strip().splitlines()) == 1 and words in err, err
        assert "Traceback" not in err


def test_report_html_escapes_client_text(procs, tmpdir):
    run = Crafted(str(tmpdir.join("esc")))
    run.client("<script>alert(1)</script>", "h&<x>", 10, 0.004)
    code, out, err = run_report(procs, run.save())
    assert code == 0, err
    with open(os.path.join(run.log_dir, "report.html")) as f:
        page = f.read()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "h&amp;&lt;x&gt;" in page
    assert page.count("<script>") == 1           # only the page's own sort script
    with open(os.path.join(run.log_dir, "report.json")) as f:
        json.load(f)


def _html_series(page, chart):
    """{client: count of series paths} in chart ``chart`` of report.html's text."""
    svg = re.search(r'<svg[^>]*data-chart="%s".*?</svg>' % chart, page, re.S)
    assert svg, "no %s chart" % chart
    out = {}
    for name in re.findall(r'<path class="series" data-client="([^"]*)"', svg.group(0)):
        out[name] = out.get(name, 0) + 1
    return out


def test_report_html_has_one_series_per_client_and_folds_a_long_legend(procs, tmpdir):
    """The same checks as the Chromium tests, on the file's text (no browser
    needed): every client has its line in every chart (two in latency: p99 and
    p50), and past LEGEND_MAX clients the legend folds and the lines thin."""
    from diskbench.report import htmlout
    few, many = Crafted(str(tmpdir.join("few"))), Crafted(str(tmpdir.join("many")))
    for i in range(3):
        few.client("c%d" % i, "h%d" % i, 10 + i, 0.004, intervals=2)
    names = ["node%02d" % i for i in range(htmlout.LEGEND_MAX + 4)]
    for i, name in enumerate(names):
        many.client(name, "host%02d" % i, 20 + i, 0.002, intervals=2)
    pages = {}
    for run in (few, many):
        code, out, err = run_report(procs, run.save())
        assert code == 0, err
        with open(os.path.join(run.log_dir, "report.html")) as f:
            pages[run] = f.read()
    for chart, per_client in (("throughput", 1), ("latency", 2), ("cpu", 1), ("rss", 1)):
        assert _html_series(pages[few], chart) == dict(
            ("c%d" % i, per_client) for i in range(3)), chart
    assert sorted(_html_series(pages[many], "throughput")) == names
    assert set(re.findall(r'stroke-width="([0-9.]+)"', pages[few])) == set(["1.60"])
    thin = 1.6 * htmlout.LEGEND_MAX / len(names)
    assert set(re.findall(r'stroke-width="([0-9.]+)"', pages[many])) == set(["%.2f" % thin])
    assert '<p class="legend"><span>' in pages[few]
    assert '<p class="legend"><span>' not in pages[many]
    assert "%d clients: hover a line for its name" % len(names) in pages[many]
