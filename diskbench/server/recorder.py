"""The single writer of LOG_DIR/server.log and LOG_DIR/perf.jsonl.

Handlers and the main loop never touch files: they put log lines and message
records on one queue; one thread writes them in batches, one ``os.write`` per
file per batch, then ``fdatasync``s perf.jsonl (``SYNC``: fsync where there is
none) and stats its path (still the file it wrote? one ``os.stat``), and only
then runs each batch's ack callbacks, so an ack means "on the device, in the
file at LOG_DIR/perf.jsonl": neither a killed server nor a filesystem that
fails or loses power loses a record acknowledged. server.log lines are not
synced per batch. ``close()`` drains the queue and fsyncs both files.

An ack is a promise about the disk: a callback runs only once the records
queued with and before it are in perf.jsonl, synced (and, when the batch is
written whole, its server.log lines too). When a write fails (ENOSPC, EIO,
EROFS; tmpfs and others write short first, then ENOSPC) the callbacks whose
records all made it run once those are synced, the records of a handler's batch written without the rest of
it are cut back off the file (they share one ack: on disk and never acked,
their client would keep them too, the same seq twice), and the rest of the
batch is held in memory with its other callbacks, said at once (stderr,
the console, server.log once it can be written), and the writer takes nothing
more from the queue: producers then wait for room (QUEUE_MAX), so what the
server received stays in memory, bounded, and nothing more is acknowledged.
The retry rule: every RETRY_S the held bytes are written again from where
the failed write stopped (a line written in part is completed, never glued
to another or written twice); once all are on disk the held callbacks run
(the acks go out), recovery is said, and the queue is written on in order.
A failed fdatasync is such a failure too: what was written since the last
good sync is not known to be on disk (the kernel may have dropped it, and a
later sync would not say so), so it is cut off perf.jsonl (``ftruncate`` to
the last synced size; if that fails, before the next write) and held, to be
written again: never acked unsynced, never in the file twice. So is a
perf.jsonl no longer at its path (the log dir removed, the file replaced: a
removed file takes writes and syncs without error): the batch is held whole,
the acknowledged records that were in the removed file are counted as lost
(``acked_lost``, by client in ``lost_by``; the report says them and the exit
code is not OK), and the retry opens the files again at their paths; a
removed log dir is not made again (said: the operator makes it, and the run
goes on). At close a last try is made; what still cannot be written is counted
(``unwritten``: records received, never written, never acknowledged; their
clients keep them) and a fragment at a file's end is cut back to its last
whole line, so a restart appends on a fresh line. ``trouble()`` tells the
report both kinds of episode.

The writer thread cannot die silently: an item that cannot be written (it
cannot be serialised, or anything unexpected) is counted in ``failures``,
said once on stderr and in server.log, skipped (its ack is not sent: it was
not written), and the thread goes on; ``alive()`` tells whether it still
runs and ``trouble()`` puts both kinds of failure into the report. Log lines
pass through ``protocol.safe_text`` (``SafeFormatter``): a peer's text never
forges a line and always encodes.

Back-pressure: at most QUEUE_MAX items wait; a handler that would queue
more waits (so it stops reading its socket and TCP slows that client down)
instead of the server swelling. Log lines never wait (the recorder's own and
the main loop's must not block on it). How long records waited before being
written is measured: over FALL_BEHIND_S the server says it fell behind (once
on the console, and in the report with the worst wait). The main loop also
looks, every tick, at the oldest record not yet written (``check_lag``), so a
writer stuck in a write or starved is said while it lasts.

``read_back()`` reads perf.jsonl of an unfinished run (server restart): a torn
last line (a crash mid-write, power loss) is cut off with a warning, any other
unreadable line is skipped with a warning.
"""
import collections
import errno
import json
import logging
import os
import sys
import threading
import time
import traceback

from diskbench import protocol, runclock
from diskbench.cli import UtcFormatter
from diskbench.compat import as_bytes, monotonic
from diskbench.metrics import utc
from diskbench.report import series

SERVER_LOG = "server.log"
PERF_LOG = series.PERF_LOG
#: Most queue items written between two flushes.
BATCH_MAX = 1000

_STOP = object()
#: Most items (records, and the few log lines among them) waiting to be
#: written; beyond it, handlers wait (back-pressure).
QUEUE_MAX = 20000
#: A record that waited longer than this to be written means the server falls
#: behind what its clients send: said once live, and in the report.
FALL_BEHIND_S = 1.0
#: Once woken by a record, the writer waits this long for more before writing
#: (group commit): at thousands of clients one wake-up, one write and one run
#: of callbacks then serve dozens of records, where it was one per record and
#: the thread handoffs cost more than the work. Acks are that much later.
GATHER_S = 0.005
#: A write that failed (disk full, EIO, read-only) is tried again this often,
#: from where it stopped; nothing is acknowledged meanwhile (see above).
RETRY_S = 1.0
#: At the end of a run (``drain``), a log dir that cannot be written is tried
#: this long before the report is written with what is not on disk.
HELD_DRAIN_S = 5.0
#: A perf.jsonl found gone from its path is read back (through the descriptor
#: still open on it) to count the acknowledged records lost with it; up to
#: this size its lines are also parsed to name the clients they were from.
LOST_NAMES_MAX_BYTES = 64 << 20

