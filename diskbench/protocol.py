"""The wire protocol, defined once: message types, fields, framing, validation, HMAC.

Every message is one line of UTF-8 JSON ending in ``\\n``, an object with an
envelope and a body::

    {"v": 1, "type": "perf", "name": "node7", "seq": 42, "ts": 1763870000.25,
     "data": {...fields of this type...}, "mac": "<hex HMAC-SHA256, optional>"}

- ``v``     protocol version; a peer speaking another version is refused by name.
- ``type``  one of the types below; what it may carry depends on the direction.
- ``name``  the client's name (client to server only).
- ``seq``   per-client sequence number, 1, 2, 3 ... (client to server only); the
            server acknowledges the highest one it has recorded and ignores any
            it has seen (so a client may resend after a reconnect, and a replay
            records nothing).
- ``ts``    the sender's wall-clock time (seconds since the epoch).
- ``mac``   HMAC-SHA256 over the canonical encoding of everything else, present
            when both sides share a secret.

No other module spells a type or field name as a string: they use the type
constants here, ``make(TYPE, **fields)`` to build, attribute access
(``msg.bytes_written``) to read, and ``record()``/``from_record()`` for logs.

Text policy (a peer's text must never stop the server nor forge a line in a
log, a report or on a console). The *unsafe* characters are ASCII C0 controls
and DEL, C1 controls U+0080-U+009F (NEL, CSI ...), the Unicode line and
paragraph separators U+2028/U+2029, the bidi controls U+061C, U+200E, U+200F,
U+202A-U+202E, U+2066-U+2069, and lone surrogates U+D800-U+DFFF (JSON allows
"\\udce9"; Python 3 cannot encode such a str: a client in a non-UTF-8 locale
sends them for a Latin-1 byte in a path).

- ``name`` (identity) and enumerated fields: any unsafe character is refused
  (BAD_FIELD).
- Free text fields (hostname, directory, platform, text, reason ...): ASCII
  C0 controls and DEL are refused (``make()`` turns them into spaces, so our
  client never sends them); every other unsafe character is accepted and
  stored as its visible escape ``\\uXXXX`` (``safe_text``), cut to the field's
  length, so a client with an odd path is still recorded, and what is stored
  can always be encoded and passes validation again when read back.
- ``safe_text(value)`` is the one neutraliser: every writer of server.log,
  report.txt and the console passes text through it as a last line of defence.

Consistency across fields is checked per type after the fields (``_CHECKS``):
a perf interval ends after it starts, its I/O time fits in it, its rate is
physically possible, its latency histogram counts its chunks; a stop summary's
I/O time fits in its elapsed time; chunk counts never exceed byte counts
(perf, stop).
Histogram bucket indexes are bounded by what ``metrics`` can compute.
"""
import collections
import hashlib
import hmac
import json
import math
import re

from diskbench import __version__, runclock
from diskbench.metrics import MIB, LatencyHistogram
from diskbench.compat import (RecursionError, as_bytes, as_text, binary_type,
                              compare_digest, integer_types, string_types)

#: Version 2 added the run plan and the synchronized start (hello: fixed,
#: force, perf_interval_s; go: the plan, start_at, clock_offset_s; start: the
#: plan as run, started_at). A version-1 peer is refused by name, in its own
#: envelope (ENVELOPE_COMPATIBLE), so it can show why. Version 3 added the
#: go's end_spread_s (a fleet's stop summaries spread over a time that grows
#: with the fleet; see POLICY's ``paced``). Version 4 added the hello's
#: instance_id (identity is the process, not host and pid) and the stop's
#: perf_samples (the server compares what it holds with what was made), and
#: the read-back of --verify (hello/go/start: verify; readback, bad_block).
PROTOCOL_VERSION = 4
#: Protocol versions whose envelope is ours: a refusal sent to such a peer
#: carries its version, so its decoder accepts it and it shows the reason.
ENVELOPE_COMPATIBLE = (1, 2, 3, 4)
#: Longest line a reader accepts, newline included. A reader stops reading
#: (rather than buffering on) once a line is this long without a newline.
MAX_LINE_BYTES = 64 * 1024
#: Most histogram buckets one perf message may carry.
MAX_HIST_BUCKETS = 2048
#: The longest end spread a go may give (POLICY's PACED_END): no client holds
#: its stop summary longer than this after its writer ended.
END_SPREAD_MAX_S = 5.0
#: Upper bound for any count or byte figure: absurd values are refused.
MAX_INT = 2 ** 62
#: Largest clock offset (client clock minus server clock, seconds: about 31.7
#: years) a go carries and the server believes. A measured offset beyond it is
#: said in the report and not used (registry._apply_pong), so it never reaches
#: the go's validator or arithmetic.
CLOCK_OFFSET_MAX_S = 1e9
#: Longest duration, interval or timeout a message may carry (seconds).
SECONDS_MAX = 1e9
#: Highest latency bucket index a histogram may carry: what metrics computes.
MAX_BUCKET_INDEX = LatencyHistogram.MAX_BUCKET
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

