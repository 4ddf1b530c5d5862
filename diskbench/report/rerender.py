"""Rebuild a run's report from LOG_DIR/perf.jsonl (+ run.json, + an old report.json).

A server that was SIGKILLed, crashed or lost its machine leaves perf.jsonl
(every message it acknowledged) and run.json (run id, start time), but no
report. Replaying the records into a fresh ``ledger.Ledger`` (as the server's
resume path does into its registry, the same code; no server needed) gives
every figure back. What perf.jsonl cannot say is how the run ended: clients
without a stop summary are reported "unfinished", with a reason saying the
server did not see the end. A server that ended the run
added its report facts to run.json (build.facts: each client's plan as
sent in go and where each setting came from, the start instant, end states,
exit code and meaning, server CPU, ...), so a re-render of a finished run
states exactly what its report.json did; from an older run without them, an
old report.json's run facts and end states are kept. A re-render says so in
``rerendered`` (when, from which files).
"""
from __future__ import absolute_import

import os
import time

from diskbench.ledger import Ledger
from diskbench.metrics import count as counted, utc
from diskbench.report import RUN_MARKER, readers
from diskbench.report import series as series_mod
from diskbench import states
from diskbench.report import build as build_mod
#: The reason given to a client whose stop summary is not in perf.jsonl.
NO_END_REASON = ("the server did not see the end of the run (no stop summary in "
                 "perf.jsonl; was the server killed?)")
SKIPPED = "%d records in perf.jsonl were skipped (a repeated seq, or no hello on record)"
INCOMPLETE_MEANING = ("re-rendered from a perf.jsonl that lost records the server "
                      "wrote (see the warnings)")
NO_REPORT_MEANING = "no report from the server (killed?), re-rendered from perf.jsonl"


#: LOG_DIR cannot be reported; the message names the fix (readers.Unreadable).
Unreadable = readers.Unreadable


def load(log_dir, warn):
    """(report dict, series) of the run in ``log_dir``; raises Unreadable.

    perf.jsonl is read once, record by record, into the registry and the series
    (series.Builder) at once, never held as a list."""
    if not os.path.isdir(log_dir):
        raise Unreadable("%s is not a directory: give the --log-dir of a diskbench "
                         "server run" % log_dir)
    perf = os.path.join(log_dir, series_mod.PERF_LOG)
    if not os.path.exists(perf):
        raise Unreadable("%s has no %s: give the --log-dir of a diskbench server run"
                         % (log_dir, series_mod.PERF_LOG))
    builder = series_mod.Builder()
    recv = [None, None]       # first and last receive time
    marker, why = readers.read_marker(os.path.join(log_dir, RUN_MARKER))
    # the server's plan: each client's plan and its sources resolve as they did
    registry = Ledger(plan_given=marker.get("plan_given"))
    tally, said = {}, []      # the reader's warnings: not said when the file is refused
    try:  # opening it, or any read on the way
        records = series_mod.iter_records(log_dir, said.append, tally)
        skipped = registry.restore_all(_tap(records, builder, recv))
    except (IOError, OSError) as exc:
        raise Unreadable("cannot read %s (%s)" % (perf, getattr(exc, "strerror", exc)))
    if tally["skipped"] and not tally["records"]:
        raise Unreadable("%s holds no diskbench record (%d line%s, none readable): give "
                         "the --log-dir of a diskbench server run" % (
                             perf, tally["skipped"], "" if tally["skipped"] == 1 else "s"))
    recorded = _recorded_facts(os.path.join(log_dir, RUN_MARKER))
    _refuse_if_none_held(registry, recorded)
    for text in said:
        warn(text)
    view = registry.snapshot()
    damage = []   # what the reading found: said in the report whichever path builds it
    if tally["skipped"]:
        damage.append("%d damaged lines of perf.jsonl were skipped (not records of "
                      "this diskbench version); %d records read" % (
                          tally["skipped"], tally["records"]))
    if skipped:
        damage.append(SKIPPED % skipped)
    if recorded is not None:
        rep = _from_facts(view, recorded, damage, warn)
        if rep is not None:   # the server's facts, its warnings included, as it wrote them
            return _rerendered(rep, [series_mod.PERF_LOG, RUN_MARKER]), builder.finish()
        view = registry.snapshot()
    old = readers.read_old_report(os.path.join(log_dir, build_mod.REPORT_JSON), warn)
    old_run = (old or {}).get("run") or {}
    old_states = (old or {}).get("states") or {}
    for c in view.clients:
        if c.state in states.LIVE:
            prev = old_states.get(c.name)
            if prev:
                c.state, c.reason = prev[0], prev[1] or c.reason
            else:
                c.reason = NO_END_REASON
    started = marker.get("started_ts", old_run.get(
        "start_ts", 0.0 if recv[0] is None else recv[0]))
    ended = old_run.get("end_ts", started if recv[1] is None else recv[1])
    warnings = list(old_run.get("server_warnings") or ()) + damage
    if old is None:
        warnings.append("re-rendered from perf.jsonl without a report from the server; "
                        "the run ended at or after %s" % utc(ended))
        if old is None and not marker:
            warnings.append("%s missing or unreadable%s: the run's start is taken as "
                            "the first record's receive time" % (
                                RUN_MARKER, " (%s)" % why if why else ""))
    if old is not None:
        if old_run.get("connection_count") is not None:
            view.connections = old_run["connection_count"]
        if old["rejected"] is not None:
            view.rejected = old["rejected"]
        view.expected_clients = old_run.get("expected_client_count",
                                            old_run.get("expected_clients"))
    rep = build_mod.build(
        view, started, ended,
        run_label="%s" % (marker.get("run_id") or old_run.get("label") or
                          os.path.basename(os.path.abspath(log_dir))),
        interrupted_by=old_run.get("interrupted_by"),
        exit_code=old_run.get("exit_code"),
        exit_meaning=old_run.get("exit_meaning") if old else NO_REPORT_MEANING,
        warnings=warnings, server_cpu=old_run.get("server_cpu"))
    read = [series_mod.PERF_LOG] + [RUN_MARKER] * bool(marker) + \
        [build_mod.REPORT_JSON] * (old is not None)
    return _rerendered(rep, read), builder.finish()


