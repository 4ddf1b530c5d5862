"""Read-back verification (``--verify``): every finished data file is read
back and every 4 KiB block checked against its stamp (diskbench/stamp.py)
before the file is deleted (a rollover beyond --max-files) or at the end of
the run.

How the read avoids the page cache: the file is opened with O_DIRECT, so every
read goes to the device. Where the filesystem refuses O_DIRECT, the file is
fsynced (its dirty pages reach the device) and its cached pages dropped with
posix_fadvise(DONTNEED) before it is read: the reads then come from the
device too, but through the cache (``read_mode`` says which: READ_DIRECT or
READ_DROPPED). The writer asks for O_DIRECT reads unless the filesystem
refused its O_DIRECT writes. tests/faults/test_verify.py proves it for both: a block changed
on the device underneath the filesystem (through the loop device it sits on),
which a cached read would not see, is found.

What is timed, and nothing else: each ``read`` of a chunk (continued on short
reads), on the monotonic clock. Checking the blocks, opening, fsync and
fadvise are outside the timer. The writer reads back between two perf
intervals (its current interval is sent first and a new one starts after), so
no write figure contains any of it.

Bad blocks are precise and never lost: the first MAX_BAD_REPORTED of a writer
are sent one by one (protocol.BAD_BLOCK: file, offset, kind, expected and
found stamp), and the supervisor logs each; every one, those beyond the cap
included, is counted by kind in the file's READBACK message.
"""
import errno
import os
import time

from diskbench import protocol, stamp
from diskbench.client.payload import huge_map
from diskbench.compat import monotonic
from diskbench.linux import posix_fadvise_dontneed, read_into
from diskbench.metrics import LatencyHistogram

#: Bad blocks a writer sends one by one (BAD_BLOCK); beyond it they are
#: counted only (READBACK's counts by kind).
MAX_BAD_REPORTED = 100
#: Env var naming a directory: a writer that finds it set holds each file
#: before reading it back: it writes ``<dir>/<data file name>.ready`` (holding
#: the file's path) and waits for ``<dir>/<data file name>.go`` (tests: a
#: fault is staged on the finished file in between). Polled every
#: HOLD_POLL_S, for at most HOLD_MAX_S.
HOLD_ENV = "DISKBENCH_VERIFY_HOLD"
HOLD_POLL_S = 0.02
HOLD_MAX_S = 120.0

#: The chunk read is compared with what was written this many bytes at a time:
#: small slices stay in the CPU cache, one chunk-sized copy does not
#: (docs/MEASURING.md).
COMPARE_PIECE = 256 * 1024

O_DIRECT = getattr(os, "O_DIRECT", 0)


def open_for_read(path, direct=True):
    """(fd, read_mode): O_DIRECT when ``direct`` and the filesystem allows it,
    else fsync + drop the file's pages from the cache."""
    if O_DIRECT and direct:
        try:
            return os.open(path, os.O_RDONLY | O_DIRECT), protocol.READ_DIRECT
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        posix_fadvise_dontneed(fd)
    except OSError:
        os.close(fd)
        raise
    return fd, protocol.READ_DROPPED


