"""Report outputs: report.txt layout, JSON format 3 and its documentation, the CSV files,
re-rendering a killed server's run, compare. Real server and clients where a run is needed;
crafted perf.jsonl files (protocol-built messages) where exact figures are needed."""
import array
import csv
import json
import os
import re
import weakref

from diskbench import exitcodes, metrics
from diskbench import protocol as P
from diskbench.metrics import MIB
from diskbench.compat import PY2
from diskbench.report import rerender, write_all
from diskbench.report import series as series_mod
from diskbench import ledger
from diskbench.server import registry as reg
from diskbench.report import build as build_mod
from diskbench.report import figures as figures_mod
from diskbench import report as outputs
from diskbench.report import text as text_mod
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
            if key not in ("per_client_mib_s", "rejected_messages", "ranked_mib_s"):
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
    assert "aggregate: " in out and "now holds report.json" not in out
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
    # the resumed server accepted no message itself: all were read back
    assert completed["run"]["server_cpu"]["message_count"] == 0
    assert again["run"]["server_cpu"] == completed["run"]["server_cpu"]
    # a run of an older server (run.json without its report facts): the facts of
    # its report.json are kept
    marker = os.path.join(done, "run.json")
    with open(marker) as f:
        info = json.load(f)
    assert info.pop(build_mod.FACTS_KEY)
    with open(marker, "w") as f:
        json.dump(info, f)
    code, out, err = run_report(procs, done, "--out", str(tmpdir.mkdir("older")))
    assert code == 0, err
    older = load_report(str(tmpdir.join("older")))
    assert older["rerendered"]["from_files"] == ["perf.jsonl", "run.json", "report.json"]
    assert older["run"]["exit_code"] == 0 and older["clients"] == completed["clients"]
    assert older["run"]["server_cpu"] == completed["run"]["server_cpu"]


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


def test_report_json_format_3_every_key_documented_and_text_fits_120_columns(procs, tmpdir):
    run = Crafted(str(tmpdir.join("doc")))
    run.client("n1", "h1", 100, 0.004)
    run.add("n1", P.HEARTBEAT, T0 + 3.0, writer_pid=42, writer_alive=True,
            bytes_written=200 * MIB, chunks_written=20, progress_age_s=0.25)
    run.client("a-client-name-that-is-far-too-long-for-any-table-column", "h2", 30, 0.01,
               stop=False)
    code, out, err = run_report(procs, run.save())
    assert code == 0, err
    rep = load_report(run.log_dir)
    assert rep["report_format"] == build_mod.REPORT_FORMAT == 3
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
    assert lines[3].startswith("aggregate: ")
    # the unfinished client is not ranked (only finished ones are), and it is said
    assert lines[4].startswith("chunk 1 MiB, 2 clients: n1 100.0 MiB/s (the only one that "
                               "finished: nothing to rank it against); not ranked (did not")
    assert "a-client-name-that-is-far-too-long-for-any-table-column (unfinished)" in \
        text.replace("\n    ", " ")
    head = [i for i, line in enumerate(lines) if re.match(
        r"client\s+host\s+state\s+chunk MiB\s+MiB/s\s+p50 ms\s+p99 ms\s+rollovers\s+CPU%$", line)]
    assert head, lines[:10]   # the table comes right after the headline (and what
    between = lines[5:head[0]]   # the server warned of)
    assert all(line == "" or line.startswith(("server warning: ", "    ",
                                              "only clients that finished are ranked"))
               for line in between) and between[-1] == "", between
    assert re.match(r"a-client-name-that-is-fa~\s+h2\s+unfinished\s+1\s+30\.0\s",
                    lines[head[0] + 1])
    assert re.match(r"n1\s+h1\s+finished\s+1\s+100\.0\s+[34]\.\d\d\s+1[12]\.\d\d\s+1\s+10$",
                    lines[head[0] + 2])
    assert max(len(line) for line in lines) <= 120
    assert "Comparing with your own fio run" in text.replace("\n    ", " ")


