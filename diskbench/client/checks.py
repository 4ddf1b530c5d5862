"""Start-up checks of the client. Each failure is a CheckFailed carrying a
one-line message that names the fix and an exit code from exitcodes.

Order (cheap first): sizes, directory, free space, O_DIRECT probe,
calibration + the two-rollover rule.
"""
from __future__ import division

import errno
import mmap
import os
import re

from diskbench import exitcodes, protocol, runclock
from diskbench.plan import size_problem
from diskbench.client import procinfo
from diskbench.client import writer as writer_mod
from diskbench.compat import monotonic
from diskbench.metrics import MIB

#: Free space needed beyond max_files x file size.
SPACE_MARGIN_BYTES = 64 * MIB
#: Calibration: at most this many chunks, stopping early after this long.
CALIBRATION_MAX_CHUNKS = 4
CALIBRATION_MAX_S = 1.5
#: Bytes written by the O_DIRECT probe (one aligned block).
PROBE_BYTES = 4096
#: Errors of the device, not of the directory: CLIENT_DISK_ERROR, as in the writer.
DISK_ERRNOS = (errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG)


class CheckFailed(Exception):
    def __init__(self, code, message):
        Exception.__init__(self, message)
        self.code = code
        self.message = message


def check_clock(now=None):
    """This host's wall clock (``now``: runclock.wall()) must fit the times a
    message carries (protocol.TS_MIN to TS_MAX): every message is stamped with
    it, and a server refuses a hello stamped before 1970 without an answer (it
    cannot tell who sent it), so the client would wait --connect-timeout and
    blame the server. CheckFailed (CLIENT_SERVER) naming the fix."""
    now = runclock.wall() if now is None else now
    if protocol.TS_MIN <= now <= protocol.TS_MAX:
        return
    raise CheckFailed(exitcodes.CLIENT_SERVER, (
        "this host's clock says %.0f s since 1970 (%s): a diskbench server refuses "
        "every message stamped %s; set the clock (date -s, or NTP: timedatectl "
        "set-ntp true) and start again" % (
            now, "before 1970" if now < protocol.TS_MIN else "after the year 5000",
            "before 1970" if now < protocol.TS_MIN else "that late")))


def check_sizes(chunk_mb, file_mb):
    problem = size_problem(chunk_mb * MIB, file_mb * MIB)
    if problem:
        raise CheckFailed(exitcodes.USAGE, problem)


def directory_id(directory):
    """(device, inode) of ``directory``: which directory on which filesystem the
    run measures. The writer compares it before each file it opens
    (writer.Writer.check_place): a directory unmounted (even lazily), mounted
    over or replaced mid-run is another disk, never measured as this one."""
    st = os.stat(directory)
    return (int(st.st_dev), int(st.st_ino))


def check_directory(directory):
    """Exists, is a directory, and a file can really be created in it;
    returns its directory_id."""
    if not os.path.exists(directory):
        raise CheckFailed(exitcodes.CLIENT_DIRECTORY, "directory %s does not exist; "
                          "create it or pass an existing DIRECTORY" % directory)
    if not os.path.isdir(directory):
        raise CheckFailed(exitcodes.CLIENT_DIRECTORY, "%s is not a directory; pass "
                          "the directory to write in as DIRECTORY" % directory)
    probe = os.path.join(directory, ".diskbench-probe-%d" % os.getpid())
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.close(fd)
    except OSError as exc:
        raise CheckFailed(exitcodes.CLIENT_DIRECTORY, "directory %s is not writable "
                          "(%s); choose a writable directory or fix its permissions"
                          % (directory, os.strerror(exc.errno)))
    finally:  # also when a signal ends the check (signals.Interrupted)
        _remove_scratch(None, probe)
    try:
        return directory_id(directory)
    except OSError as exc:  # gone since the probe
        raise CheckFailed(exitcodes.CLIENT_DIRECTORY, "directory %s cannot be read (%s); "
                          "pass an existing DIRECTORY" % (directory, os.strerror(exc.errno)))


