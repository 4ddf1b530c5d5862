"""The message catalogue: every message type, the fields each one carries in
each direction (``SPECS``), the values of enumerated fields, the bounds of the
figures a message may carry, and the checks across the fields of one message.

No other module spells a type or field name as a string: they use the type
constants here. Separate from the codec: this says *what* may be said, the
codec how it is written and read.

Consistency across fields is checked per type after the fields (``_CHECKS``):
a perf interval ends after it starts, its I/O time fits in it, its rate is
physically possible, its latency histogram counts its chunks; a stop summary's
I/O time fits in its elapsed time; chunk counts never exceed byte counts
(perf, stop). Histogram bucket indexes are bounded by what ``metrics`` can
compute (``fields.Hist``).
"""
from diskbench.metrics import MIB
from diskbench.protocol.fields import Bool, Choices, Hist, Int, Num, Optional, Str
from diskbench.protocol.text import TEXT_MAX_CHARS

#: The longest end spread a go may give (POLICY's PACED_END): no client holds
#: its stop summary longer than this after its writer ended.
END_SPREAD_MAX_S = 5.0
#: Largest clock offset (client clock minus server clock, seconds: about 31.7
#: years) a go carries and the server believes. A measured offset beyond it is
#: said in the report and not used (registry._apply_pong), so it never reaches
#: the go's validator or arithmetic.
CLOCK_OFFSET_MAX_S = 1e9
#: Wall-clock times a message may carry (seconds since the epoch: 1970 to about
#: the year 5138): its envelope's ts (codec._TS), a perf interval, a start. A host
#: whose clock is outside cannot be heard, so the client refuses to start there
#: (client/checks.check_clock) instead of being met with silence.
TS_MIN, TS_MAX = 0.0, 1e11
#: Longest duration, interval or timeout a message may carry (seconds).
SECONDS_MAX = 1e9
#: Fastest write rate believed (MiB/s, about 10 TiB/s): a perf interval beyond
#: it is a lie or a broken clock, and would make every rate in the report absurd.
MAX_RATE_MIB_S = 1e7
#: Slack when a time must fit in another (I/O time within an interval or a
#: run): this fraction of the longer one plus SLACK_ABS_S (float rounding,
#: clock granularity).
SLACK_REL = 0.01
SLACK_ABS_S = 0.5

# Directions: which side sends a message. The same type name may mean a
# different thing in each direction (a client's "stop" reports that it stopped;
# the server's "stop" asks a client to stop).
C2S = "client-to-server"
S2C = "server-to-client"

# --- message types: client -> server ------------------------------------------
HELLO = "hello"          # who I am and what I will run
START = "start"          # the writer has started
HEARTBEAT = "heartbeat"  # I am alive, and so is my writer (with its progress)
STATS = "stats"          # CPU and memory of the writer process
PERF = "perf"            # one interval of write measurements
ROLLOVER = "rollover"    # a data file reached its size and was closed
STOP = "stop"            # I stopped (and why), with a summary; also server -> client
ERROR = "error"          # something failed
NOTE = "note"            # a human-readable notice (e.g. "psutil missing")
PONG = "pong"            # answer to ping (clock offset and round trip)
BYE = "bye"              # I close the connection on purpose (my last seq)
READBACK = "readback"    # --verify: one data file read back and checked
BAD_BLOCK = "bad_block"  # --verify: one block that did not come back as written

# --- message types: server -> client -------------------------------------------
ACK = "ack"              # recorded everything up to and including seq
GO = "go"                # hello accepted: start writing
PING = "ping"            # asks for a pong (nonce: send time in microseconds)
REJECTED = "rejected"    # refused (version, authentication, limits)

#: A server's ping nonce is its send time in these units (microseconds):
#: the pong brings it back, and the round trip needs no per-ping state.
PING_NONCE_PER_S = 1000000

# Values of enumerated fields.
SYNC_DIRECT = "o_direct"          # O_DIRECT: each write reaches the device
SYNC_FSYNC = "fsync"              # buffered write + fsync per chunk
SYNC_MODES = (SYNC_DIRECT, SYNC_FSYNC)
STOP_DURATION = "duration"        # ran the configured time
STOP_SIGNAL = "signal"            # SIGINT/SIGTERM
STOP_SERVER = "server"            # the server asked
STOP_ERROR = "error"              # a failure ended the run
STOP_REASONS = (STOP_DURATION, STOP_SIGNAL, STOP_SERVER, STOP_ERROR)
READ_DIRECT = "o_direct"          # read back with O_DIRECT: from the device
READ_DROPPED = "fadvise"          # fsync + posix_fadvise(DONTNEED), then read
READ_MODES = (READ_DIRECT, READ_DROPPED)
#: What a block read back can be besides correct (diskbench/stamp.py says how
#: each is told; the same words).
BAD_KINDS = ("corrupt", "misplaced", "stale", "missing")
#: The longest client name (characters).
NAME_MAX_CHARS = 128
#: Most data files a client may keep at once (hello's max_files, --max-files).
FILES_MAX = 100000