#: What makes perf.jsonl's records durable before they are acknowledged:
#: fdatasync (the data and the size, what reading them back needs), fsync
#: where the platform has no fdatasync.
SYNC = getattr(os, "fdatasync", None) or os.fsync

_LOG, _RECORD, _MARK, _CALL, _RAW = 1, 2, 3, 4, 5

#: Debug only (make bench-server profiling, never set in production): a
#: directory where each handler thread and the recorder thread dump their
#: cProfile stats when they end (scripts/profile_merge.py adds them up).
PROFILE_DIR = os.environ.get("DISKBENCH_PROFILE_DIR") or None


def run_profiled(tag, func, *args):
    """``func(*args)``, under cProfile when PROFILE_DIR is set (debug)."""
    if PROFILE_DIR is None:
        return func(*args)
    import cProfile
    prof = cProfile.Profile()
    try:
        return prof.runcall(func, *args)
    finally:
        prof.dump_stats(os.path.join(PROFILE_DIR, "%s-%d.prof" % (tag, os.getpid())))


class _Fifo(object):
    """The recorder's queue: a deque, one lock, a condition for the consumer
    and one for producers. Items wait while fewer than ``limit`` are queued;
    a record's producer waits for room beyond it (log lines never wait).

    A put takes no lock unless it must wait for room or wake the consumer:
    a deque's append and extend are atomic under the GIL, and on Python 2.7
    every lock acquire gives the GIL away, so a handler that took the
    queue's lock per message went to the back of the crowd waiting for the
    GIL once more per message (docs/SCALING.md). The consumer cannot miss
    an item: it says it is idle,
    looks again, and only then waits, all under the lock; a producer that
    appended looks at ``idle`` after and, if set, notifies under the lock
    (so after the consumer is registered as waiting).

    Every wait here is untimed: on Python 2.7 a wait with a timeout polls
    (sleeps up to 50 ms, takes the GIL, looks again), and thousands of
    handler threads polling for room starve the one thread that makes it: a
    2.7 server that once fell behind never caught up (docs/SCALING.md).
    The consumer notifies as soon as there is room (``take``)."""

    def __init__(self, limit):
        self.items = collections.deque()
        lock = threading.Lock()
        self.ready = threading.Condition(lock)   # the consumer waits for items
        self.room = threading.Condition(lock)    # producers wait for room
        self.limit = limit
        self.idle = False             # the consumer waits (or is about to) for items
        self.room_waiters = 0         # producers waiting for room now
        self.full_waits = 0           # times a producer had to wait for room

    def put(self, item, wait=False):
        """One item; a record (``wait``) waits for room as ``put_many`` does."""
        if wait:
            return self.put_many([item])
        self.items.append(item)
        self._wake_consumer()

    def put_many(self, items):
        """Queue several records at once, waiting for room first while the
        queue is full: one batch may go past the limit, the next producer
        then waits."""
        if len(self.items) >= self.limit:
            with self.room:
                self._wait_for_room()
                self.items.extend(items)
                self._let_one_in()            # the next one, while there is room
        else:
            self.items.extend(items)
        self._wake_consumer()

    def _wake_consumer(self):
        if self.idle:                 # read after the append: see the class doc
            with self.ready:
                self.ready.notify()

    def _wait_for_room(self):
        """Lock held. Producers are let in one at a time, each waking the
        next while there is room: waking them all at each take (thousands
        with a big fleet) would have them queue for the GIL ahead of the
        consumer, slowing it most when it is already behind."""
        if len(self.items) < self.limit:
            return
        self.full_waits += 1
        self.room_waiters += 1
        try:
            while len(self.items) >= self.limit:
                self.room.wait()
        finally:
            self.room_waiters -= 1

    def take(self, most, wait=True):
        """Up to ``most`` items, waiting for the first (unless not ``wait``)."""
        with self.ready:
            while not self.items and wait:
                self.idle = True
                if not self.items:    # an item appended before idle was set
                    self.ready.wait()
                self.idle = False
            batch = [self.items.popleft() for _ in range(min(most, len(self.items)))]
            self._let_one_in()        # room again: the first waiting producer
            return batch

    def _let_one_in(self):
        """Lock held: wake one producer waiting for room, if there is room."""
        if self.room_waiters and len(self.items) < self.limit:
            self.room.notify()

    def __len__(self):
        return len(self.items)


