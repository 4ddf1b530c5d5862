# -*- coding: utf-8 -*-
"""The wire protocol: round trips, every kind of bad input, framing limits, HMAC."""
import json
import socket
import threading

import pytest

from diskbench import protocol as P
from diskbench.compat import as_bytes, binary_type, text_type

# One valid body per (direction, type); the round-trip test covers every type.
SAMPLE = {
    P.C2S: {
        P.HELLO: dict(client_version="0.1.0", hostname="node1", pid=123,
                      instance_id="0123456789abcdef",
                      python_version="3.11.7", platform="Linux-6", directory="/mnt/d",
                      fs_type="ext4", chunk_bytes=10 << 20, file_bytes=100 << 20,
                      duration_s=60.0, max_files=2, sync_mode=P.SYNC_DIRECT,
                      preallocate=False, stats_interval_s=10.0,
                      heartbeat_interval_s=5.0, psutil_version="7.2.2",
                      expected_rollovers=3.5, calibration_mib_s=850.0,
                      fixed=["chunk_bytes"], force=False, perf_interval_s=1.0,
                      verify=True),
        P.START: dict(writer_pid=124, sync_mode=P.SYNC_FSYNC, preallocate=True,
                      block_bytes=512, buffer_huge_bytes=10 << 20,
                      started_at=1763870000.0, chunk_bytes=20 << 20,
                      file_bytes=200 << 20, duration_s=60.0, verify=True),
        P.HEARTBEAT: dict(writer_pid=124, writer_alive=True, bytes_written=1 << 30,
                          chunks_written=102, progress_age_s=0.2),
        P.STATS: dict(writer_pid=124, cpu_percent=12.5, rss_bytes=50 << 20,
                      source="psutil", interval_s=10.0),
        P.PERF: dict(t_start=1763870000.0, t_end=1763870001.0, bytes=30 << 20,
                     chunks=3, io_s=0.9, lat_min_s=0.28, lat_max_s=0.33,
                     lat_hist=[[300, 2], [305, 1]], sync_mode=P.SYNC_DIRECT,
                     file_index=0),
        P.ROLLOVER: dict(file_index=0, file_bytes=100 << 20, close_s=0.01),
        P.STOP: dict(reason=P.STOP_DURATION, bytes_written=1 << 30, chunks_written=102,
                     rollovers=10, elapsed_s=60.0, io_s=55.0, dropped_messages=0,
                     perf_samples=60),
        P.ERROR: dict(source="writer", reason="No space left on device", errno=28,
                      fatal=True),
        P.NOTE: dict(text="psutil is not installed; CPU/memory come from /proc"),
        P.PONG: dict(nonce=7, client_time=1763870000.5),
        P.BYE: dict(),
        P.READBACK: dict(file_index=3, file_bytes=100 << 20, bytes=100 << 20, chunks=10,
                         io_s=0.08, lat_min_s=0.007, lat_max_s=0.009,
                         lat_hist=[[200, 9], [205, 1]], read_mode=P.READ_DIRECT,
                         corrupt=1, misplaced=0, stale=0, missing=0),
        P.BAD_BLOCK: dict(path="/data/diskbench-node1-7-3.dat", file_index=3,
                          offset=40960, kind="corrupt", expected="run 1 file 3",
                          found="no stamp"),
    },
    P.S2C: {
        P.ACK: dict(upto_seq=41),
        P.GO: dict(run_id="run-1", start_at=1763870002.0, clock_offset_s=-0.25, end_spread_s=2.5,
                   chunk_bytes=20 << 20, file_bytes=200 << 20, duration_s=60.0,
                   perf_interval_s=1.0, stats_interval_s=10.0,
                   heartbeat_interval_s=5.0, verify=True),
        P.STOP: dict(reason="server shutting down"),
        P.PING: dict(nonce=7, server_time=1763870000.0),
        P.REJECTED: dict(reason="protocol version 2 is not supported", fatal=True),
    },
}