def free_bytes(directory):
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


#: A data file of any diskbench client (writer.data_file_name's form).
DATA_FILE = re.compile(r"diskbench-.+-\d+-\d+\.dat\Z")
#: Other runs' data files named in a warning, at most.
OTHERS_NAMED = 3


def other_data_files(directory):
    """[(name, bytes)] of the diskbench data files already in ``directory``
    (sorted): a run killed before it could remove them (kill -9 of every
    process, a crash, a reboot), or a client writing here now."""
    found = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return found
    for name in names:
        if DATA_FILE.match(name):
            try:
                found.append((name, os.lstat(os.path.join(directory, name)).st_size))
            except OSError:
                pass
    return found


def others_text(directory, others):
    """The warning for ``other_data_files``, else None."""
    if not others:
        return None
    return ("%d data file%s of another diskbench run (%.1f MiB: %s) %s in %s: left by a "
            "client killed before it could remove them, or written by one running now; "
            "remove them if none is" % (
                len(others), "" if len(others) == 1 else "s", _mib_of(others),
                _names_of(others), "is" if len(others) == 1 else "are", directory))


def _mib_of(others):
    return sum(size for _, size in others) / float(MIB)


def _names_of(others):
    """The first OTHERS_NAMED of ``others``' names, then "..." if there are more."""
    return ", ".join(name for name, _ in others[:OTHERS_NAMED]) + (
        ", ..." if len(others) > OTHERS_NAMED else "")


def check_space(directory, file_bytes, max_files, free=None):
    need = max_files * file_bytes + SPACE_MARGIN_BYTES
    have = free_bytes(directory) if free is None else free
    if have < need:
        others = other_data_files(directory)
        raise CheckFailed(exitcodes.CLIENT_SPACE, "not enough free space in %s: %d "
                          "files of %d MiB + %d MiB margin need %d MiB, %d MiB are free; "
                          "free some space or lower --file-mb / --max-files%s" % (
                              directory, max_files, file_bytes // MIB,
                              SPACE_MARGIN_BYTES // MIB, need // MIB, have // MIB,
                              " (%.1f MiB of it are held by %d data file%s of another "
                              "diskbench run: %s)" % (
                                  _mib_of(others), len(others),
                                  "" if len(others) == 1 else "s", _names_of(others))
                              if others else ""))
    return have


def fs_type(directory, mounts_path="/proc/mounts"):
    """The filesystem type of the mount holding ``directory`` (longest prefix)."""
    path = os.path.realpath(directory)
    best, kind = -1, "unknown"
    try:
        with open(mounts_path) as f:
            lines = f.read().splitlines()
    except (IOError, OSError):
        return kind
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount = parts[1].replace("\\040", " ").replace("\\011", "\t").replace(
            "\\012", "\n").replace("\\134", "\\")
        inside = path == mount or path.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > best:  # a later mount on the same point wins
            best, kind = len(mount), parts[2]
        elif inside and len(mount) == best:
            kind = parts[2]
    return kind


#: Filesystems that keep their files in memory: what is measured there is RAM,
#: not a disk, whatever O_DIRECT and fsync say.
MEMORY_FS = ("tmpfs", "ramfs")


def memory_fs_warning(shown, fs):
    """The warning for a DIRECTORY whose filesystem is memory, else None."""
    if fs not in MEMORY_FS:
        return None
    return ("%s is on %s, which keeps files in memory: the figures are the memory's, not "
            "a disk's; give a directory on the disk to measure" % (shown, fs))


def block_bytes(directory):
    """The filesystem's preferred I/O block size (reported in START)."""
    try:
        return max(int(os.statvfs(directory).f_bsize), 512)
    except (OSError, AttributeError):
        return 4096


def _probe_path(directory, what):
    return os.path.join(directory, ".diskbench-%s-%d.tmp" % (what, os.getpid()))


def _remove_scratch(fd, path):
    """Close (if open) and remove a probe/calibration file; never raises."""
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        os.unlink(path)
    except OSError:
        pass


