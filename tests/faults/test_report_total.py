"""The report can always be computed (issue 11): a lying perf message is refused
at the boundary (and the run is still reported in full), and report building is
total on whatever the registry holds: a figure that cannot be computed is null
with a warning, report.json is strict JSON, report.txt is always written."""
import json
import os

from diskbench import exitcodes, metrics
from diskbench import protocol as P
from diskbench.report import build as build_mod
from diskbench import report as outputs
from tests.test_server_fakes import T0, FakeClient, ServerProc
from tests.test_server_units import Peer, _registry


# Strict JSON: NaN, Infinity and -Infinity are not JSON.
def _no_constant(name):
    raise ValueError("report.json holds %s, which is not JSON" % name)


def strict_json(text):
    return json.loads(text, parse_constant=_no_constant)


def one_line_each(text):
    """True when only '\\n' breaks lines in ``text``: no U+2028, NEL, CR, VT, FF,
    FS/GS/RS ... that a viewer (or str.splitlines) would take as a line break."""
    body = text[:-1] if text.endswith("\n") else text
    return text.splitlines() == body.split("\n")


def _lying_perfs():
    """Well-formed perf bodies that lie: each must be refused, none may reach the report."""
    good = dict(t_start=T0 + 100, t_end=T0 + 101, bytes=3 << 20, chunks=3, io_s=0.9,
                lat_min_s=0.28, lat_max_s=0.33, lat_hist=[[300, 2], [305, 1]],
                sync_mode=P.SYNC_DIRECT, file_index=0)
    lies = []
    for over in (dict(lat_hist=[[100000, 2], [305, 1]]),          # overflows metrics
                 dict(lat_hist=[[metrics.LatencyHistogram.MAX_BUCKET + 1, 3]]),
                 dict(t_end=T0 + 99),                              # ends before it starts
                 dict(t_end=T0 + 100),                             # no time at all
                 dict(t_end=T0 + 100 + 1e-6, io_s=1e-7, lat_min_s=1e-8,
                      lat_max_s=1e-8, bytes=P.MAX_INT)):            # ~4e6 TiB/s
        body = dict(good)
        body.update(over)
        lies.append(body)
    return lies


def test_report_total_when_lying_perf_messages_arrive(procs, tmpdir):
    """Perf messages with a bucket index metrics cannot compute, an interval ending
    before it starts, or an impossible rate are refused (bad-field); the server
    still exits 0 with a strict-JSON report holding only the honest figures."""
    server = ServerProc(procs, str(tmpdir.join("logs")), ["--quiet",
                                                         "--shutdown-grace", "0.5"])
    c = FakeClient(server.port, "liar")
    c.hello()
    c.wait_for(P.GO)
    c.start()
    honest = c.perf(0, [0.01, 0.02])
    lies = _lying_perfs()
    for body in lies:
        c.seq += 1
        obj = P.Message(P.C2S, P.PERF, body, name=c.name, seq=c.seq, ts=T0).to_obj()
        c.raw(json.dumps(obj).encode("ascii") + b"\n")
    c.stop(nbytes=honest.bytes)
    c.send(P.BYE)
    c.wait_acked(c.seq)
    assert server.wait_exit() == exitcodes.OK, server.stderr()
    with open(os.path.join(server.log_dir, "report.json")) as f:
        rep = strict_json(f.read())
    assert rep["rejected_messages"] == {P.ProtocolError.BAD_FIELD: len(lies)}
    e = rep["clients"][0]
    assert e["perf_interval_count"] == 1 and e["written_mib"] == 2.0
    assert e["latency_ms"]["max"] == 20.0
    assert "t_end" in server.server_log() and "MiB/s" in server.server_log()
    assert server.report_text().startswith("diskbench report")
    assert "Traceback" not in server.stderr()


def _poisoned_registry():
    """A registry holding what the protocol no longer lets in (an older server's
    perf.jsonl, a bug): a bucket index far beyond MAX_BUCKET, a zero-length and a
    5e-324 s interval with 2**62 bytes (an infinite rate), a name and paths no encoder takes."""
    r, _ = _registry()
    p = Peer(r, "a")
    p.hello()
    p.start()
    p.perf(T0, T0 + 1, 10 << 20, [0.001, 0.002])
    client = r.clients["a"]
    client.intervals += [(0.0, 5e-324, 2 ** 62), (T0 + 2, T0 + 2, 2 ** 62),
                         (T0 + 3, T0 + 2, 1 << 20)]
    client.hist.buckets[10 ** 6] = 5
    client.hist.count += 5
    client.cpu_samples.append(float("nan"))
    client.notes.append(u"caf\udce9\u2028FORGED")
    client.hello.data["directory"] = u"/mnt/caf\udce9"
    client.reason = u"odd \ud800\x85FORGED"
    return r


def test_report_total_when_figures_cannot_be_computed(tmpdir):
    """build.build never raises on what the registry holds: a figure that cannot
    be computed or is not finite is null with a server warning; report.json is
    strict JSON and report.txt has no forged line, even with unencodable text."""
    r = _poisoned_registry()
    rep = build_mod.build(r.snapshot(), 0.0, 10.0, warnings=["w\udce9"])
    e = rep["clients"][0]
    # the infinite rate is left out; the honest interval's rate is still shown
    assert e["throughput_mib_s"]["min"] == e["throughput_mib_s"]["max"] == 10.0
    assert e["writer_cpu_percent"]["mean"] is None
    warnings = rep["run"]["server_warnings"]
    finite = ["report.clients[0].writer_cpu_percent.%s was not a finite number; shown as "
              "unknown" % k for k in ("max", "mean")]
    assert sorted(w for w in warnings[1:] if w in finite) == finite
    # the rest: figures beyond what a report can hold (2**62 bytes), null
    assert all("what a report can hold; shown as unknown" in w
               for w in warnings[1:] if w not in finite), warnings
    written, failed = outputs.write(str(tmpdir), rep)
    assert not failed and len(written) == 2
    with open(str(tmpdir.join("report.json"))) as f:
        strict_json(f.read())
    with open(str(tmpdir.join("report.txt")), "rb") as f:
        text = f.read().decode("utf-8")
    assert "could not be rendered" not in text
    assert one_line_each(text)
    assert not any(line.lstrip().startswith("FORGED") for line in text.split("\n"))
    assert "caf\\udce9" in text and "\\ud800\\u0085FORGED" in text
