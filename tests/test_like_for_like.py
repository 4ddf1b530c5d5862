"""Like for like: a run whose clients wrote different chunk sizes ranks them only
within a size (headline, report.json, HTML, CSV), and a re-render of a finished run
states every fact the server's report did. Real server, real clients, real files."""
import json
import os
import re
import shutil
import time

from diskbench import exitcodes, metrics, plan
from diskbench.metrics import MIB
from diskbench.report import csvout
from diskbench.report import text as text_mod
from tests.helpers import communicate, wait_until
from tests.report_runs import Crafted, load_report, run_report
from tests.test_client_runs import CLIENT, FAST, start_server
from tests.test_report_outputs import _read_csv, compare_sections

#: The chunk list of the three-size run and the clients, in the order they join.
SIZES_MB = (10, 20, 40)
NAMES = ("s1", "s2", "s3", "s4", "s5")
#: Each client writes this long (s): at least two rollovers of FILE_MB on tmp.
DURATION_S = 2
FILE_MB = 80


def three_size_run(procs, tmpdir, log_dir):
    """The real server (--quiet) handing out SIZES_MB to NAMES (10, 20, 40, 10, 20
    MiB), the clients started one after another so the order of arrival is the names'."""
    data = str(tmpdir.mkdir("data"))
    tmpdir.mkdir("logs")
    server, port = start_server(procs, log_dir, "--clients", str(len(NAMES)), "--chunk-mb",
                                ",".join(str(s) for s in SIZES_MB), "--file-mb",
                                str(FILE_MB), "--duration", str(DURATION_S))
    clients = []
    for name in NAMES:
        clients.append(procs.start(CLIENT + FAST + [
            "--server", "127.0.0.1:%d" % port, "--name", name, "--force",
            "--log-dir", str(tmpdir.join("logs")), data]))
        # the next joins only once this one's hello is on record (the plan's order)
        wait_until(lambda: _hellos(log_dir) >= len(clients), 30,
                   what="%s's hello on record" % name)
    for proc in clients:
        out, err = communicate(proc, 90)
        assert proc.returncode == 0, err
    out, err = communicate(server, 60)
    assert server.returncode == 0, err


