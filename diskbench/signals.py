"""One way to take a signal in every process (server, client, its children):
the handler only records it; the process's own loop decides what it means.

A step that has no loop to look at the flag (the client's start-up checks: a
calibration write, an open that blocks) runs inside ``flag.interrupting()``:
there the handler also raises ``Interrupted``, which ends the step at once
(its ``finally`` blocks remove what it made)."""
import contextlib
import signal


class Interrupted(Exception):
    """A stop signal arrived inside ``SignalFlag.interrupting()``."""

    def __init__(self, signum):
        Exception.__init__(self, "interrupted by signal %d" % signum)
        self.signum = signum


class SignalFlag(object):
    """Records the signals it is installed for: the first, the last, how many.

    ``wake`` (optional) is called after recording, to cut a wait short.
    """

    def __init__(self, wake=None):
        self.first = self.last = None
        self.count = 0
        self._wake = wake
        self._previous = {}
        self._raising = False

    def __call__(self, signum, _frame):
        if self.first is None:
            self.first = signum
        self.last = signum
        self.count += 1
        if self._wake is not None:
            self._wake()
        if self._raising:
            self._raising = False   # once: the cleanup it starts is not cut short
            raise Interrupted(signum)

    @contextlib.contextmanager
    def interrupting(self):
        """Within: a signal (or one already taken) raises ``Interrupted``."""
        if self.last is not None:
            raise Interrupted(self.last)
        self._raising = True
        try:
            yield self
        finally:
            self._raising = False

    def install(self, signums):
        """Take ``signums``; ``restore`` gives back the handlers they had."""
        for signum in signums:
            self._previous[signum] = signal.signal(signum, self)
        return self

    def restore(self):
        restore(self._previous)
        self._previous = {}


def ignore(signums):
    """SIG_IGN for each of ``signums``; returns their previous handlers."""
    return dict((signum, signal.signal(signum, signal.SIG_IGN)) for signum in signums)


def restore(previous):
    """Put back handlers returned by ``ignore`` (or ``signal.signal``)."""
    for signum, handler in previous.items():
        signal.signal(signum, handler)
