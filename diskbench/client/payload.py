"""The bytes the writer writes: incompressible, never repeated, nearly free.

One page-aligned buffer (an anonymous mmap, which O_DIRECT needs) is filled
with os.urandom once. Before each chunk, ``stamp(n)`` makes the first 8 bytes
of every 4 KiB block the chunk number (little-endian), so no two chunks (and
no two blocks anywhere in the run) are byte-identical, and deduplication on
the target cannot inflate the result. Compression cannot either: the rest of
every block is random.

Stamping must cost nothing next to the write it precedes (it runs between two
timed writes, so its time is inside the throughput figure). A Python loop of
``struct.pack_into`` per block took 0.3 ms (3.11) / 0.7 ms (2.7) per 10 MiB
chunk, 5-10% of a 10 MiB write at 1.5 GiB/s. Instead, one extended-slice
assignment (``buf[k::4096] = byte * blocks``, a C loop) sets byte ``k`` of every
block at once, and only the bytes that differ from the previous stamp are
set: for consecutive chunk numbers that is usually byte 0 alone, ~20 us per
10 MiB (>400 GiB/s) on both Pythons. os.urandom itself runs at ~250 MiB/s,
slower than many disks, which is why it is called once and not per chunk.
"""
import mmap
import os
import struct

from diskbench.compat import range_

STAMP_EVERY = 4096          # one stamp per 4 KiB block (a common dedup block size)
_STAMP = struct.Struct("<Q")
_FILL_PIECE = 1 << 20       # fill with urandom 1 MiB at a time


class Payload(object):
    """A page-aligned, random, per-chunk-stamped buffer of ``size`` bytes."""

    def __init__(self, size, random_bytes=os.urandom):
        if size <= 0 or size % STAMP_EVERY:
            raise ValueError("payload size must be a positive multiple of %d bytes"
                             % STAMP_EVERY)
        self.size = size
        self.buffer = mmap.mmap(-1, size)  # anonymous maps are page aligned
        for offset in range_(0, size, _FILL_PIECE):
            piece = min(_FILL_PIECE, size - offset)
            self.buffer[offset:offset + piece] = random_bytes(piece)
        self._blocks = size // STAMP_EVERY
        self._stamped = None   # the 8 stamp bytes now in every block (None: random)

    def stamp(self, counter):
        """Make every block start with ``counter`` (8 bytes, little-endian)."""
        new, old, buf, blocks = _STAMP.pack(counter), self._stamped, self.buffer, \
            self._blocks
        for k in range_(_STAMP.size):
            byte = new[k:k + 1]
            if old is None or byte != old[k:k + 1]:
                buf[k::STAMP_EVERY] = byte * blocks  # byte k of every block, in C
        self._stamped = new

    def close(self):
        """Unmap the buffer (left to the GC while a view of it is still alive,
        e.g. one held by the traceback of a failed write)."""
        try:
            self.buffer.close()
        except BufferError:  # pragma: no cover - Python 3 only
            pass