def _hellos(log_dir):
    path = os.path.join(log_dir, "perf.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum(1 for line in f if '"type": "hello"' in line or '"type":"hello"' in line)


def test_like_for_like_headline_ranks_within_each_chunk_size(procs, tmpdir):
    """With three chunk sizes the headline names each size and ranks clients only
    within it; report.json, report.txt, report.html and chunk_sizes.csv carry the
    'by workload' summary; the headline says how to find a slow host."""
    log_dir = str(tmpdir.join("run"))
    three_size_run(procs, tmpdir, log_dir)
    rep = load_report(log_dir)
    chunk = dict((e["client"], e["chunk_mib"]) for e in rep["clients"])
    assert chunk == dict(s1=10, s2=20, s3=40, s4=10, s5=20)
    sizes = rep["by_chunk_size"]
    assert [z["chunk_mib"] for z in sizes] == [10, 20, 40]
    assert [z["client_count"] for z in sizes] == [2, 2, 1]
    for z in sizes:
        members = [n for n in chunk if chunk[n] == z["chunk_mib"]]
        assert z["slowest"] in members and z["fastest"] in members
        means = z["ranked_mib_s"]      # MiB/s while all the size's clients wrote
        assert sorted(means) == sorted(members) and z["not_ranked"] == []
        assert z["min_mib_s"] == min(means[n] for n in members) == means[z["slowest"]]
        assert z["max_mib_s"] == max(means[n] for n in members) == means[z["fastest"]]
        assert abs(z["mean_mib_s"] - sum(means[n] for n in members) / len(members)) < 1e-9
        assert z["latency_p99_ms"] > 0
    assert "slowest" not in rep["aggregate"]     # no ranking across sizes anywhere
    with open(os.path.join(log_dir, "report.txt")) as f:
        text = f.read()
    with open(os.path.join(log_dir, "report.html")) as f:
        page = f.read()
    headline = re.findall(r"<p(?: class=\"agg\")?>([^<]*)</p>", page)
    for where in (text, "\n".join(headline)):
        lines = where.splitlines()
        ranked = [line for line in lines if re.match(r"chunk \d", line)]
        assert [re.match(r"chunk (\d+) MiB, ", line).group(1) for line in ranked] == \
            ["10", "20", "40"], lines[:12]
        for line, z in zip(ranked, sizes):
            named = set(re.findall(r"\b(s\d)\b", line))
            assert named == set([z["slowest"], z["fastest"]]), line
            assert named <= set(n for n in chunk if chunk[n] == z["chunk_mib"])
        assert "2 clients: slowest" in ranked[0] and ranked[2].startswith(
            "chunk 40 MiB, 1 client: s3 ")
        assert text_mod.SIZES_DIFFER in where.replace("\n    ", " ")
    assert re.search(r"^\s+10\s+2\s+2\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+  chunk 10 MiB$",
                     text, re.M)
    assert "By workload" in page
    rows = _read_csv(os.path.join(log_dir, csvout.CHUNK_SIZES_CSV))
    assert [(float(r["chunk_mib"]), int(r["client_count"]), r["slowest"]) for r in rows] == \
        [(z["chunk_mib"], z["client_count"], z["slowest"]) for z in sizes]


def test_like_for_like_one_chunk_size_ranks_all_without_the_advice(procs, tmpdir):
    """Clients of one chunk size are ranked together and the headline gives no
    'sizes differ' advice (crafted: exact figures)."""
    run = Crafted(str(tmpdir.join("one")))
    run.client("n1", "h1", 100, 0.004)
    run.client("n2", "h2", 300, 0.004)
    code, out, err = run_report(procs, run.save())
    assert code == 0, err
    rep = load_report(run.log_dir)
    assert len(rep["by_chunk_size"]) == 1
    z = rep["by_chunk_size"][0]
    assert (z["slowest"], z["fastest"], z["client_count"]) == ("n1", "n2", 2)
    assert abs(z["slowest_to_fastest_ratio"] - 1 / 3.0) < 1e-9
    assert re.search(r"^chunk \d+ MiB, 2 clients: slowest n1 100\.0 MiB/s, fastest n2 "
                     r"300\.0 MiB/s \(slowest/fastest 0\.33\)$",
                     out, re.M), out
    assert plan.CHUNK_ADVICE not in out.replace("\n    ", " ")


#: The only keys a re-render of a finished run may state differently from the
#: server's report.json (docs/REPORT-FORMAT.md, 'Re-rendering keeps every fact').
RERENDER_ONLY = ("rerendered",)


def differences(a, b, path="report"):
    """Every path where the JSON documents ``a`` and ``b`` differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                out.append("%s.%s (only in %s)" % (path, key, "one" if key in a else "two"))
            else:
                out += differences(a[key], b[key], "%s.%s" % (path, key))
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return ["%s (lengths %d, %d)" % (path, len(a), len(b))]
        return [d for i, (x, y) in enumerate(zip(a, b))
                for d in differences(x, y, "%s[%d]" % (path, i))]
    return [] if a == b and type(a) is type(b) else ["%s: %r != %r" % (path, a, b)]


def test_like_for_like_rerender_of_a_finished_run_equals_the_servers_report(procs, tmpdir):
    """A re-render from the log dir without report.json (perf.jsonl and run.json
    only) states every fact the server's report.json did (plans as sent in go and
    their sources, the start instant, exit code, server CPU, ...): the two documents
    are equal but for RERENDER_ONLY, and the re-render says when and from what."""
    log_dir = str(tmpdir.join("run"))
    data = str(tmpdir.mkdir("data"))
    tmpdir.mkdir("logs")
    server, port = start_server(procs, log_dir, "--clients", "2", "--chunk-mb", "10,20",
                                "--file-mb", "40", "--duration", str(DURATION_S))
    clients = [procs.start(CLIENT + FAST + [
        "--server", "127.0.0.1:%d" % port, "--name", name, "--force",
        "--log-dir", str(tmpdir.join("logs")), data]) for name in ("f1", "f2")]
    for proc in clients:
        out, err = communicate(proc, 90)
        assert proc.returncode == 0, err
    communicate(server, 60)
    assert server.returncode == 0
    servers = load_report(log_dir)
    assert all(e["plan_source"]["chunk_bytes"] == plan.FROM_SERVER
               for e in servers["clients"])
    assert servers["run"]["synchronized_start"] and servers["rerendered"] is None
    bare = str(tmpdir.mkdir("bare"))
    for name in ("perf.jsonl", "run.json"):
        shutil.copy(os.path.join(log_dir, name), bare)
    code, out, err = run_report(procs, bare)
    assert code == 0, err
    again = load_report(bare)
    assert again["rerendered"]["from_files"] == ["perf.jsonl", "run.json"]
    assert abs(again["rerendered"]["at_ts"] - time.time()) < 600
    for key in RERENDER_ONLY:
        servers.pop(key)
        again.pop(key)
    assert differences(servers, again) == []
    with open(os.path.join(bare, "report.txt")) as f:
        assert re.search(r"^re-rendered at .* from perf\.jsonl, run\.json ", f.read(), re.M)
    # the facts alone say it, as from a server that wrote no plan_given into run.json
    older = str(tmpdir.mkdir("older"))
    shutil.copy(os.path.join(log_dir, "perf.jsonl"), older)
    with open(os.path.join(log_dir, "run.json")) as f:
        marker = json.load(f)
    assert marker.pop("plan_given")
    with open(os.path.join(older, "run.json"), "w") as f:
        json.dump(marker, f)
    code, out, err = run_report(procs, older)
    assert code == 0, err
    again = load_report(older)
    for key in RERENDER_ONLY:
        again.pop(key)
    assert differences(servers, again) == []


def _crafted(tmpdir, name, clients):
    """A crafted run of ``clients``: (name, MiB/s, chunk MiB), report.json written."""
    run = Crafted(str(tmpdir.join(name)))
    for client, mib_s, chunk_mib in clients:
        run.client(client, "host-" + client, mib_s, 0.004, chunk_bytes=chunk_mib * MIB,
                   file_bytes=40 * MIB)
    run.save()
    return run.log_dir


def test_like_for_like_compare_marks_exactly_the_clients_whose_plan_differs(procs, tmpdir):
    """compare on two runs whose chunk lists were swapped marks exactly the clients
    whose plan differs, shows each client's plan in each run, leaves them out of the
    like-for-like aggregate saying why, shows each run's exit code and interruption
    before any figure, prints counts as integers, and compare.html has a bar per
    client per run."""
    a = _crafted(tmpdir, "a", [("c1", 100, 10), ("c2", 200, 20), ("c3", 150, 10)])
    b = _crafted(tmpdir, "b", [("c1", 180, 20), ("c2", 110, 10), ("c3", 180, 10)])
    assert run_report(procs, b)[0] == 0
    rep_b = load_report(b)                      # B: the operator interrupted it
    rep_b["run"].update(exit_code=6, interrupted_by="SIGINT")
    b_json = str(tmpdir.join("b.json"))
    with open(b_json, "w") as f:
        json.dump(rep_b, f)
    html = str(tmpdir.join("cmp.html"))
    code, out, err = run_report(procs, "compare", a, b_json, "--out", html)
    assert code == 0, err
    lines = out.splitlines()
    marked = sorted(line[1:].split(":")[0] for line in lines
                    if re.match(r"\*c\d: ", line))
    assert marked == ["c1", "c2"], out
    assert " c3: chunk 10 MiB, file 40 MiB, 5 s, o_direct, prealloc no, verify no in A, B" \
        in lines
    assert "*c1: A chunk 10 MiB, file 40 MiB, 5 s, o_direct, prealloc no, verify no; B chunk " \
        "20 MiB, file 40 MiB, 5 s, o_direct, prealloc no, verify no" in out.replace("\n    ", " ")
    assert sorted(line for line in lines if "left out of the like-for-like" in line) == [
        "client c1 left out of the like-for-like aggregate: its plan differs: chunk 10 MiB "
        "-> chunk 20 MiB",
        "client c2 left out of the like-for-like aggregate: its plan differs: chunk 20 MiB "
        "-> chunk 10 MiB"]
    like = [line for line in lines if line.startswith("MiB/s like for like")]
    assert like == ["MiB/s like for like (1 client)              150.0      180.0   +20.0%"]
    mib = compare_sections(out)["clients, MiB/s mean"]
    assert [mib[n][0] for n in ("c1", "c2", "c3")] == ["*", "*", " "]
    counts = [line for line in lines if line.startswith("clients ")][0]
    assert counts.split() == ["clients", "3", "3", "+0.0%"]
    first_figure = min(i for i, line in enumerate(lines) if line.startswith("aggregate "))
    said = "\n".join(lines[:first_figure])
    assert "exit code 6: " in said and "INTERRUPTED by SIGINT" in said
    assert re.search(r"NOTE: runs A, B do not end with exit code 0", said)
    with open(html) as f:
        page = f.read()
    bars = re.findall(r'<rect class="bar" data-client="(c\d)" data-run="([AB])"', page)
    assert sorted(bars) == [(c, r) for c in ("c1", "c2", "c3") for r in "AB"]


def test_like_for_like_compare_of_three_runs_prints_the_run_to_run_spread(procs, tmpdir):
    """compare RUN RUN RUN: every run beside the first (the baseline) and each
    client's spread of MiB/s over the runs, (max - min) / mean."""
    runs = [_crafted(tmpdir, name, [("c1", mib_a, 10), ("c2", 200, 10)])
            for name, mib_a in (("t1", 100), ("t2", 120), ("t3", 80))]
    code, out, err = run_report(procs, "compare", "--out", str(tmpdir.join("c.html")),
                                *runs)
    assert code == 0, err
    assert out.startswith("compare 3 runs, A is the baseline")
    mib = compare_sections(out)["clients, MiB/s mean"]
    # mark, match, A, B, B vs A, C, C vs A, spread
    assert mib["c1"] == [" ", "name", "100.0", "120.0", "+20.0%", "80.0", "-20.0%", "40.0%"]
    assert mib["c2"][-1] == "0.0%"
    assert "a change within it is run-to-run noise" in out
    code, out, err = run_report(procs, "compare", runs[0])
    assert code == exitcodes.USAGE and "from 2 to" in err and len(err.splitlines()) == 1


