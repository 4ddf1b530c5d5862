"""The bytes the writer writes: incompressible, never repeated, nearly free.

One buffer is filled with os.urandom once. Before each chunk, ``stamp(n)``
makes the first 8 bytes of every 4 KiB block the chunk number (little-endian),
so no two chunks (and no two blocks anywhere in the run) are byte-identical,
and deduplication on the target cannot inflate the result. Compression cannot
either: the rest of every block is random.

The buffer is a private anonymous mmap (page-aligned, as O_DIRECT needs),
aligned to 2 MiB and advised MADV_HUGEPAGE, so the kernel backs it with
transparent huge pages where it can. Why: an O_DIRECT write pins every page
of the buffer and hands the device one segment per physically contiguous
run. From 4 KiB pages, how contiguous the buffer happens to be is a lottery
per process, and with it the number of requests a write becomes and its speed
(docs/MEASURING.md, "What is timed"). fio's buffer plays the same
lottery unless told otherwise, which is why `make bench` gives fio a huge-page
buffer too. ``huge_page_bytes()`` says what the kernel really did; the report
shows it. (A shared anonymous mmap, Python's default, is shmem and never gets
huge pages here; hence MAP_PRIVATE.)

Stamping must cost nothing next to the write it precedes (it runs between two
timed writes, so its time is inside the throughput figure): a Python loop of
``struct.pack_into`` per block costs a measurable share of a write. Instead,
one extended-slice assignment (``buf[k::4096] = byte * blocks``, a C loop)
sets byte ``k`` of every block at once, and only the bytes that differ from
the previous stamp are set: for consecutive chunk numbers that is usually
byte 0 alone. os.urandom itself is slower than many disks, which is why it is
called once and not per chunk (the figures: docs/MEASURING.md).
"""
import mmap
import os
import struct

from diskbench.client import procinfo
from diskbench.compat import buffer_from, range_
from diskbench.linux import buffer_address, madvise_hugepage
from diskbench.stamp import BLOCK, Stamper, restamp

STAMP_EVERY = BLOCK         # one stamp per 4 KiB block (a common dedup block size)
_STAMP = struct.Struct("<Q")
_FILL_PIECE = 1 << 20       # fill with urandom 1 MiB at a time
HUGE_PAGE = 2 << 20         # x86-64 / arm64 (4 KiB base pages) PMD size


def huge_map(size, fill=None, huge_pages=True):
    """(mmap, offset, advised): a private anonymous mapping with ``size`` bytes
    at ``offset``, 2 MiB-aligned and advised MADV_HUGEPAGE (whole huge pages: a
    partly advised one is never huge; one more so an aligned run fits), its
    pages touched now with ``fill(n)`` bytes (zeros when None). The writer's
    payload and the read-back's buffer: O_DIRECT gains from huge pages both ways."""
    whole = -(-size // HUGE_PAGE) * HUGE_PAGE
    buf = mmap.mmap(-1, whole + HUGE_PAGE if huge_pages else size, flags=mmap.MAP_PRIVATE)
    offset = (-buffer_address(buf)) % HUGE_PAGE if huge_pages else 0
    advised = huge_pages and madvise_hugepage(buffer_address(buf) + offset, whole)
    for start in range_(0, size, _FILL_PIECE):  # first touch: pages come now
        piece = min(_FILL_PIECE, size - start)
        buf[offset + start:offset + start + piece] = \
            fill(piece) if fill is not None else b"\0" * piece
    return buf, offset, advised


class Payload(object):
    """A page-aligned, random, per-chunk-stamped buffer of ``size`` bytes."""

    def __init__(self, size, random_bytes=os.urandom, huge_pages=True):
        if size <= 0 or size % STAMP_EVERY:
            raise ValueError("payload size must be a positive multiple of %d bytes"
                             % STAMP_EVERY)
        self.size = size
        self._map, self.offset, self.huge_pages_advised = huge_map(
            size, random_bytes, huge_pages)
        self.address = buffer_address(self._map) + self.offset
        #: what the writer writes: a zero-copy view of exactly ``size`` bytes
        self.buffer = buffer_from(self._map, self.offset, size)
        self._blocks = size // STAMP_EVERY
        self._stamped = None   # the 8 stamp bytes now in every block (None: random)

    def huge_page_bytes(self):
        """Bytes of the buffer in transparent huge pages (None: unknown)."""
        found = procinfo.huge_page_bytes(self.address)
        return None if found is None else min(found, self.size)

    def stamp(self, counter):
        """Make every block start with ``counter`` (8 bytes, little-endian)."""
        new = _STAMP.pack(counter)
        restamp(self._map, self.offset, self.offset + self.size, self._stamped, new,
                self._blocks)
        self._stamped = new

    def stamper(self, run, instance):
        """A stamp.Stamper over this buffer: per-block headers that say where
        each block belongs (it replaces ``stamp``'s counter in bytes 0-7)."""
        return Stamper(self._map, self.offset, self.size, run, instance)

    def close(self):
        """Unmap the buffer (left to the GC while a view of it is still alive,
        e.g. one held by the traceback of a failed write)."""
        try:
            getattr(self.buffer, "release", lambda: None)()  # Python 3's memoryview
            self._map.close()
        except BufferError:  # pragma: no cover - Python 3 only
            pass
