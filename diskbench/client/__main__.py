"""``python -m diskbench.client``: argparse, start-up checks, exit codes."""
from __future__ import print_function

import argparse
import binascii
import errno
import logging
import os
import platform
import socket
import sys

import diskbench
from diskbench import exitcodes, plan, protocol
from diskbench.cli import (DEFAULT_LOG_DIR, MAX_INTERVAL_S, MAX_SECONDS, PROGRESS_INTERVAL_S,
                           REFRESH_S, SECRET_ENV, OneLineParser, UtcFormatter,
                           bad_name_reason, display_path, printable, prog_name, read_secret,
                           say, split_host_port)
from diskbench.client import checks, procinfo, progress, writer
from diskbench.client.sender import BUFFER_MAX
from diskbench.client import config
from diskbench.client.supervisor import START_METHOD_ENV, Supervisor, take_stop_signals
from diskbench.compat import PY2, as_text, write_line, write_text
from diskbench.metrics import MIB
from diskbench.signals import Interrupted

#: Memory kept free beyond the writer's buffer when checking --chunk-mb.
MEMORY_MARGIN_BYTES = 64 * MIB
#: Random bytes of this process's instance id (sent in hello: its identity).
INSTANCE_ID_BYTES = 8
#: Hex digits of it that end the default name (HOSTNAME-PID-RANDOM): 32 bits,
#: so a fleet of containers from one image (same host name, pid 1) rarely
#: repeats a name, and a repeat is refused by the server, never merged.
DEFAULT_NAME_RANDOM_HEX = 8

DESCRIPTION = """\
Measure the write throughput of the disk under DIRECTORY and stream the
results to a diskbench server. One writer process writes chunks to data files
(rolled over at --file-mb, at most --max-files kept, all removed at exit);
a stats process reports the writer's CPU% and RSS; a heartbeat process proves
the writer is alive. Sizes are in MiB (1 MiB = 2^20 bytes); throughput in MiB/s.

Writes use O_DIRECT from a page-aligned buffer; where the filesystem refuses
O_DIRECT, buffered writes + fsync per chunk (said in the log and the report).
Only write (+ fsync) is timed."""

EPILOG = """\
psutil is optional: with it the stats process reads the writer's CPU%% and RSS
through psutil.Process(writer_pid) (any platform); without it they are read
from /proc (Linux only) and the client says so once. Install it with
'pip install psutil'. The secret may also come from the DISKBENCH_SECRET
environment variable.

%s

A writer that makes no progress for --stall-timeout seconds (a disk that stops
answering, a stopped process) is logged and reported to the server as an
error while it lasts. SIGHUP (an ssh session dropping) stops the client like
SIGTERM: summary sent, files removed, exit %d; started under nohup (SIGHUP
ignored) it stays ignored, so the client outlives the session.

While the server is unreachable mid-run the client keeps measuring, buffers
up to %d unacknowledged messages (then drops the oldest perf samples first,
counted and logged) and reconnects until the run ends.""" % (
    exitcodes.epilog(exitcodes.CLIENT), exitcodes.CLIENT_INTERRUPTED, BUFFER_MAX)


