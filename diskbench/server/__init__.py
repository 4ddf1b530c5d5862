"""The diskbench server (python -m diskbench.server); see docs/ARCHITECTURE.md."""
import logging

# Library use (tests, embedding) without configured logging stays quiet;
# master.Master attaches the real handlers for a run.
logging.getLogger("diskbench.server").addHandler(logging.NullHandler())