def test_like_for_like_client_first_line_says_only_its_own_plan(procs, tmpdir):
    """The client's first log line names no chunk, file size or duration the server
    may replace (only what its own command line fixed); the plan it runs is the one
    go carries, said when go comes."""
    log_dir = str(tmpdir.join("run"))
    data = str(tmpdir.mkdir("data"))
    server, port = start_server(procs, log_dir, "--clients", "1", "--chunk-mb", "20",
                                "--file-mb", "40")
    client = procs.start(CLIENT + FAST + [
        "--server", "127.0.0.1:%d" % port, "--name", "p1", "--force", "--duration",
        str(DURATION_S), "--log-dir", str(tmpdir.join("logs")), data])
    out, err = communicate(client, 90)
    assert client.returncode == 0, err
    communicate(server, 60)
    with open(str(tmpdir.join("logs", "client-p1.log"))) as f:
        lines = f.read().splitlines()
    first = [line for line in lines if " client p1: " in line][0]
    assert "its own plan: %g s; the rest from the server's plan at go (--chunk-mb, " \
        "--file-mb" % DURATION_S in first, first
    assert "MiB," not in first.split("calibration")[1].split("; log")[0], first
    go = [line for line in lines if "go from server" in line][0]
    assert "chunk 20 MiB, file 40 MiB, %g s" % DURATION_S in go, go