def build_parser():
    p = OneLineParser(prog=prog_name("diskbench.client"), description=DESCRIPTION, epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version="diskbench %s" % diskbench.__version__)
    p.add_argument("directory", metavar="DIRECTORY", help="where data files are written")
    p.add_argument("--server", default="127.0.0.1:%d" % diskbench.DEFAULT_PORT,
                   metavar="HOST[:PORT]", help="the diskbench server: a name, an IPv4 "
                   "address or an IPv6 one in brackets ([fd00::5]:%d); without a port, "
                   "port %d (default 127.0.0.1:%d)" % ((diskbench.DEFAULT_PORT,) * 3))
    p.add_argument("--name", help="this client's name (default HOSTNAME-PID-RANDOM)")
    # The run plan: each of these set here wins over the server's plan; unset,
    # the server's plan applies, else the default shown (plan.py).
    dflt = plan.defaults()
    p.add_argument("--chunk-mb", type=int, metavar="N",
                   help="chunk size in MiB, at least %d (default: the server's plan, "
                   "else %d); %s" % (plan.MIN_CHUNK_MB, dflt["chunk_bytes"] // MIB,
                                     plan.CHUNK_ADVICE))
    p.add_argument("--file-mb", type=int, metavar="N",
                   help="data file size in MiB before a rollover (default: the server's "
                   "plan, else %d x chunk)" % plan.FILE_CHUNKS)
    p.add_argument("--duration", type=float, metavar="SECONDS",
                   help="how long to write, counted from the start (default: the "
                   "server's plan, else %g)" % dflt["duration_s"])
    p.add_argument("--stats-interval", type=float, metavar="S",
                   help="writer CPU%%%%/RSS report interval (default: the server's plan, "
                   "else %g)" % dflt["stats_interval_s"])
    p.add_argument("--heartbeat-interval", type=float, metavar="S",
                   help="heartbeat interval (default: the server's plan, else %g)"
                   % dflt["heartbeat_interval_s"])
    p.add_argument("--perf-interval", type=float, metavar="S",
                   help="perf samples aggregate this long (default: the server's plan, "
                   "else %g)" % dflt["perf_interval_s"])
    p.add_argument("--max-files", type=int, default=config.MAX_FILES, metavar="N",
                   help="most data files kept at once (default %(default)d)")
    p.add_argument("--keep-data", action="store_true",
                   help="leave the data files in DIRECTORY at exit")
    p.add_argument("--verify", action="store_true", default=None,
                   help="read every data file back before it is deleted (or at the "
                   "end) and check every 4 KiB block's stamp: read MiB/s and bad "
                   "blocks in the report; a bad block is exit code %d (default: "
                   "the server's plan, else off)" % exitcodes.CLIENT_BAD_DATA)
    p.add_argument("--preallocate", action="store_true",
                   help="posix_fallocate each data file to --file-mb first (like fio)")
    p.add_argument("--force", action="store_true",
                   help="run even if fewer than 2 rollovers are expected or free space "
                   "looks too small for --max-files files (warns; a disk that really "
                   "fills stops the run with exit code %d)" % exitcodes.CLIENT_DISK_ERROR)
    p.add_argument("--log-dir", default=DEFAULT_LOG_DIR, metavar="DIR",
                   help="client log directory; the log is client-NAME.log "
                   "(default ./%s)" % DEFAULT_LOG_DIR)
    p.add_argument("--secret-file", metavar="PATH",
                   help="file holding the secret shared with the server (HMAC)")
    p.add_argument("--connect-timeout", type=float, default=config.CONNECT_TIMEOUT_S,
                   metavar="S", help="keep trying to reach the server this long "
                   "(default %(default)g)")
    p.add_argument("--deliver-timeout", type=float, default=config.DELIVER_TIMEOUT_S,
                   metavar="S", help="after the run, keep trying this long to get "
                   "every result acknowledged by the server (default %(default)g)")
    p.add_argument("--progress-interval", type=float, default=PROGRESS_INTERVAL_S,
                   metavar="S", help="without a terminal, a progress line in the log "
                   "this often (default %%(default)g; on a terminal one line is updated "
                   "every %g s)" % REFRESH_S)
    p.add_argument("--stall-timeout", type=float, default=plan.STALL_TIMEOUT_S,
                   metavar="S", help="a writer with no progress this long is stalled: "
                   "logged and reported; if it is still stalled at the end (or has to be "
                   "killed), exit %d (default %%(default)g)" % exitcodes.CLIENT_WRITER_STALLED)
    # Debug: multiprocessing start method (fork/spawn/forkserver; Python 3 only).
    p.add_argument("--start-method", default=os.environ.get(START_METHOD_ENV),
                   help=argparse.SUPPRESS)
    return p