#: ASCII controls: refused in every text field, turned into spaces by clean_text.
_ASCII_CONTROLS = re.compile(u"[\x00-\x1f\x7f]")
if len(u"\U00010000") == 1:  # a wide build (Python 3, most 2.7): one code point
    _SURROGATES = u"[\ud800-\udfff]"
else:  # pragma: no cover - a narrow 2.7 build: astral characters are pairs
    _SURROGATES = (u"[\ud800-\udbff](?![\udc00-\udfff])|"
                   u"(?<![\ud800-\udbff])[\udc00-\udfff]")
#: Every character that could break, forge or disguise a line, or that cannot
#: be encoded as UTF-8 (see the module docstring).
_CONTROL_CHARS = re.compile(
    u"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]|"
    + _SURROGATES)


def _escape_char(match):
    return u"\\u%04x" % ord(match.group(0))


def safe_text(value):
    """``value`` as text in which every unsafe character (line breaks of any
    kind, terminal and bidi controls, lone surrogates) is a visible ``\\uXXXX``:
    it stays on one line, shows what it is, and can always be encoded."""
    if not isinstance(value, string_types + (binary_type,)):
        try:
            value = u"%s" % (value,)
        except Exception:  # noqa: B902 - an object whose str() fails
            value = repr(value)
    return _CONTROL_CHARS.sub(_escape_char, as_text(value, errors="replace"))


class ProtocolError(ValueError):
    """A message that cannot be accepted, with a reason a human can act on."""

    NOT_UTF8 = "not-utf8"
    NOT_JSON = "not-json"
    NOT_OBJECT = "not-object"
    BAD_VERSION = "bad-version"
    UNKNOWN_TYPE = "unknown-type"
    MISSING_FIELD = "missing-field"
    BAD_FIELD = "bad-field"
    UNKNOWN_FIELD = "unknown-field"
    TOO_LONG = "too-long"
    BAD_MAC = "bad-mac"

    def __init__(self, kind, reason, peer_version=None):
        ValueError.__init__(self, reason)
        self.kind = kind
        self.reason = reason
        self.peer_version = peer_version  # BAD_VERSION: the version the peer spoke

    def __str__(self):
        return self.reason


# --- field validators -------------------------------------------------------------
class _Field(object):
    """One typed field. ``check`` returns the (possibly cleaned) value or raises."""

    optional = False

    def describe(self):
        return self.__class__.__name__.lower()

    def check(self, value):  # pragma: no cover - abstract
        raise NotImplementedError


class Int(_Field):
    def __init__(self, lo=0, hi=MAX_INT):
        self.lo, self.hi = lo, hi

    def describe(self):
        return "an integer from %d to %d" % (self.lo, self.hi)

    def check(self, value):
        if type(value) is int and self.lo <= value <= self.hi:
            return value      # the common case, decided in one test
        if isinstance(value, bool) or not isinstance(value, integer_types):
            raise TypeError
        if not self.lo <= value <= self.hi:
            raise ValueError
        return int(value)


class Num(_Field):
    """A finite number (int or float) within bounds; never NaN or infinity."""

    def __init__(self, lo=0.0, hi=1e12):
        self.lo, self.hi = lo, hi
        # Finite bounds: a value between them is finite (the fast path in check).
        self.finite = not (math.isinf(lo) or math.isinf(hi))

    def describe(self):
        return "a finite number from %g to %g" % (self.lo, self.hi)

    def check(self, value):
        if type(value) is float and self.lo <= value <= self.hi and self.finite:
            return value      # the common case (NaN fails the comparisons)
        if isinstance(value, bool) or not isinstance(value, integer_types + (float,)):
            raise TypeError
        if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
            raise ValueError
        if not self.lo <= value <= self.hi:
            raise ValueError
        return float(value)