def test_like_for_like_words_name_each_figure_once_and_counts_agree(procs, tmpdir):
    """The per-client figure over the time inside write calls and the run's
    aggregate have names of their own (text, HTML, JSON, method note), no figure is
    called 'while writing', and counts agree in number ('1 rollover', 'once')."""
    run = Crafted(str(tmpdir.join("words")))
    run.client("w1", "h1", 100, 0.004, intervals=1, rollovers=1)
    code, out, err = run_report(procs, run.save())
    assert code == 0, err
    rep = load_report(run.log_dir)
    e = rep["clients"][0]
    assert "while_writing" not in e["throughput_mib_s"] and \
        e["throughput_mib_s"]["in_write_calls"] > 0
    with open(os.path.join(run.log_dir, "report.txt")) as f:
        text = f.read().replace("\n    ", " ")
    with open(os.path.join(run.log_dir, "report.html")) as f:
        page = f.read()
    for where in (text, page):
        assert "while writing" not in where and "while all" not in where
        assert "(%s: 1 client, " % metrics.AGGREGATE_LABEL in where
        assert metrics.IN_CALLS_LABEL in where and metrics.WALL_LABEL in where
    assert "%s MiB/s: mean 100.0 | %s " % (metrics.WALL_LABEL, metrics.IN_CALLS_LABEL) in text
    assert "in 1 perf interval, 10 chunks; 1 rollover (" in text
    assert ", 0 duplicates ignored, 0 reconnects; went away: never" in text
    assert "totals: 1 client (" in text
    for label in (metrics.WALL_LABEL, metrics.IN_CALLS_LABEL, metrics.AGGREGATE_LABEL):
        assert label in rep["method"]
    assert text_mod.times(1) == "once" and text_mod.count(1, "client") == "1 client"


