"""The diskbench server (python -m diskbench.server); see docs/ARCHITECTURE.md."""
import logging

#: server.log (and the console for warnings and up).
log = logging.getLogger("diskbench.server")
#: Run events (joined, started, finished ...): server.log and the console.
event = logging.getLogger("diskbench.server.event")
#: Per-message detail (rollovers): server.log, and the console only with --verbose.
verbose = logging.getLogger("diskbench.server.verbose")

# Library use (tests, embedding) without configured logging stays quiet;
# master.Master attaches the real handlers for a run.
log.addHandler(logging.NullHandler())