def _take_plan_defaults(args):
    """The plan settings this command line set (the server's plan cannot
    change them); the others get their defaults in ``args`` (the file size
    stays None: 10 chunks of whatever chunk the plan gives)."""
    fixed = [field for field in protocol.PLAN_FIELDS
             if getattr(args, plan.arg_dest(field)) is not None]
    dflt = plan.defaults()
    for field in protocol.PLAN_FIELDS:
        dest = plan.arg_dest(field)
        if getattr(args, dest) is None and field != "file_bytes":
            value = dflt[field]
            setattr(args, dest, value // MIB if field == "chunk_bytes" else value)
    return fixed


def parse_server(text):
    """(host as the resolver is asked for it, port) of --server HOST[:PORT]
    (cli.split_host_port: an IPv6 address in brackets; no port is the default
    port); a host no resolver could find is a wrong flag here, the same on
    both Pythons."""
    return split_host_port(text, diskbench.DEFAULT_PORT, "--server %s" % printable(text),
                           "e.g. --server 10.0.0.5:%d, or --server [fd00::5]:%d for an "
                           "IPv6 address" % (diskbench.DEFAULT_PORT, diskbench.DEFAULT_PORT))


def _usage_error(message):
    say(prog_name("diskbench.client"), message)
    return exitcodes.USAGE


class _Printable(logging.Filter):
    """Makes every log record one safe line before any handler sees it: the
    message is formatted here with each argument through ``printable`` (paths,
    server reasons, error texts come from outside), then the whole line too."""

    def filter(self, record):
        args = record.args
        if args:
            if not isinstance(args, tuple):
                args = (args,)
            args = tuple(printable(a) if isinstance(a, (bytes, type(u""))) else a
                         for a in args)
            try:
                text = record.msg % args
            except (TypeError, ValueError, UnicodeError):
                text = "%s %r" % (record.msg, args)
        else:
            text = record.msg
        record.msg, record.args = printable(text), ()
        return True


class _LogFile(logging.FileHandler):
    """The client log file. Its disk is not the measurement: a write that
    fails (a full or read-only --log-dir, EIO) is said ONCE on stderr and the
    file is left alone from then on; the run, the server's copy of every
    message and the exit code go on as if it had worked."""

    def __init__(self, path, name):
        logging.FileHandler.__init__(self, path)
        self.name_ = name
        self.failed = None      # the error that ended the file, once one did

    def emit(self, record):
        if self.failed is None:
            logging.FileHandler.emit(self, record)

    def handleError(self, record):
        if self.failed is not None:
            return
        exc = sys.exc_info()[1]
        self.failed = exc or "unknown error"
        stream, self.stream = self.stream, None
        try:
            stream.close()      # (its unwritten buffer cannot be written either)
        except Exception:  # noqa: BLE001 - whatever it is, the run goes on
            pass
        why = getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
        try:
            write_text(sys.stderr, "diskbench client %s: WARNING: cannot write the client "
                       "log %s (%s): no more lines go to it; the run goes on, its "
                       "messages still go to the server and here\n"
                       % (self.name_, printable(self.baseFilename), printable(why)))
        except (IOError, OSError, ValueError):
            pass

    def flush(self):
        try:
            logging.FileHandler.flush(self)
        except (IOError, OSError, ValueError):
            self.handleError(None)

    def close(self):
        if self.failed is not None:
            self.stream = None
        try:
            logging.FileHandler.close(self)
        except (IOError, OSError, ValueError):
            self.handleError(None)


def _open_log(log_dir, name):
    """A logger writing to log_dir/client-NAME.log and to stderr."""
    safe = writer.safe_name(name)
    try:
        os.makedirs(log_dir)
    except OSError as exc:  # clients started together share a log dir: one makes it
        if exc.errno != errno.EEXIST or not os.path.isdir(log_dir):
            raise
    path = os.path.join(log_dir, "client-%s.log" % safe)
    log = logging.getLogger("diskbench.client.%s.%d" % (safe, id(path)))
    log.setLevel(logging.DEBUG)
    log.propagate = False
    log.addFilter(_Printable())
    fh = _LogFile(path, name)
    fh.setFormatter(UtcFormatter("%(asctime)s %(levelname)s %(message)s"))
    sh = progress.ClearingHandler(sys.stderr)
    sh.setFormatter(logging.Formatter("diskbench client " + name.replace("%", "%%")
                                      + ": %(levelname)s: %(message)s"))
    log.addHandler(fh)
    log.addHandler(sh)
    return log, path


def _start_methods():
    """The multiprocessing start methods this Python offers (2.7: fork only)."""
    import multiprocessing
    getter = getattr(multiprocessing, "get_all_start_methods", None)
    return list(getter()) if getter else ["fork"]


def _check_flags(args):
    """Every flag value within reason: None, or the one-line usage error."""
    for flag, value, limit in (
            ("--duration", args.duration, MAX_SECONDS),
            ("--stats-interval", args.stats_interval, MAX_INTERVAL_S),
            ("--heartbeat-interval", args.heartbeat_interval, MAX_INTERVAL_S),
            ("--perf-interval", args.perf_interval, MAX_INTERVAL_S),
            ("--stall-timeout", args.stall_timeout, MAX_INTERVAL_S),
            ("--progress-interval", args.progress_interval, MAX_INTERVAL_S),
            ("--connect-timeout", args.connect_timeout, MAX_SECONDS),
            ("--deliver-timeout", args.deliver_timeout, MAX_SECONDS)):
        if not 0 < value <= limit:  # also false for nan; inf is above any limit
            return "%s must be above 0 and at most %d s, got %s" % (flag, limit, value)
    for field in plan.MIN_INTERVAL_S:
        problem = plan.interval_problem(field, getattr(args, field[:-len("_s")]))
        if problem:
            return problem
    if not 1 <= args.max_files <= protocol.FILES_MAX:
        return "--max-files must be from 1 to %d, got %d" % (protocol.FILES_MAX,
                                                             args.max_files)
    if args.file_mb is not None and args.file_mb > plan.MAX_MB:
        return "--file-mb must be at most %d (1 PiB), got %d" % (plan.MAX_MB,
                                                                 args.file_mb)
    if args.chunk_mb > plan.MAX_MB:
        return "--chunk-mb must be at most %d, got %d" % (plan.MAX_MB, args.chunk_mb)
    if args.start_method is not None:
        valid = _start_methods()
        if args.start_method not in valid:
            where = ("--start-method" if os.environ.get(START_METHOD_ENV) !=
                     args.start_method else START_METHOD_ENV)
            return "%s %s is not a start method here; use one of %s" % (
                where, args.start_method, ", ".join(valid))
    return None


def _check_memory(chunk_mb, available=None):
    """None, or why a --chunk-mb buffer cannot be allocated here."""
    have = procinfo.available_memory_bytes() if available is None else available
    if have is None:
        return None  # cannot tell: the allocation itself will say
    need = chunk_mb * MIB + 2 * (2 * MIB) + MEMORY_MARGIN_BYTES  # + huge-page slack
    if need > have:
        return ("--chunk-mb %d needs a %d MiB buffer (+ %d MiB margin) but only %d MiB "
                "of memory are available (MemAvailable); use a smaller --chunk-mb"
                % (chunk_mb, chunk_mb, MEMORY_MARGIN_BYTES // MIB, have // MIB))
    return None


def _check_file_limit(file_mb, chunk_mb, limit=None):
    """None, or why a --file-mb file cannot be written here: past this
    process's file size limit (``ulimit -f``) a write fails with EFBIG mid-run."""
    soft = procinfo.file_size_limit_bytes() if limit is None else limit
    if soft is None or file_mb * MIB <= soft:
        return None
    fits = soft // (chunk_mb * MIB) * chunk_mb   # whole chunks (check_sizes' rule)
    return ("--file-mb %d is above this process's file size limit (ulimit -f: %d MiB); "
            "raise it (ulimit -f unlimited)%s" % (
                file_mb, soft // MIB, " or use --file-mb %d or less" % fits if fits else ""))


def _hello(cfg, shown, fs, expected, mib_s, fixed, force, instance_id):
    """The hello's fields: who this client is and what it will run."""
    return dict(
        client_version=diskbench.__version__, instance_id=instance_id,
        hostname=printable(socket.gethostname()),
        pid=os.getpid(), python_version=platform.python_version(),
        platform=printable(platform.platform()), directory=shown,
        fs_type=printable(fs),
        chunk_bytes=cfg.chunk_bytes, file_bytes=cfg.file_bytes, duration_s=cfg.duration_s,
        max_files=cfg.max_files, sync_mode=cfg.sync_mode, preallocate=cfg.preallocate,
        stats_interval_s=cfg.stats_interval_s,
        heartbeat_interval_s=cfg.heartbeat_interval_s,
        psutil_version=procinfo.PSUTIL_VERSION, expected_rollovers=expected,
        calibration_mib_s=mib_s, fixed=list(fixed), force=bool(force),
        perf_interval_s=cfg.perf_interval_s, verify=True if cfg.verify else None)


def _undelivered_path(log):
    """``client-NAME.undelivered.jsonl`` next to the client log."""
    base = log.handlers[0].baseFilename
    return base[:-len(".log")] + ".undelivered.jsonl" if base.endswith(".log") \
        else base + ".undelivered.jsonl"


def _close_log(log):
    for handler in list(log.handlers):
        handler.close()
        log.removeHandler(handler)


def main(argv=None):
    # First thing: a stop signal from here on ends the client with its code,
    # never a traceback or a default death that leaves files behind.
    flag = take_stop_signals()
    try:
        return _main(argv, flag)
    finally:
        flag.restore()


def _main(argv, flag):
    try:
        with flag.interrupting():
            ready = _prepare(argv)
    except Interrupted as exc:
        write_line(sys.stderr, "%s: %s before the start-up checks; nothing was written" % (
            prog_name("diskbench.client"), printable(exc)))
        return exitcodes.CLIENT_INTERRUPTED
    if not isinstance(ready, tuple):
        return ready
    log = ready[1]
    try:
        return _checked_run(*(ready + (flag,)))
    finally:
        _close_log(log)


def _prepare(argv):
    """Flags, secret, name, log: an exit code, or what the run needs."""
    args = build_parser().parse_args(argv)
    fixed = _take_plan_defaults(args)
    try:
        host, port = parse_server(args.server)
    except ValueError as exc:
        return _usage_error(exc)
    problem = _check_flags(args)
    if problem:
        return _usage_error(problem)
    file_mb = args.file_mb if args.file_mb is not None else \
        plan.default_file_bytes(args.chunk_mb * MIB) // MIB
    try:
        checks.check_sizes(args.chunk_mb, file_mb)
    except checks.CheckFailed as exc:
        return _usage_error(exc.message)
    problem = _check_memory(args.chunk_mb) or (  # (else the plan's file size, at go)
        "file_bytes" in fixed and _check_file_limit(file_mb, args.chunk_mb))
    if problem:
        return _usage_error(problem)
    try:
        secret = read_secret(args.secret_file, os.environ.get(SECRET_ENV))
    except ValueError as exc:
        return _usage_error(exc)
    # this process's identity (in every hello): its host name and pid may repeat
    instance_id = as_text(binascii.hexlify(os.urandom(INSTANCE_ID_BYTES)))
    if args.name is not None:
        problem = bad_name_reason(args.name)
        if problem:
            return _usage_error(problem)
        name = args.name.decode("utf-8") if PY2 and isinstance(args.name, bytes) \
            else args.name
    else:   # unique in a fleet of containers from one image: same host name, pid 1
        suffix = "-" + instance_id[:DEFAULT_NAME_RANDOM_HEX]
        name = printable("%s-%d" % (socket.gethostname(), os.getpid()))[
            :128 - len(suffix)] + suffix
    try:
        log, log_path = _open_log(args.log_dir, name)
    except (IOError, OSError) as exc:
        say(prog_name("diskbench.client"), "cannot write the log in %s (%s); use --log-dir "
            "with a writable directory" % (printable(args.log_dir),
                                           printable(exc.strerror or exc)))
        return exitcodes.CLIENT_DIRECTORY
    return args, log, name, host, port, file_mb, secret, fixed, instance_id


def _checked_run(args, log, name, host, port, file_mb, secret, fixed, instance_id, flag):
    directory = os.path.abspath(args.directory)
    shown = display_path(directory)  # the real path stays for the disk; this is sent
    chunk_bytes, file_bytes = args.chunk_mb * MIB, file_mb * MIB
    try:
        with flag.interrupting():  # no loop here: a signal ends the step at once
            sync_mode, why, mib_s, expected, place = _start_up_checks(
                args, log, directory, fixed, file_mb)
    except checks.CheckFailed as exc:
        log.error("%s", exc.message)
        return exc.code
    except Interrupted as exc:
        log.error("%s during the start-up checks and calibration: stopped, their "
                  "scratch files removed from %s", exc, directory)
        return exitcodes.CLIENT_INTERRUPTED
    direct_ok = sync_mode == protocol.SYNC_DIRECT
    fs = checks.fs_type(directory)
    # the plan it will run is the one go carries (logged then): only what this
    # command line fixed is said here, never a default the server may replace
    own = [text for field, text in (("chunk_bytes", "chunk %d MiB" % args.chunk_mb),
                                    ("file_bytes", "file %d MiB" % file_mb),
                                    ("duration_s", "%g s" % args.duration))
           if field in fixed]
    unset = [plan.FLAGS[k] for k in protocol.PLAN_FIELDS if k not in fixed]
    log.info("diskbench %s client %s: %s (%s), calibration %.0f MiB/s; %s%s; log %s",
             diskbench.__version__, name, shown, fs, mib_s,
             "its own plan: %s" % ", ".join(own) if own else "",
             ("%sthe rest from the server's plan at go (%s)" % (
                 "; " if own else "", ", ".join(unset))) if unset else
             " (~%.1f rollovers expected)" % expected, log.handlers[0].baseFilename)
    cfg = config.ClientConfig(
        host=host, port=port, name=name, secret=secret, directory=directory,
        chunk_bytes=chunk_bytes, file_bytes=file_bytes, duration_s=args.duration,
        perf_interval_s=args.perf_interval, stats_interval_s=args.stats_interval,
        heartbeat_interval_s=args.heartbeat_interval, max_files=args.max_files,
        sync_mode=sync_mode, preallocate=args.preallocate, keep_data=args.keep_data,
        verify=bool(args.verify), instance_id=instance_id, block_bytes=checks.block_bytes(directory),
        directory_id=place,
        connect_timeout_s=args.connect_timeout, deliver_timeout_s=args.deliver_timeout,
        progress_interval_s=args.progress_interval,
        undelivered_path=_undelivered_path(log), stall_timeout_s=args.stall_timeout,
        start_method=args.start_method or None)
    def plan_check(planned):
        """The plan from go on this host: None, or (exit code, why)."""
        try:
            checks.check_sizes(planned.chunk_bytes // MIB, planned.file_bytes // MIB)
            problem = _check_memory(planned.chunk_bytes // MIB) or _check_file_limit(
                planned.file_bytes // MIB, planned.chunk_bytes // MIB)
            if problem:
                raise checks.CheckFailed(exitcodes.USAGE, problem)
            _space(directory, planned.file_bytes, args, log)
            _rollovers(mib_s, planned.duration_s, planned.file_bytes // MIB,
                       planned.chunk_bytes // MIB, args, log)
        except checks.CheckFailed as exc:
            return exc.code, exc.message
        return None

    supervisor = Supervisor(cfg, _hello(cfg, shown, fs, expected, mib_s, fixed, args.force,
                                        instance_id), log, plan_check)
    if not direct_ok:
        supervisor.sender.send(protocol.NOTE, text="O_DIRECT refused in %s (%s): "
                               "buffered writes + fsync per chunk (sync_mode=%s)"
                               % (shown, why, sync_mode))
    memory = checks.memory_fs_warning(shown, fs)
    if memory:  # (a figure of memory would otherwise read as one of the disk)
        log.warning("%s", memory)
        supervisor.sender.send(protocol.NOTE, text=memory)
    others = checks.others_text(shown, checks.other_data_files(directory))
    if others:  # (they hold space on the disk under test, and nobody else says so)
        log.warning("%s", others)
        supervisor.sender.send(protocol.NOTE, text=others)
    # (psutil missing is said once: by the stats process's note, logged when relayed)
    return supervisor.run(flag)


def _start_up_checks(args, log, directory, fixed, file_mb):
    """Directory, space, O_DIRECT, calibration: (sync_mode, why O_DIRECT was
    refused, calibrated MiB/s, expected rollovers, the directory's
    checks.directory_id); CheckFailed if one fails."""
    checks.check_clock()
    place = checks.check_directory(directory)
    if "file_bytes" in fixed:  # else the plan's file size is checked at go
        _space(directory, file_mb * MIB, args, log)
    direct_ok, why = checks.probe_direct(directory)
    sync_mode = protocol.SYNC_DIRECT if direct_ok else protocol.SYNC_FSYNC
    if not direct_ok:
        log.warning("O_DIRECT refused in %s (%s): falling back to buffered writes "
                    "+ fsync per chunk (sync_mode=%s)", directory, why, sync_mode)
    mib_s = checks.calibrate(directory, args.chunk_mb * MIB, sync_mode)
    expected = plan.expected_rollovers(mib_s, args.duration, file_mb)
    if "duration_s" in fixed and "file_bytes" in fixed:  # no plan can change it
        _rollovers(mib_s, args.duration, file_mb, args.chunk_mb, args, log)
    return sync_mode, why, mib_s, expected, place


def _space(directory, file_bytes, args, log):
    """Free space for --max-files files of ``file_bytes``; --force warns."""
    try:
        checks.check_space(directory, file_bytes, args.max_files)
    except checks.CheckFailed as exc:
        if not args.force:
            raise
        _forced(args, log, exc.message)


def _rollovers(mib_s, duration_s, file_mb, chunk_mb, args, log):
    """The two-rollover rule at the calibrated speed; --force warns."""
    refusal = plan.rollover_rule(mib_s, duration_s, file_mb, chunk_mb)
    if refusal and not args.force:
        raise checks.CheckFailed(exitcodes.CLIENT_ROLLOVER, refusal + plan.FORCE_HINT)
    if refusal:
        _forced(args, log, refusal)


def _forced(args, log, problem):
    """The warning of a check --force overrides, once: the plan from go is checked
    again, and is often the one checked at start."""
    said = vars(args).setdefault("forced_said", set())
    if problem not in said:
        said.add(problem)
        log.warning("--force: running anyway; %s", problem)


if __name__ == "__main__":
    sys.exit(main())
