"""A client's states on the server and the transitions allowed between them.

Their own module so that the report and the console can name states without
importing the registry; ``Ledger._transition`` is the one place a state
changes, and it checks ``ALLOWED``.
"""
JOINED = "joined"
RUNNING = "running"
STALLED = "stalled"
FINISHED = "finished"
FAILED = "failed"
WENT_AWAY = "went away"
STATES = (JOINED, RUNNING, STALLED, FINISHED, FAILED, WENT_AWAY)
LIVE = (JOINED, RUNNING, STALLED)
#: How a state is named to people, the same in the console, `ctl list` and the
#: report (report.json keeps the registry's names): RUNNING is "writing". At
#: the end the report calls a client still in a LIVE state "unfinished".
SHOWN = {RUNNING: "writing"}


def shown(state):
    """A state's name for people (SHOWN)."""
    return SHOWN.get(state, state)

TERMINAL = (FINISHED, FAILED, WENT_AWAY)

ALLOWED = {
    JOINED: (RUNNING, FINISHED, FAILED, WENT_AWAY),
    RUNNING: (STALLED, FINISHED, FAILED, WENT_AWAY),
    STALLED: (RUNNING, FINISHED, FAILED, WENT_AWAY),
    WENT_AWAY: (JOINED, RUNNING, STALLED),   # back where it was, when it speaks again
    FINISHED: (),
    FAILED: (),
}
