"""The report of a run: built from a registry snapshot or a re-render's
ledger (build.py, figures.py), and every file of it written, from the built
report plus LOG_DIR/perf.jsonl.

The one home of the report: the server calls it at the end of a run, and
``python -m diskbench.report LOG_DIR`` (rerender.py) without a server;
compare.py compares runs. It never imports the server
(tests/test_rules_imports.py). ``write_all`` writes every file: report.json
(build.py), report.txt (text.py), report.html (htmlout.py), clients.csv,
chunk_sizes.csv and timeseries.csv (csvout.py).
"""
from __future__ import absolute_import

import json
import os

from diskbench.compat import as_bytes
from diskbench.fsutil import atomic_write
from diskbench.report import build as build_mod
from diskbench.metrics import count
from diskbench.report import csvout, htmlout
from diskbench.report import figures as figures_mod
from diskbench.report import series as series_mod
from diskbench.report import text as text_mod

#: The marker of a run in progress in --log-dir (run id and start time; at the
#: end the server's report facts go in it). The server and the re-render take it
#: from here.
RUN_MARKER = "run.json"
#: The server's closing summary lists every client up to this many; beyond it,
#: the clients not finished plus the slowest and fastest few.
CONSOLE_ROWS_MAX = 40
CONSOLE_EXTREMES = 5


def _encode(text):
    """UTF-8 bytes; a lone surrogate from the wire becomes '?' instead of raising."""
    return text.encode("utf-8", "replace") if not isinstance(text, bytes) else text


def record_facts(log_dir, facts):
    """Add the server's report facts (build.facts) to LOG_DIR/run.json,
    where a re-render reads them back: None, or the error that kept them out."""
    path = os.path.join(log_dir, RUN_MARKER)
    try:
        with open(path) as f:
            marker = json.load(f)
    except (IOError, OSError, ValueError):
        marker = None
    if not isinstance(marker, dict):
        marker = {}
    marker[build_mod.FACTS_KEY] = facts
    try:
        atomic_write(path, as_bytes(json.dumps(marker, sort_keys=True) + "\n"))
    except (IOError, OSError, TypeError, ValueError) as exc:
        return exc
    return None


def write(log_dir, rep):
    """Try report.json, then report.txt, each on its own (a full disk may take one
    and not the other). Returns ([paths written], [(path, error) failed]); a
    report that cannot even be rendered is a failure of that file, never a crash."""
    written, failed = [], []
    for name, render in zip(build_mod.REPORT_FILES, (build_mod.json_chunks, _text_chunks)):
        path = os.path.join(log_dir, name)
        try:
            atomic_write(path, render(rep))
            written.append(path)
        except Exception as exc:  # noqa: B902 - a bug or a full disk: the other file may still work
            failed.append((path, exc))
    return written, failed


def _text_chunks(rep):
    return (as_bytes(part) for part in text_mod.text_parts(rep))


def write_all(log_dir, rep, out_dir=None, warn=None, series=None):
    """Add the per-interval keys to ``rep``, then write every file into ``out_dir``
    (default ``log_dir``), each on its own: returns ([written], [(path, error)]).
    The time series are ``series`` (series.build's) when given (rerender read
    perf.jsonl already), else read from LOG_DIR/perf.jsonl."""
    out_dir = out_dir or log_dir
    if series is None:
        try:
            records = series_mod.iter_records(log_dir, warn)
        except (IOError, OSError) as exc:  # the charts are lost, not the report
            records = []
            if warn:
                warn("cannot read %s for the charts (%s)" % (series_mod.PERF_LOG, exc))
        series = series_mod.build(records)
    series_mod.attach(rep, series)
    written, failed = write(out_dir, rep)
    run_start = rep["run"]["start_ts"]
    extra = (
        (htmlout.REPORT_HTML, lambda p: atomic_write(
            p, (_encode(piece) for piece in htmlout.render_pieces(rep, series)))),
        (csvout.CLIENTS_CSV, lambda p: csvout.write_clients(p, rep)),
        (csvout.CHUNK_SIZES_CSV, lambda p: csvout.write_chunk_sizes(p, rep)),
        (csvout.TIMESERIES_CSV, lambda p: csvout.write_timeseries(
            p, series_mod.timeseries_rows(series, run_start))))
    for name, make in extra:
        path = os.path.join(out_dir, name)
        try:
            make(path)
            written.append(path)
        except Exception as exc:  # a chart bug must not cost the other files
            failed.append((path, exc))
    return written, failed


def console_summary(rep):
    """The headline and the client table, as printed at the end of a run."""
    table = text_mod.client_table(rep)
    clients = rep["clients"]
    if len(clients) > CONSOLE_ROWS_MAX:
        by_name = dict((e["client"], row) for e, row in zip(clients, table[1:]))
        sizes = {}   # like for like: the extremes of each workload
        for e in clients:
            sizes.setdefault(figures_mod.workload_of(e), []).append(
                ((e.get("throughput_mib_s") or {}).get("mean") or 0.0, e["client"]))
        keep = set()
        for rated in sizes.values():
            rated.sort()
            keep.update(n for _, n in rated[:CONSOLE_EXTREMES] + rated[-CONSOLE_EXTREMES:])
        keep.update(e["client"] for e in clients if e["state"] != "finished")
        table = [table[0]] + [by_name[e["client"]] for e in clients if e["client"] in keep]
        more = len(clients) - len(table) + 1
        if more:
            table.append("(%s more in report.txt: the table shows the %d slowest and "
                         "fastest of each workload and every client not finished)" % (
                             count(more, "client"), CONSOLE_EXTREMES))
    return "\n".join(text_mod.fit(text_mod.headline(rep) + table)) + "\n"