class Bool(_Field):
    def describe(self):
        return "true or false"

    def check(self, value):
        if not isinstance(value, bool):
            raise TypeError
        return value


class Str(_Field):
    """Text without control characters (they would forge log lines).

    ``strict`` (names, choices): every unsafe character is refused. Otherwise
    (free text) ASCII controls are refused and the other unsafe characters are
    escaped (see the module docstring); the length bound applies to the text
    as received, and the escaped text is cut to it (so what is stored is
    itself valid when read back after a restart).
    """

    def __init__(self, max_len=256, choices=None, min_len=0, strict=False):
        self.max_len, self.choices, self.min_len = max_len, choices, min_len
        self.strict = strict or bool(choices)

    def describe(self):
        if self.choices:
            return "one of %s" % ", ".join(self.choices)
        if self.strict:
            return ("text of %d to %d characters without control, line-separator, "
                    "bidi or surrogate characters" % (self.min_len, self.max_len))
        return "text of %d to %d characters without control characters" % (
            self.min_len, self.max_len)

    def check(self, value):
        if not isinstance(value, string_types):
            raise TypeError
        value = as_text(value)
        if not self.min_len <= len(value) <= self.max_len:
            raise ValueError
        if self.strict:
            if _CONTROL_CHARS.search(value):
                raise ValueError
        elif _ASCII_CONTROLS.search(value):
            raise ValueError
        else:  # escaped, and cut to the bound again: a record read back passes
            value = safe_text(value)[:self.max_len]
        if self.choices and value not in self.choices:
            raise ValueError
        return value


class Optional(_Field):
    """``inner`` or null."""

    optional = True

    def __init__(self, inner):
        self.inner = inner

    def describe(self):
        return self.inner.describe() + " or null"

    def check(self, value):
        return None if value is None else self.inner.check(value)


class Choices(_Field):
    """A list of distinct names, each one of ``choices``."""

    def __init__(self, choices):
        self.choices = tuple(choices)

    def describe(self):
        return "a list of distinct names from %s" % ", ".join(self.choices)

    def check(self, value):
        if not isinstance(value, list):
            raise TypeError
        out = [as_text(v) for v in value if isinstance(v, string_types)]
        if len(out) != len(value) or len(set(out)) != len(out) or \
                any(v not in self.choices for v in out):
            raise ValueError
        return out


_BUCKET = Int(0, MAX_BUCKET_INDEX)
_COUNT = Int(0, MAX_INT)


class Hist(_Field):
    """A sparse histogram: a list of [bucket index, count] pairs (see metrics)."""

    def describe(self):
        return ("a list of at most %d [bucket, count] integer pairs, bucket 0 to %d"
                % (MAX_HIST_BUCKETS, MAX_BUCKET_INDEX))

    def check(self, value):
        if not isinstance(value, list):
            raise TypeError
        if len(value) > MAX_HIST_BUCKETS:
            raise ValueError
        out = []
        bucket, count = _BUCKET.check, _COUNT.check
        for pair in value:
            if type(pair) is not list or len(pair) != 2:
                raise TypeError
            out.append([bucket(pair[0]), count(pair[1])])
        return out