def probe_direct(directory, opener=None):
    """(True, None) when O_DIRECT works here, else (False, reason).

    Opens a probe file with O_DIRECT and writes one aligned block. EINVAL means
    the filesystem refuses O_DIRECT; other errors are directory errors.
    """
    opener = opener or writer_mod.open_data_file
    path = _probe_path(directory, "odirect")
    buf = mmap.mmap(-1, PROBE_BYTES)
    fd = None
    try:
        try:
            fd = opener(path, True)
            os.write(fd, buf)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                return False, os.strerror(exc.errno)
            raise CheckFailed(exitcodes.CLIENT_DIRECTORY, "cannot write a probe file in "
                              "%s (%s); check the directory and the device"
                              % (directory, os.strerror(exc.errno)))
        return True, None
    finally:
        _remove_scratch(fd, path)
        buf.close()


def calibrate(directory, chunk_bytes, sync_mode, max_chunks=CALIBRATION_MAX_CHUNKS,
              max_s=CALIBRATION_MAX_S, clock=monotonic, ops=None):
    """MiB/s of a few chunks written exactly as the writer writes them, and
    flushed as a rollover flushes them.

    Same open (O_DIRECT or not), same payload, same timed region (write loop,
    + fsync in fsync mode), then the timed fsync + close a rollover does: on
    disks with a volatile write cache that flush can take as long as the
    writes (half of every file's time on the reference VM), and leaving it
    out predicted several times more rollovers than a run made. The flush of
    a few chunks carries the device's fixed flush latency that a whole file
    spreads thinner, so the figure errs low (the rule refuses early rather
    than late; --force exists). The file is removed. Bounded by
    ``max_chunks`` and ``max_s`` (at least one chunk is written).
    """
    from diskbench.client.payload import Payload
    fsync_mode = sync_mode == protocol.SYNC_FSYNC
    path = _probe_path(directory, "calibration")
    try:
        payload = Payload(chunk_bytes)
    except (MemoryError, OverflowError, ValueError, EnvironmentError) as exc:
        raise CheckFailed(exitcodes.USAGE, "cannot allocate a %d MiB buffer for "
                          "--chunk-mb (%s); use a smaller --chunk-mb"
                          % (chunk_bytes // MIB, exc.__class__.__name__))
    ops = ops or writer_mod.OsOps()
    limit = procinfo.file_size_limit_bytes()   # (ulimit -f: a file past it is EFBIG)
    if limit is not None:
        max_chunks = max(1, min(max_chunks, limit // chunk_bytes))
    fd = None
    io_s, written = 0.0, 0
    started = clock()
    try:
        fd = ops.open(path, not fsync_mode)
        for n in range(max_chunks):
            payload.stamp(n)
            io_s += writer_mod.write_chunk(fd, payload.buffer, chunk_bytes, fsync_mode,
                                           ops, clock)
            written += chunk_bytes
            if clock() - started >= max_s:
                break
        t0 = clock()
        ops.fsync(fd)
        ops.close(fd)
        fd = None
        io_s += clock() - t0
    except OSError as exc:
        if exc.errno in DISK_ERRNOS:  # the disk, not the directory: as the writer's
            raise CheckFailed(exitcodes.CLIENT_DISK_ERROR, "calibration write in %s "
                              "failed (%s: %s); %s"
                              % (directory, errno.errorcode.get(exc.errno, "E?"),
                                 os.strerror(exc.errno),
                                 "raise the file size limit (ulimit -f) or use a smaller "
                                 "--chunk-mb" if exc.errno == errno.EFBIG else
                                 "free space on the device or check it"))
        raise CheckFailed(exitcodes.CLIENT_DIRECTORY, "calibration write in %s failed "
                          "(%s); check the directory and the device"
                          % (directory, os.strerror(exc.errno)))
    finally:
        _remove_scratch(fd, path)
        payload.close()
    return written / float(MIB) / max(io_s, 1e-9)