def build(type_, direction=P.C2S, **over):
    fields = dict(SAMPLE[direction][type_])
    fields.update(over)
    if direction == P.C2S:
        return P.make(type_, direction, name="node1", seq=1, ts=1763870000.0, **fields)
    return P.make(type_, direction, ts=1763870000.0, **fields)


def wire(type_="heartbeat", **over):
    """A valid client wire object as a dict, to be broken by a test."""
    return json.loads(P.encode(build(type_)).decode("ascii"))


def reason_of(line, direction=P.C2S, secret=None):
    with pytest.raises(P.ProtocolError) as info:
        P.decode(as_bytes(line), direction, secret=secret)
    return info.value


def test_samples_cover_every_message_type():
    for direction in (P.C2S, P.S2C):
        assert sorted(SAMPLE[direction]) == P.types_for(direction)
        for type_ in SAMPLE[direction]:
            assert sorted(SAMPLE[direction][type_]) == P.fields_of(direction, type_)


@pytest.mark.parametrize("direction,type_", [
    (d, t) for d in (P.C2S, P.S2C) for t in sorted(SAMPLE[d])])
def test_roundtrip_every_type(direction, type_):
    msg = build(type_, direction)
    line = P.encode(msg)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    back = P.decode(line, direction)
    assert back == msg
    assert back.type == type_


@pytest.mark.parametrize("direction,type_", [
    (d, t) for d in (P.C2S, P.S2C) for t in sorted(SAMPLE[d])])
def test_roundtrip_every_type_with_mac(direction, type_):
    msg = build(type_, direction)
    assert P.decode(P.encode(msg, secret="s3cret"), direction, secret="s3cret") == msg


def test_fields_read_as_attributes_and_unknown_attribute_is_attributeerror():
    msg = build(P.HEARTBEAT)
    assert msg.bytes_written == 1 << 30 and msg.writer_alive is True
    with pytest.raises(AttributeError):
        assert msg.no_such_field is None


def test_unicode_name_and_text_roundtrip():
    name = u"n\u00f8de-\u6771\u4eac-\U0001F4BE"
    msg = P.make(P.NOTE, name=name, seq=3, text=u"caf\u00e9 \u2603")
    back = P.decode(P.encode(msg))
    assert back.name == name and isinstance(back.name, text_type)
    assert back.text == u"caf\u00e9 \u2603"


def test_optional_field_may_be_absent_or_null():
    obj = wire(P.HELLO)
    del obj["data"]["psutil_version"]
    obj["data"]["expected_rollovers"] = None
    msg = P.decode(as_bytes(json.dumps(obj)))
    assert msg.psutil_version is None and msg.expected_rollovers is None


# --- each kind of bad input gets its specific reason ---------------------------------
def test_not_utf8():
    assert reason_of(b"\xff\xfe{}\n").kind == P.ProtocolError.NOT_UTF8


def test_not_json():
    err = reason_of("{this is not json\n")
    assert err.kind == P.ProtocolError.NOT_JSON and "not JSON" in err.reason


def test_a_whole_message_followed_by_anything_but_blanks_is_not_json():
    good = json.dumps(wire(P.HEARTBEAT))
    for tail in ("x", "{}", good, "]", " 1"):
        err = reason_of(good + tail + "\n")
        assert err.kind == P.ProtocolError.NOT_JSON and "Extra data" in err.reason, tail
    for blanks in (" ", "\t", "  \r"):
        assert P.decode(as_bytes(" " + good + blanks + "\n")).type == P.HEARTBEAT


def test_each_record_line_carries_its_own_peer_and_receive_time():
    line = P.encode(build(P.HEARTBEAT))
    for peer, recv_ts in (("10.0.0.1:5", 100.25), ("10.0.0.2:6", 200.5),
                          ("10.0.0.1:5", 300.75), (None, 400.0)):
        obj = json.loads(P.record_line(line, recv_ts, peer).decode("ascii"))
        assert obj.get("peer") == peer and obj["recv_ts"] == recv_ts
        assert P.parse_record(P.record_line(line, recv_ts, peer))[1] == recv_ts


