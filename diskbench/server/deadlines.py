"""Deadlines looked at when they come, not by a scan of everything watched.

The main loop must notice a silent client (registry.check_liveness) and a
silent connection (Master._tick) among thousands, every second, without
walking them all: a walk of thousands of clients under the registry's lock
holds up every handler thread. Each key has at most one live entry in a heap; moving
a deadline later (every message does) costs a dict lookup and no push: the
entry fires at the old time, the caller looks at the key, finds it still
alive and watches it again at its real deadline. So each key costs one heap
operation per timeout, whatever its message rate, and an entry that comes
too early (a deadline moved by a server pause) is harmless. Not thread-safe:
callers hold their own lock.
"""
import heapq


class Deadlines(object):
    def __init__(self):
        self._heap = []               # (due, key); stale when _due[key] differs
        self._due = {}                # key -> due of its live entry

    def __len__(self):
        return len(self._due)

    def watch(self, key, due):
        """Have ``key`` come out of ``due_now`` by ``due`` (no-op when its
        entry already comes no later)."""
        old = self._due.get(key)
        if old is not None and old <= due:
            return
        self._due[key] = due
        heapq.heappush(self._heap, (due, key))

    def forget(self, key):
        self._due.pop(key, None)

    def due_now(self, now):
        """The keys whose entry came (each once, then unwatched): look at each
        and ``watch`` it again if it lives on."""
        out = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, key = heapq.heappop(heap)
            if self._due.get(key) == due:
                del self._due[key]
                out.append(key)
        return out
