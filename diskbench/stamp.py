"""Block stamps: the header at the start of every 4 KiB block the writer
writes, and how a reader tells what a block it reads back is.

Layout (little-endian, 38 bytes; the rest of the block is the payload's random
fill)::

    0   4s   magic b"DBK1"
    4   u64  run: the first 8 bytes of sha1(the run id of the server's go)
    12  u64  writer: from the client's instance id (random per client process,
             sent in its hello), so a client restarted under the same name in
             the same run is told apart
    20  u32  block index in its chunk
    24  u32  file index (diskbench-NAME-PID-N.dat: N)      } the per-chunk
    28  u32  chunk index in its file                         } fields
    32  u16  field check: crc32 of bytes 24-31, low 16 bits
    34  u32  block check: crc32 of the block with bytes 24-37 taken as zero

A block's place in its file is ``chunk * chunk_bytes + block * BLOCK``, so a
reader that knows the chunk size knows where every stamped block belongs.
File, chunk and block index make every block of a run unique (no dedup), and
the body is random (no compression).

Stamping costs nearly nothing: it runs between two timed writes, outside the
timer but inside the perf interval's wall time. A crc32 of every block per
chunk in a Python loop is far too slow for that. Instead only the
per-chunk fields change from one chunk to the next, and they are the same in
every block of a chunk: the block check leaves them out, so it is computed
once per place in the buffer (at start) and never again, and the 2-byte field
check covers them. A stamp is one extended-slice assignment
(``buf[k::4096] = byte * blocks``, a C loop) per field byte that changed:
usually the chunk index's low byte and the two field-check bytes. What the
split misses: a corruption confined to bytes 24-31 of a block has a 1 in
65,536 chance of passing the field check; such a block then still fails the
comparison with the place it was read from (misplaced or stale, never OK).
"""
import hashlib
import os
import struct
import zlib

from diskbench.compat import range_
from diskbench.protocol import BAD_KINDS

BLOCK = 4096
MAGIC = b"DBK1"
HEADER = struct.Struct("<4sQQIII")     # magic .. chunk index: 32 bytes
FIELDS_AT, FIELDS_END = 24, 32         # the per-chunk fields
FIELD_CHECK = struct.Struct("<H")
BLOCK_CHECK = struct.Struct("<I")
FIELD_CHECK_AT = 32
CHECK_AT = 34
HEADER_BYTES = 38
_SKIPPED = b"\0" * (HEADER_BYTES - FIELDS_AT)   # what the block check takes as zero

# What a block read back is: OK, or one of the protocol's BAD_KINDS:
# corrupt    a check fails, or no magic: the bytes are not what was written
# misplaced  a valid block of this run and writer, stamped for another place
#            (of this file, or of a later one)
# stale      a valid block of an earlier file, or of another run or writer
# missing    all zeros (never written), or beyond the end of a short file
OK = "ok"
CORRUPT, MISPLACED, STALE, MISSING = BAD_KINDS


def kinds_text(by_kind):
    """'2 corrupt, 1 stale': the bad blocks of ``by_kind`` (kind -> count, as a
    readback message's fields or a client's totals), kinds with none left out."""
    return ", ".join("%d %s" % (by_kind[k], k) for k in BAD_KINDS if by_kind[k])


def key_of(text):
    """The 8-byte key of a run id or a client's instance id (text)."""
    data = text.encode("utf-8") if not isinstance(text, bytes) else text
    return struct.unpack("<Q", hashlib.sha1(data).digest()[:8])[0]


def new_instance():
    """A random 64-bit writer instance id."""
    return struct.unpack("<Q", os.urandom(8))[0]


def block_check(block):
    """The block check of ``block`` (4096 bytes): crc32 with bytes 24-37 as zero."""
    crc = zlib.crc32(_SKIPPED, zlib.crc32(block[:FIELDS_AT]))
    return zlib.crc32(block[HEADER_BYTES:], crc) & 0xffffffff


def field_check(fields):
    """The field check of the 8 bytes of per-chunk fields."""
    return zlib.crc32(fields) & 0xffff


