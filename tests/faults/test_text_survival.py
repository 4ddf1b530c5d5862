# -*- coding: utf-8 -*-
"""Text can never stop the server, and no text forges a line (issue 11).

A Python 3 client in a non-UTF-8 locale sends a Latin-1 byte of its path as a
lone surrogate (JSON "\\udce9"); a hostile one sends Unicode line breaks, C1
and bidi controls. Through the live server: the others are still recorded and
acknowledged, the odd one is recorded with its text escaped, and server.log,
report.txt and the console hold only well-formed lines.
"""
import io
import json
import os
import re

from diskbench import exitcodes
from diskbench import protocol as P
from diskbench.server import recorder as rec
from tests.faults.test_report_total import one_line_each, strict_json
from tests.test_server_fakes import (FakeClient, ServerProc, hello_fields, latency_sets,
                                     play_full_run, run_in_threads)

#: Every unsafe character a free text field may carry (ASCII controls are
#: refused outright, tested in test_protocol), each followed by a marker that
#: must never begin a line.
HOSTILE = u"".join(ch + u"FORGED" for ch in (
    u"\x85", u"\x9b", u"\x80", u"\u2028", u"\u2029", u"\u202e", u"\u2066", u"\u200f",
    u"\u061c", u"\ud800", u"\udce9"))
UTC_STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z "
LOG_LINE = re.compile(r"^" + UTC_STAMP + r"(INFO|WARNING|ERROR) ")
REPORT_LINE = re.compile(
    r"^(|diskbench report .*|=+|run: .*|exit code:? .*|server warning: .*|client [\w-]+: "
    r".*|synchronized start at .*"
    r".*|  .*|totals: .*|aggregate throughput .*|rejected messages: .*|method: .*"
    r"|server CPU: (\d+%|-) of one CPU over the run, (\d+%|-) in its busiest [\d.]+ s, "
    r"(\d+|-) ms per 1000 accepted messages"
    # the headline and the table that lead report.txt
    r"|clients: .*|aggregate: .*|chunk .*|the clients (wrote|ran) different .*|by workload .*"
    r"|only clients that finished .*|ranked by .*"
    r"|data verified: .*"
    r"|details|client +host +state +chunk MiB +MiB/s .*"
    r"|[\w-]+~? +\S+ +(finished|unfinished|went away|failed|stalled) .*)$")
# The console: timestamped events, the listening line, and at the end the
# report's headline and table (the same line shapes as report.txt).
CONSOLE_LINE = re.compile(r"^(" + UTC_STAMP + r"|diskbench server .* listening on )|"
                          + REPORT_LINE.pattern)


def raw_line(name, seq, type_, **data):
    """A wire line as a peer may send it (text exactly as given, lone surrogates
    as their JSON escape): what protocol.make would have cleaned."""
    obj = P.Message(P.C2S, type_, data, name=name, seq=seq, ts=1763870000.0).to_obj()
    return json.dumps(obj, ensure_ascii=True).encode("ascii") + b"\n"


def assert_no_forged_line(text, pattern, what):
    if isinstance(text, bytes):  # 2.7 reads a file as bytes
        text = text.decode("utf-8")
    assert one_line_each(text), "%s holds a hidden line break" % what
    assert not P.UNSAFE.search(text.replace(u"\n", u"")), \
        "%s holds a raw unsafe character" % what
    for line in text.split(u"\n")[:-1] if text.endswith(u"\n") else text.split(u"\n"):
        assert pattern.match(line), "%s: malformed line %r" % (what, line)
        assert not line.lstrip().startswith(u"FORGED")


