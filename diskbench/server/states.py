"""A client's states on the server and the transitions allowed between them.

Their own module so that the report and the console can name states without
importing the registry; ``Registry._transition`` is the one place a state
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
TERMINAL = (FINISHED, FAILED, WENT_AWAY)

ALLOWED = {
    JOINED: (RUNNING, FINISHED, FAILED, WENT_AWAY),
    RUNNING: (STALLED, FINISHED, FAILED, WENT_AWAY),
    STALLED: (RUNNING, FINISHED, FAILED, WENT_AWAY),
    WENT_AWAY: (JOINED, RUNNING, STALLED),   # back where it was, when it speaks again
    FINISHED: (),
    FAILED: (),
}
