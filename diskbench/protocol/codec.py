"""The codec: a Message, how it is built (``make``), written (``encode``,
``ack_line``) and read (``decode``); the envelope, the protocol version and the
HMAC over the canonical encoding.

Every message is one line of UTF-8 JSON (framing.py), an object with an
envelope and a body::

    {"v": 4, "type": "perf", "name": "node7", "seq": 42, "ts": 1763870000.25,
     "data": {...fields of this type...}, "mac": "<hex HMAC-SHA256, optional>"}

- ``v``     protocol version; a peer speaking another version is refused by name.
- ``type``  one of the catalogue's types; what it may carry depends on the direction.
- ``name``  the client's name (client to server only).
- ``seq``   per-client sequence number, 1, 2, 3 ... (client to server only); the
            server acknowledges the highest one it has recorded and ignores any
            it has seen (so a client may resend after a reconnect, and a replay
            records nothing).
- ``ts``    the sender's wall-clock time (seconds since the epoch).
- ``mac``   HMAC-SHA256 over the canonical encoding of everything else, present
            when both sides share a secret.
"""
import hashlib
import hmac
import json

from diskbench import __version__, runclock
from diskbench.compat import (JSON_SCANS_BYTES, RecursionError, as_bytes, as_text,
                              binary_type, compare_digest, integer_types, string_types,
                              text_type)
from diskbench.protocol.catalogue import _CHECKS, _NAME, ACK, C2S, S2C, SPECS
from diskbench.protocol.errors import ProtocolError
from diskbench.protocol.fields import Int, Num, Str
from diskbench.protocol.framing import MAX_LINE_BYTES
from diskbench.protocol.text import clean_text

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

# Envelope keys (the only place they are spelled).
_K_VERSION, _K_TYPE, _K_NAME, _K_SEQ, _K_TS, _K_DATA, _K_MAC = (
    "v", "type", "name", "seq", "ts", "data", "mac")
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



def _validate_body(direction, type_, data):
    if not isinstance(data, dict):
        raise ProtocolError(ProtocolError.BAD_FIELD,
                            "%s: 'data' must be an object" % type_)
    out = {}
    present = 0
    for key, check, optional, kind, lo, hi in _plan_of(direction, type_):
        if key not in data:
            if optional:
                out[key] = None
                continue
            raise ProtocolError(ProtocolError.MISSING_FIELD,
                                "%s: missing field '%s'" % (type_, key))
        present += 1
        value = data[key]
        if type(value) is kind and lo <= value <= hi:
            out[key] = value          # Field.fast: what check would return as is
            continue
        try:
            out[key] = check(value)
        except (TypeError, ValueError):
            raise ProtocolError(ProtocolError.BAD_FIELD,
                                "%s: field '%s' must be %s, got %s" % (
                                    type_, key, SPECS[direction][type_][key].describe(),
                                    _show(data[key])))
    # every key of data was a spec key when the counts agree (no set per message)
    if present != len(data):
        extra = sorted(set(data) - set(SPECS[direction][type_]))
        raise ProtocolError(ProtocolError.UNKNOWN_FIELD, "%s: unknown field%s %s" % (
            type_, "s" if len(extra) > 1 else "", ", ".join(
                "'%s'" % clean_text(k, 40) for k in extra[:5])))
    check = _CHECKS.get(type_) if direction == C2S else None
    wrong = check(out) if check else None
    if wrong:
        raise ProtocolError(ProtocolError.BAD_FIELD, "%s: %s" % (type_, wrong))
    return out


_PLANS = {}


def _plan_of(direction, type_):
    """SPECS[direction][type_] as (key, check, optional, type, lo, hi)
    tuples (``Field.fast``), made once: every message passes here, and a
    number within its field's bounds is then taken without a call (SPECS
    stays the one statement of the fields)."""
    spec = SPECS[direction][type_]
    plan = _PLANS.get((direction, type_))
    if plan is None or plan[0] is not spec:
        plan = (spec, tuple((key, field.check, field.optional) + field.fast()
                            for key, field in spec.items()))
        _PLANS[(direction, type_)] = plan
    return plan[1]


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


