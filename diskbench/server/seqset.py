"""The set of sequence numbers seen from one client, as sorted disjoint ranges.

Dedup by membership rather than by a high-water mark: a peer that claims a
client's name and sends a large seq cannot make the real client's later
messages look like duplicates (they are not in the set, so they are recorded).
A client's seqs arrive in order with gaps only where it dropped messages, so
the set stays a handful of ranges; ``MAX_RANGES`` bounds what a hostile peer
can make it hold.
"""
import bisect

#: Most disjoint ranges kept per client; a seq that would need more is refused.
MAX_RANGES = 10000


class SeqSet(object):
    def __init__(self):
        self.starts = []   # range starts, ascending
        self.ends = []     # inclusive range ends, same order
        self.high = 0      # highest seq ever added

    def __contains__(self, seq):
        i = bisect.bisect_right(self.starts, seq) - 1
        return i >= 0 and seq <= self.ends[i]

    def __len__(self):
        return len(self.starts)

    def can_add(self, seq):
        """False when ``seq`` would open a new range and MAX_RANGES are in use."""
        if len(self.starts) < MAX_RANGES or seq in self:
            return True
        i = bisect.bisect_right(self.starts, seq) - 1
        touches_left = i >= 0 and self.ends[i] + 1 == seq
        touches_right = i + 1 < len(self.starts) and self.starts[i + 1] == seq + 1
        return touches_left or touches_right

    def add(self, seq):
        """Add ``seq``; True if it was new."""
        if seq in self:
            return False
        self.high = max(self.high, seq)
        i = bisect.bisect_right(self.starts, seq) - 1
        joins_left = i >= 0 and self.ends[i] + 1 == seq
        joins_right = i + 1 < len(self.starts) and self.starts[i + 1] == seq + 1
        if joins_left and joins_right:
            self.ends[i] = self.ends[i + 1]
            del self.starts[i + 1]
            del self.ends[i + 1]
        elif joins_left:
            self.ends[i] = seq
        elif joins_right:
            self.starts[i + 1] = seq
        else:
            self.starts.insert(i + 1, seq)
            self.ends.insert(i + 1, seq)
        return True
