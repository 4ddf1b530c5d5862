"""The report the server writes when the run ends: everything accepted on
disk first (or said), the warnings only the server knows gathered, its facts
added to run.json (so a re-render says them), the report files written, and
the exit code downgraded by any gap.

Separate from master.py (the run loop), which calls ``write`` once, last; the
report itself is built and rendered by server/report.py and report/.
"""
import os
import sys

from diskbench import exitcodes, protocol
from diskbench import report as outputs
from diskbench.report import RUN_MARKER
from diskbench.cli import prog_name, say
from diskbench.metrics import describe_offset
from diskbench.server import console as console_mod
from diskbench.server import control as control_mod
from diskbench.server import event, log
from diskbench import effects
from diskbench import states as st
from diskbench.report import build as report_build
from diskbench.report import text as report_text

#: At the end, how long the recorder may take to write what is queued before
#: the report says how much is not on disk (and the exit code is not OK).
DRAIN_TIMEOUT_S = 120.0

#: How the report and the log name the operator's `ctl end`: who interrupted,
#: what happened (the log, the clients' stop, the report), and the exit meaning.
OPERATOR_END = "the operator (ctl end)"
OPERATOR_ENDED = "the operator ended the run (ctl end)"
ENDED_MEANING = OPERATOR_ENDED + "; report has what was known"


def write(master, started, code):
    """Write the report once everything accepted is on disk (or say exactly
    what is not); returns the exit code, which such a gap downgrades."""
    unwritten = master.recorder.drain(DRAIN_TIMEOUT_S)
    view = master.registry.snapshot()
    messages = sum(c.messages for c in view.clients)
    # Thousands of clients' report takes a while (it reads all of
    # perf.jsonl): said, so a quiet console is not taken for a hang.
    event.info("writing the report: %d clients, %d messages", len(view.clients),
               messages)
    server_cpu = master.cpu_gauge.summary(max(0, messages - view.restored))
    operator_stopped(view, master.control)
    warnings = list(master.startup_warnings)
    if unwritten:
        warnings.append(master.recorder.unwritten_text(unwritten, DRAIN_TIMEOUT_S))
    if master.recorder_died:
        warnings.append("the recorder thread stopped during the run; the run was "
                        "ended early (a bug: please report it)")
    short = report_build.shortfalls(view.clients)   # client summaries vs what we hold
    warnings += short + report_build.unmeasured(view.clients)
    lost = master.recorder.acked_lost    # (said in the recorder's trouble below)
    if (unwritten or lost or master.recorder_died or short) and code == exitcodes.OK:
        code = exitcodes.SERVER_INCOMPLETE
    behind = master.recorder.falling_behind()
    if behind:
        warnings.append(behind)
    if master.cpu_gauge.warning:
        warnings.append(master.cpu_gauge.warning)
    if master.resumed:
        warnings.append("the server was restarted during this run and %s"
                        % master.resumed)
    warnings += master.pauses + view.notes
    warnings += ["client %s's clock is %s the server's: its times are put "
                 "on the server's clock" % (c.name, describe_offset(c.offset()[0]))
                 for c in view.clients if c.offset()[0] is not None and
                 abs(c.offset()[0]) > effects.CLOCK_SKEW_WARN_S]
    warnings += ["client %s's clock moved %.3f s against the server's during the "
                 "run" % (c.name, c.offset_high - c.offset_low) for c in view.clients
                 if c.drift_warned]
    trouble = master.recorder.trouble()
    if trouble:
        warnings.append(trouble)
    meaning = ENDED_MEANING if master.interrupted_by == OPERATOR_END and \
        code == exitcodes.SERVER_INTERRUPTED else exitcodes.brief(code, exitcodes.SERVER)
    ended, facts = master.wall(), dict(
        run_label=master.run_id, interrupted_by=master.interrupted_by, exit_code=code,
        exit_meaning=meaning, warnings=warnings, server_cpu=server_cpu)
    # what perf.jsonl cannot say goes in run.json first: a re-render states it
    trouble = outputs.record_facts(master.args.log_dir, report_build.facts(
        view, started, ended, **facts))
    if trouble:
        log.warning("cannot add the report facts to %s (%s): a re-render will not "
                    "know them", RUN_MARKER, getattr(trouble, "strerror", trouble))
    rep = report_build.build(view, started, ended, **facts)
    written, failed = outputs.write_all(master.args.log_dir, rep)
    # the logs it stands on, as written? (removed or replaced after the last
    # batch, while the report was made, nothing else would see it)
    changed = master.recorder.files_changed()
    if changed:
        say(prog_name("diskbench.server"), changed_logs(changed))
    if (failed and code == exitcodes.OK) or changed:
        # a report not on disk, or one whose logs are gone, is no clean run:
        # the files that could be written (or stdout) are made again saying
        # so, with the code exited
        if code == exitcodes.OK:
            code = exitcodes.SERVER_INCOMPLETE
            facts.update(exit_code=code,
                         exit_meaning=exitcodes.brief(code, exitcodes.SERVER))
        if failed:
            warnings.append(unwritten_reports(failed))
        if changed:
            warnings.append(changed_logs(changed))
        outputs.record_facts(master.args.log_dir, report_build.facts(
            view, started, ended, **facts))   # (said above if it cannot)
        rep = report_build.build(view, started, ended, **facts)
        written, failed = outputs.write_all(master.args.log_dir, rep)
    for path, exc in failed:
        say(prog_name("diskbench.server"), "cannot write the report %s (%s)" % (
            path, getattr(exc, "strerror", None) or exc))
    main = [p for p in written if os.path.basename(p) in report_build.REPORT_FILES]
    if written:
        event.info("report written: %s", " and ".join(reversed(main)) or "-")
        event.info("also written: %s", ", ".join(
            os.path.basename(p) for p in written if p not in main) or "-")
    if not main:  # no report on disk, in any format: on stdout
        master.console.write_last(report_text.render_text(rep))
    elif not master.args.quiet:
        master.console.write_last("\n" + outputs.console_summary(rep))
    else:
        master.console.outbox.flush(console_mod.OUTBOX_FLUSH_S)
    sys.stderr.flush()
    return code


