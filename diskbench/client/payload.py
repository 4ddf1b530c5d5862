"""The bytes the writer writes: incompressible, never repeated, nearly free.

One page-aligned buffer (an anonymous mmap, which O_DIRECT needs) is filled
with os.urandom once. Before each chunk, ``stamp(n)`` writes the chunk number
into the first 8 bytes of every 4 KiB block, so no two chunks (and no two
blocks anywhere in the run) are byte-identical, and deduplication on the
target cannot inflate the result. Compression cannot either: the rest of every
block is random. Stamping costs a few microseconds per MiB, so data
generation never limits throughput (os.urandom itself runs at ~250 MiB/s,
slower than many disks, which is why it is called once and not per chunk).
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
        self._offsets = range_(0, size, STAMP_EVERY)

    def stamp(self, counter):
        """Make the buffer unique for chunk number ``counter``."""
        pack_into, buf = _STAMP.pack_into, self.buffer
        for offset in self._offsets:
            pack_into(buf, offset, counter)

    def close(self):
        """Unmap the buffer (left to the GC while a view of it is still alive,
        e.g. one held by the traceback of a failed write)."""
        try:
            self.buffer.close()
        except BufferError:  # pragma: no cover - Python 3 only
            pass