def test_text_surrogate_client_does_not_stop_recording_others(procs, tmpdir):
    """A client whose directory and hostname hold lone surrogates, and one whose
    name does, alongside 2 normal clients: every message of the normal clients
    is recorded and acknowledged, the odd one is recorded with its path escaped,
    the surrogate name is refused, and the report is written (exit 0)."""
    server = ServerProc(procs, str(tmpdir.join("logs")), ["--quiet",
                                                         "--shutdown-grace", "0.5"])
    bad_name = FakeClient(server.port, "unused")
    bad_name.raw(raw_line(u"bad\udce9name", 1, P.HELLO, **hello_fields()))
    odd = FakeClient(server.port, "odd")
    odd.raw(raw_line("odd", 1, P.HELLO, **hello_fields(
        directory=u"/mnt/caf\udce9", hostname=u"h\udce9st")))
    odd.seq = 1
    odd.wait_for(P.GO)
    odd.raw(raw_line("odd", 2, P.NOTE, text=u"path /mnt/caf\udce9 \ud800"))
    odd.raw(raw_line("odd", 3, P.ERROR, source=u"w\udce9", reason=u"r\udce9",
                     errno=None, fatal=False))
    odd.seq = 3
    clients = [FakeClient(server.port, "normal-%d" % i) for i in range(2)]
    run_in_threads([lambda c=c, i=i: play_full_run(c, latency_sets(i, 3, 4))
                    for i, c in enumerate(clients)])
    odd.start()
    odd.stop()
    odd.send(P.BYE)
    odd.wait_acked(odd.seq)
    assert server.wait_exit() == exitcodes.OK, server.stderr()
    recorded = {}
    for msg, _ in server.records():
        recorded.setdefault(msg.name, []).append(msg.seq)
    for c in clients:
        assert recorded[c.name] == list(range(1, c.seq + 1))
        assert c.got(P.ACK)[-1].upto_seq == c.seq
    assert recorded["odd"] == list(range(1, odd.seq + 1))
    with open(os.path.join(server.log_dir, "report.json")) as f:
        rep = strict_json(f.read())
    entries = dict((e["client"], e) for e in rep["clients"])
    assert sorted(entries) == ["normal-0", "normal-1", "odd"]
    assert entries["odd"]["target_dir"] == u"/mnt/caf\\udce9"
    assert entries["odd"]["notices"] == [u"path /mnt/caf\\udce9 \\ud800"]
    assert rep["rejected_messages"].get(P.ProtocolError.BAD_FIELD) == 1
    assert "dir /mnt/caf\\udce9" in server.report_text()
    assert "Traceback" not in server.stderr() and "internal error" not in server.stderr()


def test_text_no_line_forged_in_log_report_or_console(procs, tmpdir):
    """Unicode line breaks, C1 (NEL, CSI), bidi controls and lone surrogates in
    every free text field reach server.log, report.txt and the console only as
    visible escapes: every line there is well-formed, none starts with what the
    client sent."""
    server = ServerProc(procs, str(tmpdir.join("logs")), ["--shutdown-grace", "0.5"])
    c = FakeClient(server.port, "forger")
    spec = P.SPECS[P.C2S][P.HELLO]
    text_fields = dict((k, HOSTILE[:getattr(spec[k], "inner", spec[k]).max_len]) for k in (
        "client_version", "hostname", "python_version", "platform", "directory",
        "fs_type", "psutil_version"))
    c.raw(raw_line("forger", 1, P.HELLO, **hello_fields(**text_fields)))
    c.seq = 1
    c.wait_for(P.GO)
    for type_, data in ((P.NOTE, dict(text=HOSTILE)),
                        (P.ERROR, dict(source=HOSTILE[:32], reason=HOSTILE, errno=5,
                                       fatal=False)),
                        (P.STATS, dict(writer_pid=7, cpu_percent=1.0, rss_bytes=1,
                                       source=HOSTILE[:32], interval_s=1.0))):
        c.seq += 1
        c.raw(raw_line("forger", c.seq, type_, **data))
    c.start()
    c.perf(0, [0.01])
    c.stop(nbytes=1 << 20)
    c.send(P.BYE)
    c.wait_acked(c.seq)
    assert server.wait_exit() == exitcodes.OK, server.stderr()
    log = server.server_log()
    assert u"\\u2028FORGED" in log and u"\\udce9FORGED" in log  # shown, escaped
    assert_no_forged_line(log, LOG_LINE, "server.log")
    with io.open(os.path.join(server.log_dir, "report.txt"), encoding="utf-8") as f:
        report_text = f.read()
    assert u"\\u0085FORGED" in report_text
    assert_no_forged_line(report_text, REPORT_LINE, "report.txt")
    console = server.stdout()
    assert u"\\u202eFORGED" in console
    assert_no_forged_line(console, CONSOLE_LINE, "the console")
    with open(os.path.join(server.log_dir, "report.json")) as f:
        e = strict_json(f.read())["clients"][0]
    assert e["host"] == P.safe_text(HOSTILE[:255])


class _Sink(object):
    """A stderr that keeps what is written (text on both Pythons)."""

    def __init__(self):
        self.parts = []

    def write(self, text):
        self.parts.append(text)

    def flush(self):
        pass