def compare_sections(out):
    """compare's text: {section title: {client: [fields after the name]}} of its
    client tables ('clients, MiB/s mean', 'clients, chunk latency p99 ms')."""
    sections, current = {}, None
    for line in out.splitlines():
        if line.startswith("clients, "):
            current = sections.setdefault(line.split(";")[0], {})
        elif not line.strip() or line.startswith("plans "):
            current = None
        elif current is not None and not line.startswith("client "):
            name, rest = line[1:28].strip(), line[28:].split()
            current[name] = [line[0]] + rest
    return sections


def test_report_compare_gives_the_deltas_of_two_crafted_runs(procs, tmpdir):
    """compare matches clients by name, then host, gives each client's MiB/s and p99
    in both runs with the change, and the aggregate change like for like (a client
    in one run only is left out of it, and the all-clients rows give no change)."""
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
    tables = compare_sections(out)
    mib, p99 = tables["clients, MiB/s mean"], tables["clients, chunk latency p99 ms"]
    # mark, match, A, B, B vs A
    assert mib["n1"] == [" ", "name", "100.0", "150.0", "+50.0%"]
    assert _near(p99["n1"][2:4], [12.0, 6.0]) and p99["n1"][4] == "-50.0%"
    assert mib["n2 / n2-renamed"] == [" ", "host", "200.0", "100.0", "-50.0%"]
    assert _near(p99["n2 / n2-renamed"][2:4], [30.0, 60.0])
    assert mib["gone"][1:] == ["none", "50.0", "-", "-"]
    assert mib["new"][1:] == ["none", "-", "10.0", "-"]
    lines = out.splitlines()
    like = [line for line in lines if line.startswith("MiB/s like for like (2 clients)")][0]
    assert like.split()[-3:] == ["300.0", "250.0", "-16.7%"]
    whole = [line for line in lines if line.startswith("aggregate MiB/s, all clients")][0]
    assert whole.split()[-3:] == ["350.0", "260.0", "-"]
    assert "client gone left out of the like-for-like aggregate: not in run B" in lines
    assert "client new left out of the like-for-like aggregate: not in run A" in lines
    with open(html) as f:
        page = f.read()
    assert "n2-renamed" in page and "+50.0%" in page and "-16.7%" in page


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


def test_rerender_of_a_killed_servers_run_resolves_plans_as_the_server_did(procs, tmpdir):
    """The server's plan (its --chunk-mb list, --file-mb, --duration) is in
    run.json from the start: a re-render of a run whose server was killed
    gives each client the plan and the plan sources the server gave it
    ("server", never "default" for what the server set)."""
    import signal
    from tests.helpers import communicate
    from tests.test_client_runs import CLIENT, FAST, start_server
    log_dir = str(tmpdir.join("killed"))
    data = str(tmpdir.mkdir("data"))
    server, port = start_server(procs, log_dir, "--idle-timeout", "120", "--chunk-mb",
                                "10,20", "--file-mb", "40", "--duration", "2")
    clients = [procs.start(CLIENT + FAST + [
        "--server", "127.0.0.1:%d" % port, "--name", name, "--force",
        "--log-dir", str(tmpdir.join("logs")), data]) for name in ("k1", "k2")]
    for proc in clients:
        out, err = communicate(proc, 60)
        assert proc.returncode == 0, err
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()
    code, out, err = run_report(procs, log_dir)
    assert code == 0, err
    by = by_client(load_report(log_dir))
    assert sorted(e["chunk_mib"] for e in by.values()) == [10, 20]
    for entry in by.values():
        for key in ("chunk_bytes", "file_bytes", "duration_s"):
            assert entry["plan_source"][key] == "server", (key, entry["plan_source"])
        assert entry["plan_source"]["perf_interval_s"] == "client"