def test_like_for_like_console_keeps_the_extremes_of_each_chunk_size(procs, tmpdir,
                                                                     monkeypatch):
    """With more clients than the closing summary shows, it keeps the slowest and
    fastest of each chunk size (not of the whole run, where sizes would be mixed)."""
    from diskbench import report as outputs
    run = _crafted(tmpdir, "many", [("a", 100, 10), ("b", 150, 10), ("c", 200, 10),
                                    ("d", 120, 20), ("e", 130, 20), ("f", 300, 20)])
    assert run_report(procs, run)[0] == 0
    monkeypatch.setattr(outputs, "CONSOLE_ROWS_MAX", 3)
    monkeypatch.setattr(outputs, "CONSOLE_EXTREMES", 1)
    lines = outputs.console_summary(load_report(run)).splitlines()
    head = [i for i, line in enumerate(lines) if line.startswith("client ")][0]
    shown = [line.split()[0] for line in lines[head + 1:] if not line.startswith(("(", " "))]
    assert shown == ["a", "c", "d", "f"], lines
    assert "slowest and fastest of each workload" in " ".join(lines[head:])


def test_like_for_like_compare_shows_a_client_without_figures_as_unknown(procs, tmpdir):
    """A client whose figures could not be computed (report.json's stub entry: no
    host, no throughput) is a row of unknowns in compare, never a traceback."""
    from diskbench.report import compare as compare_mod
    a = load_report(_ran(procs, _crafted(tmpdir, "a", [("c1", 100, 10)])))
    b = load_report(_ran(procs, _crafted(tmpdir, "b", [("c1", 120, 10)])))
    b["clients"].append(dict(client="stub", state="failed", state_why="its report failed",
                             written_mib=None, rollover_count=0, chunk_count=0,
                             perf_interval_count=0, cpu_bound=False, unreportable=True))
    result = compare_mod.compare_runs([a, b], ["a", "b"])
    text = compare_mod.render_text(result)
    assert " stub: chunk ?, file ?, duration ?, sync ?, prealloc ?, verify ? in B; not in A" \
        in text
    assert compare_sections(text)["clients, MiB/s mean"]["stub"][1:] == ["none", "-", "-", "-"]
    assert "stub" in compare_mod.render_html(result)