class ReadBack(object):
    """Reads back and checks the data files of one writer."""

    def __init__(self, run, instance, chunk_bytes, send, progress=None,
                 timer=monotonic, reference=None):
        self.run, self.instance, self.chunk_bytes = run, instance, chunk_bytes
        self.send = send
        self.progress = progress or (lambda: None)
        self.timer = timer
        # aligned, as O_DIRECT needs, in huge pages where the kernel gives them
        # (from 4 KiB pages the device gets more, smaller requests: payload.py)
        self.map, self.at, _advised = huge_map(chunk_bytes)
        # stamp.Stamper of the writer's own payload (its buffer), stamped
        # again for each chunk read, so a chunk that is exactly what was
        # written is known in one comparison; only a chunk that differs is
        # checked block by block (None: every block is checked)
        self.reference = reference
        self.reported = 0                       # BAD_BLOCKs sent
        self.bad = 0                            # bad blocks found in all files

    def close(self):
        self.map.close()

    def hold(self, path):
        """The test hook (HOLD_ENV): say the file is ready, wait for go."""
        where = os.environ.get(HOLD_ENV)
        if not where:
            return
        base = os.path.join(where, os.path.basename(path))
        with open(base + ".ready.tmp", "w") as f:
            f.write(path)
        os.rename(base + ".ready.tmp", base + ".ready")
        deadline = monotonic() + HOLD_MAX_S
        while not os.path.exists(base + ".go") and monotonic() < deadline:
            self.progress()
            time.sleep(HOLD_POLL_S)

    def _read(self, fd, want):
        """Read up to ``want`` bytes into the buffer (short reads continued)."""
        got = 0
        while got < want:
            n = read_into(fd, self.map, self.at + got, want - got)
            if n <= 0:
                break
            got += n
        return got

    def check_file(self, path, file_index, size, direct=True):
        """Read back ``size`` bytes of data file ``file_index``, check every
        block, send the READBACK (and the first bad blocks); returns the
        count of bad blocks in it."""
        self.hold(path)
        expected = stamp.Expected(self.run, self.instance, file_index, self.chunk_bytes)
        counts = dict((kind, 0) for kind in stamp.BAD_KINDS)
        hist = LatencyHistogram()
        io_s, nread, chunks, offset = 0.0, 0, 0, 0
        fd, mode = open_for_read(path, direct)
        try:
            while offset < size:
                want = min(self.chunk_bytes, size - offset)
                t0 = self.timer()
                got = self._read(fd, want)
                elapsed = self.timer() - t0
                io_s += elapsed
                hist.add(elapsed)
                chunks += 1
                nread += got
                if got == want and self._as_written(file_index, offset, want):
                    self.progress()
                    offset += want
                    continue
                for at in range(0, want, stamp.BLOCK):
                    block = self.map[self.at + at:self.at + min(at + stamp.BLOCK, got)] \
                        if at < got else b""
                    kind = stamp.classify(block, expected, offset + at)
                    if kind != stamp.OK:
                        counts[kind] += 1
                        self._report(path, file_index, offset + at, kind, expected, block)
                self.progress()
                if got < want:   # the end of a short file: the rest is missing
                    for at in range(offset + want, size, stamp.BLOCK):
                        counts[stamp.MISSING] += 1
                        self._report(path, file_index, at, stamp.MISSING, expected, b"")
                    break
                offset += want
        finally:
            os.close(fd)
        bad = sum(counts.values())
        self.bad += bad
        fields = dict(file_index=file_index, file_bytes=size, bytes=nread, chunks=chunks,
                      io_s=io_s, lat_min_s=hist.min or 0.0, lat_max_s=hist.max or 0.0,
                      lat_hist=hist.to_wire(), read_mode=mode)
        for kind in stamp.BAD_KINDS:
            fields[kind] = counts[kind]
        self.send((protocol.READBACK, fields))
        return bad

    def _as_written(self, file_index, offset, size):
        """The chunk read (``size`` bytes at ``offset``) is byte for byte what
        the writer wrote there."""
        if self.reference is None:
            return False
        stamper = self.reference
        stamper.stamp(file_index, offset // self.chunk_bytes)
        buf, mine, written, start = self.map, self.at, stamper.buf, stamper.start
        for at in range(0, size, COMPARE_PIECE):
            end = min(at + COMPARE_PIECE, size)
            if buf[mine + at:mine + end] != written[start + at:start + end]:
                return False
        return True

    def _report(self, path, file_index, offset, kind, expected, block):
        if self.reported >= MAX_BAD_REPORTED:
            return
        self.reported += 1
        self.send((protocol.BAD_BLOCK, dict(
            path=path, file_index=file_index, offset=offset, kind=kind,
            expected=expected.describe(offset), found=stamp.describe_found(block))))


# --- python -m diskbench.client.verify: re-check kept files ----------------------------
def recheck(paths, chunk_bytes, send, direct=True):
    """Read back and check data files kept with --keep-data, each against the
    run and writer its first block names (its index from its name); returns
    the bad blocks. A file whose first block is not a stamp is checked
    against nothing (every block corrupt or missing)."""
    bad = 0
    for path in paths:
        with open(path, "rb") as f:
            first = f.read(stamp.BLOCK)
        head = stamp.HEADER.unpack(first[:stamp.FIELDS_END]) \
            if len(first) == stamp.BLOCK else None
        run, instance = (head[1], head[2]) if head and head[0] == stamp.MAGIC else (0, 0)
        index = int(os.path.basename(path).rsplit("-", 1)[-1].split(".")[0])
        reader = ReadBack(run, instance, chunk_bytes, send)
        try:
            bad += reader.check_file(path, index, os.path.getsize(path), direct)
        finally:
            reader.close()
    return bad


def main(argv=None):
    """Re-check kept data files: one JSON line per file read back and per bad
    block (the readback and bad_block messages' fields), exit 0 or
    exitcodes.CLIENT_BAD_DATA. For `make bench` (read MiB/s beside fio's) and
    for files kept from a run."""
    import argparse
    import json
    import sys
    from diskbench import exitcodes
    from diskbench.metrics import MIB
    p = argparse.ArgumentParser(prog="python -m diskbench.client.verify",
                                description=main.__doc__.split("\n")[0])
    p.add_argument("--chunk-mb", type=int, required=True,
                   help="the chunk size the files were written with")
    p.add_argument("files", nargs="+", metavar="FILE", help="diskbench-NAME-PID-N.dat")
    args = p.parse_args(argv)

    def send(item):
        type_, fields = item
        sys.stdout.write(json.dumps(dict(fields, type=type_), sort_keys=True) + "\n")
    bad = recheck(args.files, args.chunk_mb * MIB, send)
    return exitcodes.CLIENT_BAD_DATA if bad else exitcodes.OK


if __name__ == "__main__":
    raise SystemExit(main())