def test_report_out_dir_is_checked_before_the_run_is_read_and_made_if_missing(procs, tmpdir):
    run = Crafted(str(tmpdir.join("run")))
    run.client("n1", "h1", 10, 0.004)
    log_dir = run.save()
    afile = tmpdir.join("afile")
    afile.write("x")
    # a bad --out is said first, even beside a log dir that is no run at all
    code, out, err = run_report(procs, str(tmpdir.join("nowhere")), "--out", str(afile))
    assert code == exitcodes.USAGE and len(err.strip().splitlines()) == 1, err
    assert "--out %s is not a directory: give a directory" % afile in err, err
    assert "Traceback" not in err
    made = tmpdir.join("new", "deeper")
    code, out, err = run_report(procs, log_dir, "--out", str(made))
    assert code == 0, err
    assert sorted(os.listdir(str(made))) == sorted(
        os.path.basename(p) for p in out.split("written: ")[1].strip().split(", "))
    assert "report.html" in os.listdir(str(made))


def test_report_compare_out_is_checked_before_the_runs_are_read_and_a_failed_write_is_1(
        procs, tmpdir):
    """compare's --out: a missing directory or a directory given is said first (runs
    not read: these are no runs at all), exit 2; a write that fails even so (/proc
    takes no new file) is the code for a file not written, said in one line."""
    nowhere = str(tmpdir.join("nowhere"))
    for out, words in ((str(tmpdir.join("missing", "c.html")), "no directory"),
                       (str(tmpdir), "is a directory")):
        code, _, err = run_report(procs, "compare", nowhere, nowhere, "--out", out)
        assert code == exitcodes.USAGE and len(err.strip().splitlines()) == 1, err
        assert words in err and "Traceback" not in err, err
    run = Crafted(str(tmpdir.join("run")))
    run.client("n1", "h1", 10, 0.004)
    log_dir = run.save()
    code, out, err = run_report(procs, "compare", log_dir, log_dir, "--out", "/proc/c.html")
    assert code == exitcodes.INTERNAL and len(err.strip().splitlines()) == 1, err
    assert "cannot write /proc/c.html" in err and "written:" not in out, (out, err)


def test_report_cli_writes_non_ascii_names_to_any_stdout(procs, tmpdir):
    """A pipe (2.7: a stream with no encoding) gets UTF-8, a console whose encoding
    lacks a character gets it escaped: the summary and compare's text, never a
    UnicodeEncodeError after the files are written."""
    runs = []
    for label in ("a", "b"):
        run = Crafted(str(tmpdir.join(label)))
        run.client(u"m\xfcller", u"h\xf6st", 100, 0.004)
        run.client(u"n2", u"h2", 100, 0.004)
        runs.append(run.save())
    html = str(tmpdir.join("cmp.html"))
    for env, name in (({}, u"m\xfcller"), ({"PYTHONIOENCODING": "ascii"}, u"m\\xfcller")):
        for args in ([runs[1]], ["compare", runs[0], runs[1], "--out", html]):
            code, out, err = procs.run(["-m", "diskbench.report"] + args, env=env)
            assert code == 0 and "Traceback" not in err, (env, args, err)
            assert name in out and u"written: " in out, (env, args, out)


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


def _counting(func, refs, peak):
    """``func`` whose timeline rows are tracked (weakly) in ``refs``; ``peak[0]``
    is the most rows alive at once, counted each time a timeline is made."""
    def make(*args):
        rows = [_Row(row) for row in func(*args)]
        refs.extend(weakref.ref(row) for row in rows)
        peak[0] = max(peak[0], sum(1 for ref in refs if ref() is not None))
        return rows
    return make


class _Row(dict):
    """A timeline row that can be weakly referenced (a plain dict cannot)."""