def _from_facts(view, recorded, damage, warn):
    """The report built from the server's recorded facts, or None (said in
    ``warn``) when they cannot be used: run.json is a file we read, so its facts
    are checked like the wire first (readers.check_facts) and facts of the wrong
    shape or out of bounds fall back to a re-render without them, never a
    traceback."""
    try:
        checked = readers.check_facts(recorded)
    except ValueError as exc:
        warn("%s holds report facts that cannot be used (%s); re-rendering without "
             "them" % (RUN_MARKER, exc))
        return None
    lost = _records_lost(view, checked.get("records") or {})
    started, ended, build_args = build_mod.apply_facts(view, checked)
    build_args["warnings"] = list(build_args.get("warnings") or ()) + damage + lost
    if lost:   # the run's verdict stands; these figures are not all of it
        build_args["exit_meaning"] = "%s; %s" % (build_args.get("exit_meaning") or
                                                 "-", INCOMPLETE_MEANING)
    return build_mod.build(view, started, ended, **build_args)


def _refuse_if_none_held(registry, recorded):
    """Unreadable (before any warning of the reader is said: one line) when
    run.json's facts count records the server held and perf.jsonl holds none
    of them: emptied or replaced after the run. Facts that fail their check
    are said and left out later (_from_facts)."""
    try:
        records = readers.check_facts(recorded).get("records") if recorded else None
    except ValueError:
        return
    wrote = sum((records or {}).values())
    if wrote and not any(registry.clients[name].messages for name in records
                         if name in registry.clients):
        raise Unreadable("%s holds none of the %d records the server had for %d "
                         "clients (%s says so): it was emptied or replaced; nothing to "
                         "re-render" % (series_mod.PERF_LOG, wrote, len(records),
                                        RUN_MARKER))


def _records_lost(view, records):
    """The warnings for what perf.jsonl no longer holds of what the server
    held at its report (run.json's ``records``): a file cut after the run."""
    held = dict((c.name, c.messages) for c in view.clients)
    short = sorted((name, count, held.get(name, 0)) for name, count in records.items()
                   if held.get(name, 0) < count)
    if not short:
        return []
    gone = [name for name, _, now in short if not now]
    cut = ["%s (%d of %d)" % (name, now, count) for name, count, now in short if now]
    out = []
    if cut:
        out.append("%s holds fewer records than the server had at its report for %s: "
                   "%s; their figures here are from what is left (cut after "
                   "the run?)"
                   % (series_mod.PERF_LOG, counted(len(cut), "client"), ", ".join(cut)))
    if gone:
        out.append("%s holds no record of %s of the server's report: %s; they "
                   "are missing here" % (series_mod.PERF_LOG, counted(len(gone), "client"),
                                         ", ".join(gone)))
    return out


def _recorded_facts(path):
    """The report facts the server wrote into run.json (strict JSON), or None."""
    try:
        obj = readers.read_json(path)
    except (IOError, OSError, readers.Unreadable):
        return None
    return obj.get(build_mod.FACTS_KEY)


def _rerendered(rep, files):
    """``rep`` saying it was re-rendered now, from ``files`` of the log dir."""
    now = time.time()
    rep["rerendered"] = dict(at_ts=now, at_utc=utc(now), from_files=files)
    return rep


def _tap(records, builder, recv):
    """``records`` as they pass to the ledger, also added to the series and
    to [first, last] receive time ``recv``."""
    for msg, ts in records:
        builder.add(msg, ts)
        if ts is not None:
            recv[0] = ts if recv[0] is None else min(recv[0], ts)
            recv[1] = ts if recv[1] is None else max(recv[1], ts)
        yield msg, ts