@pytest.mark.parametrize("line,kind_word", [
    ("[1, 2]", "array"), ('"hi"', "string"), ("42", "number"), ("null", "null")])
def test_not_an_object(line, kind_word):
    err = reason_of(line)
    assert err.kind == P.ProtocolError.NOT_OBJECT and kind_word in err.reason


def test_wrong_version_names_both_versions():
    obj = wire()
    obj["v"] = 99
    err = reason_of(json.dumps(obj))
    assert err.kind == P.ProtocolError.BAD_VERSION
    assert "99" in err.reason and "protocol version %d" % P.PROTOCOL_VERSION in err.reason


def test_unknown_type():
    obj = wire()
    obj["type"] = "launch-missiles"
    err = reason_of(json.dumps(obj))
    assert err.kind == P.ProtocolError.UNKNOWN_TYPE and "launch-missiles" in err.reason


def test_server_type_not_accepted_from_client():
    line = P.encode(build(P.ACK, P.S2C))
    assert reason_of(line, P.C2S).kind == P.ProtocolError.UNKNOWN_TYPE


def test_missing_field_is_named():
    obj = wire()
    del obj["data"]["bytes_written"]
    err = reason_of(json.dumps(obj))
    assert err.kind == P.ProtocolError.MISSING_FIELD and "bytes_written" in err.reason


def test_missing_envelope_field_is_named():
    obj = wire()
    del obj["seq"]
    err = reason_of(json.dumps(obj))
    assert err.kind == P.ProtocolError.MISSING_FIELD and "seq" in err.reason


@pytest.mark.parametrize("field,value", [
    ("bytes_written", "lots"), ("bytes_written", -1), ("bytes_written", 1.5),
    ("bytes_written", True), ("bytes_written", 2 ** 70), ("writer_alive", 1),
    ("progress_age_s", -3.0), ("progress_age_s", 1e300), ("writer_pid", 0)])
def test_ill_typed_or_absurd_field(field, value):
    obj = wire()
    obj["data"][field] = value
    err = reason_of(json.dumps(obj))
    assert err.kind == P.ProtocolError.BAD_FIELD and field in err.reason


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_refused(token):
    line = P.encode(build(P.HEARTBEAT)).decode("ascii").replace(
        '"progress_age_s":0.2', '"progress_age_s":%s' % token)
    assert reason_of(line).kind == P.ProtocolError.NOT_JSON


def test_control_characters_in_text_refused():
    obj = wire(P.NOTE)
    obj["data"]["text"] = "fake\nINFO client joined"
    assert reason_of(json.dumps(obj)).kind == P.ProtocolError.BAD_FIELD


def test_make_cleans_free_text():
    msg = P.make(P.ERROR, name="n", seq=1, source="writer",
                 reason="line1\nline2\x00", errno=None, fatal=False)
    assert msg.reason == "line1 line2 "


def test_unknown_body_and_envelope_fields_refused():
    obj = wire()
    obj["data"]["surprise"] = 1
    assert reason_of(json.dumps(obj)).kind == P.ProtocolError.UNKNOWN_FIELD
    obj = wire()
    obj["extra"] = 1
    assert reason_of(json.dumps(obj)).kind == P.ProtocolError.UNKNOWN_FIELD


def test_bad_enum_value():
    obj = wire(P.START)
    obj["data"]["sync_mode"] = "hope"
    err = reason_of(json.dumps(obj))
    assert err.kind == P.ProtocolError.BAD_FIELD and "o_direct" in err.reason


