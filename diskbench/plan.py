"""The run plan: each client's chunk size, file size, duration and report
intervals, decided once, on the server, at the client's hello.

A node needs only ``python -m diskbench.client --server HOST DIR``: what it
writes may come from the server (``--chunk-mb 10,20,40``, ``--duration``,
``--file-mb``, the intervals). For each setting the client's own command line
wins, then the server's plan, then the default here. The server hands the
sizes of its chunk list out in order of arrival (the first client to say
hello gets the first size; past the end of the list it starts again), so
clients started with identical commands write different chunk sizes, as the
customer's brief asks; ``DEFAULT_CHUNK_MB`` is that list when the server is
given none. The plan travels in ``go``; the client checks it against its disk
(two rollovers at its calibrated speed, free space, memory) before writing.

The two-rollover rule lives here because both sides apply it: the server
refuses (or, for a client started with --force, warns about) a plan that
cannot roll over twice on that host, from the calibration in its hello.
"""
from __future__ import division

import math

from diskbench.compat import gcd
from diskbench.metrics import MIB
from diskbench import protocol
from diskbench.protocol import PLAN_FIELDS

#: Smallest chunk, in MiB: below it a chunk's time is more the cost of the write
#: call (and of O_DIRECT's per-request latency) than the disk's streaming speed.
MIN_CHUNK_MB = 10
#: The server's chunk list when it is given none (MiB): a spread from the
#: minimum up, so a fleet shows how chunk size moves throughput.
DEFAULT_CHUNK_MB = (10, 20, 40, 80)
#: How to choose chunk sizes for what you want to learn (the server's and the
#: client's --help, and the report when its clients wrote different sizes).
CHUNK_ADVICE = ("to find a slow host, give one chunk size (--chunk-mb 10 on the "
                "server); to see how chunk size matters, keep the default")
#: A data file is this many chunks unless --file-mb says otherwise.
FILE_CHUNKS = 10
#: A run must allow at least this many rollovers, so the fsync + close of full
#: files (and the next file's first writes) are part of what is measured.
MIN_ROLLOVERS = 2
#: Defaults of the plan's times (s).
DURATION_S = 60.0
PERF_INTERVAL_S = 1.0
STATS_INTERVAL_S = 10.0
HEARTBEAT_INTERVAL_S = 5.0
#: The shortest interval each may be on either command line: a perf sample
#: then still spans a few chunks, and stats (psutil) and heartbeats stay a
#: small share of what a client sends (1e-9 s sent 8,000 records in 3 s).
MIN_INTERVAL_S = dict(perf_interval_s=0.1, stats_interval_s=0.5, heartbeat_interval_s=0.5)
#: Default --stall-timeout of both programs: a writer that has not finished a
#: chunk for this long is stalled (the client logs it and reports an error while
#: it lasts; the server shows a client whose heartbeat says so STALLED). Many
#: chunk times of any disk worth measuring. A stalled writer also gets only this
#: long (at most the supervisor's CHILD_STOP_TIMEOUT_S) to obey the stop command
#: before SIGTERM. Not part of the plan: each side applies its own flag.
STALL_TIMEOUT_S = 30.0
#: Default of the server's --max-duration (s): the longest any client may be
#: planned to write (its own --duration included). A day: a longer run is a
#: soak test its operator asks for by raising it, and the cap is what bounds
#: how long one lying or broken client can hold a run open.
MAX_RUN_S = 86400.0
#: Largest --chunk-mb / --file-mb on either command line (1 PiB: byte counts
#: stay far inside the protocol's integers, protocol.MAX_INT).
MAX_MB = 1024 ** 3

#: Where a setting of a client's plan came from (report: plan_source).
FROM_CLIENT = "client"    # its own command line
FROM_SERVER = "server"    # the server's plan (its chunk list, --duration, ...)
FROM_DEFAULT = "default"  # neither said: the default

#: The plan's settings (protocol.PLAN_FIELDS) by their command-line flags,
#: the same on server and client.
FLAGS = dict(chunk_bytes="--chunk-mb", file_bytes="--file-mb", duration_s="--duration",
             perf_interval_s="--perf-interval", stats_interval_s="--stats-interval",
             heartbeat_interval_s="--heartbeat-interval")
assert set(FLAGS) == set(PLAN_FIELDS)
#: The plan's times, in seconds on both command lines (the sizes are in MiB).
TIME_FIELDS = ("duration_s", "perf_interval_s", "stats_interval_s", "heartbeat_interval_s")


