"""The server's log dir: its claim (one server per directory), what it may
hold at start (nothing, an unfinished run to resume, a finished run: refused)
and the run marker.

Separate from master.py (the run loop): these are the rules of the directory
a run writes, applied once at start-up (and undone when start-up fails).
A resumed run replays perf.jsonl into the registry and goes on appending
(a server killed mid-run loses nothing it acknowledged).
"""
import errno
import json
import os

from diskbench import protocol
from diskbench.cli import prog_name
from diskbench.compat import as_bytes
from diskbench.fsutil import atomic_write
from diskbench.report import RUN_MARKER, readers
from diskbench.server import control as control_mod
from diskbench.server import recorder as recorder_mod
from diskbench.report import build as report_build

#: The server's claim on --log-dir, held (fcntl.flock) for its whole life: a
#: second server on the same directory exits; the kernel drops the claim of a
#: server that was killed, so a restart is never blocked by it.
LOCK_FILE = "server.lock"


class FinishedRun(Exception):
    """The log dir holds a finished run; the message names the fix."""


class LogDirTaken(Exception):
    """Another server holds the log dir's LOCK_FILE; the message names the fix."""


def claim_log_dir(log_dir):
    """Take ``log_dir``'s LOCK_FILE for this process's life: returns the open
    file (keep it open), raises LogDirTaken when another server holds it."""
    import fcntl
    path = os.path.join(log_dir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.fcntl(fd, fcntl.F_GETFD) | fcntl.FD_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (IOError, OSError) as exc:
        os.close(fd)
        if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            raise
        raise LogDirTaken(
            "another server is running with --log-dir %s (it holds %s): end it (%s "
            "ctl --log-dir %s end) or give another --log-dir" % (
                log_dir, path, prog_name("diskbench.server"), log_dir))
    os.ftruncate(fd, 0)     # for a reader: who holds it
    os.write(fd, as_bytes("%d\n" % os.getpid()))
    return fd


def create(log_dir):
    """Make ``log_dir`` (an existing directory is fine); IOError/OSError when
    it cannot be made."""
    try:
        os.makedirs(log_dir)
    except OSError as exc:   # (two servers started together: both create it)
        if exc.errno != errno.EEXIST or not os.path.isdir(log_dir):
            raise


def check_reusable(log_dir):
    """Raise ServerRunning when a server answers on its control socket,
    FinishedRun when it holds a finished run (report.json)."""
    control_mod.check_free(log_dir)   # raises ServerRunning
    if finished(log_dir):
        raise FinishedRun(
            "%s holds a finished run (%s exists): give a new --log-dir, or remove "
            "that directory to start over" % (log_dir, report_build.REPORT_JSON))


def finished(log_dir):
    """Did a server end the run in ``log_dir``? Its report.json says so,
    unless only a re-render wrote it (``rerendered`` set) and run.json has no
    report facts of a server's end: then a killed server's run, re-rendered
    to look at it, still resumes (README: the server killed and restarted)."""
    if not os.path.exists(os.path.join(log_dir, report_build.REPORT_JSON)):
        return False
    try:
        marker = readers.read_json(os.path.join(log_dir, RUN_MARKER))
        if report_build.FACTS_KEY in marker:
            return True
        report = readers.read_json(os.path.join(log_dir, report_build.REPORT_JSON))
    except (IOError, OSError, readers.Unreadable):
        return True               # cannot tell: never write over a finished run
    return not report.get("rerendered")


def holds_a_run(log_dir):
    """True when ``log_dir`` has an unfinished run to resume (its marker, or
    records in perf.jsonl)."""
    marker = os.path.join(log_dir, RUN_MARKER)
    perf = os.path.join(log_dir, recorder_mod.PERF_LOG)
    return os.path.exists(marker) or (os.path.exists(perf) and os.path.getsize(perf))


def write_marker(log_dir, run_id, started, plan_given=None):
    """The marker of a fresh run: its id, start, the server's pid and protocol,
    and the server's plan (its flags: a re-render of a run whose server was
    killed resolves each client's plan and its sources as the server did)."""
    atomic_write(os.path.join(log_dir, RUN_MARKER), as_bytes(json.dumps(dict(
        run_id=run_id, started_ts=started, server_pid=os.getpid(),
        protocol=protocol.PROTOCOL_VERSION, plan_given=plan_given or {}),
        sort_keys=True, allow_nan=False) + "\n"))


def resume(log_dir, registry, run_id, wall, warn):
    """Replay the unfinished run in ``log_dir`` into ``registry``: returns its
    (run id, start time, what was resumed in words); ``run_id`` is kept when
    the marker is unreadable, and every problem found is ``warn``-ed."""
    marker = os.path.join(log_dir, RUN_MARKER)
    info, why = readers.read_marker(marker)   # validated: the file may be damaged
    if info:
        run_id, started = info["run_id"], info["started_ts"]
    else:
        started = wall()
        warn("%s unreadable (%s): the resumed run keeps "
             "its records under the new run id %s" % (marker, why, run_id))
    skipped = registry.restore_all(recorder_mod.read_back(log_dir, warn))
    if skipped:
        warn("%d records in perf.jsonl were skipped (a "
             "repeated seq, or no hello on record)" % skipped)
    clients = len(registry.clients)
    return run_id, started, "resumed run %s with %d clients, %d records" % (
        run_id, clients, registry.restored)


def forget_fresh_run(log_dir):
    """A fresh run whose start failed (e.g. bind) leaves no marker and no empty
    perf.jsonl behind, so the next start is a fresh run too."""
    for name in (RUN_MARKER, recorder_mod.PERF_LOG):
        path = os.path.join(log_dir, name)
        try:
            if name == RUN_MARKER or not os.path.getsize(path):
                os.unlink(path)
        except OSError:
            pass
