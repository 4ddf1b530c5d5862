"""Every exit code of every program, in one table: code, name, the programs that
return it, what it means.

The table is the one place a code's meaning is written: it generates each
program's --help epilog (``epilog``), the short phrase the server's report
and the launcher's host table give (``brief``), and the README's table
(``readme_table``; tests/test_rules_exitcodes.py keeps the README equal to it).
Scripts driving many hosts branch on these, so they never change meaning.
"""
import collections
import textwrap

# The programs (as the README's table names them).
SERVER = "server"    # python -m diskbench.server
CTL = "server ctl"   # python -m diskbench.server ctl
CLIENT = "client"    # python -m diskbench.client
LAUNCH = "launch"    # python -m diskbench.launch
REPORT = "report"    # python -m diskbench.report (re-render, compare)
PROGRAMS = (SERVER, CTL, CLIENT, LAUNCH, REPORT)
_EVERY = PROGRAMS

OK = 0
INTERNAL = 1
USAGE = 2
SERVER_BIND = 3
SERVER_LOG_DIR = 4
SERVER_INCOMPLETE = 5
SERVER_INTERRUPTED = 6
CTL_NO_SERVER = 7
CTL_NO_CLIENT = 8
CTL_REFUSED = 9
CLIENT_DIRECTORY = 10
CLIENT_SPACE = 11
CLIENT_ROLLOVER = 12
CLIENT_SERVER = 13
CLIENT_DISK_ERROR = 14
CLIENT_CHILD_DIED = 15
CLIENT_INTERRUPTED = 16
CLIENT_WRITER_STALLED = 17
CLIENT_BAD_DATA = 18
SERVER_BAD_DATA = 19
LAUNCH_CLIENT_FAILED = 20
LAUNCH_NO_HOST = 21