# --- the message catalogue ----------------------------------------------------------
_NAME = Str(max_len=NAME_MAX_CHARS, min_len=1, strict=True)
_TEXT = Str(max_len=TEXT_MAX_CHARS)
_PATH = Str(max_len=4096)
_SECONDS = Num(0.0, SECONDS_MAX)
_BYTES = Int()
_PID = Int(1, 2 ** 31)
#: A client process's random identity (hex): host names and pids repeat.
_INSTANCE = Str(max_len=64, min_len=8, strict=True)
_SYNC = Str(choices=SYNC_MODES)
_OFFSET = Num(-CLOCK_OFFSET_MAX_S, CLOCK_OFFSET_MAX_S)
#: The run plan's settings (diskbench/plan.py decides them): the hello says a
#: client's own values and which its command line fixed, go the plan to run,
#: start the plan as run.
PLAN_FIELDS = ("chunk_bytes", "file_bytes", "duration_s", "perf_interval_s",
               "stats_interval_s", "heartbeat_interval_s")
PLAN_SPEC = dict(chunk_bytes=Int(1), file_bytes=Int(1), duration_s=_SECONDS,
                 perf_interval_s=_SECONDS, stats_interval_s=_SECONDS,
                 heartbeat_interval_s=_SECONDS)


def _optional(spec, names):
    return dict((k, Optional(spec[k])) for k in names)

SPECS = {
    C2S: {
        HELLO: dict(
            client_version=Str(64), hostname=Str(255), pid=_PID,
            # the identity of this client process: a reconnect is recognised by
            # it, another process under a taken name refused (registry.hello)
            instance_id=_INSTANCE,
            python_version=Str(64), platform=Str(255), directory=_PATH,
            fs_type=Str(64), chunk_bytes=Int(1), file_bytes=Int(1),
            duration_s=_SECONDS, max_files=Int(1, FILES_MAX), sync_mode=_SYNC,
            preallocate=Bool(), stats_interval_s=_SECONDS,
            heartbeat_interval_s=_SECONDS, psutil_version=Optional(Str(64)),
            expected_rollovers=Optional(Num(0.0, 1e9)),
            calibration_mib_s=Optional(Num(0.0, 1e9)),
            # v2: the plan fields its command line set (absent: all of them),
            # --force, and its perf interval
            fixed=Optional(Choices(PLAN_FIELDS)), force=Optional(Bool()),
            perf_interval_s=Optional(_SECONDS),
            # --verify on its command line (absent: not given)
            verify=Optional(Bool())),
        START: dict(writer_pid=_PID, sync_mode=_SYNC, preallocate=Bool(),
                    block_bytes=Int(1), buffer_huge_bytes=Optional(_BYTES),
                    # v2: the plan as run, and the client's clock at its first write
                    started_at=Optional(Num(TS_MIN, TS_MAX)),
                    # --verify as run (absent: off)
                    verify=Optional(Bool()),
                    **_optional(PLAN_SPEC, ("chunk_bytes", "file_bytes", "duration_s"))),
        HEARTBEAT: dict(writer_pid=_PID, writer_alive=Bool(),
                        bytes_written=_BYTES, chunks_written=_BYTES,
                        progress_age_s=_SECONDS),
        STATS: dict(writer_pid=_PID, cpu_percent=Num(0.0, 100000.0),
                    rss_bytes=_BYTES, source=Str(32), interval_s=_SECONDS),
        PERF: dict(t_start=Num(TS_MIN, TS_MAX), t_end=Num(TS_MIN, TS_MAX), bytes=_BYTES,
                   chunks=_BYTES, io_s=_SECONDS, lat_min_s=_SECONDS,
                   lat_max_s=_SECONDS, lat_hist=Hist(), sync_mode=_SYNC,
                   file_index=_BYTES),
        ROLLOVER: dict(file_index=_BYTES, file_bytes=_BYTES, close_s=_SECONDS),
        STOP: dict(reason=Str(choices=STOP_REASONS), bytes_written=_BYTES,
                   chunks_written=_BYTES, rollovers=_BYTES, elapsed_s=_SECONDS,
                   io_s=_SECONDS, dropped_messages=_BYTES,
                   # the perf samples it made (dropped ones included): the
                   # server's report compares what it holds (report.shortfalls)
                   perf_samples=Optional(_BYTES)),
        ERROR: dict(source=Str(32), reason=_TEXT, errno=Optional(Int(0, 100000)),
                    fatal=Bool()),
        NOTE: dict(text=_TEXT),
        PONG: dict(nonce=Int(), client_time=Num(TS_MIN, TS_MAX)),
        BYE: dict(),
        # --verify: a data file read back; bytes read (fewer than file_bytes:
        # a short file), reads timed like perf's writes; the bad blocks by kind
        READBACK: dict(file_index=_BYTES, file_bytes=_BYTES, bytes=_BYTES,
                       chunks=_BYTES, io_s=_SECONDS, lat_min_s=_SECONDS,
                       lat_max_s=_SECONDS, lat_hist=Hist(),
                       read_mode=Str(choices=READ_MODES),
                       **dict((kind, _BYTES) for kind in BAD_KINDS)),
        BAD_BLOCK: dict(path=_PATH, file_index=_BYTES, offset=_BYTES,
                        kind=Str(choices=BAD_KINDS), expected=Str(256), found=Str(256)),
    },
    S2C: {
        ACK: dict(upto_seq=Int()),
        # v2: the plan to run; start_at: the common start instant on the
        # server's clock (null: start now); clock_offset_s: how far the
        # client's clock is ahead of the server's, when the server measured it;
        # v3: end_spread_s: how far apart the fleet's ends are to be sent
        GO: dict(run_id=Str(64), start_at=Optional(Num(TS_MIN, TS_MAX)),
                 clock_offset_s=Optional(_OFFSET),
                 end_spread_s=Optional(Num(0.0, END_SPREAD_MAX_S)),
                 # read every data file back (the client's --verify or the server's)
                 verify=Optional(Bool()),
                 **_optional(PLAN_SPEC, PLAN_FIELDS)),
        STOP: dict(reason=_TEXT),
        PING: dict(nonce=Int(), server_time=Num(TS_MIN, TS_MAX)),
        REJECTED: dict(reason=_TEXT, fatal=Bool()),
    },
}


