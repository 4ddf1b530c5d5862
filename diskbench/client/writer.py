"""The writer process: the timed write loop and file rollover.

What is timed (and nothing else): for each chunk, the ``os.write`` loop that
puts the chunk on disk (continued on short writes), plus ``os.fsync`` when the
filesystem refused O_DIRECT (``fsync`` mode). Stamping the payload, building
messages, updating counters and checking for a stop all happen outside the
timer. At a rollover, ``fsync`` + ``close`` of the full file is timed too and
reported as ``close_s``; at a normal stop the partly written last file gets
the same timed fsync + close inside the last perf interval, so the throughput
(bytes / interval wall time) only counts bytes flushed within it.

Short writes: the remainder is written from where the kernel stopped. With
O_DIRECT a remainder that is not block-aligned makes the next write fail with
EINVAL; that (and a write that returns 0) is reported as ENOSPC, because in
practice it only happens when the device is full.

The writer never touches the network: it sends ``(type, fields)`` tuples down
its pipe to the supervisor and goes on.
"""
import errno
import hashlib
import os
import re
import signal
import sys
import time

from diskbench import protocol, runclock, stamp
from diskbench.client import child
from diskbench.client.verify import ReadBack
from diskbench.compat import buffer_from, monotonic
from diskbench.linux import posix_fallocate
from diskbench.metrics import MIB, LatencyHistogram
from diskbench.signals import SignalFlag

#: Exit code of the writer process after a disk error (it has sent an ERROR
#: first); the supervisor maps it to exitcodes.CLIENT_DISK_ERROR.
EXIT_DISK_ERROR = 3
#: Exit code of the writer after an unexpected exception (an ERROR was sent).
EXIT_CRASH = 4
#: Env var read in exactly one place (open_data_file): when set, every open
#: with O_DIRECT fails with EINVAL, as on tmpfs or some network filesystems
#: (this kernel accepts O_DIRECT even on tmpfs, so tests need to inject it).
FAKE_NO_ODIRECT_ENV = "DISKBENCH_FAKE_NO_ODIRECT"
#: The writer's own safety net: it stops this long after --duration even if
#: the supervisor never told it to.
DURATION_GRACE_S = 5.0
#: Waiting for the synchronized start, the writer checks for a stop this often.
START_POLL_S = 0.05

O_DIRECT = getattr(os, "O_DIRECT", 0)
#: Where a descriptor's own file is reached by path (Linux): the directory's
#: descriptor reaches it even once it is unmounted lazily or mounted over.
PROC_FD = "/proc/self/fd"
#: The writer's reason (errno ENODEV) when DIRECTORY is no longer the directory
#: the start-up checks measured.
PLACE_CHANGED = ("%s is no longer the directory the run measured (device %s, inode %d "
                 "at the start; now %s): it was unmounted, mounted over or replaced; "
                 "stopped rather than measure another filesystem as this one")
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


#: Hex digits of the name's hash added when the safe form differs from the name.
NAME_HASH_CHARS = 8


def safe_name(name):
    """``name`` as a file-name part: [A-Za-z0-9._-] only. When that changes
    the name, a short hash of the real name is appended ("a/b" -> "a_b-1f0e..."),
    so names that map to the same safe form ("a/b", "a_b", "a b") never share a
    log, an undelivered file or data files."""
    safe = str(_SAFE.sub("_", name))  # ASCII: a native str on 2.7 too (joins bytes paths)
    if safe == name:
        return safe
    digest = hashlib.sha1(name.encode("utf-8", "backslashreplace") if not
                          isinstance(name, bytes) else name).hexdigest()
    return "%s-%s" % (safe, digest[:NAME_HASH_CHARS])


def data_file_name(name, pid, index):
    """``diskbench-NAME-PID-N.dat`` (NAME made safe for a file name)."""
    return "diskbench-%s-%d-%d.dat" % (safe_name(name), pid, index)


def data_file_index(filename, name, pid):
    """N when ``filename`` is exactly this client's ``diskbench-NAME-PID-N.dat``,
    else None (another client's file, even one whose name extends ours)."""
    m = re.match(r"diskbench-%s-%d-(\d+)\.dat\Z" % (re.escape(safe_name(name)), pid),
                 filename)
    if not m:
        return None
    index = int(m.group(1))
    return index if data_file_name(name, pid, index) == filename else None