def _ran(procs, log_dir):
    assert run_report(procs, log_dir)[0] == 0
    return log_dir


def _page_headline(log_dir):
    with open(os.path.join(log_dir, "report.html")) as f:
        page = f.read()
    return "\n".join(re.findall(r"<p(?: class=\"agg\")?>([^<]*)</p>", page)).replace(
        "&#x27;", "'").replace("&quot;", '"')


def test_like_for_like_ranks_only_finished_clients_by_their_common_window(procs, tmpdir):
    """A client that did not finish (killed, stalled, failed) is never ranked:
    ka wrote 500 MiB/s for 3 s and never finished, kb 500 beside it, then 900
    alone (whole-run mean 700): the headline does not call ka the slowest, it
    names it as not ranked with its state. Finished clients are ranked by their
    MiB/s in the window when all of them wrote: fb wrote 900 alone for 2 s before
    fa started, then both 400: they are equal (1.00), not 0.71 by whole-run means.
    report.txt, report.html and report.json say the same."""
    run = Crafted(str(tmpdir.join("kill")))
    run.client("ka", "h1", 0, 0.004, rates=[500] * 3, stop=False, chunk_bytes=10 * MIB)
    run.client("kb", "h2", 0, 0.004, rates=[500] * 3 + [900] * 3, chunk_bytes=10 * MIB)
    run.client("fa", "h3", 0, 0.004, rates=[400] * 4, offset=2.0, chunk_bytes=20 * MIB)
    run.client("fb", "h4", 0, 0.004, rates=[900] * 2 + [400] * 4, chunk_bytes=20 * MIB)
    code, out, err = run_report(procs, run.save())
    assert code == 0, err
    rep = load_report(run.log_dir)
    ten, twenty = rep["by_chunk_size"]
    assert (ten["slowest"], ten["fastest"], ten["slowest_to_fastest_ratio"]) == \
        ("kb", "kb", None)
    assert [x["client"] for x in ten["not_ranked"]] == ["ka"]
    assert ten["ranked_count"] == 1 and ten["client_count"] == 2
    assert sorted(twenty["ranked_mib_s"]) == ["fa", "fb"]
    assert all(abs(v - 400.0) < 1e-6 for v in twenty["ranked_mib_s"].values())
    assert abs(twenty["slowest_to_fastest_ratio"] - 1.0) < 1e-9
    assert set([twenty["slowest"], twenty["fastest"]]) == set(["fa", "fb"])
    assert abs(twenty["window_s"] - 4.0) < 1e-6
    with open(os.path.join(run.log_dir, "report.txt")) as f:
        text = f.read().replace("\n    ", " ")
    for where in (text, _page_headline(run.log_dir).replace("\n    ", " ")):
        assert "slowest ka" not in where and "fastest kb" not in where
        assert "chunk 10 MiB, 2 clients: kb 700.0 MiB/s (the only one that finished: " \
            "nothing to rank it against); not ranked (did not finish): ka (unfinished)" \
            in where, where
        assert re.search(r"chunk 20 MiB, 2 clients: slowest f[ab] 400\.0 MiB/s, fastest f[ab] "
                         r"400\.0 MiB/s \(slowest/fastest 1\.00\)", where), where
        assert text_mod.ONLY_FINISHED_RANKED in where
        assert text_mod.RANKED_BY % "4.0" in where