def test_bad_histogram():
    """Refused by the field's own check (not by the count of chunks: each
    bad histogram here counts the sample's 3), wherever the bad pair is:
    first, or after good ones (good pairs are taken as they are until one
    is not)."""
    top = P.MAX_BUCKET_INDEX
    assert SAMPLE[P.C2S][P.PERF]["chunks"] == 3
    for bad in ([[1]], [["a", 3]], [[1, 4], [2, -1]], "x", [[0, 1]] * (P.MAX_HIST_BUCKETS + 1),
                [[1, 2], [2]], [[1, 2], [2, 1, 1]], [[1, 3], "ab"], [[1, 3], {"a": 1, "b": 2}],
                [[1, 2], [True, 1]], [[1, 3], [1, False]], [[1, 2], [1.0, 1]],
                [[1, 2], [-1, 1]], [[1, 2], [top + 1, 1]], [[1, 3 + 2 ** 63], [2, -2 ** 63]],
                [[1, 3], None]):
        obj = wire(P.PERF)
        obj["data"]["lat_hist"] = bad
        err = reason_of(json.dumps(obj))
        assert err.kind == P.ProtocolError.BAD_FIELD, bad
        assert "'lat_hist' must be a list" in err.reason, (bad, err.reason)
    from diskbench.protocol.fields import Hist
    good = [[0, 1], [top, P.MAX_INT]]
    assert Hist().check(json.loads(json.dumps(good))) == good


#: Lines whose bytes are odd: each must parse (or be refused) from its bytes
#: exactly as from its text (2.7 reads bytes with its scanner; 3 decodes first).
_ODD_LINES = [
    b'{"a":"caf\xc3\xa9","b":[1,2.5,"\xf0\x9f\x92\xbe"]}',   # 2- and 4-byte UTF-8
    b'{"a":"\xff"}',                        # an invalid byte in a string
    b'{"a\xff":1}',                         # in a key
    b'{"a":1}\xff',                         # after the object
    b'{"a":1,\xc3\xa9:2}',                   # outside any string
    b'{"a":"\xc3"}',                        # a character cut at the string's end
    b'{"a":"\xc3\\u00a9"}',                 # cut by an escape
    b'{"a":"\xc0\xaf"}',                    # overlong
    b'{"a":"\xed\xa0\x80"}',                # an encoded surrogate
    b'\xef\xbb\xbf{"a":1}',                  # a byte-order mark
    b'{"a":"\\u00e9\\ud83d\\udcbe"}',        # escapes
    b'{"a":"x\x00y"}', b'{"a":1} ', b' {"a":1}', b'{"a":1}\r\n', b'[1,2]', b'"s"',
    b'{"a":1}{"b":2}', b'{"a":NaN}', b'{"a":', b'',
]


def _outcome(parse, line):
    try:
        return "ok", parse(line)
    except P.ProtocolError as exc:
        return "refused", exc.kind


def _binary_strings(obj):
    """The byte strings (2.7 ``str``) anywhere in ``obj``: a message's text is text."""
    if isinstance(obj, dict):
        return [k for k in obj if type(k) is binary_type] + _binary_strings(list(obj.values()))
    if isinstance(obj, list):
        return [s for v in obj for s in _binary_strings(v)]
    return [obj] if type(obj) is binary_type else []


@pytest.mark.parametrize("line", _ODD_LINES)
def test_line_parses_from_its_bytes_as_from_its_text(line):
    from diskbench.protocol import codec

    def from_text(raw):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise P.ProtocolError(P.ProtocolError.NOT_UTF8, "")
        return codec._parse(text)      # text in: the scanner reads text
    got, want = _outcome(codec._parse, line), _outcome(from_text, line)
    assert got == want
    if got[0] == "ok":
        assert _binary_strings(got[1]) == []


def test_too_long_line_refused_by_decode():
    assert reason_of(b"x" * (P.MAX_LINE_BYTES + 1)).kind == P.ProtocolError.TOO_LONG


def test_deeply_nested_json_is_a_reason_not_a_crash():
    err = reason_of("[" * 100000 + "]" * 100000)
    assert err.kind in (P.ProtocolError.NOT_JSON, P.ProtocolError.TOO_LONG)
    err = reason_of("[" * 20000 + "]" * 20000)
    assert err.kind in (P.ProtocolError.NOT_JSON, P.ProtocolError.NOT_OBJECT)