class Recorder(object):
    def __init__(self, log_dir, stderr=None):
        self.log_dir = log_dir
        self.stderr = stderr or sys.stderr
        self.queue = _Fifo(QUEUE_MAX)
        self.worst_wait_s = 0.0       # longest a record waited to be written
        self.behind_since = None      # monotonic() when it first fell behind
        self.writing_since = None     # queued time of the oldest record being written
        self._said = threading.Lock()  # "falling behind": said once, by either thread
        self.thread = None
        self.files = {}               # name -> file descriptor (O_APPEND)
        self.held = None              # _Held: a failed write's rest, until written
        self._closing = threading.Event()   # close() began: wakes a held writer
        self.episodes = 0             # times writing failed (and was held)
        self.first_error = None       # text of the first failed write
        self.first_failed_at = None   # wall time of the first failed write
        self.longest_held_s = 0.0     # longest a held batch waited to be written
        self.recovered = 0            # held writes that were written in the end
        self.unwritten = 0            # records never written (given up at close)
        self.tails = {}               # name -> bytes after the last newline on disk
        self.lost = {}                # name -> lines with no file to go to
        self.write_fd = os.write      # tests put a failing one here
        self.sync_fd = SYNC           # and a failing fdatasync here
        self.ids = {}                 # name -> (st_dev, st_ino) of the file opened at its path
        self.synced = 0               # perf.jsonl's size at its last good sync
        self.cut_due = False          # bytes past ``synced`` to cut before the next write
        self.gone = {}                # name -> why its file must be opened again
        self.acked_lost = 0           # acked records in a perf.jsonl found gone
        self.lost_by = {}             # client name -> of those (None: not counted)
        self.failures = 0             # items skipped by an unexpected error
        self.first_failure = None     # text of the first such error

    def open(self):
        """Open (append) both files; raises IOError/OSError if the dir is unusable."""
        for name in (SERVER_LOG, PERF_LOG):
            self._open(name)

    def _open(self, name):
        """Open file ``name`` at its path (append; perf.jsonl also for reading,
        to count what a removal took) and note which file it is."""
        flags = os.O_APPEND | os.O_CREAT | (os.O_RDWR if name == PERF_LOG else
                                            os.O_WRONLY)
        fd = os.open(os.path.join(self.log_dir, name), flags, 0o644)
        try:
            st = os.fstat(fd)
        except (IOError, OSError):
            os.close(fd)
            raise
        self.files[name] = fd
        self.ids[name] = (st.st_dev, st.st_ino)
        self.gone.pop(name, None)
        if st.st_size == 0:
            self.tails[name] = 0
        if name == PERF_LOG:
            self.synced = st.st_size  # (a previous server synced it before its acks)
            self.cut_due = False

    def start(self):
        self.thread = threading.Thread(target=run_profiled, args=("recorder", self._run),
                                       name="recorder")
        self.thread.daemon = True
        self.thread.start()

    def alive(self):
        """Is the writer thread running (False before start and after close)?"""
        return self.thread is not None and self.thread.is_alive()

    # --- producers (any thread) ---------------------------------------------------
    def log_line(self, text):
        self.queue.put((_LOG, text, None, None))

    def record(self, obj, on_written=None, key=None):
        """Queue one perf.jsonl object; ``on_written()`` runs after it is flushed.

        Of several callbacks with the same ``key`` in one batch only the last
        runs (one ack per connection per batch, naming the highest seq).
        Waits while QUEUE_MAX items are queued (back-pressure).
        """
        self.queue.put((_RECORD, obj, (key, on_written) if on_written else None,
                        monotonic()), wait=True)

    def submit(self, lines, on_written, key=None):
        """Queue record ``lines`` (``protocol.record_line``, possibly none) and
        run ``on_written()`` once they, and all queued before them, are
        written: one queue operation and one callback for a handler's batch."""
        if not lines:
            return self.call_after(on_written, key)
        now = monotonic()
        items = [(_RAW, line, None, now) for line in lines]
        items[-1] = (_RAW, lines[-1], (key, on_written), now)
        self.queue.put_many(items)

    def full(self):
        """Is the queue at QUEUE_MAX (a record's producer would wait)? The
        I/O threads then stop reading rather than wait (ioloop.py)."""
        return len(self.queue.items) >= self.queue.limit

    def call_after(self, on_written, key=None):
        """Run ``on_written()`` once everything queued before it is written
        (the same per-``key`` rule as ``record``)."""
        self.queue.put((_CALL, None, (key, on_written), None))

    def drain(self, timeout=30.0):
        """Wait until everything queued so far is written (or failed to be).

        A log dir that cannot be written is waited for HELD_DRAIN_S at most
        (its retries go on meanwhile). Returns how many records were not
        written at the deadline (0: done): those queued and, while a write
        is held, those it holds; log lines and marks are not records, and
        the figure is the one ``_give_up`` says at close if nothing more
        comes meanwhile.
        """
        if self.thread is None or not self.thread.is_alive():
            return self.pending_records()
        done = threading.Event()
        self.queue.put((_MARK, done, None, None))
        start = monotonic()
        while not done.wait(min(RETRY_S, timeout)):
            now = monotonic()
            if now - start >= timeout or (self.held is not None and
                                          now - start >= HELD_DRAIN_S):
                break
        if done.is_set():
            return 0
        return self.pending_records()

    def pending_records(self):
        """Records received and not written: queued, or held by a failed
        write (never acknowledged). Counts the queue (O(n); at the end)."""
        return self.held_records() + _records_in(self._queued())

    def _queued(self):
        """A copy of the queue's items (taken whole under the GIL)."""
        while True:
            try:
                return list(self.queue.items)
            except RuntimeError:      # (mutated while copied: look again)
                continue

    def unwritten_text(self, count, waited_s):
        """The report's sentence for ``count`` items ``drain`` left unwritten."""
        held = self.held
        if held is not None:
            return ("%d records received are not in %s: the log dir cannot be written "
                    "(%s), so they were never acknowledged and their clients keep them "
                    "(client-NAME.undelivered.jsonl); this report counts them from "
                    "memory" % (count, os.path.join(self.log_dir, PERF_LOG),
                                held.error))
        return ("%d records received were still waiting to be written to perf.jsonl "
                "after %g s (the log dir is too slow); this report counts them, "
                "perf.jsonl does not" % (count, waited_s))

    def lost_text(self):
        """The report's sentence for acknowledged records lost with a
        perf.jsonl removed or replaced during the run."""
        by = sorted(self.lost_by.items(), key=lambda kv: (-kv[1], kv[0]))
        named = "; by client: %s%s" % (", ".join(
            "%s %d" % (protocol.safe_text(name), n) for name, n in by[:20]),
            ", ..." if len(by) > 20 else "") if by else ""
        return ("%d records acknowledged as on disk were lost: %s was removed or "
                "replaced during the run and they were in it (they are in no file; "
                "their clients deleted their copies; this report counts them from "
                "memory)%s" % (self.acked_lost, os.path.join(self.log_dir, PERF_LOG),
                               named))

    def held_records(self):
        """perf.jsonl lines waiting in a held (failed) write, not acknowledged."""
        held = self.held
        return held.records() if held is not None else 0

    def close(self, timeout=30.0):
        """Write everything queued (a held write gets one last try), fsync and
        close the files (what the report needs on disk was drained before:
        see ``drain``)."""
        self._closing.set()
        if self.thread is not None:
            self.queue.put((_STOP, None, None, None))
            self.thread.join(timeout)
            self.thread = None
        else:
            if self.held is None or self._write_held():
                self._write_batch(self._drain())
            if self.held is not None and not self._write_held():
                self._give_up()
        for fd in self.files.values():
            try:
                os.fsync(fd)
            except (IOError, OSError) as exc:
                self._failed(exc, "fsync")
            os.close(fd)
        self.files = {}
        self.gone = {}

    # --- the writer thread ------------------------------------------------------------
    def _drain(self):
        """What is queued now (no waiting), in batches of BATCH_MAX."""
        out = []
        while len(self.queue):
            out.extend(self.queue.take(BATCH_MAX))
        return out

    def _run(self):
        stopping = False
        while True:
            if self.held is not None:
                # The retry rule: nothing more is taken (producers wait for
                # room) until the held write is on disk. close() wakes it.
                if not stopping:
                    self._closing.wait(RETRY_S)
                if self._write_held_safely():
                    continue
                if stopping or self._closing.is_set():
                    self._give_up()
                    return
                continue
            if stopping:
                batch = self.queue.take(BATCH_MAX, wait=False)
                if not batch:
                    return
            else:
                batch = self.queue.take(BATCH_MAX)
            if len(batch) < BATCH_MAX and GATHER_S > 0 and not stopping and not any(
                    item[0] is _STOP or item[0] == _MARK for item in batch):
                # Let the batch fill: one write and one wake-up for many
                # records instead of one per record (an ack waits this long more).
                time.sleep(GATHER_S)
                batch.extend(self.queue.take(BATCH_MAX - len(batch), wait=False))
            if any(item[0] is _STOP for item in batch):
                stopping = True
            self._write_batch_safely([item for item in batch if item[0] is not _STOP])

    def _waited(self):
        """Account how long the oldest record of the batch written waited."""
        if self.writing_since is not None:
            self._behind(monotonic() - self.writing_since, "waited")

    def check_lag(self):
        """The main loop's look, every tick, at the records not yet written:
        a writer stuck in a write (a stalled log disk) or starved of the CPU
        is said live, not only once its batch is done. O(1). A held write
        (the log dir cannot be written) was said as such, not as this."""
        if self.held is not None:
            return
        oldest = self.writing_since
        items = self.queue.items
        if oldest is None and items:
            try:
                oldest = items[0][3]
            except IndexError:        # taken meanwhile
                oldest = None
        if oldest is not None:
            self._behind(monotonic() - oldest, "have waited")

    def _behind(self, wait, verb):
        """Account a record's wait (so far); over FALL_BEHIND_S say it, once."""
        if wait > self.worst_wait_s:
            self.worst_wait_s = wait
        if wait <= FALL_BEHIND_S or self.behind_since is not None:
            return
        with self._said:
            if self.behind_since is not None:
                return
            self.behind_since = monotonic()
        logging.getLogger("diskbench.server.event").warning(
            "the server is falling behind: records %s %.1f s to be written "
            "(acks are that late; see the report)", verb, wait)

    def falling_behind(self):
        """A sentence for the report when records waited over FALL_BEHIND_S."""
        if self.worst_wait_s <= FALL_BEHIND_S:
            return None
        return ("the server fell behind its clients: a record waited up to %.1f s to "
                "be written (and acknowledged); producers had to wait for room %d "
                "times" % (self.worst_wait_s, self.queue.full_waits))

    def _write_batch_safely(self, batch):
        """_write_batch that never raises: the thread must outlive any item."""
        queued = [item[3] for item in batch if item[3] is not None]
        self.writing_since = min(queued) if queued else None
        try:
            self._write_batch(batch)
        except Exception as exc:  # noqa: B902 - a bug: say it, count it, go on
            self._internal_failure(exc, len(batch))
            for item in batch:
                if item[0] == _MARK:
                    item[1].set()
        finally:
            self.writing_since = None

    def _internal_failure(self, exc, count=1):
        """Count ``count`` skipped items; say the first error on stderr and in
        server.log (one line each, encodable whatever the error says)."""
        self.failures += count
        if self.first_failure is not None:
            return
        where = traceback.extract_tb(sys.exc_info()[2])
        self.first_failure = protocol.safe_text("%s: %s%s" % (
            type(exc).__name__, exc, " (at %s:%d)" % tuple(where[-1][:2]) if where
            else ""))
        text = ("diskbench server: internal error in the recorder: %s; the item was "
                "skipped and the recorder goes on" % self.first_failure)
        try:  # ASCII: whatever the console's encoding, this line gets out
            self.stderr.write(text.encode("ascii", "backslashreplace").decode("ascii")
                              + "\n")
            self.stderr.flush()
        except Exception:  # noqa: B902 - stderr gone: the report still says it
            pass
        fd = self.files.get(SERVER_LOG)
        held = self.held
        if fd is not None and not (held is not None and SERVER_LOG in held.rest):
            try:  # (not after a held fragment: it would glue onto it)
                line = as_bytes(text + "\n")
                self._wrote(SERVER_LOG, line[:max(0, self.write_fd(fd, line))])
            except Exception:  # noqa: B902 - the report still says it
                pass

    def _line_of(self, kind, payload):
        """The bytes of one queue item's line (raises if it cannot be made)."""
        if kind == _RAW:
            return payload
        if kind == _LOG:
            return as_bytes(protocol.safe_text(payload.rstrip("\n")) + "\n")
        return as_bytes(json.dumps(payload, sort_keys=True, separators=(",", ":"),
                                   ensure_ascii=True, allow_nan=False) + "\n")

    def _write_batch(self, batch):
        # (start, end, callback): the perf.jsonl bytes of the batch from its
        # first record to its last, all of which it waits for
        waiting = []
        perf_bytes = segment = 0      # segment: where the next callback's records begin
        keys = {}
        lines = {SERVER_LOG: [], PERF_LOG: []}
        marks = []
        for kind, payload, on_written, _queued in batch:
            if kind == _MARK:
                marks.append(payload)
                continue
            if kind == _CALL:
                line = None
            else:
                try:
                    line = self._line_of(kind, payload)
                except Exception as exc:  # noqa: B902 - skip this item, not the batch
                    self._internal_failure(exc)
                    continue
            if line is not None:
                if kind == _LOG:
                    lines[SERVER_LOG].append(line)
                else:
                    lines[PERF_LOG].append(line)
                    perf_bytes += len(line)
            if on_written is not None:
                key, func = on_written
                if key is not None and key in keys:   # its later records: its end too
                    index = keys[key]
                    waiting[index] = (waiting[index][0], perf_bytes, func)
                else:
                    if key is not None:
                        keys[key] = len(waiting)
                    waiting.append((segment, perf_bytes, func))
                segment = perf_bytes
        held = _Held(waiting, marks, b"".join(lines[PERF_LOG]))
        if held.data:
            held.rest[PERF_LOG] = held.data
        if lines[SERVER_LOG]:
            held.rest[SERVER_LOG] = b"".join(lines[SERVER_LOG])
        if not self._push(held):
            self._hold(held)
            return
        self._waited()
        self._done(held)

    def _push(self, held):
        """Write what ``held`` has not written yet (records first: acks wait
        for them), make the records durable and check the files are still at
        their paths (``_commit``), then run the callbacks of the records
        thereby on the device. True once all of it is."""
        for name in (PERF_LOG, SERVER_LOG):
            data = held.rest.get(name)
            if not data:
                continue
            done = self._append_part(name, data, held)
            if done < len(data):
                held.rest[name] = data[done:]
            else:
                del held.rest[name]
        committed = self._commit(held)
        self._run_callbacks(held.take_written())
        return committed and not held.rest

    def _commit(self, held):
        """fdatasync perf.jsonl after ``held``'s records were written, then
        check that it is still the file at its path (one stat): only then is
        an ack true. A failure of either is a write failure (False): the bytes
        written since the last good sync are taken as not on disk, cut off
        (``_unsync``) and written again by the retry, never acknowledged
        before. server.log is checked when lines went to it, never synced
        per batch."""
        if held.perf_done > held.perf_synced:
            try:
                self.sync_fd(self.files[PERF_LOG])
            except (IOError, OSError) as exc:
                return self._unsync(held, "fdatasync failed: %s" % _why(exc))
            moved = self._moved(PERF_LOG)
            if moved:
                self._check_log()
                return self._unsync(held, self._file_gone(moved))
            self.synced += held.perf_done - held.perf_synced
            held.perf_synced = held.perf_done
        if held.log_written:
            held.log_written = False
            self._check_log()
        return True

    def _moved(self, name):
        """Why file ``name``'s descriptor is no longer the file at its path
        (removed, moved away, replaced), or None while it is. A stat that
        fails otherwise raises nothing: None (it is not known to be gone)."""
        try:
            st = os.stat(os.path.join(self.log_dir, name))
        except (IOError, OSError) as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return "removed or moved away"
            return None
        if (st.st_dev, st.st_ino) != self.ids.get(name):
            return "replaced by another file"
        return None

    def files_changed(self):
        """Each log the report stands on (perf.jsonl, server.log) that is no
        longer the file this recorder wrote at its path, with why: removed,
        replaced (another inode), or perf.jsonl cut below what was synced
        into it. One os.stat each, called once the report is written (never
        per message): between the last batch and the end nothing else looks.
        A file already found gone during the run is said by ``trouble``."""
        said = []
        for name in (PERF_LOG, SERVER_LOG):
            if name in self.gone or name not in self.files:
                continue
            moved = self._moved(name)
            if moved is None and name == PERF_LOG:
                try:
                    size = os.stat(os.path.join(self.log_dir, name)).st_size
                except (IOError, OSError):
                    size = None
                if size is not None and size < self.synced:
                    moved = "cut to %d of the %d bytes written" % (size, self.synced)
            if moved:
                said.append("%s (%s)" % (os.path.join(self.log_dir, name), moved))
        return said

    def _check_log(self):
        """server.log gone from its path: opened again there (or before its
        next write); the lines that went to the removed file are lost."""
        name = SERVER_LOG
        if name in self.gone or name not in self.files:
            return
        moved = self._moved(name)
        if not moved:
            return
        os.close(self.files.pop(name))
        self.gone[name] = moved
        try:
            self._open(name)
        except (IOError, OSError):
            pass                      # the next write tries again (and holds)

    def _file_gone(self, moved):
        """perf.jsonl was found gone from its path after a write: every record
        acknowledged into it is lost with it (counted, by client where it can
        be read back); the descriptor is closed, the file is opened again at
        its path before the next write. Returns the error, in words."""
        fd = self.files.pop(PERF_LOG)
        count, by_client = _count_records(fd, self.synced)
        os.close(fd)
        self.gone[PERF_LOG] = moved
        self.cut_due = False          # (nothing to cut in a new file)
        self.acked_lost += count
        for name, n in by_client.items():
            self.lost_by[name] = self.lost_by.get(name, 0) + n
        return ("perf.jsonl is no longer the file at its path (%s): the %d records "
                "acknowledged into it are lost with it" % (moved, count))

    def _unsync(self, held, error):
        """``held``'s records written since the last good sync are not known
        to be on disk: they go back to being held from there, and perf.jsonl
        is cut back to its last synced size now (or before its next write, if
        that fails too), so none is ever in it twice. Returns False."""
        held.error = error
        held.failed = held.failed or PERF_LOG
        held.perf_done = held.perf_synced
        held.rest[PERF_LOG] = held.data[held.perf_synced:]
        if PERF_LOG not in self.gone:
            self.cut_due = True
            self._cut_unsynced()
        return False

    def _cut_unsynced(self):
        """Cut perf.jsonl back to its last synced size; False if it cannot."""
        try:
            os.ftruncate(self.files[PERF_LOG], self.synced)
        except (IOError, OSError):
            return False
        self.cut_due = False
        return True

    def _ready(self, name):
        """Before a write to ``name``: open it again at its path if its file
        went away; cut unsynced bytes off perf.jsonl. Raises if it cannot."""
        if name in self.gone:
            self._open(name)
        if name == PERF_LOG and self.cut_due:
            os.ftruncate(self.files[name], self.synced)
            self.cut_due = False

    def _done(self, held):
        """Everything of a batch is on disk: run its callbacks (the acks), set
        its marks."""
        self._run_callbacks(func for _, _, func in held.waiting)
        for mark in held.marks:
            mark.set()

    @staticmethod
    def _run_callbacks(callbacks):
        for callback in callbacks:
            try:
                callback()
            except Exception:  # a callback must never kill the writer
                logging.getLogger("diskbench.server").exception("ack callback failed")

    def _append(self, name, data, held):
        """Append ``data`` to file ``name`` (one write, looped on short
        writes); returns how many bytes are on disk. A failure is noted in
        ``held`` (its error); what was written is kept, the rest is held."""
        if name not in self.gone and self.files.get(name) is None:
            # closed (or never opened): nowhere to go
            self.lost[name] = self.lost.get(name, 0) + data.count(b"\n")
            return len(data)
        done = 0
        if name == SERVER_LOG:
            held.log_written = True
        try:
            self._ready(name)
            fd = self.files[name]
            while done < len(data):
                n = self.write_fd(fd, data[done:])
                if n <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                self._wrote(name, data[done:done + n])
                done += n
        except (IOError, OSError) as exc:
            held.error = _why(exc)
            held.failed = held.failed or name   # the first (records come first)
        return done

    def _append_part(self, name, data, held):
        """Append ``data``, the next of ``held``'s bytes for file ``name`` (the
        first write of a batch, or a retry); returns how much of it stays on
        disk. A write of records that stops inside a handler's batch is cut
        back to where every record before has an ack that can be sent
        (``_cut_to_acks``); ``held.perf_done`` follows."""
        done = self._append(name, data, held)
        if name != PERF_LOG:
            return done
        total = held.perf_done + done
        if done < len(data):
            total = self._cut_to_acks(held, total)
        done, held.perf_done = total - held.perf_done, total
        return done

    def _cut_to_acks(self, held, done):
        """A write of ``held``'s records stopped after ``done`` of its bytes:
        cut perf.jsonl back to where every record before is one whose ack can
        be sent (the records of one handler's batch share one ack, so one
        written without the rest of its batch could be neither acked nor left:
        its client keeps it, and it would be there twice). Returns the bytes
        of the batch that stay on disk (``done`` if it cannot cut)."""
        cut = max(held.ack_boundary(done), held.perf_synced)   # (synced: stays)
        if cut < done and self._cut_back(PERF_LOG, done - cut):
            return cut
        return done                   # left as it is: read back, it is deduplicated

    def _cut_back(self, name, nbytes):
        """Take the last ``nbytes`` of file ``name`` off it, so it ends on a
        whole line; False if it cannot be done."""
        fd = self.files.get(name)
        if fd is None:
            return False
        try:  # the only writer of the file: its end is where we left it
            os.ftruncate(fd, os.fstat(fd).st_size - nbytes)
        except (IOError, OSError):
            return False
        self.tails[name] = 0          # a line boundary
        return True

    def _wrote(self, name, chunk):
        """Track the bytes after the file's last newline (a fragment to cut
        back if the rest can never be written)."""
        last = chunk.rfind(b"\n")
        self.tails[name] = len(chunk) - last - 1 if last >= 0 else \
            self.tails.get(name, 0) + len(chunk)

    def _hold(self, held):
        """A write failed: keep the rest and its callbacks; say it at once."""
        held.since = monotonic()
        self.held = held
        self.episodes += 1
        if self.first_error is None:
            self.first_error = held.error
            self.first_failed_at = runclock.wall()
        text = ("cannot write %s in %s (%s): acknowledging nothing more until it is "
                "written; holding %d records in memory and trying again every %g s"
                % (held.failed, self.log_dir, held.error, held.records(), RETRY_S))
        if self.gone and not os.path.isdir(self.log_dir):
            text += ("; the log dir itself is gone and the server does not make it "
                     "again: create it to let the run go on (the files are made anew)")
        self._say("error: " + text)
        logging.getLogger("diskbench.server.event").error("%s", text)

    def _write_held(self):
        """Try the held write again, from where it stopped; True once all of it
        is on disk (its callbacks have then run)."""
        held = self.held
        if not self._push(held):
            return False
        self.held = None
        waited = monotonic() - held.since
        self.longest_held_s = max(self.longest_held_s, waited)
        self.recovered += 1
        text = ("%s can be written again: the records held for %.1f s are written, in "
                "order, and acknowledged" % (self.log_dir, waited))
        self._say(text)
        logging.getLogger("diskbench.server.event").warning("%s", text)
        self._done(held)
        return True

    def _write_held_safely(self):
        """_write_held that never raises (a bug gives up the held batch)."""
        try:
            return self._write_held()
        except Exception as exc:  # noqa: B902 - a bug: say it, give the held batch up
            held, self.held = self.held, None
            self._internal_failure(exc, held.records() if held else 1)
            for mark in held.marks if held else ():
                mark.set()
            return True

    def _give_up(self):
        """close(): the held write cannot be done. Count what is not on disk
        (never acknowledged), cut a fragment back to the last whole line."""
        held, self.held = self.held, None
        queued = self._drain()
        self.unwritten += held.records() + _records_in(queued)
        if PERF_LOG in held.rest and PERF_LOG in self.files:
            # what is not synced is not on disk, nor a record synced in part:
            # back to the last whole line synced (the batch began on one)
            whole = held.data.rfind(b"\n", 0, held.perf_synced) + 1
            self.synced -= held.perf_synced - whole
            held.perf_synced = whole
            self.cut_due = True
            self._cut_unsynced()      # else read_back() cuts a torn last line
        tail = self.tails.get(SERVER_LOG, 0)
        if tail and SERVER_LOG in held.rest and SERVER_LOG in self.files:
            self._cut_back(SERVER_LOG, tail)
        self._say("error: %d records received were never written to %s (%s) and "
                  "were not acknowledged: their clients keep them"
                  % (self.unwritten, os.path.join(self.log_dir, PERF_LOG), held.error))
        for mark in held.marks + [item[1] for item in queued if item[0] == _MARK]:
            mark.set()

    def _say(self, text):
        """One line on stderr now (ASCII: it gets out whatever the console)."""
        try:
            self.stderr.write("diskbench server: %s\n" % text.encode(
                "ascii", "backslashreplace").decode("ascii"))
            self.stderr.flush()
        except Exception:  # noqa: B902 - stderr gone: the console and report say it
            pass

    def _failed(self, exc, what):
        """A failure outside the held writes (fsync at close): said once."""
        if self.first_error is None:
            self.first_error = "%s failed: %s" % (what, getattr(exc, "strerror", None)
                                                  or exc)
            self.first_failed_at = runclock.wall()
            self._say("warning: %s in %s: %s" % (what, self.log_dir, self.first_error))

    def trouble(self):
        """What went wrong for the report (writes failed, items skipped), or None."""
        said = []
        if self.unwritten:
            said.append("%d records received were never written to %s (%s) and were "
                        "never acknowledged: their clients keep them in "
                        "client-NAME.undelivered.jsonl; this report counts them from "
                        "memory" % (self.unwritten, os.path.join(self.log_dir, PERF_LOG),
                                    self.first_error))
        if self.episodes:
            said.append("writing to the log dir %s failed %d time%s (first at %s: %s); "
                        "nothing was acknowledged until it was on disk%s" % (
                            self.log_dir, self.episodes, "" if self.episodes == 1
                            else "s", utc(self.first_failed_at), self.first_error,
                            "; records held meanwhile were written in order once "
                            "it could be written again (the longest wait %.1f s)"
                            % self.longest_held_s if self.recovered else ""))
        elif self.first_error is not None:
            said.append("the log dir %s: %s" % (self.log_dir, self.first_error))
        if self.acked_lost:
            said.append(self.lost_text())
        lost = ", ".join("%d lines of %s" % (n, name) for name, n in sorted(
            self.lost.items()) if n)
        if lost:
            said.append("%s had no open file to go to (lost)" % lost)
        if self.failures:
            said.append("the recorder skipped %d item%s it could not write (first: %s); "
                        "their acks were not sent" % (
                            self.failures, "" if self.failures == 1 else "s",
                            self.first_failure))
        return "; ".join(said) or None


