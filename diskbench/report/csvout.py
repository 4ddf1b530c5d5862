"""clients.csv and timeseries.csv, for spreadsheets and pandas (UTF-8, header row).

Empty cells mean "not known". Column names carry their unit like report.json's keys.
Spreadsheet-safe: a text cell (names, hosts, reasons: text a client chose) that
begins with one of FORMULA_STARTS gets a single quote in front (the OWASP rule for
"CSV injection"), so a spreadsheet shows it as text instead of running it as a
formula. Numbers are written as numbers (a negative number stays a number).
"""
from __future__ import absolute_import

import csv
import io

from diskbench.compat import PY2, string_types
from diskbench.fsutil import atomic_write
from diskbench.report import figures as figures_mod
from diskbench.report import text as text_mod

CLIENTS_CSV = "clients.csv"
TIMESERIES_CSV = "timeseries.csv"
CHUNK_SIZES_CSV = "chunk_sizes.csv"

#: (column, how to get it from a report.json client entry)
CLIENT_COLUMNS = (
    ("client", lambda e: e["client"]),
    ("host", lambda e: e["host"]),
    ("state", text_mod.state_label),
    ("throughput_mean_mib_s", lambda e: e["throughput_mib_s"]["mean"]),
    ("latency_p50_ms", lambda e: e["latency_ms"]["p50"]),
    ("latency_p99_ms", lambda e: e["latency_ms"]["p99"]),
    ("rollover_count", lambda e: e["rollover_count"]),
    ("writer_cpu_mean_percent", lambda e: e["writer_cpu_percent"]["mean"]),
    ("writer_rss_max_mib", lambda e: e["writer_rss_mib"]["max"]),
    ("written_mib", lambda e: e["written_mib"]),
    ("perf_interval_count", lambda e: e["perf_interval_count"]),
    ("chunk_count", lambda e: e["chunk_count"]),
    ("went_away_count", lambda e: e["went_away_count"]),
    ("state_why", lambda e: e["state_why"]),
    ("target_dir", lambda e: e["target_dir"]),
    ("fs", lambda e: e["fs"]),
    ("python", lambda e: e["python"]),
    ("os", lambda e: e["os"]),
    ("sync", lambda e: e["sync"]),
    ("preallocated", lambda e: e["preallocated"]),
    ("buffer_huge_page_mib", lambda e: e["buffer_huge_page_mib"]),
    ("chunk_mib", lambda e: e["chunk_mib"]),
    ("file_mib", lambda e: e["file_mib"]),
    ("diskbench_version", lambda e: e["diskbench_version"]),
    ("psutil", lambda e: e["psutil"]),
    ("clock_offset_s", lambda e: e.get("clock_offset_s")),
    # --verify (empty: it was off): read MiB/s and bad blocks (report.json's verification)
    ("read_mib_s", lambda e: (e.get("verification") or {}).get("read_mib_s")),
    ("bad_block_count", lambda e: (e.get("verification") or {}).get("bad_block_count")),
)

#: chunk_sizes.csv: report.json's by_chunk_size, a row per workload (and its
#: report.chunk_size_latency_key() last).
CHUNK_SIZE_COLUMNS = ("chunk_mib", "workload_label", "client_count", "ranked_count",
                      "mean_mib_s", "min_mib_s", "max_mib_s", "slowest", "fastest",
                      "slowest_to_fastest_ratio", "window_s")

TIMESERIES_COLUMNS = ("client", "t_server_ts", "t_run_s", "length_s", "mib_s", "bytes",
                      "chunk_count", "latency_p50_ms", "latency_p99_ms",
                      "writer_cpu_percent", "writer_rss_mib")


#: A text cell beginning with one of these is a formula to a spreadsheet (OWASP).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
#: What goes in front of such a cell: spreadsheets show the rest as text.
FORMULA_GUARD = "'"


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, string_types) and value.startswith(FORMULA_STARTS):
        value = FORMULA_GUARD + value
    if PY2 and isinstance(value, unicode):  # noqa: F821 - 2.7 only
        return value.encode("utf-8")
    return value


def _write(path, header, rows):
    """UTF-8 CSV (2.7's csv module writes bytes, 3's text), written atomically
    as the rows come (timeseries.csv has a row per perf interval of every client)."""
    atomic_write(path, _chunks(header, rows))


#: Rows encoded per chunk written.
ROWS_PER_CHUNK = 1000


def _chunks(header, rows):
    buf = io.BytesIO() if PY2 else io.StringIO(newline="")
    out = csv.writer(buf)
    out.writerow(header)
    for number, row in enumerate(rows, 1):
        out.writerow([_cell(v) for v in row])
        if number % ROWS_PER_CHUNK == 0:
            yield _take(buf)
    yield _take(buf)


def _take(buf):
    data = buf.getvalue()
    buf.seek(0)
    buf.truncate()
    return data if PY2 else data.encode("utf-8", "replace")


def write_clients(path, rep):
    _write(path, [c for c, _ in CLIENT_COLUMNS],
           [[get(e) for _, get in CLIENT_COLUMNS] for e in rep["clients"]])


def write_timeseries(path, rows):
    _write(path, TIMESERIES_COLUMNS, ([r[c] for c in TIMESERIES_COLUMNS] for r in rows))


def write_chunk_sizes(path, rep):
    columns = CHUNK_SIZE_COLUMNS + (figures_mod.chunk_size_latency_key(),)
    _write(path, columns, ([z[c] for c in columns] for z in rep.get("by_chunk_size") or []))
