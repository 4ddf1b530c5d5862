"""python -m diskbench.server: flags, start-up errors -> exit codes, wiring.

Every start-up problem is one line on stderr naming the fix, and a documented
exit code (diskbench/exitcodes.py); never a traceback.

``python -m diskbench.server ctl ...`` is the control command for a running
server (list, stop NAME, end, not-coming HOST): server/ctl.py.
"""
import argparse
import errno
import os
import socket
import sys

from diskbench import DEFAULT_PORT, __version__, exitcodes, linux, plan, protocol
from diskbench.cli import (DEFAULT_LOG_DIR, PROGRESS_INTERVAL_S, SECRET_ENV, OneLineParser,
                           console_script, join_host_port, listen_host, parsed, port,
                           prog_name, read_secret, say, seconds)
from diskbench.server import control, ctl, interpreter
from diskbench.server import liveness
from diskbench.server.handler import HELLO_TIMEOUT_S, READ_TIMEOUT_S
from diskbench.metrics import MIB
from diskbench.server.logdir import FinishedRun, LogDirTaken
from diskbench.server.master import Master

#: What ``python -m`` runs.
MODULE = "diskbench.server"

DEFAULT_IDLE_TIMEOUT_S = 5.0
DEFAULT_START_TIMEOUT_S = 60.0
DEFAULT_SHUTDOWN_GRACE_S = 3.0
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_MAX_PER_ADDRESS = 64
DEFAULT_MAX_CLIENTS = 1000
#: With --clients N the connection limits grow to fit the run asked for:
#: room for every client twice over (a reconnect overlaps the old connection
#: until the server sees it close), plus a few for strays.
CONNECTIONS_PER_CLIENT = 2
CONNECTION_SLACK = 16
_PER_CLIENT = "%d x --clients + %d" % (CONNECTIONS_PER_CLIENT, CONNECTION_SLACK)
def _count(text):
    value = parsed(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1, got %s" % text)
    return value


def _line_bytes(text):
    value = _count(text)
    if value > protocol.MAX_LINE_BYTES:
        raise argparse.ArgumentTypeError(
            "can only lower the protocol's limit of %d bytes, got %s"
            % (protocol.MAX_LINE_BYTES, text))
    if value < 1024:
        raise argparse.ArgumentTypeError("below 1024 bytes no hello fits, got %s" % text)
    return value


def _listen_host(text):
    """argparse type of --host (cli.listen_host)."""
    try:
        return listen_host(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def build_parser():
    p = OneLineParser(prog=prog_name(MODULE), description=(
        "Collect results from diskbench clients and write a report when every client "
        "has finished or gone away."), epilog="Control a running server from its host: "
        "%s ctl [--log-dir DIR] list | stop NAME | end | not-coming HOST (see ctl --help). "
        % prog_name(MODULE) + exitcodes.epilog(exitcodes.SERVER))
    p.add_argument("--version", action="version", version="diskbench %s" % __version__)
    p.add_argument("--host", default="0.0.0.0", type=_listen_host,
                   help="address to listen on: an IPv4 or IPv6 address (:: every "
                   "interface, IPv4 too where the system allows; ::1 IPv6 loopback) or "
                   "a name (default: %(default)s, every IPv4 interface)")
    p.add_argument("--port", type=port, default=DEFAULT_PORT,
                   help="TCP port (default: %(default)s; 0 picks a free one and prints it)")
    p.add_argument("--log-dir", default=os.path.join(".", DEFAULT_LOG_DIR),
                   help="where server.log, perf.jsonl, report.txt and report.json go; "
                   "created if missing (default: %(default)s)")
    _add_run_flags(p)
    _add_plan_flags(p)
    _add_limit_flags(p)
    p.add_argument("--secret-file", metavar="PATH", help="file holding a shared secret: "
                   "every message must carry its HMAC (or set %s)" % SECRET_ENV)
    _add_tuning_flags(p)
    _add_console_flags(p)
    return p


def _seconds(p, flag, default, help):
    """A flag taking seconds (above 0, at most cli.MAX_SECONDS)."""
    p.add_argument(flag, type=seconds, default=default, metavar="SECONDS", help=help)


def _add_run_flags(p):
    """When a run starts, when it is complete, and what counts as gone."""
    p.add_argument("--clients", type=_count, default=None, metavar="N",
                   help="expect N clients: hold 'go' until N said hello (or "
                   "--start-timeout), finish when all N are done")
    p.add_argument("--heartbeat-timeout", type=seconds, default=None,
                   metavar="SECONDS", help="a client silent this long is marked went "
                   "away (default: %d x the heartbeat interval each client announces)"
                   % liveness.HEARTBEAT_LIVENESS)
    p.add_argument("--rejoin-grace", type=seconds, default=None, metavar="SECONDS",
                   help="how long the run waits for a went-away client to come back "
                   "before it may complete (default: %d x that client's went-away "
                   "timeout)" % liveness.REJOIN_GRACE_TIMEOUTS)
    _seconds(p, "--stall-timeout", plan.STALL_TIMEOUT_S,
             "a client whose heartbeat says its writer "
             "made no progress this long is shown stalled (default: %(default)s)")
    p.add_argument("--require-all", action="store_true",
                   help="with --clients N: abort the run if fewer than N said hello "
                   "within --start-timeout (default: go on with those present)")
    _seconds(p, "--max-duration", plan.MAX_RUN_S,
             "the longest any client may be planned to write (its own --duration "
             "included: a longer one is refused at hello); a client still writing "
             "%g s past its planned end is asked to stop, and failed %g s later, so "
             "the run ends within a bound of the flags (server.log states it; "
             "default: %%(default)s, a day)" % (liveness.OVERRUN_GRACE_S,
                                              liveness.OVERRUN_GRACE_S))
    _seconds(p, "--idle-timeout", DEFAULT_IDLE_TIMEOUT_S,
             "without --clients: finish when all clients "
             "are done and nothing new happened for this long (default: %(default)s)")
    _seconds(p, "--start-timeout", DEFAULT_START_TIMEOUT_S,
             "with --clients: send 'go' to the clients "
             "present this long after the first hello, and complete when they "
             "are done (default: %(default)s)")
    _seconds(p, "--shutdown-grace", DEFAULT_SHUTDOWN_GRACE_S,
             "on SIGINT/SIGTERM: how long to wait for "
             "clients' stop summaries before the report (default: %(default)s)")


def _chunk_list(text):
    """argparse type: --chunk-mb 10,20,40 (MiB, each at least the minimum)."""
    sizes = [parsed(part.strip(), int, "a list of whole MiB like 10,20,40")
             for part in text.split(",")]
    for size in sizes:
        if not plan.MIN_CHUNK_MB <= size <= plan.MAX_MB:
            raise argparse.ArgumentTypeError(
                "each chunk size must be from %d to %d MiB, got %d"
                % (plan.MIN_CHUNK_MB, plan.MAX_MB, size))
    return sizes


def _file_mb(text):
    value = _count(text)
    if value > plan.MAX_MB:
        raise argparse.ArgumentTypeError("must be at most %d MiB, got %s"
                                         % (plan.MAX_MB, text))
    return value


def _add_plan_flags(p):
    """The run plan the server hands out in go (plan.py): a client's own
    command line wins over each of these."""
    p.add_argument("--chunk-mb", type=_chunk_list, default=list(plan.DEFAULT_CHUNK_MB),
                   metavar="MB[,MB...]", help="chunk sizes in MiB handed out in order of "
                   "arrival, one per client, starting over after the last (default: %s; "
                   "a client's own --chunk-mb wins); %s" % (",".join(
                       str(n) for n in plan.DEFAULT_CHUNK_MB), plan.CHUNK_ADVICE))
    p.add_argument("--file-mb", type=_file_mb, default=None, metavar="MB",
                   help="data file size in MiB (default: %d x each client's chunk)"
                   % plan.FILE_CHUNKS)
    what = dict(duration_s="how long each client writes",
                perf_interval_s="clients' perf sample interval",
                stats_interval_s="clients' CPU%%/RSS interval",
                heartbeat_interval_s="clients' heartbeat interval")
    for field in plan.TIME_FIELDS:
        p.add_argument(plan.FLAGS[field], type=seconds, default=None, metavar="SECONDS",
                       help="%s (default: the client's, else %g)"
                       % (what[field], plan.defaults()[field]))
    p.add_argument("--verify", action="store_true",
                   help="every client reads its data files back and checks every "
                   "block (read MiB/s and bad blocks in the report; a bad block fails "
                   "the client, and the server exits %d)" % exitcodes.SERVER_BAD_DATA)


def plan_from_args(args):
    """The server's plan (plan.resolve's ``server``) from its flags."""
    given = dict((field, getattr(args, plan.arg_dest(field))) for field in plan.TIME_FIELDS)
    given.update(chunk_bytes=[mb * MIB for mb in args.chunk_mb],
                 file_bytes=None if args.file_mb is None else args.file_mb * MIB)
    if getattr(args, "verify", False):
        given[plan.VERIFY] = True
    if args.duration is not None and plan.duration_problem(args.duration,
                                                           args.max_duration):
        raise ValueError("--duration %g is over --max-duration %g: give a --duration "
                         "of at most %g, or raise --max-duration" % (
                             args.duration, args.max_duration, args.max_duration))
    for field in plan.MIN_INTERVAL_S:
        value = getattr(args, field[:-len("_s")])
        problem = value is not None and plan.interval_problem(field, value)
        if problem:
            raise ValueError(problem)
    if args.file_mb is not None:
        problem = plan.chunk_list_problem(args.chunk_mb, args.file_mb)
        if problem:
            raise ValueError(problem)
    return given


def _add_limit_flags(p):
    """What one peer may cost the server (docs/SECURITY.md)."""
    _seconds(p, "--read-timeout", READ_TIMEOUT_S,
             "close a connection that sends nothing for "
             "this long (default: %(default)s)")
    _seconds(p, "--hello-timeout", HELLO_TIMEOUT_S,
             "close a connection that has not said a valid "
             "hello this long after connecting (slow or silent peers; default: "
             "%(default)s)")
    p.add_argument("--max-line-bytes", type=_line_bytes, default=protocol.MAX_LINE_BYTES,
                   metavar="BYTES", help="close a connection that sends a longer line "
                   "(may only lower the default: %(default)s)")
    p.add_argument("--max-connections", type=_count, default=None,
                   metavar="N", help="refuse connections beyond N open at once (default: "
                   "%d, or %s if more)" % (DEFAULT_MAX_CONNECTIONS, _PER_CLIENT))
    p.add_argument("--max-per-address", type=_count, default=None,
                   metavar="N", help="refuse connections beyond N open at once from one "
                   "address (default: %d, or %s if more)" % (DEFAULT_MAX_PER_ADDRESS,
                                                             _PER_CLIENT))
    p.add_argument("--max-clients", type=_count, default=None, metavar="N",
                   help="refuse a hello under a new client name once N names joined this "
                   "run (default: %d, or --clients if more)" % DEFAULT_MAX_CLIENTS)


def _cpu(text):
    try:
        return interpreter.parse_cpus(text, linux.get_affinity())
    except ValueError as exc:
        raise argparse.ArgumentTypeError("%s" % exc)


def _add_tuning_flags(p):
    p.add_argument("--cpu", type=_cpu, default=interpreter.CPU_AUTO, metavar="CPUS",
                   help="CPUs the server runs on: %s (default: the least busy one when "
                   "it starts; the GIL lets only one thread run Python, and handing it "
                   "between cores costs), %s, or numbers like 3 or 2,3" % (
                       interpreter.CPU_AUTO, interpreter.CPU_ALL))


def _add_console_flags(p):
    p.add_argument("--quiet", action="store_true",
                   help="no live view and no console line per event (server.log "
                   "still has them)")
    p.add_argument("--verbose", action="store_true",
                   help="also print per-message detail (each client's rollovers) on the "
                   "console; server.log always has it")
    p.add_argument("--progress-interval", type=seconds,
                   default=PROGRESS_INTERVAL_S, metavar="SECONDS",
                   help="when the console is not a terminal: one progress summary line "
                   "this often (default: %(default)s; on a terminal a live table is "
                   "redrawn every second)")


def _fail(code, text):
    say(prog_name(MODULE), text)
    return code


def _bind_error(args, exc):
    err = getattr(exc, "errno", None)
    if err == errno.EADDRINUSE:
        return ("port %d on %s is already in use: stop the program using it or choose "
                "another --port" % (args.port, args.host))
    if err == errno.EACCES:
        return ("not allowed to listen on port %d: choose a --port above 1023 or run "
                "as root" % args.port)
    where = join_host_port(args.host, args.port)
    if err == errno.EAFNOSUPPORT:
        return ("cannot listen on %s: this machine has no IPv6 (%s); use --host 0.0.0.0 "
                "or an IPv4 address of this machine" % (
                    where, getattr(exc, "strerror", None) or exc))
    return ("cannot listen on %s (%s): use --host 0.0.0.0 (or :: for IPv6) or an "
            "address of this machine" % (where, getattr(exc, "strerror", None) or exc))


def derive_limits(args):
    """Fill the limits not given from --clients: a run of N clients must never
    be refused by the defaults meant for a handful."""
    n = args.clients or 0
    fit = CONNECTIONS_PER_CLIENT * n + CONNECTION_SLACK
    if args.max_connections is None:
        args.max_connections = max(DEFAULT_MAX_CONNECTIONS, fit)
    if args.max_per_address is None:
        args.max_per_address = max(DEFAULT_MAX_PER_ADDRESS, fit)
    if args.max_clients is None:
        args.max_clients = max(DEFAULT_MAX_CLIENTS, n)
    return args


#: The first argument that makes this the control command (server/ctl.py).
CTL_COMMAND = "ctl"


def _started_as():
    """What followed the interpreter on this process's command line, to
    start it again the same way: its console script, else ``-m MODULE``."""
    script = console_script()
    return [script] if script and os.path.isfile(script) else ["-m", MODULE]


def main(argv=None):
    own_process = argv is None    # from the command line, not run in-process
    if own_process:
        argv = sys.argv[1:]
    if argv and argv[0] == CTL_COMMAND:
        return ctl.main(argv[1:])
    if own_process:
        interpreter.reexec_untcached(_started_as() + argv)
    # a wrong flag: one line, exit USAGE
    args = derive_limits(build_parser().parse_args(argv))
    try:
        args.secret = read_secret(args.secret_file, os.environ.get(SECRET_ENV))
        args.plan = plan_from_args(args)
    except ValueError as exc:
        return _fail(exitcodes.USAGE, exc)
    master = Master(args)
    try:
        master.open_logs()
    except (FinishedRun, LogDirTaken, control.ServerRunning) as exc:
        return _fail(exitcodes.SERVER_LOG_DIR, exc)
    except (IOError, OSError) as exc:
        return _fail(exitcodes.SERVER_LOG_DIR, "cannot create or write the log directory "
                     "%s (%s): choose a writable --log-dir" % (
                         args.log_dir, getattr(exc, "strerror", None) or exc))
    try:
        port = master.bind()[1]
    except (socket.error, socket.gaierror, OverflowError) as exc:
        master.abandon()
        return _fail(exitcodes.SERVER_BIND, _bind_error(args, exc))
    if not args.secret:
        say("diskbench server", "no shared secret (--secret-file or %s): anyone who can "
            "reach port %d can submit results" % (SECRET_ENV, port), kind="warning")
    code = master.run()
    if master.console.outbox.stuck():
        # stdout is a pipe or terminal nobody reads: a normal exit would wait
        # on it for ever at the final flush. Everything is on disk by now.
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