def test_report_timelines_are_made_one_client_at_a_time_and_encode_as_eager_lists(
        tmpdir, monkeypatch):
    """report.json's two per-interval timelines are Deferred in the built report
    and made while each client is encoded: never more than one client's rows
    alive (5,000 clients x 60 intervals as dicts at once took hundreds of MB),
    and report.json is byte for byte what encoding the lists themselves gives."""
    clients, intervals = 4, 5
    refs, peak = [], [0]
    monkeypatch.setattr(figures_mod, "timeline", _counting(figures_mod.timeline, refs, peak))
    monkeypatch.setattr(series_mod, "latency_timeline",
                        _counting(series_mod.latency_timeline, refs, peak))
    run = Crafted(str(tmpdir.join("lazy")))
    for i in range(clients):
        run.client("n%d" % i, "h%d" % i, 100 + i, 0.004, intervals=intervals)
    rep, series = rerender.load(run.save(), None)
    written, failed = write_all(run.log_dir, rep, series=series)
    assert not failed
    for e in rep["clients"]:
        for key in ("throughput_timeline", "latency_timeline"):
            assert isinstance(e[key], build_mod.Deferred), key
    # made one at a time: throughput twice (checked when built, then encoded),
    # latency once (encoded)
    assert len(refs) == 3 * clients * intervals
    assert peak[0] == intervals, "%d rows alive at once" % peak[0]
    eager = dict(rep, clients=[dict(e, throughput_timeline=list(e["throughput_timeline"]),
                                    latency_timeline=list(e["latency_timeline"]))
                               for e in rep["clients"]])
    text = build_mod.render_json(eager)
    assert json.loads(text) == json.loads(json.dumps(eager))
    with open(os.path.join(run.log_dir, "report.json"), "rb") as f:
        assert f.read() == text.encode("ascii")
    on_disk = load_report(run.log_dir)["clients"][0]
    assert len(on_disk["latency_timeline"]) == len(on_disk["throughput_timeline"]) == intervals


def test_report_a_timeline_that_is_not_finite_is_null_with_its_warning(tmpdir):
    """A timeline made while encoding passes the same NaN guard (null, never a
    crash of report.json); one found not finite when built stays a list, so the
    server warning names where it is, as for any figure; report.txt says the
    server's warnings with its headline, before the client table."""
    run = Crafted(str(tmpdir.join("nan")))
    run.client("n1", "h1", 100, 0.004, intervals=2)
    registry = reg.Registry(expected_clients=None)
    registry.restore_all(series_mod.read_records(run.save()))
    view = registry.snapshot()
    # the last interval's t_s (from the first's start) overflows to inf
    view.clients[0].intervals += [(-1.7e308, -1.6e308, MIB), (1.7e308, 1.75e308, MIB)]
    rep = build_mod.build(view, T0, T0 + 10)
    e = rep["clients"][0]
    assert e["throughput_timeline"][-1]["t_s"] is None
    assert "report.clients[0].throughput_timeline[3].t_s was not a finite number; shown " \
        "as unknown" in rep["run"]["server_warnings"], rep["run"]["server_warnings"]
    text = text_mod.render_text(rep).splitlines()   # said with the headline,
    said = [i for i, line in enumerate(text) if line.startswith("server warning: ")]
    assert said and max(said) < text.index(text_mod.client_table(rep)[0]), text[:8]
    e["latency_timeline"] = build_mod.Deferred(lambda: [dict(p99_ms=float("nan"))])
    written, failed = outputs.write(str(tmpdir), rep)
    assert not failed
    on_disk = load_report(str(tmpdir))["clients"][0]
    assert on_disk["latency_timeline"] == [dict(p99_ms=None)]
    assert on_disk["throughput_timeline"][-1]["t_s"] is None


