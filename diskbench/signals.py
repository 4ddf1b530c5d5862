"""One way to take a signal in every process (server, client, its children):
the handler only records it; the process's own loop decides what it means."""
import signal


class SignalFlag(object):
    """Records the signals it is installed for: the first, the last, how many.

    ``wake`` (optional) is called after recording, to cut a wait short.
    """

    def __init__(self, wake=None):
        self.first = self.last = None
        self.count = 0
        self._wake = wake
        self._previous = {}

    def __call__(self, signum, _frame):
        if self.first is None:
            self.first = signum
        self.last = signum
        self.count += 1
        if self._wake is not None:
            self._wake()

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