def changed_logs(changed):
    """The report's warning (and stderr's line) for logs that are no longer
    the files the server wrote when its report was done."""
    return ("%s %s no longer the file%s the server wrote when its report was done: "
            "the report's figures are from memory, and a re-render (python -m "
            "diskbench.report) cannot give them back; leave the log dir alone until "
            "the server has exited" % (" and ".join(changed), "is" if len(changed) == 1
                                       else "are", "" if len(changed) == 1 else "s"))


def unwritten_reports(failed):
    """The report's warning for the report files that could not be written."""
    return "the report files %s could not be written (%s)" % (
        ", ".join(os.path.basename(path) for path, _ in failed),
        getattr(failed[0][1], "strerror", None) or failed[0][1])


def operator_stopped(view, control):
    """Clients stopped with `ctl stop` say so in the report (the registry
    only knows the server asked them)."""
    stops = dict(control.stops) if control is not None else {}
    for client in view.clients:
        at = stops.get(client.name)
        if at is None:
            continue
        if client.state == st.FINISHED and client.stop is not None and \
                client.stop.reason == protocol.STOP_SERVER:
            client.reason = control_mod.operator_reason(at)
        elif client.state == st.FAILED and client.stop is not None and \
                client.stop.reason == protocol.STOP_SERVER and not effects.wrote(
                    client, client.stop):
            client.reason = "%s %s" % (control_mod.operator_reason(at),
                                       effects.STOPPED_UNWRITTEN)
        else:
            client.reason = "%s; before that, %s" % (
                client.reason, control_mod.operator_reason(at))