# --- the message catalogue ----------------------------------------------------------
_NAME = Str(max_len=128, min_len=1, strict=True)
_TEXT = Str(max_len=2048)
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
_PLAN_SPEC = dict(chunk_bytes=Int(1), file_bytes=Int(1), duration_s=_SECONDS,
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
            duration_s=_SECONDS, max_files=Int(1, 100000), sync_mode=_SYNC,
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
                    started_at=Optional(Num(0.0, 1e11)),
                    # --verify as run (absent: off)
                    verify=Optional(Bool()),
                    **_optional(_PLAN_SPEC, ("chunk_bytes", "file_bytes", "duration_s"))),
        HEARTBEAT: dict(writer_pid=_PID, writer_alive=Bool(),
                        bytes_written=_BYTES, chunks_written=_BYTES,
                        progress_age_s=_SECONDS),
        STATS: dict(writer_pid=_PID, cpu_percent=Num(0.0, 100000.0),
                    rss_bytes=_BYTES, source=Str(32), interval_s=_SECONDS),
        PERF: dict(t_start=Num(0.0, 1e11), t_end=Num(0.0, 1e11), bytes=_BYTES,
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
        PONG: dict(nonce=Int(), client_time=Num(0.0, 1e11)),
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
        GO: dict(run_id=Str(64), start_at=Optional(Num(0.0, 1e11)),
                 clock_offset_s=Optional(_OFFSET),
                 end_spread_s=Optional(Num(0.0, END_SPREAD_MAX_S)),
                 # read every data file back (the client's --verify or the server's)
                 verify=Optional(Bool()),
                 **_optional(_PLAN_SPEC, PLAN_FIELDS)),
        STOP: dict(reason=_TEXT),
        PING: dict(nonce=Int(), server_time=Num(0.0, 1e11)),
        REJECTED: dict(reason=_TEXT, fatal=Bool()),
    },
}

# === control channel (server/control.py) ==========================================
# `python -m diskbench.server ctl` talks to a running server over
# LOG_DIR/control.sock: one request, then answer lines ending in CTL_DONE.
# Directions of their own, so no network message can pass for a control one or
# the reverse; built, MACed (with the run's secret, when it has one) and checked
# by make/encode/decode like every other message.
CTL_REQUEST = "control-request"   # ctl -> server
CTL_REPLY = "control-reply"       # server -> ctl
CTL_LIST = "list"                 # request: one CTL_CLIENT line per client, then done
CTL_STOP = "stop"                 # request: send STOP to one client (the field client)
CTL_END = "end"                   # request: end the run as one SIGINT does
CTL_NOT_COMING = "not-coming"     # request: a host's client will not come (launcher)
CTL_CLIENT = "client"             # reply: one client's line of `ctl list`
CTL_DONE = "done"                 # reply, always last: ctl's exit code and what happened
SPECS[CTL_REQUEST] = {
    CTL_LIST: dict(),
    CTL_STOP: dict(client=_NAME),
    CTL_END: dict(),
    CTL_NOT_COMING: dict(host=Str(255), reason=_TEXT),
}
SPECS[CTL_REPLY] = {
    CTL_CLIENT: dict(client=_NAME, host=Str(255), state=Str(32), reason=_TEXT,
                     peer=Optional(Str(128)), written_bytes=_BYTES, rollovers=_BYTES,
                     mib_s_now=Num(0.0, 1e9), heartbeat_age_s=Optional(_SECONDS)),
    CTL_DONE: dict(code=Int(0, 255), text=_TEXT),
}
# === end of the control channel ====================================================

# --- what each client message may suffer on its way ------------------------------
#: Per client -> server type, beside its fields: ``drop`` is when the client's
#: sender may drop it from a full buffer (rank 1 goes first, oldest first within
#: a rank; None: never dropped, whatever happens); ``ack`` is whether the end of
#: a run waits for its acknowledgement (a server that has the stop summary may
#: complete and exit before it acks a bye); ``paced`` is how long the sender
#: may hold it (client/sender.py: a fleet started together must not report,
#: roll over or end together; what it says is timed by its fields, not by when
#: it is sent): None, not at all; PACED_REPORT, the client's send offset (under
#: a second); PACED_END, its end offset, spread over the go's end_spread_s,
#: which the server widens with the fleet (a fleet ends within one second,
#: and a server that is fast enough for its reports may still take seconds
#: for every client's final reports at once). A new type needs an entry here
#: (tests/test_protocol.py checks), so its policy is a decision, not a default.
Policy = collections.namedtuple("Policy", ("drop", "ack", "paced"))
NEVER_DROPPED = None
PACED_REPORT, PACED_END = "report", "end"
POLICY = {
    HELLO: Policy(drop=NEVER_DROPPED, ack=True, paced=None),
    START: Policy(drop=NEVER_DROPPED, ack=True, paced=PACED_REPORT),
    PERF: Policy(drop=1, ack=True, paced=PACED_REPORT),  # the bulk: lost samples are counted
    HEARTBEAT: Policy(drop=2, ack=True, paced=PACED_REPORT),
    STATS: Policy(drop=2, ack=True, paced=PACED_REPORT),
    NOTE: Policy(drop=2, ack=True, paced=None),
    PONG: Policy(drop=2, ack=False, paced=None),  # its timing is the measurement
    # a fleet rolls over together
    ROLLOVER: Policy(drop=NEVER_DROPPED, ack=True, paced=PACED_REPORT),
    STOP: Policy(drop=NEVER_DROPPED, ack=True, paced=PACED_END),  # ... and ends together
    ERROR: Policy(drop=NEVER_DROPPED, ack=True, paced=None),  # at once: it may be fatal
    BYE: Policy(drop=NEVER_DROPPED, ack=False, paced=PACED_END),
    # a fleet verifies together, as it rolls over; a bad block at once (its
    # count per writer is bounded by client/verify.MAX_BAD_REPORTED)
    READBACK: Policy(drop=NEVER_DROPPED, ack=True, paced=PACED_REPORT),
    BAD_BLOCK: Policy(drop=NEVER_DROPPED, ack=True, paced=None),
}


