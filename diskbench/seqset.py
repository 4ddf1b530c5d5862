"""The set of sequence numbers seen from one client, as sorted disjoint ranges.

Dedup by membership rather than by a high-water mark: a peer that claims a
client's name and sends a large seq cannot make the real client's later
messages look like duplicates (they are not in the set, so they are recorded).
A client's seqs arrive in order with gaps only where it dropped messages, so
the set stays a handful of ranges; ``MAX_RANGES`` bounds what a hostile peer
can make it hold. At the cap the set degrades, it never refuses: the two
lowest ranges are merged (``compact``), so the oldest gap counts as seen. A
gap is messages the client dropped (they never come; a resend after an outage
is of its newest, unacknowledged ones), so every later message is still
recorded and the set never grows past the cap; ``compacted`` counts the
merges for the report.
"""
import bisect

#: Most disjoint ranges kept per client; at the cap the oldest gap is merged away.
MAX_RANGES = 10000


class SeqSet(object):
    def __init__(self):
        self.starts = []   # range starts, ascending
        self.ends = []     # inclusive range ends, same order
        self.high = 0      # highest seq ever added
        self.compacted = 0  # gaps merged away at the cap (compact)

    def __contains__(self, seq):
        if seq > self.high:
            return False      # the common case: the next message of a client
        i = bisect.bisect_right(self.starts, seq) - 1
        return i >= 0 and seq <= self.ends[i]

    def __len__(self):
        return len(self.starts)

    def compact(self):
        """Merge the two lowest ranges (their gap now counts as seen)."""
        self.ends[0] = self.ends[1]
        del self.starts[1]
        del self.ends[1]
        self.compacted += 1

    def add(self, seq):
        """Add ``seq``; True if it was new."""
        ends = self.ends
        if ends and seq == self.high + 1 and ends[-1] == self.high:
            ends[-1] = self.high = seq    # the next in order: the last range grows
            return True
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
            if len(self.starts) >= max(MAX_RANGES, 2):
                self.compact()
                if seq in self:   # it was in the oldest gap: new all the same
                    return True
                i = bisect.bisect_right(self.starts, seq) - 1
            self.starts.insert(i + 1, seq)
            self.ends.insert(i + 1, seq)
        return True