def test_make_refuses_wrong_fields():
    with pytest.raises(P.ProtocolError):
        P.make(P.HEARTBEAT, name="n", seq=1, writer_pid=1)
    with pytest.raises(P.ProtocolError):
        P.make("nope", name="n", seq=1)


# --- HMAC ---------------------------------------------------------------------------
def test_missing_mac_refused_when_secret_set():
    line = P.encode(build(P.HEARTBEAT))
    err = reason_of(line, secret="k")
    assert err.kind == P.ProtocolError.BAD_MAC and "missing" in err.reason


def test_wrong_secret_refused():
    line = P.encode(build(P.HEARTBEAT), secret="other")
    err = reason_of(line, secret="k")
    assert err.kind == P.ProtocolError.BAD_MAC and "wrong" in err.reason


def test_tampered_message_refused():
    line = P.encode(build(P.HEARTBEAT), secret="k").replace(b'"chunks_written":102',
                                                             b'"chunks_written":103')
    assert reason_of(line, secret="k").kind == P.ProtocolError.BAD_MAC


def test_mac_is_independent_of_key_order():
    obj = wire()
    obj_mac = P.compute_mac(obj, "k")
    obj["mac"] = obj_mac
    shuffled = "{" + ",".join('"%s":%s' % (k, json.dumps(obj[k]))
                              for k in reversed(sorted(obj))) + "}"
    assert P.decode(as_bytes(shuffled), secret="k").seq == 1


# --- records for the server's log ------------------------------------------------------
def test_record_roundtrip():
    msg = build(P.PERF)
    back, recv = P.from_record(json.loads(json.dumps(P.record(msg, 5.5, "1.2.3.4:5"))))
    assert back == msg and recv == 5.5


# --- framing over a real socket --------------------------------------------------------
def _socket_pair():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    return client, server


def test_lines_arrive_whole_when_sent_in_fragments():
    client, server = _socket_pair()
    try:
        lines = [P.encode(build(t)) for t in (P.HELLO, P.PERF, P.STOP)]
        blob = b"".join(lines)

        def send_slowly():
            for i in range(0, len(blob), 7):  # 7-byte fragments split every line
                client.sendall(blob[i:i + 7])
            client.shutdown(socket.SHUT_WR)

        t = threading.Thread(target=send_slowly)
        t.start()
        rfile = server.makefile("rb")
        got = []
        while True:
            line = P.read_line(rfile)
            if not line:
                break
            got.append(P.decode(line).type)
        t.join()
        assert got == [P.HELLO, P.PERF, P.STOP]
    finally:
        client.close()
        server.close()


def test_overlong_line_refused_without_reading_it_all():
    """A sender streams 10 MiB without a newline; the reader stops at the limit."""
    client, server = _socket_pair()
    sent = [0]
    total = 10 << 20

    def flood():
        piece = b"x" * 4096
        client.settimeout(5)
        try:
            while sent[0] < total:
                client.sendall(piece)
                sent[0] += len(piece)
        except (socket.error, socket.timeout):
            pass  # the reader closed its end, or stopped reading: both fine

    t = threading.Thread(target=flood)
    t.daemon = True
    t.start()
    try:
        rfile = server.makefile("rb")
        with pytest.raises(P.LineTooLong):
            P.read_line(rfile)
        # The reader consumed only about the limit (plus socket buffering),
        # not the whole flood: the flood is still blocked on a full socket.
        assert sent[0] < total
    finally:
        server.close()
        client.close()
        t.join(10)