def drop_order():
    """Client message types a full buffer may drop, as tuples, first to go first."""
    ranks = sorted(set(p.drop for p in POLICY.values() if p.drop is not NEVER_DROPPED))
    return [tuple(sorted(t for t, p in POLICY.items() if p.drop == rank)) for rank in ranks]


def paced_types(how):
    """Client message types the sender may hold, ``how`` long: PACED_REPORT
    (the send offset) or PACED_END (the end offset)."""
    return tuple(sorted(t for t, p in POLICY.items() if p.paced == how))


def no_ack_needed():
    """Client message types whose acknowledgement the end of a run does not wait for."""
    return tuple(sorted(t for t, p in POLICY.items() if not p.ack))


# Envelope keys (the only place they are spelled).
_K_VERSION, _K_TYPE, _K_NAME, _K_SEQ, _K_TS, _K_DATA, _K_MAC = (
    "v", "type", "name", "seq", "ts", "data", "mac")
# Extra keys of a record in the server's perf.jsonl.
_K_RECV, _K_PEER = "recv_ts", "peer"
_ENVELOPE_C2S = (_K_VERSION, _K_TYPE, _K_NAME, _K_SEQ, _K_TS, _K_DATA)
_ENVELOPE_S2C = (_K_VERSION, _K_TYPE, _K_TS, _K_DATA)
_SEQ = Int(1)
_TS = Num(0.0, 1e11)


