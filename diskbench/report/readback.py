"""The report's read-back section (--verify): per client, what was read back,
how fast and what came back wrong; the headline's "data verified" line; the
client table's two columns. Read figures are kept apart from the write
figures: they come from READBACK messages only (bytes read / time in reads,
and the latency of each chunk's read), never from perf intervals.
"""
from __future__ import division

from diskbench import metrics, protocol
from diskbench.stamp import kinds_text

#: Bad blocks listed per client in report.json and report.txt (the rest are
#: counted by kind; the client log has the first client/verify.MAX_BAD_REPORTED).
LISTED_BAD_BLOCKS = 20


def client_entry(c, latency):
    """report.json's ``verification`` of client ``c`` (a clientstate.Client
    snapshot; None: it did not verify); ``latency``: figures.latency_figures
    (percentiles in ms)."""
    if not c.verify and not c.read_files:
        return None
    bad = dict(c.bad_counts)
    return dict(
        requested_by=c.verify_source, file_count=c.read_files,
        read_mib=metrics.mib(c.read_bytes), expected_mib=metrics.mib(c.read_file_bytes),
        read_time_s=c.read_io_s,
        read_mib_s=metrics.mib_per_s(c.read_bytes, c.read_io_s) if c.read_io_s else None,
        read_latency_ms=latency(c.read_hist),
        read_modes=sorted(c.read_modes),
        bad_block_count=sum(bad.values()), bad_blocks_by_kind=bad,
        bad_block_list=[dict(kind=b.kind, path=b.path, file_index=b.file_index,
                             offset=b.offset, expected=b.expected, found=b.found)
                        for b in c.bad_blocks[:LISTED_BAD_BLOCKS]])


def _entries(rep):
    return [e for e in rep["clients"] if e.get("verification")]


def headline(rep):
    """``data verified: 41.2 GiB on 3 clients, 0 bad blocks`` (or the counts by
    kind and who had them); [] when no client verified."""
    entries = _entries(rep)
    if not entries:
        return []
    mib = sum(e["verification"]["read_mib"] for e in entries)
    by_kind = dict((k, sum(e["verification"]["bad_blocks_by_kind"][k] for e in entries))
                   for k in protocol.BAD_KINDS)
    bad = sum(by_kind.values())
    line = "data verified: %.1f GiB on %d client%s, %d bad blocks" % (
        mib / 1024.0, len(entries), "" if len(entries) == 1 else "s", bad)
    if bad:
        line += " (%s) on %s: THE DATA DID NOT COME BACK" % (kinds_text(by_kind), ", ".join(
            e["client"] for e in entries if e["verification"]["bad_block_count"]))
    return [line]


def table_columns(e):
    """The client table's two columns for entry ``e``: read MiB/s, bad blocks."""
    v = e.get("verification")
    if not v:
        return "-", "-"
    return ("-" if v["read_mib_s"] is None else "%.1f" % v["read_mib_s"],
            "%d" % v["bad_block_count"])


def client_lines(e):
    """report.txt's lines for one client's read-back."""
    v = e.get("verification")
    if not v:
        return []
    lat = v["read_latency_ms"]
    lines = ["  read back (--verify, from %s): %d files, %.1f of %.1f MiB at %s MiB/s "
             "(%s), read latency per chunk ms: p50 %s p99 %s max %s; %d bad blocks%s" % (
                 v["requested_by"], v["file_count"], v["read_mib"], v["expected_mib"],
                 "-" if v["read_mib_s"] is None else "%.1f" % v["read_mib_s"],
                 ", ".join(v["read_modes"]) or "no file read", _ms(lat.get("p50")),
                 _ms(lat.get("p99")), _ms(lat.get("max")), v["bad_block_count"],
                 " (%s)" % kinds_text(v["bad_blocks_by_kind"]) if v["bad_block_count"]
                 else "")]
    for b in v["bad_block_list"]:
        lines.append("  bad block (%s): %s offset %d: expected %s, found %s" % (
            b["kind"], b["path"], b["offset"], b["expected"], b["found"]))
    if v["bad_block_count"] > len(v["bad_block_list"]):
        lines.append("  ... %d more bad blocks (counted by kind above)" % (
            v["bad_block_count"] - len(v["bad_block_list"])))
    return lines


def _ms(value):
    return "-" if value is None else "%.2f" % value
