"""Records: how the server keeps an accepted message in perf.jsonl (``record``,
``record_line``) and how one is read back (``from_record``, ``parse_record``,
by the wire's own rules: a file may come back damaged or hostile).

Separate from the codec: a record is a wire line plus what only the server
knows (when it arrived, from where).
"""
import json

from diskbench.compat import as_bytes
from diskbench.protocol.catalogue import C2S
from diskbench.protocol.codec import _TS, _message, _parse, canonical, decode
from diskbench.protocol.errors import ProtocolError
from diskbench.protocol.fields import Optional, Str
from diskbench.protocol.framing import MAX_LINE_BYTES

# Extra keys of a record in the server's perf.jsonl.
_K_RECV, _K_PEER = "recv_ts", "peer"


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
    return b"".join((body[:-1], _RECV_PART % repr(float(recv_ts)).encode("ascii"),
                     b"}\n" if peer is None else _peer_part(peer)))


_RECV_PART = as_bytes(',"%s":' % _K_RECV) + b"%s"
#: The encoded peer part of each peer's records (one per connection: every
#: record of a connection carries the same one). Emptied at PEER_PARTS_MAX.
_PEER_PARTS = {}
PEER_PARTS_MAX = 1 << 16


def _peer_part(peer):
    part = _PEER_PARTS.get(peer)
    if part is None:
        if len(_PEER_PARTS) >= PEER_PARTS_MAX:
            _PEER_PARTS.clear()
        part = _PEER_PARTS[peer] = as_bytes(',"%s":%s}\n' % (
            _K_PEER, json.dumps(peer, ensure_ascii=True)))
    return part


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