def _why(exc):
    """An OS error in words (its strerror)."""
    return "%s" % (getattr(exc, "strerror", None) or exc)


def _count_records(fd, size):
    """(records, {client name: records}) in the first ``size`` bytes of the
    file open on ``fd`` (a perf.jsonl no longer at its path); clients are
    named up to LOST_NAMES_MAX_BYTES. Never raises: what it could count."""
    count, names, rest, left = 0, {}, b"", size
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)
            count += chunk.count(b"\n")
            if size > LOST_NAMES_MAX_BYTES:
                continue
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                try:
                    name = json.loads(line.decode("utf-8"))["name"]
                except Exception:  # noqa: B902 - a line not ours: counted, unnamed
                    continue
                names[name] = names.get(name, 0) + 1
    except (IOError, OSError):
        pass
    return count, names


def _records_in(items):
    """How many of queue ``items`` are perf.jsonl records."""
    return sum(1 for item in items if item[0] in (_RECORD, _RAW))


class _Held(object):
    """A batch whose write failed: the bytes not yet on disk per file, and
    the callbacks (acks) and marks that wait for them."""

    def __init__(self, waiting, marks, data=b""):
        # (start, end, callback) each: where its records begin and end in the
        # batch's perf.jsonl bytes (see Recorder._write_batch)
        self.waiting = waiting
        self.marks = marks
        self.data = data              # the batch's perf.jsonl bytes, all of them
        self.perf_done = 0            # of them, those written
        self.perf_synced = 0          # of them, those synced (on the device)
        self.log_written = False      # server.log lines went out (to check it)
        self.rest = {}                # file name -> bytes not yet written
        self.error = None             # the last write error, in words
        self.failed = None            # the file it happened on
        self.since = None             # monotonic() the write first failed

    def records(self):
        """Records not on disk (not synced): never acknowledged."""
        return self.data.count(b"\n", self.perf_synced)

    def take_written(self):
        """The callbacks whose records are all on disk now (no longer held)."""
        done = self.perf_synced
        ready = [func for _, end, func in self.waiting if end <= done]
        if ready:
            self.waiting = [entry for entry in self.waiting if entry[1] > done]
        return ready

    def ack_boundary(self, done):
        """The most of the first ``done`` bytes that hold only records whose
        callbacks can run: before the first record of every callback that
        ends past it (a fixpoint: a handler's coalesced callback has records
        before and after another's)."""
        cut = done
        while True:
            first = min([cut] + [start for start, end, _ in self.waiting if end > cut])
            if first == cut:
                return cut
            cut = first