class Stamper(object):
    """Stamps the payload buffer ``buf`` (an mmap) in ``[offset, offset+size)``."""

    def __init__(self, buf, offset, size, run, instance):
        self.buf, self.start, self.end = buf, offset, offset + size
        self.blocks = size // BLOCK
        self.run, self.instance = run, instance
        fields = b"\0" * (FIELDS_END - FIELDS_AT)
        tail = fields + FIELD_CHECK.pack(field_check(fields))
        for i in range_(self.blocks):
            at = offset + i * BLOCK
            buf[at:at + FIELDS_AT] = HEADER.pack(MAGIC, run, instance, i, 0, 0)[:FIELDS_AT]
            buf[at + FIELDS_AT:at + CHECK_AT] = tail
            buf[at + CHECK_AT:at + HEADER_BYTES] = BLOCK_CHECK.pack(
                block_check(buf[at:at + BLOCK]))
        self.now = tail                 # bytes 24-33 of every block

    def stamp(self, file_index, chunk_in_file):
        """Make every block say chunk ``chunk_in_file`` of file ``file_index``."""
        fields = struct.pack("<II", file_index, chunk_in_file)
        new = fields + FIELD_CHECK.pack(field_check(fields))
        restamp(self.buf, self.start + FIELDS_AT, self.end, self.now, new, self.blocks)
        self.now = new


def restamp(buf, first, end, old, new, blocks):
    """Byte k of ``new`` at ``first + k`` of every BLOCK up to ``end``, only
    where it differs from ``old`` (None: every byte): a chunk's stamp changes
    in a byte or two, so the rest of the buffer is not touched."""
    for k in range_(len(new)):
        byte = new[k:k + 1]
        if old is None or byte != old[k:k + 1]:
            buf[first + k:end:BLOCK] = byte * blocks


class Expected(object):
    """What a reader expects of the blocks of one file."""

    def __init__(self, run, instance, file_index, chunk_bytes):
        self.run, self.instance = run, instance
        self.file_index, self.chunk_bytes = file_index, chunk_bytes

    def place(self, offset):
        """(chunk in file, block in chunk) of the block at file ``offset``."""
        return offset // self.chunk_bytes, (offset % self.chunk_bytes) // BLOCK

    def describe(self, offset):
        chunk, block = self.place(offset)
        return "run %016x writer %016x file %d chunk %d block %d" % (
            self.run, self.instance, self.file_index, chunk, block)


def _unpack(block):
    """(magic, run, instance, block, file, chunk) of a block's header."""
    return HEADER.unpack(block[:FIELDS_END])


def checks_pass(block):
    """Both checks of a stamped block hold."""
    return BLOCK_CHECK.unpack(block[CHECK_AT:HEADER_BYTES])[0] == block_check(block) \
        and FIELD_CHECK.unpack(block[FIELD_CHECK_AT:CHECK_AT])[0] == \
        field_check(block[FIELDS_AT:FIELDS_END])


def describe_found(block):
    """The stamp a block carries, as text (for a bad block's report)."""
    if len(block) < BLOCK:
        return "end of file (%d bytes)" % len(block)
    if not any(bytearray(block[:HEADER_BYTES])):
        return "zeros"
    magic, run, instance, blk, findex, chunk = _unpack(block)
    if magic != MAGIC:
        return "no stamp"
    return "run %016x writer %016x file %d chunk %d block %d (checks %s)" % (
        run, instance, findex, chunk, blk, "ok" if checks_pass(block) else "FAIL")


def classify(block, expected, offset):
    """The kind (OK or one of BAD_KINDS) of ``block`` (4096 bytes, or fewer
    at a short file's end) read at file ``offset``."""
    if len(block) < BLOCK:
        return MISSING
    magic, run, instance, blk, findex, chunk = _unpack(block)
    if magic != MAGIC:
        return MISSING if not any(bytearray(block)) else CORRUPT
    if not checks_pass(block):
        return CORRUPT
    if run != expected.run or instance != expected.instance or \
            findex < expected.file_index:
        return STALE
    if findex != expected.file_index or (chunk, blk) != expected.place(offset):
        return MISPLACED
    return OK
