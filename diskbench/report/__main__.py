"""python -m diskbench.report LOG_DIR            rebuild every report file of a run
python -m diskbench.report compare RUN_A RUN_B  per-client and aggregate deltas

Exit codes: 0 done; 2 a wrong argument or a directory that holds no run (one
line on stderr naming the fix).
"""
from __future__ import absolute_import, print_function

import os
import sys

from diskbench import __version__, exitcodes
from diskbench.cli import OneLineParser, prog_name
from diskbench.fsutil import atomic_write
from diskbench.report import compare as compare_mod
from diskbench.report import console_summary, rerender, write_all
from diskbench.server import report as report_mod

PROG = prog_name("diskbench.report")


def _fail(text):
    sys.stderr.write("%s: error: %s\n" % (PROG, text))
    return exitcodes.USAGE


def _warn(text):
    sys.stderr.write("%s: warning: %s\n" % (PROG, text))


def main_rerender(argv):
    parser = OneLineParser(
        prog=PROG, description="Rebuild report.json, report.txt, report.html, clients.csv "
        "and timeseries.csv of a run from its perf.jsonl (also a run whose server was "
        "killed). 'compare RUN_A RUN_B' compares two runs.")
    parser.add_argument("--version", action="version", version="diskbench " + __version__)
    parser.add_argument("log_dir", metavar="LOG_DIR", help="the server's --log-dir")
    parser.add_argument("--out", metavar="DIR", help="write the files here (default "
                        "LOG_DIR)")
    args = parser.parse_args(argv)
    out = args.out or args.log_dir
    try:
        rep, series = rerender.load(args.log_dir, _warn)
    except rerender.Unreadable as exc:
        return _fail("%s" % exc)
    if not os.path.isdir(out):
        return _fail("--out %s is not a directory" % out)
    had_report = os.path.exists(os.path.join(args.log_dir, report_mod.REPORT_JSON))
    written, failed = write_all(args.log_dir, rep, out_dir=out, series=series,
                                warn=_warn)
    for path, exc in failed:
        sys.stderr.write("%s: error: cannot write %s (%s)\n" % (
            PROG, path, getattr(exc, "strerror", None) or exc))
    sys.stdout.write(console_summary(rep))
    print("written: %s" % ", ".join(written))
    if not had_report and out == args.log_dir:
        print("note: %s now holds report.json, so a server started on it will not resume "
              "this run" % args.log_dir)
    return exitcodes.INTERNAL if failed else exitcodes.OK


def main_compare(argv):
    parser = OneLineParser(
        prog=PROG + " compare", description="Per-client (matched by name, then host) "
        "and aggregate deltas of two runs: MiB/s mean and p99 chunk latency.")
    parser.add_argument("run_a", metavar="RUN_A", help="log dir or report.json")
    parser.add_argument("run_b", metavar="RUN_B", help="log dir or report.json")
    parser.add_argument("--out", metavar="PATH", default=compare_mod.COMPARE_HTML,
                        help="where compare.html goes (default ./compare.html)")
    args = parser.parse_args(argv)
    try:
        rep_a = compare_mod.load_run(args.run_a, _warn)
        rep_b = compare_mod.load_run(args.run_b, _warn)
    except rerender.Unreadable as exc:
        return _fail("%s" % exc)
    result = compare_mod.compare(rep_a, rep_b)
    sys.stdout.write(compare_mod.render_text(result, args.run_a, args.run_b))
    try:
        atomic_write(args.out, compare_mod.render_html(
            result, args.run_a, args.run_b).encode("utf-8", "replace"))
    except (IOError, OSError) as exc:
        return _fail("cannot write %s (%s)" % (args.out, getattr(exc, "strerror", exc)))
    print("written: %s" % args.out)
    return exitcodes.OK


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "compare":
        return main_compare(argv[1:])
    return main_rerender(argv)


if __name__ == "__main__":
    sys.exit(main())
