"""python -m diskbench.report LOG_DIR             rebuild every report file of a run
python -m diskbench.report compare RUN RUN...    each run beside the first (the baseline)

Exit codes: exitcodes.py (REPORT); each error is one line on stderr naming the fix.
"""
from __future__ import absolute_import, print_function

import os
import sys

from diskbench import __version__, exitcodes
from diskbench.cli import OneLineParser, printable, prog_name, say
from diskbench.compat import write_line, write_text
from diskbench.fsutil import atomic_write
from diskbench.report import compare as compare_mod
from diskbench.report import console_summary, rerender, write_all

PROG = prog_name("diskbench.report")


def _fail(text):
    say(PROG, text)
    return exitcodes.USAGE


def _warn(text):
    say(PROG, text, kind="warning")


def main_rerender(argv):
    parser = OneLineParser(
        prog=PROG, description="Rebuild report.json, report.txt, report.html, clients.csv "
        "and timeseries.csv of a run from its perf.jsonl (also a run whose server was "
        "killed). 'compare RUN RUN...' sets runs beside the first.",
        epilog=exitcodes.epilog(exitcodes.REPORT))
    parser.add_argument("--version", action="version", version="diskbench " + __version__)
    parser.add_argument("log_dir", metavar="LOG_DIR", help="the server's --log-dir")
    parser.add_argument("--out", metavar="DIR", help="write the files here, made if missing "
                        "(default LOG_DIR)")
    args = parser.parse_args(argv)
    out = args.out or args.log_dir
    if args.out is not None:      # before reading perf.jsonl (minutes at thousands of clients)
        trouble = _out_dir(args.out)
        if trouble:
            return _fail(trouble)
    try:
        rep, series = rerender.load(args.log_dir, _warn)
    except rerender.Unreadable as exc:
        return _fail(exc)
    written, failed = write_all(args.log_dir, rep, out_dir=out, series=series,
                                warn=_warn)
    for path, exc in failed:
        say(PROG, "cannot write %s (%s)" % (path, getattr(exc, "strerror", None) or exc))
    write_text(sys.stdout, console_summary(rep))
    write_line(sys.stdout, "written: %s" % printable(", ".join(written)))
    return exitcodes.INTERNAL if failed else exitcodes.OK


def _out_dir(path):
    """None when ``path`` is a directory (made if missing), else why not."""
    if os.path.isdir(path):
        return None
    if os.path.exists(path):
        return "--out %s is not a directory: give a directory for the report files" % path
    try:
        os.makedirs(path)
    except (IOError, OSError) as exc:
        return "cannot make the --out directory %s (%s)" % (
            path, getattr(exc, "strerror", None) or exc)
    return None


def _out_file(path):
    """None when ``path`` can be made as a file (its directory is there), else why not."""
    if os.path.isdir(path):
        return "--out %s is a directory: give a file path, e.g. %s" % (
            path, os.path.join(path, compare_mod.COMPARE_HTML))
    parent = os.path.dirname(path) or os.curdir
    if not os.path.isdir(parent):
        return "--out %s: no directory %s; make it or give another --out" % (path, parent)
    return None


def main_compare(argv):
    parser = OneLineParser(
        prog=PROG + " compare", description="Set each run beside the first (the "
        "baseline): each run's exit code and states, each client's plan in every run "
        "(a client whose plan differs is marked and left out of the like-for-like "
        "aggregate), MiB/s mean and p99 chunk latency per client (matched by name, then "
        "host) with the change against the baseline, and with three runs or more the "
        "run-to-run spread per client. Give repeated tries of each setup: a change "
        "within the spread is noise.", epilog=exitcodes.epilog(exitcodes.REPORT))
    parser.add_argument("runs", metavar="RUN", nargs="+",
                        help="log dir or report.json; two or more, the first is the "
                        "baseline")
    parser.add_argument("--out", metavar="PATH", default=compare_mod.COMPARE_HTML,
                        help="where compare.html goes (default ./compare.html)")
    args = parser.parse_args(argv)
    if not 2 <= len(args.runs) <= compare_mod.RUNS_MAX:
        return _fail("compare takes from 2 to %d runs, got %d" % (
            compare_mod.RUNS_MAX, len(args.runs)))
    trouble = _out_file(args.out)     # before the runs are read (minutes for big ones)
    if trouble:
        return _fail(trouble)
    try:
        reps = [compare_mod.load_run(path, _warn) for path in args.runs]
    except rerender.Unreadable as exc:
        return _fail(exc)
    # the paths as text: on 2.7 they are argv bytes, non-ASCII ones too
    result = compare_mod.compare_runs(reps, [printable(p) for p in args.runs])
    write_text(sys.stdout, compare_mod.render_text(result))
    try:
        atomic_write(args.out, compare_mod.render_html(result).encode("utf-8", "replace"))
    except (IOError, OSError) as exc:
        say(PROG, "cannot write %s (%s): give a writable --out" % (
            args.out, getattr(exc, "strerror", None) or exc))
        return exitcodes.INTERNAL
    write_line(sys.stdout, "written: %s" % printable(args.out))
    return exitcodes.OK


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "compare":
        return main_compare(argv[1:])
    return main_rerender(argv)


if __name__ == "__main__":
    sys.exit(main())
