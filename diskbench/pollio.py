"""Waiting for descriptors to be ready: ``wait_readable``/``wait_writable``
for a few objects (the client's pipes and socket, a handler's send) and
``Poller`` for the server's I/O threads over thousands of connections.

Separate from compat.py (2/3 differences) and linux.py (libc calls): one rule
for every wait in diskbench, poll or epoll and never select, whose FD_SETSIZE
refuses descriptors of 1024 and above.
"""
import select

from diskbench.compat import InterruptedErrors


def _poll(objs, mask, timeout):
    """The objects (anything with fileno()) ready for ``mask`` within ``timeout``.

    ``select.poll``, not ``select.select``: select refuses descriptors of 1024
    and above (FD_SETSIZE), which a server with thousands of connections or a
    client started by one gets. EINTR counts as "nothing ready".
    """
    if not objs:
        return []
    poller = select.poll()
    by_fd = {}
    for obj in objs:
        fd = obj.fileno()
        by_fd[fd] = obj
        poller.register(fd, mask)
    try:
        events = poller.poll(None if timeout is None else max(0, timeout) * 1000.0)
    except InterruptedErrors:
        return []
    return [by_fd[fd] for fd, _ in events if fd in by_fd]


_READ_EVENTS = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP
_WRITE_EVENTS = select.POLLOUT | select.POLLERR | select.POLLHUP


def wait_readable(objs, timeout):
    """Return the objects (sockets, pipe Connections) that are readable (or
    at end of stream / in error: a read then says which)."""
    return _poll(objs, _READ_EVENTS, timeout)


def wait_writable(obj, timeout):
    """True when ``obj`` (a socket) can take more bytes (or is in error)."""
    return bool(_poll([obj], _WRITE_EVENTS, timeout))


class Poller(object):
    """Readiness of many descriptors at once, for the server's I/O threads:
    ``select.epoll`` where there is one (Linux), else ``select.poll``; never
    ``select.select`` (FD_SETSIZE: descriptors of 1024 and above refused).
    One interface: ``register(fd, readable)``, ``modify(fd, readable)``,
    ``unregister(fd)``, ``poll(timeout_s)`` -> [(fd, events)], where
    events are tested with ``READ``, ``WRITE`` and ``GONE`` (error or hang-up).
    EINTR counts as "nothing ready"."""

    def __init__(self, use_epoll=None):
        if use_epoll is None:
            use_epoll = hasattr(select, "epoll")
        self.kind = "epoll" if use_epoll else "poll"
        if use_epoll:
            self._p = select.epoll()
            self.READ, self.WRITE = select.EPOLLIN, select.EPOLLOUT
            self.GONE = select.EPOLLERR | select.EPOLLHUP
            self._scale = 1.0
        else:
            self._p = select.poll()
            self.READ, self.WRITE = select.POLLIN, select.POLLOUT
            self.GONE = select.POLLERR | select.POLLHUP | select.POLLNVAL
            self._scale = 1000.0      # poll's timeout is in milliseconds

    def register(self, fd, readable=True):
        self._p.register(fd, self.READ if readable else 0)

    def modify(self, fd, readable):
        self._p.modify(fd, self.READ if readable else 0)

    def unregister(self, fd):
        try:
            self._p.unregister(fd)
        except (KeyError, ValueError, IOError, OSError):
            pass                      # never registered, or already closed

    def poll(self, timeout_s):
        wait = -1 if timeout_s is None else max(0.0, timeout_s) * self._scale
        if self._scale != 1.0 and wait > 0:
            wait = int(wait) + 1      # whole milliseconds, never early
        try:
            return self._p.poll(wait)
        except InterruptedErrors:
            return []

    def close(self):
        if self.kind == "epoll":
            self._p.close()
