"""Per-type policy: what each client message may suffer on its way (dropped from
a full buffer, held to pace a fleet, or its ack not waited for at the end).

Beside the catalogue (what a message carries), not in it: the sender and the
end of a run read this; the validators never do.
"""
import collections

from diskbench.protocol.catalogue import (BAD_BLOCK, BYE, ERROR, HEARTBEAT, HELLO, NOTE,
                                          PERF, PONG, READBACK, ROLLOVER, START, STATS,
                                          STOP)

#: Per client -> server type, beside its fields: ``drop`` is when the client's
#: sender may drop it from a full buffer (rank 1 goes first, oldest first within
#: a rank; None: never dropped, whatever happens); ``ack`` is whether the end of
#: a run waits for its acknowledgement (a server that has the stop summary may
#: complete and exit before it acks a bye); ``paced`` is how long the sender
#: may hold it (client/sender.py: a fleet started together must not report,
#: roll over or end together; what it says is timed by its fields, not by when
#: it is sent): None, not at all; PACED_REPORT, the client's send offset (under
#: a second); PACED_END, its end offset, spread over the go's end_spread_s,
#: which the server widens with the fleet (a fleet ends within one second,
#: and a server that is fast enough for its reports may still take seconds
#: for every client's final reports at once). A new type needs an entry here
#: (tests/test_protocol.py checks), so its policy is a decision, not a default.
Policy = collections.namedtuple("Policy", ("drop", "ack", "paced"))
NEVER_DROPPED = None
PACED_REPORT, PACED_END = "report", "end"
POLICY = {
    HELLO: Policy(drop=NEVER_DROPPED, ack=True, paced=None),
    START: Policy(drop=NEVER_DROPPED, ack=True, paced=PACED_REPORT),
    PERF: Policy(drop=1, ack=True, paced=PACED_REPORT),  # the bulk: lost samples are counted
    HEARTBEAT: Policy(drop=2, ack=True, paced=PACED_REPORT),
    STATS: Policy(drop=2, ack=True, paced=PACED_REPORT),
    NOTE: Policy(drop=2, ack=True, paced=None),
    PONG: Policy(drop=2, ack=False, paced=None),  # its timing is the measurement
    # a fleet rolls over together
    ROLLOVER: Policy(drop=NEVER_DROPPED, ack=True, paced=PACED_REPORT),
    STOP: Policy(drop=NEVER_DROPPED, ack=True, paced=PACED_END),  # ... and ends together
    ERROR: Policy(drop=NEVER_DROPPED, ack=True, paced=None),  # at once: it may be fatal
    BYE: Policy(drop=NEVER_DROPPED, ack=False, paced=PACED_END),
    # a fleet verifies together, as it rolls over; a bad block at once (its
    # count per writer is bounded by client/verify.MAX_BAD_REPORTED)
    READBACK: Policy(drop=NEVER_DROPPED, ack=True, paced=PACED_REPORT),
    BAD_BLOCK: Policy(drop=NEVER_DROPPED, ack=True, paced=None),
}


def drop_order():
    """Client message types a full buffer may drop, as tuples, first to go first."""
    ranks = sorted(set(p.drop for p in POLICY.values() if p.drop is not NEVER_DROPPED))
    return [tuple(sorted(t for t, p in POLICY.items() if p.drop == rank)) for rank in ranks]


def paced_types(how):
    """Client message types the sender may hold, ``how`` long: PACED_REPORT
    (the send offset) or PACED_END (the end offset)."""
    return tuple(sorted(t for t, p in POLICY.items() if p.paced == how))


def no_ack_needed():
    """Client message types whose acknowledgement the end of a run does not wait for."""
    return tuple(sorted(t for t, p in POLICY.items() if not p.ack))

