"""The single writer of LOG_DIR/server.log and LOG_DIR/perf.jsonl.

Handlers and the main loop never touch files: they put log lines and message
records on one queue; one thread writes them in batches, flushes after each
batch (a crash loses at most the last batch) and then runs each batch's ack
callbacks, so an ack means "written and flushed". ``close()`` drains the
queue and fsyncs both files.

If a write fails (disk full, I/O error) a warning goes to stderr once and the
server goes on: the registry still holds every figure and the report is still
attempted; acks are still sent, because nothing is lost from memory.
"""
import json
import logging
import os
import sys
import threading

from diskbench.compat import as_bytes, queue

SERVER_LOG = "server.log"
PERF_LOG = "perf.jsonl"
#: Most queue items written between two flushes.
BATCH_MAX = 1000

_STOP = object()
_LOG, _RECORD = 1, 2


class Recorder(object):
    def __init__(self, log_dir, stderr=None):
        self.log_dir = log_dir
        self.stderr = stderr or sys.stderr
        self.queue = queue.Queue()
        self.thread = None
        self.files = {}
        self.write_failed = False
        self.records_written = 0

    def open(self):
        """Open (append) both files; raises IOError/OSError if the dir is unusable."""
        for name in (SERVER_LOG, PERF_LOG):
            self.files[name] = open(os.path.join(self.log_dir, name), "ab")

    def start(self):
        self.thread = threading.Thread(target=self._run, name="recorder")
        self.thread.daemon = True
        self.thread.start()

    # --- producers (any thread) ---------------------------------------------------
    def log_line(self, text):
        self.queue.put((_LOG, text, None))

    def record(self, obj, on_written=None, key=None):
        """Queue one perf.jsonl object; ``on_written()`` runs after it is flushed.

        Of several callbacks with the same ``key`` in one batch only the last
        runs (one ack per connection per batch, naming the highest seq).
        """
        self.queue.put((_RECORD, obj, (key, on_written) if on_written else None))

    def close(self, timeout=30.0):
        """Write everything queued, fsync and close the files."""
        if self.thread is not None:
            self.queue.put((_STOP, None, None))
            self.thread.join(timeout)
            self.thread = None
        else:
            self._write_batch(self._drain([]))
        for f in self.files.values():
            try:
                f.flush()
                os.fsync(f.fileno())
            except (IOError, OSError) as exc:
                self._failed(exc)
            f.close()
        self.files = {}

    # --- the writer thread ------------------------------------------------------------
    def _drain(self, batch):
        while len(batch) < BATCH_MAX:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _run(self):
        while True:
            batch = self._drain([self.queue.get()])
            stop = any(item[0] is _STOP for item in batch)
            self._write_batch([item for item in batch if item[0] is not _STOP])
            if stop:
                self._write_batch(self._drain([]))
                return

    def _write_batch(self, batch):
        callbacks = []
        keys = {}
        touched = set()
        for kind, payload, on_written in batch:
            if kind == _LOG:
                name, line = SERVER_LOG, payload
            else:
                name = PERF_LOG
                line = json.dumps(payload, sort_keys=True, separators=(",", ":"))
                self.records_written += 1
            touched.add(name)
            try:
                self.files[name].write(as_bytes(line.rstrip("\n") + "\n"))
            except (IOError, OSError, ValueError) as exc:
                self._failed(exc)
            if on_written is not None:
                key, func = on_written
                if key is not None and key in keys:
                    callbacks[keys[key]] = func
                else:
                    if key is not None:
                        keys[key] = len(callbacks)
                    callbacks.append(func)
        for name in touched:
            try:
                self.files[name].flush()
            except (IOError, OSError, ValueError) as exc:
                self._failed(exc)
        for callback in callbacks:
            try:
                callback()
            except Exception:  # a callback must never kill the writer
                logging.getLogger("diskbench.server").exception("ack callback failed")

    def _failed(self, exc):
        if not self.write_failed:
            self.write_failed = True
            self.stderr.write("diskbench server: warning: cannot write to %s (%s); "
                              "going on, the report will still be attempted\n"
                              % (self.log_dir, exc))
            self.stderr.flush()


class RecorderLogHandler(logging.Handler):
    """A logging handler that hands formatted lines to the recorder's queue."""

    def __init__(self, recorder):
        logging.Handler.__init__(self)
        self.recorder = recorder
        self.setFormatter(logging.Formatter(
            "%(asctime)s.%(msecs)03d %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S"))

    def emit(self, record):
        try:
            self.recorder.log_line(self.format(record))
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)