def open_data_file(path, direct):
    """Open a data file for writing, with O_DIRECT when ``direct``.

    The single place that decides whether O_DIRECT is refused (patch it, or set
    DISKBENCH_FAKE_NO_ODIRECT, to simulate a filesystem that refuses it).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    if direct:
        if os.environ.get(FAKE_NO_ODIRECT_ENV) or not O_DIRECT:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        flags |= O_DIRECT
    return os.open(path, flags, 0o644)


class DiskError(Exception):
    """A write/fsync/open failure on the data path (ENOSPC, EIO ...)."""

    def __init__(self, err, reason):
        Exception.__init__(self, reason)
        self.errno = err
        self.reason = reason


class OsOps(object):
    """The system calls the writer makes; tests replace them."""

    open = staticmethod(open_data_file)
    write = staticmethod(os.write)
    fsync = staticmethod(os.fsync)
    close = staticmethod(os.close)
    unlink = staticmethod(os.unlink)
    fallocate = staticmethod(posix_fallocate)


def write_chunk(fd, buf, size, fsync_mode, ops, timer):
    """Write ``buf[:size]`` to ``fd``, continuing short writes; return seconds.

    The timed region is exactly the write loop (+ fsync in fsync mode).
    ``buf`` is the payload mmap (or any buffer); when ``size`` is smaller than
    it, a zero-copy view is made before the timer starts.
    """
    view = buf if size == len(buf) else buffer_from(buf, 0, size)
    write = ops.write
    t0 = timer()
    try:
        done = write(fd, view)
    except OSError as exc:  # EINTR: only Python 2.7 (3.5+ retries itself)
        if exc.errno != errno.EINTR:
            raise
        done = 0
    while done < size:  # short write: continue from where the kernel stopped
        try:
            n = write(fd, buffer_from(buf, done, size - done))
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            if exc.errno == errno.EINVAL and done:
                raise OSError(errno.ENOSPC, "short write left an unaligned remainder "
                              "of %d bytes that O_DIRECT cannot write (device full?)"
                              % (size - done))
            raise
        if n <= 0:
            raise OSError(errno.ENOSPC, "write returned 0 bytes (device full?)")
        done += n
    if fsync_mode:
        ops.fsync(fd)
    return timer() - t0


class Writer(object):
    """The write loop, with everything it touches injectable for tests.

    ``cfg`` keys: directory, name, chunk_bytes, file_bytes, duration_s,
    perf_interval_s, max_files, sync_mode, preallocate, keep_data.
    ``send(tuple)`` delivers (type, fields) to the supervisor; ``should_stop()``
    is checked between chunks; ``progress(bytes, chunks)`` updates shared
    counters.
    """

    def __init__(self, cfg, payload, send, should_stop, progress=None, ops=None,
                 timer=monotonic, clock=monotonic, wall=runclock.wall, pid=None,
                 stamper=None, readback=None):
        self.cfg = cfg
        self.payload = payload
        self.send = send
        self.should_stop = should_stop
        self.progress = progress or (lambda b, c: None)
        self.ops = ops or OsOps()
        self.timer = timer        # only around the timed I/O
        self.clock = clock        # intervals and duration (never in the timer)
        self.wall = wall
        self.pid = pid or os.getpid()
        self.fsync_mode = cfg.sync_mode == protocol.SYNC_FSYNC
        self.preallocate = bool(cfg.preallocate)
        self.paths = []           # data files that exist now, oldest first
        self.file_index = -1
        self.fd = None
        self.file_written = 0
        self.bytes = 0
        self.chunks = 0
        self.rollovers = 0
        self.last_close_s = None
        # stamp.Stamper (None: the payload's chunk counter only); verify.ReadBack
        # (None: no --verify) and the bytes written to each file not yet read back
        self.stamper = stamper
        self.readback = readback
        self.sizes = {}
        # (device, inode) of each data file (only with cfg.directory_id: a real
        # run) and a descriptor of the directory measured: the files are
        # removed where they are, whatever happened to the path since
        self.ids = {}
        self.dir_fd = None
        self.left = []            # data files not removed: (path, why, bytes)
        self._reset_interval()

    # --- messages (never inside the timer) -------------------------------------
    def _reset_interval(self):
        self.iv_start_wall = self.wall()
        self.iv_start = self.clock()
        self.iv_bytes = 0
        self.iv_chunks = 0
        self.iv_io = 0.0
        self.iv_hist = LatencyHistogram()

    def flush_perf(self):
        if not self.iv_chunks:
            self._reset_interval()
            return
        hist = self.iv_hist
        self.send((protocol.PERF, dict(
            # length from the monotonic clock (a wall-clock step cannot make an
            # interval end before it starts), never shorter than its timed I/O
            t_start=self.iv_start_wall, t_end=self.iv_start_wall + max(
                self.clock() - self.iv_start, self.iv_io),
            bytes=self.iv_bytes, chunks=self.iv_chunks, io_s=self.iv_io,
            lat_min_s=hist.min, lat_max_s=hist.max, lat_hist=hist.to_wire(),
            sync_mode=self.sync_mode(), file_index=max(self.file_index, 0))))
        self._reset_interval()

    def sync_mode(self):
        return protocol.SYNC_FSYNC if self.fsync_mode else protocol.SYNC_DIRECT

    def note(self, text):
        self.send((protocol.NOTE, dict(text=text)))

    # --- files -------------------------------------------------------------------
    def path_of(self, index):
        return os.path.join(self.cfg.directory,
                            data_file_name(self.cfg.name, self.pid, index))

    def open_next(self):
        """Delete the oldest files beyond --max-files, then open the next file."""
        while self.paths and len(self.paths) + 1 > self.cfg.max_files:
            path = self.paths.pop(0)
            self.read_back(path)
            self._unlink(path)
        self.file_index += 1
        path = self.path_of(self.file_index)
        try:
            fd = self.ops.open(path, not self.fsync_mode)
        except OSError as exc:
            if exc.errno != errno.EINVAL or self.fsync_mode:
                raise
            self.fsync_mode = True
            self.note("O_DIRECT refused by the filesystem (%s); falling back to "
                      "buffered writes + fsync per chunk (sync_mode=%s)"
                      % (os.strerror(exc.errno), protocol.SYNC_FSYNC))
            fd = self.ops.open(path, False)
        self.paths.append(path)
        self.sizes[path] = 0
        self.fd = fd
        self.file_written = 0
        self.check_place(path, fd)
        if self.preallocate:
            try:
                self.ops.fallocate(fd, 0, self.cfg.file_bytes)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EIO):
                    raise
                self.preallocate = False
                self.note("--preallocate refused (%s); continuing without "
                          "preallocation" % os.strerror(exc.errno))

    def check_place(self, path, fd):
        """The file just opened at ``path`` must be in the directory the
        start-up checks measured (cfg.directory_id): a
        directory unmounted (lazily too: its path then leads to the disk below
        it), mounted over or replaced mid-run would have the run go on writing
        to another disk and call it this one. OSError(ENODEV) naming what
        changed; ENOENT when the directory is gone."""
        want = getattr(self.cfg, "directory_id", None)
        if want is None:
            return
        own = os.fstat(fd)
        self.ids[path] = (own.st_dev, own.st_ino)
        try:
            st = os.stat(self.cfg.directory)
        except OSError as exc:
            raise OSError(exc.errno, "%s: %s%s" % (
                self.cfg.directory, exc.strerror or os.strerror(exc.errno),
                " (removed mid-run?)" if exc.errno == errno.ENOENT else ""))
        # (the directory, read after the open: the file was made where it led
        # then or earlier; a file's own device is not compared with it: on an
        # overlayfs whose layers are on several filesystems they differ)
        if (st.st_dev, st.st_ino) == tuple(want):
            if self.dir_fd is None and os.path.isdir(PROC_FD):
                self.dir_fd = os.open(self.cfg.directory, os.O_RDONLY)
            return
        raise OSError(errno.ENODEV, PLACE_CHANGED % (
            self.cfg.directory, _device(want[0]), want[1],
            "device %s, inode %d" % (_device(st.st_dev), st.st_ino)))

    def rollover(self):
        """Timed fsync + close of the full file; report it; open the next."""
        fd, self.fd = self.fd, None
        t0 = self.timer()
        self.ops.fsync(fd)
        self.ops.close(fd)
        close_s = self.timer() - t0
        self.sizes[self.paths[-1]] = self.file_written
        self.rollovers += 1
        self.send((protocol.ROLLOVER, dict(file_index=self.file_index,
                                           file_bytes=self.file_written,
                                           close_s=close_s)))
        self.open_next()

    def close_last(self):
        """At a normal stop: timed fsync + close of the file being written, inside
        the last perf interval, so every byte counted was flushed to the device
        within the measured time (as at a rollover; fio's --fsync_on_close does
        the same for its last file). Its time goes into the interval's wall time
        and ``last_close_s``; it is not a rollover (the file is not full)."""
        if self.fd is None or not self.file_written:
            return
        fd, self.fd = self.fd, None
        t0 = self.timer()
        self.ops.fsync(fd)
        self.ops.close(fd)
        self.last_close_s = self.timer() - t0
        self.sizes[self.paths[-1]] = self.file_written

    def read_back(self, path):
        """--verify: read back and check a finished file, between two perf
        intervals (the current one is sent first, a new one starts after), so
        no write figure holds any of it."""
        size = self.sizes.pop(path, 0)
        if self.readback is None or not size:
            return
        self.flush_perf()
        # O_DIRECT reads unless the filesystem refused O_DIRECT writes
        self.readback.check_file(path, data_file_index(
            os.path.basename(path), self.cfg.name, self.pid), size,
            direct=not self.fsync_mode)
        self._reset_interval()

    def stamp(self):
        """Stamp the payload for the next chunk (outside the timer)."""
        if self.stamper is None:
            self.payload.stamp(self.chunks)
        else:
            self.stamper.stamp(max(self.file_index, 0),
                               self.file_written // self.cfg.chunk_bytes)

    def _unlink(self, path):
        """Remove a data file; one that cannot be removed (not one already
        gone) is remembered in ``left`` with the reason. With its identity
        known (a real run), the file is removed where it is: through the
        directory's descriptor (the path may lead elsewhere since) or by its
        path, whichever holds that very file, never another."""
        ident = self.ids.pop(path, None)
        size = None
        try:
            places = self._places(path, ident)
            if not places:
                return
            place, size = places[0]
            self.ops.unlink(place)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                if size is None:   # (not known from the file itself)
                    size = self.file_written if self.paths and path == self.paths[-1] \
                        else self.sizes.get(path) or self.cfg.file_bytes
                self.left.append((path, "%s: %s" % (errno.errorcode.get(exc.errno, "E?"),
                                                    exc.strerror or os.strerror(exc.errno)),
                                  size))

    def _places(self, path, ident):
        """Where ``path``'s file is, as [(place, its size or None)]: the path
        when its identity is not known, else the place holding exactly that
        file (none: it is gone already)."""
        if ident is None:
            return [(path, None)]
        candidates = [path]
        if self.dir_fd is not None:
            candidates.insert(0, os.path.join(PROC_FD, str(self.dir_fd),
                                              os.path.basename(path)))
        found, error = [], None
        for place in candidates:
            try:
                st = os.lstat(place)
            except OSError as exc:
                if exc.errno != errno.ENOENT and error is None:
                    error = exc
                continue
            if (st.st_dev, st.st_ino) == ident:
                found.append((place, st.st_size))
                break
        if not found and error is not None:
            raise error
        return found

    def cleanup(self):
        if self.fd is not None:
            try:
                self.ops.close(self.fd)
            except OSError:
                pass
            self.fd = None
        if not self.cfg.keep_data:
            for path in self.paths:
                self._unlink(path)
            self.paths = []
        if self.dir_fd is not None:
            try:
                os.close(self.dir_fd)
            except OSError:
                pass
            self.dir_fd = None
        if self.left:   # said, never left behind quietly (the disk under test fills)
            self.note("could not remove %d data file%s (%s MiB) from %s: %s; remove %s "
                      "by hand" % (len(self.left), "" if len(self.left) == 1 else "s",
                                   "%.1f" % (sum(size for _, _, size in self.left)
                                             / float(MIB)),
                                   self.cfg.directory, "; ".join(
                                       "%s (%s)" % (os.path.basename(p), why)
                                       for p, why, _ in self.left),
                                   "it" if len(self.left) == 1 else "them"))

    def _wait_for_start(self):
        """Everything is ready (file open, buffer filled): wait for the
        synchronized start (``cfg.start_at``, monotonic; None: go now),
        watching for a stop. True if told to stop meanwhile."""
        start_at = getattr(self.cfg, "start_at", None)
        while start_at is not None:
            left = start_at - self.clock()
            if left <= 0:
                break
            if self.should_stop():
                return True
            time.sleep(min(left, START_POLL_S))
        return self.should_stop()

    # --- the loop ------------------------------------------------------------------
    def run(self):
        """Write until told to stop or the duration (+ grace) passes."""
        cfg = self.cfg
        chunk, file_bytes = cfg.chunk_bytes, cfg.file_bytes
        interval = cfg.perf_interval_s
        buf = self.payload.buffer
        try:
            self.open_next()
            stop = self._wait_for_start()
            deadline = self.clock() + cfg.duration_s + DURATION_GRACE_S
            self._reset_interval()
            self.progress(0, 0)
            self.send((protocol.START, dict(
                writer_pid=self.pid, sync_mode=self.sync_mode(),
                preallocate=self.preallocate, block_bytes=cfg.block_bytes,
                buffer_huge_bytes=self.payload.huge_page_bytes(),
                # told to stop before its first write: no first write to time
                started_at=None if stop else self.iv_start_wall, chunk_bytes=chunk,
                file_bytes=file_bytes, duration_s=cfg.duration_s,
                verify=True if self.readback is not None else None)))
            while not stop:
                size = min(chunk, file_bytes - self.file_written)
                self.stamp()
                elapsed = write_chunk(self.fd, buf, size, self.fsync_mode,
                                      self.ops, self.timer)
                self.file_written += size
                self.bytes += size
                self.chunks += 1
                self.iv_bytes += size
                self.iv_chunks += 1
                self.iv_io += elapsed
                self.iv_hist.add(elapsed)
                self.progress(self.bytes, self.chunks)
                if self.file_written >= file_bytes:
                    self.rollover()
                now = self.clock()
                # decide to stop before closing the interval: the last interval
                # must hold a chunk, or close_last's fsync would fall into an
                # empty interval that is never sent (and its time be lost)
                stop = now >= deadline or self.should_stop()
                if not stop and now - self.iv_start >= interval:
                    self.flush_perf()
            self.close_last()
            self.flush_perf()
            for path in list(self.paths):  # --verify: what is left, oldest first
                self.read_back(path)
        except OSError as exc:
            self.flush_perf()
            err = exc.errno or errno.EIO
            raise DiskError(err, "%s: %s" % (errno.errorcode.get(err, "E?"),
                                             exc.strerror or os.strerror(err)))
        finally:
            self.cleanup()


def _device(dev):
    """A device number as MAJOR:MINOR."""
    return "%d:%d" % (os.major(dev), os.minor(dev))


# --- the process ---------------------------------------------------------------------
def writer_main(conn, cfg, counters):
    """Entry point of the writer process (module level: fork/spawn safe).

    ``counters`` is (bytes, chunks, last_progress) multiprocessing RawValues
    read by the heartbeat process.
    """
    from diskbench.client.payload import Payload
    parent = child.start(cfg)
    terminated = SignalFlag().install([signal.SIGTERM])  # stop after this chunk
    bytes_v, chunks_v, progress_v = counters
    progress_v.value = monotonic()

    def send(item):
        child.send_quietly(conn, item)  # the supervisor gone: getppid notices next chunk

    def should_stop():
        if terminated.count or os.getppid() != parent:
            return True
        try:
            if conn.poll(0):
                return conn.recv() == child.CMD_STOP
        except (OSError, IOError, EOFError):
            return True
        return False

    def progress(nbytes, nchunks):
        bytes_v.value = nbytes
        chunks_v.value = nchunks
        progress_v.value = monotonic()

    payload = Payload(cfg.chunk_bytes)
    run = stamp.key_of(cfg.run_id or "")
    instance = stamp.key_of(cfg.instance_id) if cfg.instance_id else stamp.new_instance()
    stamper, readback = payload.stamper(run, instance), None

    def alive():  # reading back is progress (the stall watch)
        progress_v.value = monotonic()
    if cfg.verify:
        readback = ReadBack(run, instance, cfg.chunk_bytes, send, alive,
                            reference=stamper)
    writer = Writer(cfg, payload, send, should_stop, progress,
                    stamper=stamper, readback=readback)
    code = 0
    try:
        writer.run()
    except DiskError as exc:
        send((protocol.ERROR, dict(source="writer", reason=exc.reason,
                                   errno=exc.errno, fatal=True)))
        code = EXIT_DISK_ERROR
    except Exception as exc:  # a bug: say so, then exit non-zero
        send((protocol.ERROR, dict(source="writer", reason="writer crashed: %r" % (exc,),
                                   errno=None, fatal=True)))
        code = EXIT_CRASH
    finally:
        payload.close()
        if readback is not None:
            readback.close()
        try:
            conn.close()
        except (OSError, IOError):
            pass
    if code:
        sys.exit(code)