def read_back(log_dir, warn):
    """[(Message, recv_ts)] recorded in LOG_DIR/perf.jsonl, in file order.

    A torn last line (no newline: the server died mid-write) is cut off the
    file so appends start on a fresh line; other unreadable lines are
    skipped. Each problem is passed to ``warn(text)``.
    """
    path = os.path.join(log_dir, PERF_LOG)
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:   # only the tail can be torn
        f.seek(max(0, os.fstat(f.fileno()).st_size - protocol.MAX_LINE_BYTES * 4))
        data = f.read()
        start = f.tell() - len(data)
    end = data.rfind(b"\n") + 1
    if end < len(data):
        warn("%s: skipped a torn last line of %d bytes (the server stopped while "
             "writing it; it was never acknowledged)" % (path, len(data) - end))
        with open(path, "r+b") as f:
            f.truncate(start + end)
    return series.read_records(log_dir, warn)   # the one parser of perf.jsonl


class SafeFormatter(UtcFormatter):
    """A formatter whose every output is one encodable line: whatever a log call
    interpolates (a peer's name, path, note; a traceback) goes through
    ``protocol.safe_text``, so no text can forge a line or stop a writer."""

    def format(self, record):
        try:
            text = logging.Formatter.format(self, record)
        except Exception as exc:  # noqa: B902 - bad arguments to a log call
            text = "unformattable log message %r (%s)" % (
                getattr(record, "msg", None), exc)
        return protocol.safe_text(text)


class LineHandler(logging.Handler):
    """A logging handler that hands each record, formatted by SafeFormatter
    (``fmt``), to ``sink(line)``: the recorder's queue, or the console."""

    def __init__(self, sink, fmt):
        logging.Handler.__init__(self)
        self.sink = sink
        self.setFormatter(SafeFormatter(fmt))

    def emit(self, record):
        try:
            self.sink(self.format(record))
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def RecorderLogHandler(recorder):  # noqa: N802 - reads as the handler it makes
    """server.log's handler: lines to the recorder's queue."""
    return LineHandler(recorder.log_line, "%(asctime)s %(levelname)-7s %(message)s")
