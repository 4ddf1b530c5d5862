"""The client's settings as one small typed object, each with its default here
and nowhere else: what the supervisor, the writer, the stats and the
heartbeat process read. Plain attributes, so it pickles for spawn/forkserver.
"""
import diskbench
from diskbench import cli, plan, protocol, runclock

#: The run plan's defaults (--chunk-mb, --file-mb, --duration, the intervals)
#: are plan.defaults(): the server may set them, and both sides derive them.
_PLAN = plan.defaults()
#: Default --max-files: data files kept at once.
MAX_FILES = 2
#: Default --connect-timeout: keep trying to reach the server this long.
CONNECT_TIMEOUT_S = 10.0
#: How long to wait for the server to acknowledge STOP and BYE (and anything
#: still unacknowledged) by default; --deliver-timeout overrides it.
DELIVER_TIMEOUT_S = 30.0
#: The smallest O_DIRECT block assumed when the filesystem does not say.
BLOCK_BYTES = 4096

_FIELDS = (
    # where the results go
    ("host", "127.0.0.1"), ("port", diskbench.DEFAULT_PORT), ("name", None),
    ("secret", None), ("connect_timeout_s", CONNECT_TIMEOUT_S),
    ("deliver_timeout_s", DELIVER_TIMEOUT_S), ("undelivered_path", None),
    # what the writer does
    # (device, inode) of the directory the start-up checks measured
    # (checks.directory_id; None: not checked, e.g. a test's own writer)
    ("directory", None), ("directory_id", None), ("chunk_bytes", _PLAN["chunk_bytes"]),
    ("file_bytes", _PLAN["file_bytes"]), ("duration_s", _PLAN["duration_s"]),
    ("max_files", MAX_FILES),
    ("sync_mode", protocol.SYNC_DIRECT), ("preallocate", False), ("keep_data", False),
    ("block_bytes", BLOCK_BYTES),
    # --verify: read every data file back (client/verify.py); the run id of
    # the go, which every block's stamp carries (diskbench/stamp.py)
    ("verify", False), ("run_id", None),
    # the hello's instance_id (random per client process): the stamps' writer
    ("instance_id", None),
    # how often the children report, and when the writer counts as stalled
    ("perf_interval_s", _PLAN["perf_interval_s"]),
    ("stats_interval_s", _PLAN["stats_interval_s"]),
    ("heartbeat_interval_s", _PLAN["heartbeat_interval_s"]),
    ("stall_timeout_s", plan.STALL_TIMEOUT_S),
    # the writer's first write waits for this monotonic instant (None: at once):
    # the synchronized start of the server's go
    ("start_at", None),
    ("progress_interval_s", cli.PROGRESS_INTERVAL_S),
    # the multiprocessing start method (None: compat.mp_context's choice)
    ("start_method", None),
    # the supervisor's runclock anchor, which its children keep
    ("clock_anchor", None),
)
NAMES = tuple(name for name, _ in _FIELDS)


class ClientConfig(object):
    """``ClientConfig(name=..., directory=..., ...)``: every setting an attribute;
    one not given has its default from ``_FIELDS``; an unknown one is a TypeError."""

    __slots__ = NAMES

    def __init__(self, **given):
        unknown = sorted(set(given) - set(NAMES))
        if unknown:
            raise TypeError("unknown client settings: %s" % ", ".join(unknown))
        for name, default in _FIELDS:
            setattr(self, name, given.get(name, default))

    def replace(self, **changes):
        """A copy with ``changes`` applied."""
        values = dict((name, getattr(self, name)) for name in NAMES)
        values.update(changes)
        return ClientConfig(**values)

    def for_children(self):
        """What the child processes get: everything but the secret, and the
        supervisor's wall clock (runclock)."""
        return self.replace(secret=None, clock_anchor=runclock.anchor())

    def __getstate__(self):  # __slots__ classes pickle through these (2.7 too)
        return dict((name, getattr(self, name)) for name in NAMES)

    def __setstate__(self, state):
        for name in NAMES:
            setattr(self, name, state.get(name))

    def __repr__(self):
        return "ClientConfig(%s)" % ", ".join(
            "%s=%r" % (n, getattr(self, n)) for n in NAMES if n != "secret")