def test_like_for_like_finished_clients_that_never_overlapped_are_not_called_unfinished(
        procs, tmpdir):
    """fa and fb finished but never wrote at the same time (fb, a late joiner, started
    after fa ended): no window ranks them, and the report says so; it must not list
    them as clients that did not finish ("not ranked (did not finish): fa
    (finished)"). ka, which did not finish, is the only one named so, in report.json,
    report.txt and report.html alike."""
    run = Crafted(str(tmpdir.join("apart")))
    run.client("fa", "h1", 0, 0.004, rates=[400] * 2, chunk_bytes=10 * MIB)
    run.client("fb", "h2", 0, 0.004, rates=[400] * 2, offset=5.0, chunk_bytes=10 * MIB)
    run.client("ka", "h3", 0, 0.004, rates=[400] * 3, stop=False, chunk_bytes=10 * MIB)
    code, out, err = run_report(procs, run.save())
    assert code == 0, err
    (ten,) = load_report(run.log_dir)["by_chunk_size"]
    assert ten["ranked_count"] == 0 and ten["slowest"] is None, ten
    assert "never all wrote at the same time" in ten["not_ranked_why"], ten
    assert ten["not_ranked"] == [{"client": "ka", "state": "running", "clock_jumped": False}], \
        ten["not_ranked"]
    with open(os.path.join(run.log_dir, "report.txt")) as f:
        text = f.read().replace("\n    ", " ")
    for where in (text, _page_headline(run.log_dir).replace("\n    ", " ")):
        assert "not ranked (did not finish): ka (unfinished)" in where, where
        assert "(finished)" not in where, where


def test_like_for_like_ranks_within_a_workload_and_names_what_differs(procs, tmpdir):
    """Clients of one chunk size but another file size, sync mode (fsync where the
    target refused O_DIRECT) or --verify are different workloads: each is ranked
    only against its own, and the headline names what tells them apart."""
    run = Crafted(str(tmpdir.join("mixed")))
    plan20 = dict(chunk_bytes=10 * MIB, file_bytes=20 * MIB)
    run.client("mxa", "h1", 300, 0.004, **plan20)
    run.client("mxa2", "h5", 350, 0.004, **plan20)
    run.client("mxb", "h2", 600, 0.004, chunk_bytes=10 * MIB, file_bytes=400 * MIB)
    run.client("mxc", "h3", 1400, 0.004, start=dict(sync_mode="fsync"), **plan20)
    run.client("mxd", "h4", 200, 0.004, verify=True, **plan20)
    code, out, err = run_report(procs, run.save())
    assert code == 0, err
    rep = load_report(run.log_dir)
    groups = dict((z["workload_label"], z) for z in rep["by_chunk_size"])
    assert sorted(groups) == sorted([
        "chunk 10 MiB, file 20 MiB, o_direct, verify no",
        "chunk 10 MiB, file 400 MiB, o_direct, verify no",
        "chunk 10 MiB, file 20 MiB, fsync, verify no",
        "chunk 10 MiB, file 20 MiB, o_direct, verify yes"]), sorted(groups)
    both = groups["chunk 10 MiB, file 20 MiB, o_direct, verify no"]
    assert (both["slowest"], both["fastest"], both["client_count"]) == ("mxa", "mxa2", 2)
    for label in groups:
        if groups[label] is not both:
            assert groups[label]["client_count"] == 1
            assert groups[label]["slowest_to_fastest_ratio"] is None
    with open(os.path.join(run.log_dir, "report.txt")) as f:
        text = f.read().replace("\n    ", " ")
    for where in (text, _page_headline(run.log_dir).replace("\n    ", " ")):
        assert "chunk 10 MiB, file 20 MiB, o_direct, verify no, 2 clients: slowest mxa " \
            "300.0 MiB/s, fastest mxa2 350.0 MiB/s (slowest/fastest 0.86)" in where, where
        assert "chunk 10 MiB, file 20 MiB, fsync, verify no, 1 client: mxc 1400.0 MiB/s" \
            in where
        assert "the clients ran different workloads (file size, sync mode, read-back " \
            "(--verify))" in where
        assert "slowest mxa 300.0 MiB/s, fastest mxc" not in where
    rows = _read_csv(os.path.join(run.log_dir, csvout.CHUNK_SIZES_CSV))
    assert sorted(r["workload_label"] for r in rows) == sorted(groups)


