"""The diskbench server (python -m diskbench.server); see docs/ARCHITECTURE.md."""
import logging
import threading

#: server.log (and the console for warnings and up).
log = logging.getLogger("diskbench.server")
#: Run events (joined, started, finished ...): server.log and the console.
event = logging.getLogger("diskbench.server.event")
#: Per-message detail (rollovers): server.log, and the console only with --verbose.
verbose = logging.getLogger("diskbench.server.verbose")

#: Refusals logged per kind; further ones are counted, and logged every
#: LIMIT_LOG_EVERY-th (``Sparse``: the listener's connection limits, the
#: control socket's refusals), so a flood cannot flood the log.
LIMIT_LOG_MAX = 20
LIMIT_LOG_EVERY = 1000


class Sparse(object):
    """The one rule for logging a repeated refusal sparingly: per kind, the
    first LIMIT_LOG_MAX are logged, then every LIMIT_LOG_EVERY-th, saying the
    count. Thread-safe."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}              # kind -> so far

    def note(self, kind):
        """Count one of ``kind``: the words to add to its log line, or None
        when it is not to be logged."""
        with self.lock:
            n = self.counts[kind] = self.counts.get(kind, 0) + 1
        if n <= LIMIT_LOG_MAX or n % LIMIT_LOG_EVERY == 0:
            return "" if n < LIMIT_LOG_MAX else \
                "; %d refused so far, logging every %dth" % (n, LIMIT_LOG_EVERY)
        return None


# Library use (tests, embedding) without configured logging stays quiet;
# master.Master attaches the real handlers for a run.
log.addHandler(logging.NullHandler())