def test_report_json_is_strict_json_with_plain_lists_and_small_objects_on_one_line():
    """report.json's own writer (build.json_chunks): the same JSON as the
    standard encoder gives, keys sorted; a list of plain values and an object
    of at most ONE_LINE_KEYS_MAX of them on one line, anything bigger indented
    a member a line; a float that is not finite is null wherever it is, text
    holding ", " or quotes or any character survives, and the chunks are
    whole text of at most about JSON_CHUNK_BYTES."""
    nan, inf = float("nan"), float("inf")
    many = dict(("k%02d" % i, i) for i in range(build_mod.ONE_LINE_KEYS_MAX + 1))
    rep = {
        "timeline": [dict(t_s=0.5, mib_s=1.25, n=3, ok=True, none=None)] * 3,
        "text": [u"a, b", u'q"uote\\', u"\u00e9\u4e2d\U0001F600", u"", u"\n,\t"],
        "mixed": dict(name=u"x, y", n=1, f=nan),
        "nan_list": [1.0, nan, -inf, 2],
        "nan_deep": {"a": [{"b": [inf, {"c": nan}]}]},
        "scalar_nan": nan,
        "many": many,
        "empty": [{}, [], ()],
        "tuple": (1, 2.5, u"t"),
        "ints": {3: u"three", 1: u"one"},
        "big": 2 ** 62, "neg": -0.0, "small": 5e-324, "flag": False,
        "deferred": build_mod.Deferred(lambda: [dict(p99_ms=nan, p50_ms=1.5)] * 2),
    }
    chunks = list(build_mod.json_chunks(rep))
    text = b"".join(chunks).decode("ascii")
    assert all(len(c) < 2 * build_mod.JSON_CHUNK_BYTES for c in chunks)

    def strict(obj):
        if isinstance(obj, float):
            return None if obj != obj or obj in (inf, -inf) else obj
        if isinstance(obj, dict):
            return dict((k, strict(v)) for k, v in obj.items())
        if isinstance(obj, (list, tuple, build_mod.Deferred)):
            return [strict(v) for v in obj]
        return obj
    assert json.loads(text) == json.loads(json.dumps(strict(rep), sort_keys=True))
    lines = text.splitlines()
    assert lines[0] == "{" and lines[-1] == "}" and text.endswith("}\n")
    top = [line[2:].split(":")[0] for line in lines if line.startswith('  "')]
    assert top == ['"%s"' % k for k in sorted(rep)], top        # keys sorted, indented
    row = '{"mib_s": 1.25, "n": 3, "none": null, "ok": true, "t_s": 0.5}'
    assert lines.count("    " + row + ",") == 2 and lines.count("    " + row) == 1
    assert '  "nan_list": [1.0, null, null, 2],' in lines
    assert '  "tuple": [1, 2.5, "t"]' in lines
    assert '  "mixed": {"f": null, "n": 1, "name": "x, y"},' in lines
    assert '    "k00": 0,' in lines, "an object over ONE_LINE_KEYS_MAX is indented"
    assert '    {"p50_ms": 1.5, "p99_ms": null},' in lines
    assert "NaN" not in text and "Infinity" not in text


def test_report_txt_is_written_a_client_at_a_time_and_is_the_rendered_text(tmpdir):
    """report.txt is written in parts (the headline, table and run header;
    then each client's details on its own; then the totals), never the whole
    text and its lines at once, and what is on disk is exactly render_text's."""
    run = Crafted(str(tmpdir.join("parts")))
    names = ["n%d" % i for i in range(4)]
    for i, name in enumerate(names):
        run.client(name, "h%d" % i, 100 + i, 0.004, intervals=2)
    rep, series = rerender.load(run.save(), None)
    parts = list(text_mod.text_parts(rep))
    assert len(parts) == len(names) + 2, len(parts)
    for name, part in zip(names, parts[1:-1]):
        assert part.startswith("client %s" % name) and part.endswith("\n"), part[:60]
        assert all("client %s" % other not in part for other in names if other != name)
    text = text_mod.render_text(rep)
    assert text == "".join(parts)
    written, failed = outputs.write(run.log_dir, rep)
    assert not failed
    with open(os.path.join(run.log_dir, "report.txt"), "rb") as f:
        assert f.read().decode("utf-8") == text