# --- text policy: unsafe characters (issue 11) ---------------------------------------
#: One of each kind of character that breaks, forges or disguises a line, or
#: that Python 3 cannot encode (lone surrogates).
UNSAFE = [u"\n", u"\r", u"\x00", u"\x1b", u"\x7f", u"\x85", u"\x9b", u"\x80", u"\x9f",
          u"\u2028", u"\u2029", u"\u202a", u"\u202e", u"\u2066", u"\u2069", u"\u200e",
          u"\u200f", u"\u061c", u"\ud800", u"\udce9", u"\udfff"]


def _hello_line(**over):
    """A hello wire line whose fields are given as they would be in JSON (a lone
    surrogate travels as its \\u escape, exactly as a Latin-1 path from a
    Python 3 client in a non-UTF-8 locale does)."""
    obj = wire("hello")
    name = over.pop("name", None)
    if name is not None:
        obj["name"] = name
    obj["data"].update(over)
    return json.dumps(obj, ensure_ascii=True)


def test_safe_text_escapes_every_unsafe_character():
    """safe_text: no kind of line break, control or lone surrogate survives; what
    remains is one line that encodes as UTF-8 and shows what was there."""
    for ch in UNSAFE:
        out = P.safe_text(u"a" + ch + u"FORGED")
        assert out == u"a\\u%04xFORGED" % ord(ch)
        assert len(out.splitlines()) == 1
        out.encode("utf-8")
    # already safe text is unchanged (so applying it twice is harmless)
    text = u"caf\u00e9 \u2603 \U0001F4BE /mnt/d"
    assert P.safe_text(text) == text and P.safe_text(P.safe_text(u"\u2028")) == u"\\u2028"
    assert P.safe_text(42) == u"42" and P.safe_text(b"\xff") == u"\ufffd"


def test_clean_text_leaves_no_unsafe_character():
    """clean_text covers the same set as safe_text (ASCII controls become spaces)."""
    out = P.clean_text(u"".join(UNSAFE) + u"end")
    assert not P.UNSAFE.search(out)
    assert out.endswith(u"end") and len(out.splitlines()) == 1
    out.encode("utf-8")


def test_unsafe_characters_in_name_refused():
    """name (identity) refuses every unsafe character with BAD_FIELD and a reason."""
    for ch in UNSAFE:
        err = reason_of(_hello_line(name=u"node" + ch))
        assert err.kind == P.ProtocolError.BAD_FIELD and "'name'" in err.reason
    assert P.decode(as_bytes(_hello_line(name=u"n\u00f8de-\U0001F4BE"))).name == \
        u"n\u00f8de-\U0001F4BE"


def test_surrogates_and_unicode_breaks_in_free_text_escaped():
    """Free text (hostname, directory, platform ...) with a lone surrogate or a
    Unicode line break is accepted, stored escaped, and encodes again."""
    msg = P.decode(as_bytes(_hello_line(directory=u"/mnt/caf\udce9", hostname=u"h\u2028x",
                                        platform=u"\u202eLinux\x85\x9b[2J")))
    assert msg.directory == u"/mnt/caf\\udce9"
    assert msg.hostname == u"h\\u2028x"
    assert msg.platform == u"\\u202eLinux\\u0085\\u009b[2J"
    for text in (msg.directory, msg.hostname, msg.platform):
        text.encode("utf-8")
    P.encode(msg).decode("ascii")
    rec = json.dumps(P.record(msg, 1.0), ensure_ascii=False)
    rec.encode("utf-8")


def test_make_escapes_surrogates_in_free_text():
    """A client building a message from a path it could not decode sends it
    escaped, never raw."""
    msg = P.make(P.NOTE, name="n", seq=1, text=u"dir /mnt/caf\udce9\u2028x")
    assert msg.text == u"dir /mnt/caf\\udce9\\u2028x"
    P.encode(msg)


# --- consistency across fields (issue 11) --------------------------------------------
def _perf(**over):
    obj = wire("perf")
    obj["data"].update(over)
    return json.dumps(obj)