#: One row per code. ``programs``: who may exit with it (the launcher passes the
#: server's code on when it is not 0). ``meaning``: what it means (--help, the
#: README). ``brief``: the phrase a one-line report of the code gives (report.txt's
#: headline, the launcher's table of hosts), None where nothing shows it so. Either
#: may be a dict {program: text, None: the others'} where programs differ.
Code = collections.namedtuple("Code", ("code", "name", "programs", "meaning", "brief"))
TABLE = (
    Code(OK, "OK", _EVERY,
         {SERVER: "the run completed and every client finished cleanly",
          CTL: "the request was done",
          CLIENT: "the client ran its duration and every result was acknowledged",
          LAUNCH: "the run completed and every host's client exited 0",
          REPORT: "the files were written"},
         {SERVER: "every client finished", CLIENT: "ok: the client finished cleanly"}),
    Code(INTERNAL, "INTERNAL", _EVERY,
         {None: "a bug: a traceback was printed (please report it)",
          REPORT: "a file could not be written (said for each), or a bug (a traceback)"},
         "a bug: a traceback (see its log)"),
    Code(USAGE, "USAGE", _EVERY,
         "a wrong flag or value",
         "a wrong flag or value"),
    Code(SERVER_BIND, "SERVER_BIND", (SERVER, LAUNCH),
         "the port is in use or the address is not ours", None),
    Code(SERVER_LOG_DIR, "SERVER_LOG_DIR", (SERVER, LAUNCH),
         "the log directory cannot be created or written, holds a finished run, or "
         "another server runs on it (`server.lock`)", None),
    Code(SERVER_INCOMPLETE, "SERVER_INCOMPLETE", (SERVER, LAUNCH),
         {None: "report written, but a client went away, failed, never finished, or never "
          "came (fewer than `--clients`); or not everything received is on disk (or "
          "records acknowledged were lost with a removed `perf.jsonl`, or `perf.jsonl` or "
          "`server.log` was removed, replaced or cut before the report was done), or a "
          "client's stop summary counts more than the server holds (the report's warnings "
          "say which); or a report file could not be written (said on stderr; with none "
          "written, the report is printed on stdout)",
          LAUNCH: "the server's exit 5 passed on; or the server was killed by a signal "
          "(kill -9, the OOM killer) before it wrote a report: said in one line, with "
          "the fix (`python -m diskbench.report LOG_DIR` re-renders it from `perf.jsonl`)"},
         "a client went away, failed, never finished or never came, or not all it sent "
         "is on disk, or a report file could not be written (see the warnings)"),
    Code(SERVER_INTERRUPTED, "SERVER_INTERRUPTED", (SERVER, LAUNCH),
         "SIGINT/SIGTERM/SIGHUP, or `ctl end`: report written with what was known",
         "the server was interrupted; report has what was known"),
    Code(CTL_NO_SERVER, "CTL_NO_SERVER", (CTL,),
         "no server is running with that `--log-dir` (no `control.sock`, or one left by a "
         "server that died), or it did not answer", None),
    Code(CTL_NO_CLIENT, "CTL_NO_CLIENT", (CTL,),
         "`stop NAME`: no client of that name, or it is not running any more", None),
    Code(CTL_REFUSED, "CTL_REFUSED", (CTL,),
         "the server refused the request: secret missing or different, another user, a "
         "request too old (a replay) or signed ahead of its clock, or too many control "
         "requests already in flight (busy)", None),
    Code(CLIENT_DIRECTORY, "CLIENT_DIRECTORY", (CLIENT,),
         "directory missing, not a directory, or not writable",
         "directory missing, not a directory, or not writable"),
    Code(CLIENT_SPACE, "CLIENT_SPACE", (CLIENT,),
         "not enough free space for `--max-files` data files (`--force` overrides)",
         "not enough free space for --max-files data files"),
    Code(CLIENT_ROLLOVER, "CLIENT_ROLLOVER", (CLIENT,),
         "the run cannot give 2 rollovers (`--force` overrides)",
         "the run cannot give 2 rollovers (--force overrides)"),
    Code(CLIENT_SERVER, "CLIENT_SERVER", (CLIENT,),
         "server unreachable or its name does not resolve, the port is not a diskbench "
         "server, it has no secret while the client has one, it refused us (version, "
         "secret, limits), results could not be delivered by the end of "
         "`--deliver-timeout` (saved in `client-NAME.undelivered.jsonl`), or it "
         "acknowledged a seq we never sent; also at start, when this host's clock is "
         "before 1970 (a server refuses every message stamped so)",
         "server unreachable or refused it, or results undelivered"),
    Code(CLIENT_DISK_ERROR, "CLIENT_DISK_ERROR", (CLIENT,),
         "the writer (or the start-up calibration) hit a disk error (ENOSPC, EIO, ...) and "
         "stopped",
         "disk error (ENOSPC, EIO, ...): the writer stopped"),
    Code(CLIENT_CHILD_DIED, "CLIENT_CHILD_DIED", (CLIENT,),
         "a writer/stats/heartbeat process died unexpectedly, or could not be started "
         "(the open-file or process limit, memory)",
         "a writer/stats/heartbeat process died"),
    Code(CLIENT_INTERRUPTED, "CLIENT_INTERRUPTED", (CLIENT,),
         "SIGINT/SIGTERM/SIGHUP (at any point: start-up checks, calibration, connecting, "
         "the run, shutdown), or the server asked us to stop early",
         "stopped early (a signal, or the server asked it to)"),
    Code(CLIENT_WRITER_STALLED, "CLIENT_WRITER_STALLED", (CLIENT,),
         "the writer stalled (no progress for `--stall-timeout`): still stalled when the "
         "run ended, or it had to be killed",
         "the writer stalled and had to be killed"),
    Code(CLIENT_BAD_DATA, "CLIENT_BAD_DATA", (CLIENT,),
         "`--verify`: a block read back was not what was written (corrupt, misplaced, "
         "stale or missing), whatever the speed",
         "--verify: a block did not come back as written"),
    Code(SERVER_BAD_DATA, "SERVER_BAD_DATA", (SERVER, LAUNCH),
         "report written, and `--verify` found that a client's data did not come back as "
         "written",
         "--verify: a client's data did not come back as written"),
    Code(LAUNCH_CLIENT_FAILED, "LAUNCH_CLIENT_FAILED", (LAUNCH,),
         "the server's run completed (0), but a host's client or ssh did not exit 0 (or "
         "exited 0 with no client run there)", None),
    Code(LAUNCH_NO_HOST, "LAUNCH_NO_HOST", (LAUNCH,),
         "no host's client ran: every host's ssh or client ended before its hello, "
         "whatever its code (a line for each says why); the server's run ended with none",
         None),
)
BY_CODE = dict((row.code, row) for row in TABLE)


def codes(program):
    """The codes ``program`` may exit with, in order."""
    return [row.code for row in TABLE if program in row.programs]


def _for(text, program):
    if isinstance(text, dict):
        return text.get(program, text.get(None))
    return text


def meaning(code, program):
    """What ``code`` means when ``program`` exits with it (plain text)."""
    return _for(BY_CODE[code].meaning, program).replace("`", "")


def brief(code, program):
    """The short phrase for ``code`` as ``program`` returned it (its meaning
    where the table gives none; None for a code not in the table)."""
    row = BY_CODE.get(code)
    if row is None:
        return None
    said = _for(row.brief, program)
    return said.replace("`", "") if said is not None else meaning(code, program)


def epilog(program, lead="Exit codes", width=79):
    """The --help paragraph listing every code ``program`` may exit with and its
    meaning, wrapped to ``width`` (argparse's default formatter re-wraps it)."""
    text = "%s: %s." % (lead, "; ".join(
        "%d %s" % (code, meaning(code, program)) for code in codes(program)))
    return textwrap.fill(text, width, break_on_hyphens=False)


def readme_table():
    """The README's table of exit codes, as Markdown lines."""
    lines = ["| code | name | program | meaning |", "|---|---|---|---|"]
    for row in TABLE:
        who = "all" if row.programs == _EVERY else ", ".join(row.programs)
        said = row.meaning
        if isinstance(said, dict):
            said = "; ".join(([said[None]] if None in said else []) + [
                "%s: %s" % (p, said[p]) for p in PROGRAMS if p in said])
        lines.append("| %d | %s | %s | %s |" % (row.code, row.name, who, said))
    return lines