def test_report_rerender_reads_perf_jsonl_record_by_record(tmpdir, monkeypatch):
    """rerender replays each record as it is read (perf.jsonl is never a list:
    5,000 clients for 60 s took 0.6 GB so), and the series and the run's end
    are those of the whole file."""
    run = Crafted(str(tmpdir.join("stream")))
    for i in range(3):
        run.client("n%d" % i, "h%d" % i, 50, 0.004, intervals=3)
    records = series_mod.read_records(run.save())
    read, replayed, lag = [0], [0], [0]
    real_iter, real_restore = series_mod.iter_records, ledger.Ledger.restore

    def counted(*args):
        for record in real_iter(*args):
            read[0] += 1
            yield record

    def restore(self, msg, recv_ts):
        replayed[0] += 1
        lag[0] = max(lag[0], read[0] - replayed[0])   # read, not yet replayed
        return real_restore(self, msg, recv_ts)
    monkeypatch.setattr(series_mod, "iter_records", counted)
    monkeypatch.setattr(ledger.Ledger, "restore", restore)
    rep, series = rerender.load(run.log_dir, None)
    assert read[0] == replayed[0] == len(records) and lag[0] == 0
    assert rep["run"]["end_ts"] == max(ts for _, ts in records)
    whole = series_mod.build(records)
    assert sorted(series) == sorted(whole) == ["n0", "n1", "n2"]
    for name in whole:
        assert [tuple(p[k] for k in p.__slots__) for p in series[name].perf] == \
            [tuple(p[k] for k in p.__slots__) for p in whole[name].perf]
        assert series[name].stats == whole[name].stats


def test_report_series_points_are_packed_and_read_back_exactly():
    """A series' perf intervals are one array of doubles (not an object each:
    5,000 clients x 60 intervals of objects took 62 MiB at the end of a run),
    read back as they were given: counts as ints, a missing percentile as
    None, in (t_start, t_end) order with ties in arrival order."""
    points = series_mod.PerfPoints()
    given = [(T0 + 2, T0 + 3, 3 * MIB, 3, 0.002, 0.004, T0 + 3.1),
             (T0 + 1, T0 + 2, 10 ** 15, 0, None, None, T0 + 2.2),
             (T0 + 1, T0 + 2, MIB, 1, 0.001, 0.001, T0 + 2.3),
             (T0 + 0.5, T0 + 2, 2 * MIB, 2, 0.003, None, T0 + 2.4)]
    for values in given:
        points.append(*values)
    assert isinstance(points.values, array.array) and \
        len(points.values) == len(given) * len(series_mod.PerfPoint.__slots__)
    assert isinstance(series_mod.ClientSeries("n1").perf, series_mod.PerfPoints)

    def rows(seq):
        return [tuple(p[k] for k in series_mod.PerfPoint.__slots__) for p in seq]
    assert rows(points) == given and len(points) == len(given)
    assert rows([points[-1]]) == given[-1:]
    assert [type(points[1]["bytes"]), type(points[1]["chunks"])] == [int, int]
    try:
        points[len(given)]
        raise AssertionError("an index past the end was read")
    except IndexError:
        pass
    points.sort()
    assert rows(points) == [given[3], given[1], given[2], given[0]]


def _perf_of(series):
    return dict((name, [tuple(p[k] for k in p.__slots__) for p in s.perf])
                for name, s in series.items())


def test_report_series_counts_a_repeated_record_once_per_client(tmpdir):
    """A record read twice (a concatenated perf.jsonl) is one interval, as in the
    registry; the same seq from another client is its own."""
    run = Crafted(str(tmpdir.join("twice")))
    run.client("n1", "h1", 50, 0.004, intervals=3)
    run.client("n2", "h2", 60, 0.004, intervals=3)
    records = series_mod.read_records(run.save())
    once = series_mod.build(records)
    assert [len(once[n].perf) for n in ("n1", "n2")] == [3, 3]
    assert _perf_of(series_mod.build(records + records)) == _perf_of(once)