def test_hist_bucket_bound_is_what_metrics_computes():
    """A histogram bucket index is bounded by metrics.LatencyHistogram.MAX_BUCKET
    (derived, not restated): at the bound accepted, one beyond refused."""
    from diskbench.metrics import LatencyHistogram
    top = LatencyHistogram.MAX_BUCKET
    assert P.MAX_BUCKET_INDEX == top
    assert P.decode(as_bytes(_perf(lat_hist=[[top, 3]]))).lat_hist == [[top, 3]]
    for index in (top + 1, 100000):
        err = reason_of(_perf(lat_hist=[[index, 3]]))
        assert err.kind == P.ProtocolError.BAD_FIELD and "lat_hist" in err.reason


def test_perf_interval_ending_before_it_starts_refused():
    """perf with t_end <= t_start is refused with BAD_FIELD saying so."""
    for t_end in (1763870000.0, 1763869999.0):
        err = reason_of(_perf(t_end=t_end))
        assert err.kind == P.ProtocolError.BAD_FIELD
        assert "t_end" in err.reason and "after t_start" in err.reason


def test_perf_rate_beyond_physical_bound_refused():
    """A tiny interval with huge bytes (a rate over MAX_RATE_MIB_S) is refused."""
    err = reason_of(_perf(t_end=1763870000.0 + 1e-6, io_s=1e-7, lat_min_s=1e-8,
                          lat_max_s=1e-8, bytes=P.MAX_INT))
    assert err.kind == P.ProtocolError.BAD_FIELD and "MiB/s" in err.reason
    limit = int(P.MAX_RATE_MIB_S * (1 << 20))  # exactly at the bound in 1 s: accepted
    assert P.decode(as_bytes(_perf(bytes=limit))).bytes == limit


def test_perf_inconsistent_fields_refused():
    """io_s beyond the interval, lat_min > lat_max, lat_max > io_s, more chunks
    than bytes, a histogram that does not count the chunks: each refused."""
    for over, word in ((dict(io_s=5.0), "io_s"),
                       (dict(lat_min_s=0.4), "lat_min_s"),
                       (dict(lat_max_s=0.95, io_s=0.3, lat_min_s=0.1), "lat_max_s"),
                       (dict(bytes=2), "chunks"),
                       (dict(lat_hist=[[300, 2]]), "lat_hist")):
        err = reason_of(_perf(**over))
        assert err.kind == P.ProtocolError.BAD_FIELD and word in err.reason, over


def test_stop_inconsistent_fields_refused():
    """stop: io_s beyond elapsed_s, or more chunks than bytes, is refused."""
    obj = wire("stop")
    obj["data"].update(io_s=1000.0, elapsed_s=60.0)
    assert "elapsed_s" in reason_of(json.dumps(obj)).reason
    obj = wire("stop")
    obj["data"].update(bytes_written=5, chunks_written=6)
    err = reason_of(json.dumps(obj))
    assert err.kind == P.ProtocolError.BAD_FIELD and "chunks_written" in err.reason


def test_heartbeat_racing_the_first_chunk_accepted():
    """A heartbeat may read the chunk counter before the bytes counter (chunks 1,
    bytes 0): it is a progress snapshot, not refused."""
    obj = wire("heartbeat")
    obj["data"].update(bytes_written=0, chunks_written=1)
    assert P.decode(as_bytes(json.dumps(obj))).chunks_written == 1


def test_escaped_free_text_reads_back_after_a_restart():
    """A free text field at its length bound, all lone surrogates, is stored
    escaped and cut to the bound, so its perf.jsonl record passes validation
    again when the server reads it back after a restart."""
    obj = wire("error")
    obj["data"]["reason"] = u"\udce9" * 2048
    msg = P.decode(as_bytes(json.dumps(obj)))
    assert len(msg.reason) == 2048 and msg.reason.startswith(u"\\udce9\\udce9")
    back, recv_ts = P.from_record(json.loads(json.dumps(P.record(msg, 5.0))))
    assert back == msg and recv_ts == 5.0