def ack_line(upto_seq, secret=None, ts=None):
    """``encode(make(ACK, S2C, upto_seq=upto_seq, ts=ts), secret)``, made
    without the generic build and validation when unsigned: the server sends
    one per batch of every connection (the same bytes; tests/test_protocol.py)."""
    if ts is None:
        ts = runclock.wall()
    if secret or not _ACK_INT.lo <= upto_seq <= _ACK_INT.hi:
        return encode(make(ACK, S2C, ts=ts, upto_seq=upto_seq), secret)
    return as_bytes(_ACK_TEMPLATE % (repr(float(ts)), int(upto_seq)))


_ACK_INT = SPECS[S2C][ACK]["upto_seq"]
_ACK_TEMPLATE = ('{"%s":%d,"%s":"%s","%s":%%s,"%s":{"upto_seq":%%d}}\n'
                 % (_K_VERSION, PROTOCOL_VERSION, _K_TYPE, ACK, _K_TS, _K_DATA))


def _refuse_constant(name):
    raise ValueError("%s is not a number" % name)


#: One decoder for every line: ``json.loads`` with an argument builds a new
#: decoder (and its scanner) per call, a fifth of parsing a perf line on 2.7.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def _scan_whole(text):
    """The object that fills ``text`` exactly, by the decoder's own scanner
    (what ``decode`` does, without its two whitespace scans and calls),
    else None: anything else is left to ``_DECODER.decode`` and its error."""
    if not text.startswith("{"):
        return None
    try:
        obj, end = _DECODER.scan_once(text, 0)
    except (StopIteration, ValueError, RecursionError):
        return None
    return obj if end == len(text) else None


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
        name = obj[_K_NAME]
        if type(name) is not text_type or name not in _NAMES_OK:
            name = _envelope_field(_NAME, obj, _K_NAME, type_)
            _name_ok(name)
        seq = _envelope_field(_SEQ, obj, _K_SEQ, type_)
    data = _validate_body(direction, type_, obj[_K_DATA])
    return Message(direction, as_text(type_), data, name=name, seq=seq, ts=ts)


def _parse(line, limit=MAX_LINE_BYTES):
    """The JSON object on ``line`` (not yet validated as a message)."""
    if len(line) > limit:
        raise ProtocolError(ProtocolError.TOO_LONG, "line of %d bytes is over the "
                            "%d-byte limit" % (len(line), limit))
    if JSON_SCANS_BYTES and type(line) is binary_type:
        # One object filling the line, read from its bytes: its strings were
        # decoded strictly and every other byte is JSON's own ASCII, so the
        # line is valid UTF-8. Anything else takes the text path to say why.
        obj = _scan_whole(line.rstrip(b"\r\n"))
        if obj is not None:
            return obj
    try:
        text = as_text(line).rstrip(u"\r\n")
    except UnicodeDecodeError:
        raise ProtocolError(ProtocolError.NOT_UTF8, "line is not valid UTF-8")
    try:
        obj = _scan_whole(text)
        if obj is None:       # not one object filling the line: say why
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


#: Client names already found valid (``_NAME``): every message carries its
#: client's name, and a name's check (a regex over it) is then one set lookup.
#: Bounded: emptied when it reaches NAMES_OK_MAX (hostile peers inventing names).
_NAMES_OK = set()
NAMES_OK_MAX = 1 << 16


def _name_ok(name):
    if len(_NAMES_OK) >= NAMES_OK_MAX:
        _NAMES_OK.clear()
    _NAMES_OK.add(name)


def _check_envelope(obj, direction, type_):
    envelope = _ENVELOPE_C2S if direction == C2S else _ENVELOPE_S2C
    if len(obj) - (_K_MAC in obj) == len(envelope):
        for key in envelope:
            if key not in obj:
                break
        else:
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