def test_report_chart_lines_are_packed_and_draw_the_same_points(tmpdir):
    """report.html's chart lines are held as arrays of doubles until drawn (as
    tuples, every client's lines took 85 MB at 5,000 clients x 60 intervals):
    the points, gaps (None) and ints come back as they went in."""
    from diskbench.report import htmlout
    points = [(0.5, 1.25), (1.5, None), (2.5, 7), (3.5, 1e-9)]
    assert list(htmlout.unpack(htmlout.pack(points))) == points
    run = Crafted(str(tmpdir.join("packed")))
    run.client("n1", "h1", 50, 0.004, intervals=3)
    rep, series = rerender.load(run.save(), None)
    charts, _ = htmlout.charts(rep, series)
    for chart in charts:
        for _, _, pts, _ in chart.lines:
            assert isinstance(pts, array.array) and pts.typecode == "d", chart.name
    tp = charts[0]
    assert len(tp.lines[0][2]) == 2 * 3
    assert [y for _, y in htmlout.unpack(tp.lines[0][2])] == [50.0] * 3


def test_report_aggregate_moves_intervals_as_it_reads_them():
    """The aggregate reads each client's intervals on the server's clock through
    a view of the registry's packed intervals (as lists of tuples for every
    client at once they took 40 MB at 5,000 clients x 60 intervals)."""
    from diskbench.clientstate import Intervals

    class Client(object):
        intervals = Intervals()

        def offset(self):
            return 2.0, "ping"
    c = Client()
    c.intervals += [(10.0, 11.0, 1 << 20), (11.0, 13.0, 4 << 20)]
    moved = figures_mod.on_server_clock(c)
    assert moved.intervals is c.intervals
    assert list(moved) == [(8.0, 9.0, 1 << 20), (9.0, 11.0, 4 << 20)] and len(moved) == 2
    assert figures_mod.aggregate(dict(a=moved)) == figures_mod.aggregate(dict(a=list(moved)))


def test_report_html_is_written_piece_by_piece(tmpdir, monkeypatch):
    """report.html goes to disk as it is made, never whole in memory (page, text
    and bytes at once were 60 MB at 5,000 clients), and is the page render() gives."""
    import diskbench.report as outputs
    from diskbench.fsutil import atomic_write
    from diskbench.report import htmlout
    sizes = {}

    def measured(path, data):
        pieces = [data] if isinstance(data, bytes) else list(data)
        sizes[os.path.basename(path)] = [len(p) for p in pieces]
        return atomic_write(path, b"".join(pieces))
    monkeypatch.setattr(outputs, "atomic_write", measured)
    run = Crafted(str(tmpdir.join("pieces")))
    for i in range(3):
        run.client("n%d" % i, "h%d" % i, 50, 0.004, intervals=3)
    rep, series = rerender.load(run.save(), None)
    written, failed = write_all(run.log_dir, rep, series=series)
    assert not failed
    with open(os.path.join(run.log_dir, htmlout.REPORT_HTML), "rb") as f:
        page = f.read()
    assert page == htmlout.render(rep, series).encode("utf-8")
    pieces = sizes[htmlout.REPORT_HTML]
    assert sum(pieces) == len(page) and max(pieces) < len(page) // 4, pieces


def _extreme_client(run, name, t, bytes_, length):
    """A client whose one perf interval the protocol accepts (within MAX_INT and
    MAX_RATE_MIB_S) however extreme: ``bytes_`` in ``length`` s."""
    from tests.test_server_fakes import hello_fields
    run.add(name, P.HELLO, t, **hello_fields(hostname="h-" + name, chunk_bytes=10 * MIB,
                                             file_bytes=20 * MIB))
    run.add(name, P.START, t, writer_pid=42, sync_mode=P.SYNC_DIRECT, preallocate=False,
            block_bytes=4096, buffer_huge_bytes=None)
    hist = metrics.LatencyHistogram()
    hist.add(0.01)
    run.add(name, P.PERF, t + length, t_start=t, t_end=t + length, bytes=bytes_,
            chunks=min(1, bytes_), io_s=0.01, lat_min_s=0.01, lat_max_s=0.01,
            lat_hist=hist.to_wire() if bytes_ else [], sync_mode=P.SYNC_DIRECT, file_index=0)
    run.add(name, P.STOP, t + length, reason=P.STOP_DURATION, bytes_written=bytes_,
            chunks_written=min(1, bytes_), rollovers=0, elapsed_s=length, io_s=0.01, dropped_messages=0)


