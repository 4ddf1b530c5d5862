# -*- coding: utf-8 -*-
"""The wire protocol: round trips, every kind of bad input, framing limits, HMAC."""
import json
import socket
import threading

import pytest

from diskbench import protocol as P
from diskbench.compat import as_bytes, text_type

# One valid body per (direction, type); the round-trip test covers every type.
SAMPLE = {
    P.C2S: {
        P.HELLO: dict(client_version="0.1.0", hostname="node1", pid=123,
                      python_version="3.11.7", platform="Linux-6", directory="/mnt/d",
                      fs_type="ext4", chunk_bytes=10 << 20, file_bytes=100 << 20,
                      duration_s=60.0, max_files=2, sync_mode=P.SYNC_DIRECT,
                      preallocate=False, stats_interval_s=10.0,
                      heartbeat_interval_s=5.0, psutil_version="7.2.2",
                      expected_rollovers=3.5, calibration_mib_s=850.0),
        P.START: dict(writer_pid=124, sync_mode=P.SYNC_FSYNC, preallocate=True,
                      block_bytes=512, buffer_huge_bytes=10 << 20),
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
                     rollovers=10, elapsed_s=60.0, io_s=55.0, dropped_messages=0),
        P.ERROR: dict(source="writer", reason="No space left on device", errno=28,
                      fatal=True),
        P.NOTE: dict(text="psutil is not installed; CPU/memory come from /proc"),
        P.PONG: dict(nonce=7, client_time=1763870000.5),
        P.BYE: dict(),
    },
    P.S2C: {
        P.ACK: dict(upto_seq=41),
        P.GO: dict(run_id="run-1"),
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
        msg.no_such_field


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
    for bad in ([[1]], [["a", 1]], [[1, -1]], "x", [[0, 1]] * (P.MAX_HIST_BUCKETS + 1)):
        obj = wire(P.PERF)
        obj["data"]["lat_hist"] = bad
        assert reason_of(json.dumps(obj)).kind == P.ProtocolError.BAD_FIELD


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