# --- per-type policy and total dispatch tables -----------------------------------------
def test_every_client_type_has_a_drop_and_ack_policy_beside_its_fields():
    """A new client message type fails here until someone decides whether a full
    buffer may drop it and whether the end of a run waits for its ack."""
    assert set(P.POLICY) == set(P.types_for(P.C2S))
    assert P.drop_order() == [(P.PERF,), (P.HEARTBEAT, P.NOTE, P.PONG, P.STATS)]
    assert P.no_ack_needed() == (P.BYE, P.PONG)


def test_the_sender_reads_its_drop_and_ack_policy_from_the_protocol():
    from diskbench.client import sender
    assert sender.DROP_ORDER == P.drop_order()
    assert sender.NO_ACK_NEEDED == P.no_ack_needed()
    s = sender.Sender("127.0.0.1", 1, "n", SAMPLE[P.C2S][P.HELLO])
    s.buffer.clear()
    for type_ in (P.STOP, P.HEARTBEAT, P.PERF, P.ROLLOVER, P.STATS, P.PERF):
        s.buffer.append((len(s.buffer) + 1, type_, b""))
    dropped = [s._drop_one() for _ in range(5)]
    assert dropped == [(3, P.PERF), (6, P.PERF), (2, P.HEARTBEAT), (5, P.STATS), None]
    assert [t for _, t, _ in s.buffer] == [P.STOP, P.ROLLOVER]


def test_every_client_type_has_an_entry_in_the_registry():
    from diskbench.server import registry
    from diskbench import effects
    assert set(effects.APPLY) == set(P.types_for(P.C2S))
    for method in effects.APPLY.values():
        assert callable(getattr(registry.Registry, method))


def test_every_server_type_has_a_handler_in_the_client():
    from diskbench.client import sender
    assert set(sender._ON_SERVER_MESSAGE) == set(P.types_for(P.S2C))


def test_every_client_type_is_relayed_from_a_child_or_sent_by_the_supervisor():
    from diskbench.client import supervisor
    relayed, own = set(supervisor.ON_CHILD_ITEM), set(supervisor.NOT_FROM_CHILDREN)
    assert not relayed & own
    assert relayed | own == set(P.types_for(P.C2S))


def test_ack_line_is_the_encoded_ack_signed_or_not():
    """The server's template-made ack decodes like make+encode's, and a signed
    one carries a mac the client checks."""
    for upto in (1, 17, 2 ** 40):
        got = P.decode(P.ack_line(upto), P.S2C)
        want = P.decode(P.encode(P.make(P.ACK, P.S2C, upto_seq=upto)), P.S2C)
        assert (got.type, got.data) == (want.type, want.data)
        assert P.decode(P.ack_line(upto, "s3cret"), P.S2C, "s3cret").upto_seq == upto
    with pytest.raises(P.ProtocolError):
        P.decode(P.ack_line(5, "s3cret"), P.S2C, "other")


def test_fast_paths_keep_every_rule():
    """The count-based shortcuts of decode still refuse a missing field
    disguised by an unknown one, and a number out of infinite bounds."""
    obj = wire()
    del obj["seq"]
    obj["sequence"] = 1           # same number of envelope keys, one wrong
    err = reason_of(json.dumps(obj))
    assert err.kind == P.ProtocolError.MISSING_FIELD and "seq" in err.reason
    obj = wire(P.START)
    obj["data"].pop("buffer_huge_bytes", None)   # optional: may be absent ...
    obj["data"]["surprise"] = 1                   # ... but no stranger in its place
    assert reason_of(json.dumps(obj)).kind == P.ProtocolError.UNKNOWN_FIELD
    unbounded = P.Num(0.0, float("inf"))
    assert unbounded.check(1.5) == 1.5
    for bad in (float("inf"), float("nan")):
        with pytest.raises(ValueError):
            unbounded.check(bad)
    assert P.Int(0, 10).check(3) == 3
    for bad in (True, 3.0, 11):
        with pytest.raises((TypeError, ValueError)):
            P.Int(0, 10).check(bad)