class Message(object):
    """One decoded, validated message. Body fields read as attributes."""

    __slots__ = ("direction", "type", "name", "seq", "ts", "data")

    def __init__(self, direction, type_, data, name=None, seq=None, ts=None):
        self.direction = direction
        self.type = type_
        self.data = data
        self.name = name
        self.seq = seq
        self.ts = ts

    def __getattr__(self, field):
        try:
            return self.data[field]
        except KeyError:
            raise AttributeError("%s message has no field %r" % (self.type, field))

    def __eq__(self, other):
        return isinstance(other, Message) and all(
            getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __ne__(self, other):
        return not self == other

    def __repr__(self):
        who = "" if self.name is None else " %s#%s" % (self.name, self.seq)
        return "<%s%s %r>" % (self.type, who, self.data)

    def to_obj(self, version=PROTOCOL_VERSION):
        """The JSON object (without mac) as it goes on the wire."""
        obj = {_K_VERSION: version, _K_TYPE: self.type, _K_TS: self.ts,
               _K_DATA: self.data}
        if self.direction == C2S:
            obj[_K_NAME] = self.name
            obj[_K_SEQ] = self.seq
        return obj


def types_for(direction):
    """The message types that may travel in ``direction``."""
    return sorted(SPECS[direction])


def fields_of(direction, type_):
    """The body field names of a message type (for docs and tests)."""
    return sorted(SPECS[direction][type_])


def clean_text(value, max_len=2048):
    """Make free text (an exception message, a path) fit a text field: ASCII
    controls become spaces, every other unsafe character its escape."""
    value = safe_text(_ASCII_CONTROLS.sub(u" ", as_text(value, errors="replace")))
    return value[:max_len]


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
    counted = sum(n for _, n in d["lat_hist"])
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


def _validate_body(direction, type_, data):
    spec = SPECS[direction][type_]
    if not isinstance(data, dict):
        raise ProtocolError(ProtocolError.BAD_FIELD,
                            "%s: 'data' must be an object" % type_)
    out = {}
    present = 0
    for key, field in spec.items():
        if key not in data:
            if field.optional:
                out[key] = None
                continue
            raise ProtocolError(ProtocolError.MISSING_FIELD,
                                "%s: missing field '%s'" % (type_, key))
        present += 1
        try:
            out[key] = field.check(data[key])
        except (TypeError, ValueError):
            raise ProtocolError(ProtocolError.BAD_FIELD,
                                "%s: field '%s' must be %s, got %s" % (
                                    type_, key, field.describe(), _show(data[key])))
    # every key of data was a spec key when the counts agree (no set per message)
    extra = sorted(set(data) - set(spec)) if present != len(data) else None
    if extra:
        raise ProtocolError(ProtocolError.UNKNOWN_FIELD, "%s: unknown field%s %s" % (
            type_, "s" if len(extra) > 1 else "", ", ".join(
                "'%s'" % clean_text(k, 40) for k in extra[:5])))
    check = _CHECKS.get(type_) if direction == C2S else None
    wrong = check(out) if check else None
    if wrong:
        raise ProtocolError(ProtocolError.BAD_FIELD, "%s: %s" % (type_, wrong))
    return out


def _show(value, limit=40):
    """A short, log-safe rendering of a bad value."""
    text = clean_text(json.dumps(value), limit + 3)
    return text if len(text) <= limit else text[:limit] + "..."


def make(type_, direction=C2S, name=None, seq=None, ts=None, **fields):
    """Build a validated message; raises ProtocolError on a wrong field.

    Free-text fields are cleaned of control characters first, so an exception
    message can be passed as it is.
    """
    if type_ not in SPECS[direction]:
        raise ProtocolError(ProtocolError.UNKNOWN_TYPE,
                            "unknown %s message type %r" % (direction, type_))
    spec = SPECS[direction][type_]
    for key, field in spec.items():
        if isinstance(field, Str) and not field.choices and isinstance(
                fields.get(key), string_types):
            fields[key] = clean_text(fields[key], field.max_len)
    data = _validate_body(direction, type_, fields)
    if ts is None:
        ts = runclock.wall()
    if direction == C2S:
        name = _NAME.check(as_text(name))
        seq = _SEQ.check(seq)
    return Message(direction, type_, data, name=name, seq=seq, ts=float(ts))


def canonical(obj):
    """The bytes an HMAC is computed over: sorted keys, no spaces, ASCII."""
    return as_bytes(json.dumps(obj, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=True, allow_nan=False))


def compute_mac(obj, secret):
    return hmac.new(as_bytes(secret), canonical(obj), hashlib.sha256).hexdigest()


def encode(msg, secret=None, version=PROTOCOL_VERSION):
    """One wire line (bytes, newline-terminated) for ``msg``.

    Canonical (sorted) JSON only when a mac is computed over it: unsorted
    dumps take the C encoder on Python 2.7 too (about 4x faster there).
    ``version``: only for a refusal to a peer of another ENVELOPE_COMPATIBLE
    version (see ``reply_version``).
    """
    obj = msg.to_obj(version)
    if secret:
        obj[_K_MAC] = compute_mac(obj, secret)
        line = canonical(obj) + b"\n"
    else:
        line = as_bytes(json.dumps(obj, separators=(",", ":"), ensure_ascii=True,
                                   allow_nan=False)) + b"\n"
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(ProtocolError.TOO_LONG, "%s message is %d bytes, over "
                            "the %d-byte limit" % (msg.type, len(line), MAX_LINE_BYTES))
    return line


def ack_line(upto_seq, secret=None):
    """``encode(make(ACK, S2C, upto_seq=upto_seq), secret)``, made without the
    generic build and validation when unsigned: the server sends one per
    batch of every connection (the same bytes; tests/test_protocol.py)."""
    if secret or not _ACK_INT.lo <= upto_seq <= _ACK_INT.hi:
        return encode(make(ACK, S2C, upto_seq=upto_seq), secret)
    return as_bytes(_ACK_TEMPLATE % (repr(float(runclock.wall())), int(upto_seq)))


_ACK_INT = SPECS[S2C][ACK]["upto_seq"]
_ACK_TEMPLATE = ('{"%s":%d,"%s":"%s","%s":%%s,"%s":{"upto_seq":%%d}}\n'
                 % (_K_VERSION, PROTOCOL_VERSION, _K_TYPE, ACK, _K_TS, _K_DATA))


def _refuse_constant(name):
    raise ValueError("%s is not a number" % name)


#: One decoder for every line: ``json.loads`` with an argument builds a new
#: decoder (and its scanner) per call, a fifth of parsing a perf line on 2.7.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def decode(line, direction=C2S, secret=None):
    """Parse and validate one line (bytes, with or without its newline).

    Returns a Message; raises ProtocolError whose ``reason`` says exactly what
    is wrong. With ``secret`` set, a missing or wrong mac is refused.
    """
    return _message(_parse(line), direction, secret)


def _message(obj, direction, secret):
    """The Message of the parsed (not yet validated) object ``obj``."""
    version = obj.get(_K_VERSION)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(ProtocolError.BAD_VERSION, version_mismatch(version),
                            peer_version=version)
    type_ = obj.get(_K_TYPE)
    if not isinstance(type_, string_types) or type_ not in SPECS[direction]:
        raise ProtocolError(ProtocolError.UNKNOWN_TYPE, "unknown %s message type %s"
                            % (direction, _show(type_)))
    _check_envelope(obj, direction, type_)
    _check_mac(obj, type_, secret)
    name = seq = None
    ts = _envelope_field(_TS, obj, _K_TS, type_)
    if direction == C2S:
        name = _envelope_field(_NAME, obj, _K_NAME, type_)
        seq = _envelope_field(_SEQ, obj, _K_SEQ, type_)
    data = _validate_body(direction, type_, obj[_K_DATA])
    return Message(direction, as_text(type_), data, name=name, seq=seq, ts=ts)


def _parse(line, limit=MAX_LINE_BYTES):
    """The JSON object on ``line`` (not yet validated as a message)."""
    if len(line) > limit:
        raise ProtocolError(ProtocolError.TOO_LONG, "line of %d bytes is over the "
                            "%d-byte limit" % (len(line), limit))
    try:
        text = as_text(line).rstrip(u"\r\n")
    except UnicodeDecodeError:
        raise ProtocolError(ProtocolError.NOT_UTF8, "line is not valid UTF-8")
    try:
        obj = _DECODER.decode(text)
    except ValueError as exc:
        raise ProtocolError(ProtocolError.NOT_JSON,
                            "not JSON: %s" % clean_text(str(exc), 120))
    except RecursionError:  # deeply nested input
        raise ProtocolError(ProtocolError.NOT_JSON, "not JSON: nested too deeply")
    if not isinstance(obj, dict):
        raise ProtocolError(ProtocolError.NOT_OBJECT,
                            "a message must be a JSON object, got %s" % _json_kind(obj))
    return obj


def _check_envelope(obj, direction, type_):
    envelope = _ENVELOPE_C2S if direction == C2S else _ENVELOPE_S2C
    if len(obj) - (_K_MAC in obj) == len(envelope) and all(
            key in obj for key in envelope):
        return    # every field there, no other (the common case, no sets)
    for key in envelope:
        if key not in obj:
            raise ProtocolError(ProtocolError.MISSING_FIELD,
                                "%s: missing envelope field '%s'" % (type_, key))
    extra = set(obj) - set(envelope) - set([_K_MAC])
    if extra:
        raise ProtocolError(ProtocolError.UNKNOWN_FIELD, "%s: unknown envelope "
                            "field %s" % (type_, _show(sorted(extra)[0])))


def _check_mac(obj, type_, secret):
    """Take the mac off ``obj``; with a secret it must be there and right."""
    mac = obj.pop(_K_MAC, None)
    if not secret:
        return
    if not isinstance(mac, string_types):
        raise ProtocolError(ProtocolError.BAD_MAC,
                            "%s: missing mac (this server requires a shared secret)"
                            % type_)
    if not compare_digest(as_bytes(mac), as_bytes(compute_mac(obj, secret))):
        raise ProtocolError(ProtocolError.BAD_MAC, "%s: wrong mac (secrets differ "
                            "or the message was altered)" % type_)


def _envelope_field(field, obj, key, type_):
    try:
        return field.check(obj[key])
    except (TypeError, ValueError):
        raise ProtocolError(ProtocolError.BAD_FIELD, "%s: '%s' must be %s"
                            % (type_, key, field.describe()))


def _json_kind(obj):
    if isinstance(obj, list):
        return "an array"
    if isinstance(obj, string_types):
        return "a string"
    if obj is None:
        return "null"
    if isinstance(obj, bool):
        return "a boolean"
    return "a number"


def reply_version(exc):
    """The envelope version to refuse with after ``exc``: the peer's own when
    it speaks a known older version (its decoder then shows our reason), else ours."""
    theirs = getattr(exc, "peer_version", None)
    if isinstance(theirs, integer_types) and not isinstance(theirs, bool) and \
            theirs in ENVELOPE_COMPATIBLE:
        return int(theirs)
    return PROTOCOL_VERSION


def version_mismatch(theirs):
    """The sentence both sides print when protocol versions differ."""
    return ("protocol version %s is not supported: this is diskbench %s speaking "
            "protocol version %d; run the same diskbench version on server and clients"
            % (_show(theirs), __version__, PROTOCOL_VERSION))


class LineTooLong(ProtocolError):
    def __init__(self, limit):
        ProtocolError.__init__(self, ProtocolError.TOO_LONG,
                               "line longer than the %d-byte limit" % limit)


def read_line(rfile, limit=MAX_LINE_BYTES):
    """Read one line from a binary file object (e.g. ``socket.makefile('rb')``).

    Returns the line including its newline, or b'' at end of stream (a last
    line without a newline is returned as it is). Never buffers more than
    ``limit`` bytes: a longer line raises LineTooLong, after which the stream
    is beyond repair and should be closed.
    """
    line = rfile.readline(limit + 1)
    if len(line) > limit:
        raise LineTooLong(limit)
    return line


# --- records: how the server logs accepted messages -------------------------------
def record(msg, recv_ts, peer=None):
    """The JSON object the server keeps for an accepted message (perf.jsonl)."""
    obj = msg.to_obj()
    obj[_K_RECV] = recv_ts
    if peer is not None:
        obj[_K_PEER] = peer
    return obj


def record_line(line, recv_ts, peer=None):
    """The perf.jsonl line for an accepted wire ``line``: the line as received
    (already decoded and validated: a JSON object) with the receive time and
    peer added as its last keys. Splicing keeps the server's per-message work
    small and keeps on disk exactly what the client sent; ``from_record``
    reads it back like a ``record()`` object."""
    body = line.rstrip()
    if not body.endswith(b"}"):
        raise ValueError("not a JSON object line")
    extra = ',"%s":%s' % (_K_RECV, repr(float(recv_ts)))
    if peer is not None:
        extra += ',"%s":%s' % (_K_PEER, json.dumps(peer, ensure_ascii=True))
    return body[:-1] + as_bytes(extra) + b"}\n"


def from_record(obj):
    """Rebuild (message, recv_ts) from a record() object read back from disk."""
    obj = dict(obj)
    recv_ts = obj.pop(_K_RECV, None)
    obj.pop(_K_PEER, None)
    msg = decode(canonical(obj), C2S)
    return msg, recv_ts


#: A perf.jsonl line: a wire line plus the receive time and the peer's address.
MAX_RECORD_BYTES = MAX_LINE_BYTES + 1024
_RECORD_EXTRA = {_K_RECV: _TS, _K_PEER: Optional(Str(max_len=1024))}


def parse_record(line):
    """(Message, recv_ts) from one perf.jsonl line (bytes), validated by the very
    rules of the wire (a file may come back damaged, hostile or another
    version's): raises ProtocolError saying what is wrong."""
    obj = _parse(line, MAX_RECORD_BYTES)
    extra = {}
    for key, field in _RECORD_EXTRA.items():
        try:
            extra[key] = field.check(obj.pop(key, None))
        except (TypeError, ValueError):
            raise ProtocolError(ProtocolError.BAD_FIELD, "record: '%s' must be %s" % (
                key, field.describe()))
    return _message(obj, C2S, None), extra[_K_RECV]