#: Read-back verification (--verify on either command line; client/verify.py):
#: not a PLAN_FIELD (no value to choose, only on or off), but it travels the
#: same way: hello says the client's own flag, go what the client runs.
VERIFY = "verify"


def resolve_verify(own, server):
    """(on, source) of --verify: on when either command line says so; its
    source the client's own flag first, then the server's plan."""
    if own:
        return True, FROM_CLIENT
    if server.get(VERIFY):
        return True, FROM_SERVER
    return False, FROM_DEFAULT


def arg_dest(field):
    """The argparse attribute of a plan setting's flag (``--chunk-mb``: chunk_mb)."""
    return FLAGS[field].lstrip("-").replace("-", "_")


def defaults(chunk_bytes=MIN_CHUNK_MB * MIB):
    """The default of every plan setting (file size from the chunk size)."""
    return dict(chunk_bytes=chunk_bytes, file_bytes=default_file_bytes(chunk_bytes),
                duration_s=DURATION_S, perf_interval_s=PERF_INTERVAL_S,
                stats_interval_s=STATS_INTERVAL_S,
                heartbeat_interval_s=HEARTBEAT_INTERVAL_S)


def default_file_bytes(chunk_bytes):
    return FILE_CHUNKS * chunk_bytes


def resolve(own, fixed, server, index):
    """(values, sources): the plan of the ``index``-th client (0: the first
    to say hello).

    ``own``: the client's values (its hello; a missing one is the default);
    ``fixed``: the settings its command line set (None: all of them, as a
    client that does not say, such as a version-1-style simulation);
    ``server``: the server's plan, with ``chunk_bytes`` a list handed out in
    order of arrival (empty or absent: none).
    """
    base = defaults()
    fixed = set(PLAN_FIELDS if fixed is None else fixed)
    values, sources = {}, {}

    def take(key, server_value):
        if key in fixed and own.get(key) is not None:
            values[key], sources[key] = own[key], FROM_CLIENT
        elif server_value is not None:
            values[key], sources[key] = server_value, FROM_SERVER
        else:
            values[key] = own.get(key) if own.get(key) is not None else base[key]
            sources[key] = FROM_DEFAULT

    chunks = server.get("chunk_bytes") or ()
    take("chunk_bytes", chunks[index % len(chunks)] if chunks else None)
    take("file_bytes", server.get("file_bytes"))
    if sources["file_bytes"] == FROM_DEFAULT:  # follows the chunk it will write
        values["file_bytes"] = default_file_bytes(values["chunk_bytes"])
    for key in PLAN_FIELDS:
        if key not in values:
            take(key, server.get(key))
    return values, sources


def interval_problem(field, value):
    """None, or why interval ``field`` (a key of MIN_INTERVAL_S) cannot be
    ``value`` s (one line naming the fix)."""
    least = MIN_INTERVAL_S[field]
    if value >= least:
        return None
    return "%s %g is below its %g s minimum; use %s %g or more" % (
        FLAGS[field], value, least, FLAGS[field], least)


def size_problem(chunk_bytes, file_bytes, chunk_flag="--chunk-mb", file_flag="--file-mb"):
    """None, or why these sizes cannot run (one line naming the fix)."""
    chunk_mb, file_mb = chunk_bytes // MIB, file_bytes // MIB
    if chunk_bytes % MIB or chunk_mb < MIN_CHUNK_MB:
        return ("%s %g is below the %d MiB minimum: smaller chunks measure the cost "
                "of each write call more than the disk's throughput; use %s %d or more"
                % (chunk_flag, chunk_bytes / MIB, MIN_CHUNK_MB, chunk_flag, MIN_CHUNK_MB))
    if file_bytes < chunk_bytes:
        return "%s %d is smaller than %s %d; use %s %d or more" % (
            file_flag, file_mb, chunk_flag, chunk_mb, file_flag, chunk_mb)
    if file_bytes % chunk_bytes:
        # every write is one chunk: a file's last one would be shorter, and be
        # counted and timed as a chunk of the full size
        below = file_bytes // chunk_bytes * chunk_bytes // MIB
        given = "%d" % file_mb if not file_bytes % MIB else "%.6f" % (
            file_bytes / float(MIB))
        return ("%s %s is not a whole number of %d MiB chunks (%s %d): the last "
                "write of each file would be a shorter one; use %s %d or %d" % (
                    file_flag, given, chunk_mb, chunk_flag, chunk_mb, file_flag, below,
                    below + chunk_mb))
    return None