def test_like_for_like_compare_gives_no_change_or_spread_across_unlike_plans(procs, tmpdir):
    """Runs A and C plain, B with --verify: compare names the difference, leaves
    the client out of the like-for-like aggregate, and gives no change for B nor
    a spread over the three ('unlike'); C, of A's plan, keeps its change. A
    client whose chunk size differs gets no '+100.0%' either."""
    runs = []
    for name, verify, mib_s in (("va", False, 100), ("vb", True, 200), ("vc", False, 120)):
        run = Crafted(str(tmpdir.join(name)))
        run.client("c1", "h1", mib_s, 0.004, chunk_bytes=10 * MIB, file_bytes=40 * MIB,
                   **(dict(verify=True) if verify else {}))
        run.client("c2", "h2", 150, 0.004, chunk_bytes=(20 if verify else 10) * MIB,
                   file_bytes=40 * MIB)
        runs.append(_ran(procs, run.save()))
    assert load_report(runs[1])["clients"][0]["verification"] is not None
    code, out, err = run_report(procs, "compare", "--out", str(tmpdir.join("c.html")), *runs)
    assert code == 0, err
    flat = out.replace("\n    ", " ")
    assert "client c1 left out of the like-for-like aggregate: its plan differs: verify no " \
        "-> verify yes" in flat
    assert "*c1: A chunk 10 MiB, file 40 MiB, 5 s, o_direct, prealloc no, verify no; B " \
        "chunk 10 MiB, file 40 MiB, 5 s, o_direct, prealloc no, verify yes; C" in flat
    mib = compare_sections(out)["clients, MiB/s mean"]
    # mark, match, A, B, B vs A, C, C vs A, spread
    assert mib["c1"] == ["*", "name", "100.0", "200.0", "unlike", "120.0", "+20.0%",
                         "unlike"], mib["c1"]
    assert mib["c2"][4] == "unlike" and mib["c2"][-1] == "unlike", mib["c2"]
    assert "+100.0%" not in out
    like = [line for line in out.splitlines() if line.startswith("MiB/s like for like")]
    assert like and "(0 clients)" in like[0]
    from diskbench.report import compare as compare_mod       # the figures behind it
    result = compare_mod.compare_runs([load_report(r) for r in runs], runs)
    row = [r for r in result["clients"] if r["client"] == "c1"][0]
    assert row["mib_s_change_percent"][1] is None and row["mib_s_spread_percent"] is None
    assert abs(row["mib_s_change_percent"][2] - 20.0) < 1e-9


def test_like_for_like_compare_says_why_default_names_match_nobody(procs, tmpdir):
    """Default client names (HOSTNAME-PID-RANDOM, two clients per host) differ in
    every run and a host with two clients cannot pair them: compare matches
    nobody, and says so, why, and the fix (--name), instead of a silent
    'like for like (0 clients)'."""
    runs = []
    for name, pids in (("da", (101, 102)), ("db", (201, 202))):
        run = Crafted(str(tmpdir.join(name)))
        for pid in pids:
            run.client("node1-%d-%x" % (pid, pid * 7919), "node1", 100 + pid % 10, 0.004,
                       chunk_bytes=10 * MIB)
        runs.append(_ran(procs, run.save()))
    code, out, err = run_report(procs, "compare", "--out", str(tmpdir.join("c.html")), *runs)
    assert code == 0, err
    flat = out.replace("\n    ", " ")
    assert "MiB/s like for like (0 clients)" in flat
    assert "no client of run B matched one of the baseline's" in flat
    assert "start each client with the same --name in every run" in flat
    with open(str(tmpdir.join("c.html"))) as f:
        assert "no client of run B matched one of the baseline" in f.read()
    same = [runs[0], runs[0]]
    code, out, err = run_report(procs, "compare", "--out", str(tmpdir.join("d.html")), *same)
    assert code == 0 and "matched one of the baseline" not in out