def test_recorder_goes_on_after_an_item_it_cannot_write(tmpdir):
    """The recorder thread cannot die silently: an item that cannot be written is
    counted, said on stderr and in server.log, skipped without its ack, and the
    items after it are written and acknowledged; trouble() tells the report."""
    err = _Sink()
    r = rec.Recorder(str(tmpdir), stderr=err)
    r.open()
    r.start()
    acked = []
    r.record(dict(bad=object()), on_written=lambda: acked.append("bad"))
    r.log_line(u"peer said h\udce9llo\u2028FORGED")
    r.record(dict(good=1), on_written=lambda: acked.append("good"))
    r.drain()
    assert r.alive()
    r.record(dict(after=2), on_written=lambda: acked.append("after"))
    r.drain()
    assert acked == ["good", "after"] and r.failures == 1
    assert "skipped 1 item" in r.trouble() and "TypeError" in r.trouble()
    r.close()
    assert not r.alive()
    with io.open(str(tmpdir.join(rec.PERF_LOG)), encoding="utf-8") as f:
        assert [json.loads(line) for line in f] == [dict(good=1), dict(after=2)]
    with io.open(str(tmpdir.join(rec.SERVER_LOG)), encoding="utf-8") as f:
        log = f.read()
    assert u"internal error in the recorder" in log
    assert u"peer said h\\udce9llo\\u2028FORGED\n" in log
    assert "internal error in the recorder" in "".join(err.parts)


def test_recorder_goes_on_after_an_unexpected_error_in_a_write(tmpdir):
    """An unexpected error in the write path itself (not an OSError: a bug) is
    counted and said, drain() still returns, and the next batch is written."""
    r = rec.Recorder(str(tmpdir), stderr=_Sink())
    r.open()
    calls = []

    def flaky_write(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            raise RuntimeError("a bug in the write path")
        return os.write(fd, data)

    r.write_fd = flaky_write
    r.start()
    acked = []
    r.record(dict(first=1), on_written=lambda: acked.append(1))
    r.drain(timeout=10)
    assert r.alive() and r.failures >= 1 and "RuntimeError" in r.trouble()
    r.record(dict(second=2), on_written=lambda: acked.append(2))
    r.drain(timeout=10)
    assert acked == [2]
    r.close()
    with io.open(str(tmpdir.join(rec.PERF_LOG)), encoding="utf-8") as f:
        assert [json.loads(line) for line in f] == [dict(second=2)]


def test_text_log_formatters_neutralise_interpolated_text(tmpdir):
    """A log call that interpolates a peer's raw text (no boundary in between)
    still gives one well-formed, encodable line in server.log and on the console
    (even a console that only takes ASCII)."""
    import logging
    r = rec.Recorder(str(tmpdir))
    r.open()
    r.start()
    console = _Sink()
    ascii_console = _AsciiSink()
    logger = logging.getLogger("diskbench.test.text-formatters")
    logger.propagate = False
    from diskbench.server import console as console_mod, registry as reg
    consoles = [console_mod.Console(sink, reg.Registry(), "plain")
                for sink in (console, ascii_console)]
    handlers = [rec.RecorderLogHandler(r)] + [c.handlers()[0][1] for c in consoles]
    for h in handlers:
        logger.addHandler(h)
    try:
        logger.warning("client %s said %s", u"caf\u00e9 n\u2028FORGED", HOSTILE)
        try:
            raise ValueError(u"boom\u2029FORGED")
        except ValueError:
            logger.exception("failed")
    finally:
        for h in handlers:
            logger.removeHandler(h)
    r.close()
    for c in consoles:         # its lines go out through a thread of its own
        c.outbox.flush(console_mod.OUTBOX_FLUSH_S)
    with io.open(str(tmpdir.join(rec.SERVER_LOG)), encoding="utf-8") as f:
        log = f.read()
    assert_no_forged_line(log, LOG_LINE, "server.log")
    assert len(log.split(u"\n")) == 3 and u"n\\u2028FORGED" in log
    for sink in (console, ascii_console):
        text = u"".join(sink.parts)
        assert_no_forged_line(text, CONSOLE_LINE, "the console")
        assert len(text.split(u"\n")) == 3 and u"\\u202eFORGED" in text
    assert u"caf\u00e9" in u"".join(console.parts)
    assert u"caf\\xe9" in u"".join(ascii_console.parts)  # escaped, not lost


class _AsciiSink(_Sink):
    """A console in an ASCII locale: refuses what it cannot encode."""

    def write(self, text):
        text.encode("ascii")
        _Sink.write(self, text)
