"""What the run knows of each client: ``Client`` (everything its accepted
messages said, kept by ``ledger.Ledger``), its perf ``Intervals``, and
``RunView``, the detached copy a report is built from.

Shared by the server (live) and the report package (a re-render replays
perf.jsonl into a ledger of its own), so it imports neither.
"""
import array
import collections
import copy

from diskbench import metrics, plan, protocol
from diskbench.seqset import SeqSet
from diskbench.states import JOINED

#: Perf intervals kept per client for the console's "MiB/s now" (a ring: O(1)
#: per message; the console looks at those received in its last few seconds).
RECENT_PERF_MAX = 16


class Intervals(object):
    """A client's perf intervals, (t_start, t_end, bytes) each, packed into
    one array of doubles: 24 bytes an interval where a list of tuples took
    about 160 (5,000 clients for an hour: 0.4 GiB, not 2.9) and one object
    for the garbage collector, not three per message. Bytes are exact up to
    2**53 in one interval (8 PiB)."""

    __slots__ = ("_flat",)

    def __init__(self):
        self._flat = array.array("d")

    def append(self, t_start, t_end, nbytes):
        self._flat.extend((t_start, t_end, nbytes))

    def copy(self):
        other = Intervals()
        other._flat = array.array("d", self._flat)
        return other

    def __iadd__(self, items):
        for item in items:
            self.append(*item)
        return self

    def __len__(self):
        return len(self._flat) // 3

    def __iter__(self):
        flat = self._flat
        for i in range(0, len(flat), 3):
            yield flat[i], flat[i + 1], int(flat[i + 2])


class Client(object):
    """Everything known about one client (by name). Mutated under the ledger's lock."""

    def __init__(self, name, hello, recv_ts, peer, plan_values, plan_sources):
        self.name = name
        self.hello = hello            # the first accepted hello (Message)
        self.peer = peer
        self.state = JOINED
        self.reason = "joined, not started yet"
        self.previous_state = None    # where a WENT_AWAY client goes back to
        self.conn_id = None           # the connection currently speaking for it
        self.sender = None            # callable(Message) on that connection
        self.seen = SeqSet()          # every seq accepted (dedup / replay rule)
        self.last_seq = 0             # highest seq accepted
        self.recorded_seq = 0         # highest seq the recorder wrote (acks)
        self.first_ts = recv_ts
        self.last_ts = recv_ts
        self.last_seen = None         # clock() of the last message
        self.start_ts = None
        self.start = None             # the start Message
        self.stop_ts = None
        self.stop = None              # the stop summary Message
        self.last_heartbeat = None    # (recv_ts, heartbeat Message)
        self.close_times = []         # timed fsync+close of each rollover (s)
        self.intervals = Intervals()  # (t_start, t_end, bytes) per perf message
        # (clock(), seconds, bytes) of the last perf messages (console MiB/s now)
        self.recent = collections.deque(maxlen=RECENT_PERF_MAX)
        self.perf_bytes = 0
        self.perf_chunks = 0
        self.io_s = 0.0
        self.hist = metrics.LatencyHistogram()
        self.cpu_samples = []         # writer CPU% per stats message
        self.rss_samples = []         # writer RSS bytes per stats message
        self.errors = []              # error Messages
        self.notes = []
        self.messages = 0             # accepted (non-duplicate) messages
        self.duplicates = 0
        self.reconnects = 0
        self.went_away_count = 0
        self.awaiting_go = False
        self.quiet_until = None       # clock() its go said it starts (silence counts after)
        self.restart_pending = False  # known from a resumed run, not back yet
        self.texts_dropped = 0        # errors/notes beyond KEEP_TEXTS_MAX
        self.terminal_at = None       # clock() when it reached a terminal state
        self.said_bye = False         # it left on purpose: no rejoin expected
        self.takeovers = 0            # hellos on a new connection while one was open
        self.seq_jumps = 0            # messages refused for a seq too far ahead
        # How far the client's clock is ahead of the server's: the largest
        # send time minus receive time seen (network delay only lowers it).
        self.clock_offset_s = None
        # From pongs (NTP-style): the shortest round trip seen, the offset
        # measured in it, and the spread of offsets measured in round trips
        # close to the shortest (a clock that drifts or steps during the run).
        self.rtt_s = None
        self.ping_offset_s = None
        self.offset_low = self.offset_high = None
        # the slowest round trip among the pongs that spread is made of: a faster
        # one found later narrows the band those must fit (effects._apply_pong)
        self.offset_band_rtt_s = None
        self.skew_warned = False
        self.offset_unbelieved = None   # the last pong offset beyond belief
        self.drift_warned = False
        # The run plan (plan.resolve at the first hello; what start says it
        # ran replaces it), where each setting came from, and the start: the
        # common instant its go carried (server clock) and the client's clock
        # at its first write.
        self.plan, self.plan_sources = plan_values, plan_sources
        self.start_at = None
        # True when the go this client was given is not known: it came before a
        # server restart (or the re-render has no run facts), and go is not in
        # perf.jsonl, so start_at None does not mean "started at once"
        self.start_at_unknown = False
        self.started_at = None
        self.join_order = None        # 1: the first client to say hello
        # --verify (plan.resolve_verify) and what its read-backs said
        self.verify, self.verify_source = False, plan.FROM_DEFAULT
        self.read_files = 0
        self.read_bytes = 0
        self.read_file_bytes = 0      # what those files should have held
        self.read_io_s = 0.0
        self.read_hist = metrics.LatencyHistogram()
        self.read_modes = set()
        self.bad_counts = dict((kind, 0) for kind in protocol.BAD_KINDS)
        self.bad_blocks = []          # BAD_BLOCK Messages (the first KEEP_TEXTS_MAX)

    @property
    def heartbeat_interval_s(self):
        """The heartbeat interval of its plan (None: not said)."""
        return self.plan["heartbeat_interval_s"] or None

    def offset(self):
        """(client clock minus server clock in s, how it was measured), or
        (None, None): from pongs when it answered any, else from timestamps."""
        if self.ping_offset_s is not None:
            return self.ping_offset_s, "ping"
        if self.clock_offset_s is not None:
            return self.clock_offset_s, "timestamps"
        return None, None

    def snapshot(self):
        """A detached copy for the report (Messages are never mutated)."""
        view = copy.copy(self)
        view.sender = None
        view.close_times = list(self.close_times)
        view.intervals = self.intervals.copy()
        view.recent = None
        view.cpu_samples = list(self.cpu_samples)
        view.rss_samples = list(self.rss_samples)
        view.errors = list(self.errors)
        view.notes = list(self.notes)
        view.hist = metrics.LatencyHistogram()
        view.hist.merge(self.hist)
        view.seen = None
        view.plan = dict(self.plan)
        view.read_hist = metrics.LatencyHistogram()
        view.read_hist.merge(self.read_hist)
        view.read_modes = set(self.read_modes)
        view.bad_counts = dict(self.bad_counts)
        view.bad_blocks = list(self.bad_blocks)
        return view


class RunView(object):
    """What the report needs from the ledger, detached from its lock."""

    def __init__(self, clients, rejected, connections, expected_clients, restored=0):
        self.clients = clients
        self.rejected = rejected
        self.connections = connections
        self.expected_clients = expected_clients
        self.restored = restored      # records read back after a server restart
