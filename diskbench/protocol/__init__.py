"""The wire protocol, defined once; this package's face is the one every module
uses (``from diskbench import protocol as P; P.encode(P.make(P.PERF, ...))``).

Every message is one line of UTF-8 JSON ending in ``\\n``, an object with an
envelope (version, type, name, seq, ts, optional HMAC) and a body of the
type's fields. No other module spells a type or field name as a string: they
use the type constants, ``make(TYPE, **fields)`` to build, attribute access
(``msg.bytes_written``) to read, and ``record()``/``from_record()`` for logs.

One responsibility per module (names with a leading underscore are shared
inside the package only):

- ``text``       which characters are unsafe; ``safe_text``, ``clean_text``
- ``errors``     ``ProtocolError`` and its kinds
- ``fields``     the typed field validators (Int, Num, Str, Optional, Choices, Hist)
- ``catalogue``  message types, their fields per direction, enumerated values,
                 bounds, the checks across the fields of one message
- ``ctl``        the control channel's requests and answers
- ``policy``     per-type policy: drop order, pacing, acks the end waits for
- ``framing``    one line, its size limit, ``read_line``
- ``codec``      Message, make/encode/decode, the envelope, version, HMAC
- ``records``    perf.jsonl records written and read back
"""
from diskbench.protocol.catalogue import (
    ACK, BAD_BLOCK, BAD_KINDS, BYE, C2S, CLOCK_OFFSET_MAX_S, END_SPREAD_MAX_S, ERROR,
    FILES_MAX, GO, HEARTBEAT, HELLO, MAX_RATE_MIB_S, NAME_MAX_CHARS, NOTE, PERF, PING,
    PING_NONCE_PER_S, PLAN_FIELDS, PLAN_SPEC, PONG, READ_DIRECT, READ_DROPPED, READ_MODES,
    READBACK, REJECTED, ROLLOVER, S2C, SECONDS_MAX, SLACK_ABS_S, SLACK_REL, SPECS, START,
    STATS, STOP, STOP_DURATION, STOP_ERROR, STOP_REASONS, STOP_SERVER, STOP_SIGNAL,
    SYNC_DIRECT, SYNC_FSYNC, SYNC_MODES, TS_MAX, TS_MIN, fields_of, types_for)
from diskbench.protocol.codec import (ENVELOPE_COMPATIBLE, PROTOCOL_VERSION, Message,
                                      ack_line, canonical, compute_mac, decode, encode,
                                      make, reply_version, version_mismatch)
from diskbench.protocol.ctl import (CTL_CLIENT, CTL_DONE, CTL_END, CTL_LIST,
                                    CTL_NOT_COMING, CTL_REPLY, CTL_REQUEST, CTL_STOP)
from diskbench.protocol.errors import ProtocolError
from diskbench.protocol.fields import (MAX_BUCKET_INDEX, MAX_HIST_BUCKETS, MAX_INT, Bool,
                                       Choices, Field, Hist, Int, Num, Optional, Str)
from diskbench.protocol.framing import (MAX_LINE_BYTES, LineTooLong, line_over, pending_over,
                                        read_line)
from diskbench.protocol.policy import (NEVER_DROPPED, PACED_END, PACED_REPORT, POLICY,
                                       Policy, drop_order, no_ack_needed, paced_types)
from diskbench.protocol.records import (MAX_RECORD_BYTES, from_record, parse_record,
                                        record, record_line)
from diskbench.protocol.text import (DISPLAY_UNSAFE, TEXT_MAX_CHARS, UNSAFE, clean_text,
                                     safe_text)

__all__ = [
    # catalogue
    "ACK", "BAD_BLOCK", "BAD_KINDS", "BYE", "C2S", "CLOCK_OFFSET_MAX_S", "END_SPREAD_MAX_S",
    "ERROR", "FILES_MAX", "GO", "HEARTBEAT", "HELLO", "MAX_RATE_MIB_S", "NAME_MAX_CHARS",
    "NOTE", "PERF",
    "PING", "PING_NONCE_PER_S", "PLAN_FIELDS", "PLAN_SPEC", "PONG", "READ_DIRECT",
    "READ_DROPPED", "READ_MODES", "READBACK", "REJECTED", "ROLLOVER", "S2C", "SECONDS_MAX",
    "SLACK_ABS_S", "SLACK_REL", "SPECS", "START", "STATS", "STOP", "STOP_DURATION",
    "STOP_ERROR", "STOP_REASONS", "STOP_SERVER", "STOP_SIGNAL", "SYNC_DIRECT", "SYNC_FSYNC",
    "SYNC_MODES", "TS_MAX", "TS_MIN", "fields_of", "types_for",
    # codec
    "ENVELOPE_COMPATIBLE", "PROTOCOL_VERSION", "Message", "ack_line", "canonical",
    "compute_mac", "decode", "encode", "make", "reply_version", "version_mismatch",
    # ctl
    "CTL_CLIENT", "CTL_DONE", "CTL_END", "CTL_LIST", "CTL_NOT_COMING", "CTL_REPLY",
    "CTL_REQUEST", "CTL_STOP",
    # errors, fields, framing
    "ProtocolError", "MAX_BUCKET_INDEX", "MAX_HIST_BUCKETS", "MAX_INT", "Bool", "Choices",
    "Field", "Hist", "Int", "Num", "Optional", "Str", "MAX_LINE_BYTES", "LineTooLong",
    "line_over", "pending_over", "read_line",
    # policy
    "NEVER_DROPPED", "PACED_END", "PACED_REPORT", "POLICY", "Policy", "drop_order",
    "no_ack_needed", "paced_types",
    # records, text
    "MAX_RECORD_BYTES", "from_record", "parse_record", "record", "record_line",
    "DISPLAY_UNSAFE", "TEXT_MAX_CHARS", "UNSAFE", "clean_text", "safe_text",
]