def chunk_list_problem(chunks_mb, file_mb, file_flag="--file-mb"):
    """None, or why ``file_mb`` fits not every size of a chunk list (each
    pair as ``size_problem``; a list's advice is a size that fits them all)."""
    problems = [size_problem(mb * MIB, file_mb * MIB, file_flag=file_flag)
                for mb in sorted(chunks_mb, reverse=True)]   # too small for the largest first
    problems = [p for p in problems if p]
    if not problems or len(set(chunks_mb)) < 2 or file_mb < max(chunks_mb):
        return problems[0] if problems else None
    whole = 1
    for mb in chunks_mb:
        whole = whole * mb // gcd(whole, mb)
    below = file_mb // whole * whole
    return ("%s %d is not a whole number of chunks of every size in --chunk-mb %s: the "
            "last write of some files would be a shorter one; use %s %s%d, or leave it "
            "out (a file is then %d of its chunks)" % (
                file_flag, file_mb, ",".join("%d" % mb for mb in chunks_mb), file_flag,
                "%d or " % below if below else "", below + whole, FILE_CHUNKS))


def expected_rollovers(mib_s, duration_s, file_mb):
    """Files completed in ``duration_s`` at ``mib_s``: never rounded up (a
    file under 1 MiB: as many as MIN_ROLLOVERS, whatever the speed)."""
    if file_mb <= 0:
        return float(MIN_ROLLOVERS)
    return mib_s * duration_s / float(file_mb)


#: What a refusal by the rollover rule adds (a warning under --force does not).
FORCE_HINT = " (or --force to run anyway)"


def rollover_rule(mib_s, duration_s, file_mb, chunk_mb):
    """None when >= MIN_ROLLOVERS are expected, else why not and the fix (a
    refusal adds FORCE_HINT)."""
    got = expected_rollovers(mib_s, duration_s, file_mb)
    if got >= MIN_ROLLOVERS:
        return None
    # a speed a peer says may be as small as 5e-324: no duration then, not inf
    need = MIN_ROLLOVERS * file_mb / mib_s if mib_s > 0 else None
    need_duration = int(math.ceil(need)) if need is not None and \
        need <= protocol.SECONDS_MAX else None
    max_file_mb = int(math.floor(mib_s * duration_s / MIN_ROLLOVERS))
    max_file_mb -= max_file_mb % chunk_mb if chunk_mb > 0 else 0   # whole chunks (size_problem)
    fixes = []
    if need_duration is not None:
        fixes.append("--duration >= %d" % need_duration)
    if max_file_mb >= chunk_mb:
        fixes.append("--file-mb <= %d" % max_file_mb)
    return ("at %.0f MiB/s, %g s gives ~%.1f rollovers of %d MiB files (at least %d "
            "needed); use %s" % (
                mib_s, duration_s, _floor1(got), file_mb, MIN_ROLLOVERS,
                " or ".join(fixes) or "a faster disk"))


def plan_rollover_problem(values, mib_s):
    """None, or why ``values`` cannot roll over twice at ``mib_s`` (unknown
    speed: None)."""
    if not mib_s:
        return None
    return rollover_rule(mib_s, values["duration_s"], values["file_bytes"] // MIB,
                         values["chunk_bytes"] // MIB)


def duration_problem(duration_s, max_duration_s):
    """None, or why a plan of ``duration_s`` is over the server's
    --max-duration (one line naming the fix)."""
    if duration_s <= max_duration_s:
        return None
    return ("%g s is over the server's --max-duration %g s; use --duration %g or less "
            "(or ask the server's operator to raise --max-duration)"
            % (duration_s, max_duration_s, max_duration_s))


def describe(values, sources=None):
    """``chunk 20 MiB (server), file 200 MiB (default), 60 s (client)``."""
    def src(key):
        return " (%s)" % sources[key] if sources else ""
    return "chunk %d MiB%s, file %d MiB%s, %g s%s" % (
        values["chunk_bytes"] // MIB, src("chunk_bytes"), values["file_bytes"] // MIB,
        src("file_bytes"), values["duration_s"], src("duration_s"))


def _floor1(x):
    """Round down to one decimal, so 1.97 never prints as 2.0."""
    return math.floor(x * 10) / 10.0