def types_for(direction):
    """The message types that may travel in ``direction``."""
    return sorted(SPECS[direction])


def fields_of(direction, type_):
    """The body field names of a message type (for docs and tests)."""
    return sorted(SPECS[direction][type_])


# --- consistency across the fields of one message -----------------------------------
def _slack(longer):
    return SLACK_REL * longer + SLACK_ABS_S


def _check_perf(d):
    length = d["t_end"] - d["t_start"]
    if length <= 0:
        return "t_end (%r) must be after t_start (%r)" % (d["t_end"], d["t_start"])
    if d["bytes"] / float(MIB) / length > MAX_RATE_MIB_S:
        return ("%d bytes in %r s is over %g MiB/s, beyond any disk (MAX_RATE_MIB_S)"
                % (d["bytes"], length, MAX_RATE_MIB_S))
    if d["io_s"] > length + _slack(length):
        return "io_s (%r) must fit in the interval of %r s" % (d["io_s"], length)
    if d["lat_min_s"] > d["lat_max_s"]:
        return "lat_min_s (%r) must not exceed lat_max_s (%r)" % (
            d["lat_min_s"], d["lat_max_s"])
    if d["lat_max_s"] > d["io_s"] + _slack(d["io_s"]):
        return "lat_max_s (%r) must not exceed io_s (%r)" % (d["lat_max_s"], d["io_s"])
    if d["chunks"] > d["bytes"]:
        return "chunks (%d) must not exceed bytes (%d)" % (d["chunks"], d["bytes"])
    counted = sum([n for _, n in d["lat_hist"]])   # (a list: faster than a generator)
    if counted != d["chunks"]:
        return "lat_hist counts %d chunks, chunks says %d" % (counted, d["chunks"])
    return None


def _check_counts(d):
    if d["chunks_written"] > d["bytes_written"]:
        return "chunks_written (%d) must not exceed bytes_written (%d)" % (
            d["chunks_written"], d["bytes_written"])
    return None


def _check_stop(d):
    if d["io_s"] > d["elapsed_s"] + _slack(d["elapsed_s"]):
        return "io_s (%r) must fit in elapsed_s (%r)" % (d["io_s"], d["elapsed_s"])
    return _check_counts(d)


#: Per-type checks across fields (client to server): a function of the
#: validated body returning None or what is wrong. Not heartbeat: it reads two
#: counters the writer updates one after the other, so it may see the first
#: chunk counted before its bytes (chunks 1, bytes 0).
def _check_readback(d):
    if d["bytes"] > d["file_bytes"]:
        return "bytes (%d) must not exceed file_bytes (%d)" % (d["bytes"], d["file_bytes"])
    if d["lat_min_s"] > d["lat_max_s"] or d["lat_max_s"] > d["io_s"] + _slack(d["io_s"]):
        return "lat_min_s <= lat_max_s <= io_s must hold (%r, %r, %r)" % (
            d["lat_min_s"], d["lat_max_s"], d["io_s"])
    counted = sum(n for _, n in d["lat_hist"])
    if counted != d["chunks"]:
        return "lat_hist counts %d reads, chunks says %d" % (counted, d["chunks"])
    return None


_CHECKS = {PERF: _check_perf, STOP: _check_stop}
_CHECKS[READBACK] = _check_readback