def test_report_from_extreme_accepted_values_is_read_back_by_compare(procs, tmpdir):
    """Clients sending values within the protocol's bounds however extreme (the
    most bytes an interval may carry at the highest rate allowed, 0 bytes, one
    byte in a day): the report the writer makes is one its own reader takes
    (compare exits 0 and keeps every client), a figure beyond the reader's bounds
    is unknown with a warning, and 0 MiB written is 0."""
    run = Crafted(str(tmpdir.join("extreme")))
    length = P.MAX_INT / float(MIB) / P.MAX_RATE_MIB_S * 1.01     # just under the cap
    t = T0 + 1.0
    _extreme_client(run, "huge1", t, P.MAX_INT, length)
    _extreme_client(run, "huge2", t, P.MAX_INT, length)
    _extreme_client(run, "zero", t, 0, 10.0)
    _extreme_client(run, "tiny", t, 1, 86400.0)
    code, out, err = run_report(procs, run.save())
    assert code == 0, err
    rep = load_report(run.log_dir)
    clients = by_client(rep)
    assert clients["huge1"]["written_mib"] is None          # 4.4e12 MiB: beyond 1e12
    assert clients["zero"]["written_mib"] == 0 and \
        clients["zero"]["throughput_mib_s"]["mean"] == 0
    assert clients["tiny"]["throughput_mib_s"]["mean"] is None   # 1e-11 MiB/s
    assert clients["tiny"]["written_mib"] > 0
    assert any("what a report can hold" in w for w in rep["run"]["server_warnings"])
    # a sum over the clients has its own, higher bound: two clients' 4.4e12 MiB
    assert rep["totals"]["written_mib"] > 8e12
    code, out, err = run_report(procs, "compare", run.log_dir, run.log_dir,
                                "--out", str(tmpdir.join("c.html")))
    assert code == 0, err
    assert "damaged" not in err and "left out" not in err, err
    assert "compare 2 runs" in out and "clients                    " in out
    counts = [line for line in out.splitlines() if line.startswith("clients ")][0]
    assert counts.split()[:3] == ["clients", "4", "4"], counts


def test_report_text_says_counts_and_unknowns_as_words(procs, tmpdir, monkeypatch):
    """Small honesty: a clock offset reads 'ahead of the server's', a count of one
    is singular ('for 1 client', 'of 1 client'), an unknown exit code is '-' in the
    details as in the headline (never 'None'), and the closing summary never says
    '(0 more clients ...)'."""
    from diskbench import effects
    assert "5.0 years ahead of the server's" in effects.unbelieved_offset(
        "x", 5 * 365.25 * 86400)
    assert "is 3.0 s behind the server's" in "is %s the server's" % metrics.describe_offset(-3)
    run = Crafted(str(tmpdir.join("words")))
    run.client("a", "h1", 100, 0.004, chunk_bytes=10 * MIB)
    run.client("b", "h2", 200, 0.004, chunk_bytes=10 * MIB)
    run.client("c", "h3", 300, 0.004, chunk_bytes=20 * MIB)
    code, out, err = run_report(procs, run.save())
    assert code == 0, err
    with open(os.path.join(run.log_dir, "report.txt")) as f:
        text = f.read()
    assert "exit code: - (" in text and "None" not in text
    rep = load_report(run.log_dir)
    rep["run"]["synchronized_start"] = dict(
        start_at_ts=T0, start_at_utc="x", client_count=1, first_write_known_count=1,
        first_write_spread_ms=0.0, first_write_late_max_ms=1.0)
    assert "synchronized start at x for 1 client: " in text_mod.render_text(rep)
    monkeypatch.setattr(outputs, "CONSOLE_ROWS_MAX", 2)
    monkeypatch.setattr(outputs, "CONSOLE_EXTREMES", 1)
    summary = outputs.console_summary(rep)
    assert "more in report.txt" not in summary and "(0 " not in summary
    assert [line.split()[0] for line in summary.splitlines()
            if re.match(r"[abc] ", line)] == ["a", "b", "c"]
