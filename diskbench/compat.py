"""Every difference between Python 2.7 and Python 3, in one place.

Other modules import names from here and never look at ``sys.version_info``.
Text is ``unicode``/``str``; wire data is bytes; conversions happen only at the
socket (``as_bytes``/``as_text``).
"""
import ctypes
import ctypes.util
import errno
import hmac
import os
import select
import socket
import struct
import sys
import time

PY2 = sys.version_info[0] == 2

if PY2:  # pragma: no cover - exercised by the 2.7 run of the suite
    import Queue as queue  # noqa: F401
    import SocketServer as socketserver  # noqa: F401
    from thread import start_new_thread  # noqa: F401
    from pipes import quote as shell_quote  # noqa: F401 - one word for a POSIX shell
    text_type = unicode  # noqa: F821
    binary_type = str
    string_types = (str, unicode)  # noqa: F821
    integer_types = (int, long)  # noqa: F821
    range_ = xrange  # noqa: F821
    InterruptedErrors = (OSError, IOError, select.error)
    RecursionError = RuntimeError  # what 2.7's json raises on deep nesting
else:
    import queue  # noqa: F401
    import socketserver  # noqa: F401
    from _thread import start_new_thread  # noqa: F401
    from shlex import quote as shell_quote  # noqa: F401 - one word for a POSIX shell
    text_type = str
    binary_type = bytes
    string_types = (str,)
    integer_types = (int,)
    range_ = range
    InterruptedErrors = (InterruptedError,)  # noqa: F821 (builtin)
    RecursionError = RecursionError  # noqa: F821 (builtin)


def as_bytes(s, encoding="utf-8"):
    """Text to bytes (bytes pass through)."""
    if isinstance(s, binary_type):
        return s
    return s.encode(encoding)


def as_text(b, encoding="utf-8", errors="strict"):
    """Bytes to text (text passes through)."""
    if isinstance(b, text_type):
        return b
    return b.decode(encoding, errors)


# --- constant-time comparison (hmac.compare_digest is 2.7.7+) ---------------
def _compare_digest_fallback(a, b):
    """Compare two byte strings in time that depends only on their length."""
    a = bytearray(as_bytes(a))
    b = bytearray(as_bytes(b))
    result = len(a) ^ len(b)
    if len(a) != len(b):
        b = a  # still walk a whole string so the timing does not leak content
    for x, y in zip(a, b):
        result |= x ^ y
    return result == 0


compare_digest = getattr(hmac, "compare_digest", _compare_digest_fallback)


# --- monotonic clock (time.monotonic is 3.3+) --------------------------------
def _load_libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name or "libc.so.6", use_errno=True)
    except OSError:  # pragma: no cover - no libc: a non-Linux host
        return None


_libc = _load_libc()


def _load_clock_gettime():
    """clock_gettime called WITH the GIL held (ctypes.PyDLL): a CDLL call
    releases and re-takes the GIL, which on 2.7 hands it to another thread at
    every clock read (a server handler reads the clock per message)."""
    try:
        func = ctypes.PyDLL(ctypes.util.find_library("c") or "libc.so.6",
                            use_errno=True).clock_gettime
    except (OSError, AttributeError):  # pragma: no cover - no libc: a non-Linux host
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_void_p]
    func.restype = ctypes.c_int
    return func


_clock_gettime = _load_clock_gettime()

class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_CLOCK_MONOTONIC = 1  # linux/time.h


def libc_monotonic():
    """Seconds from an arbitrary fixed point; never goes backwards (2.7's
    monotonic, from clock_gettime; kept importable on 3 so it can be tested)."""
    ts = _Timespec()
    if _clock_gettime(_CLOCK_MONOTONIC, ctypes.byref(ts)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ts.tv_sec + ts.tv_nsec * 1e-9


monotonic = getattr(time, "monotonic", libc_monotonic)


# --- locks under the GIL --------------------------------------------------------
def acquire_in_turn(lock):
    """Take ``lock``, on Python 3 only while running (holding the GIL).

    A blocking ``acquire`` of a contended lock hands it, on release, to a
    sleeping thread that must then wait for the GIL while it holds the lock:
    with thousands of threads waiting for the GIL every other thread piles
    up behind it (a lock convoy; measured at 5,000 connections on 3.11: 98 of
    100 sampled handler threads waiting on the registry's lock). Here a
    thread that finds the lock taken steps aside (sleeps, from 0 up to
    LOCK_BACKOFF_MAX_S) and tries again. On 2.7 every acquire, even one that
    cannot wait, gives the GIL away, so retrying only burns CPU there: it
    blocks as before.
    """
    if GIL_KEPT_ACROSS_IO:
        lock.acquire()
        return
    pause = 0.0
    while not lock.acquire(False):
        time.sleep(pause)   # lets the holder run
        pause = min(LOCK_BACKOFF_MAX_S, pause * 2 or LOCK_BACKOFF_MIN_S)


#: acquire_in_turn's first and longest pause between two tries.
LOCK_BACKOFF_MIN_S = 0.00005
LOCK_BACKOFF_MAX_S = 0.002


# --- CPU affinity (os.sched_[gs]etaffinity are 3.3+) ---------------------------
#: Bytes of the cpu_set_t passed to libc (glibc's: 1024 CPUs).
_CPU_SET_BYTES = 128


def get_affinity():
    """The CPUs the calling thread may run on (a sorted list), or None if
    this platform cannot say."""
    native = getattr(os, "sched_getaffinity", None)
    if native is not None:
        return sorted(native(0))
    if _libc is None or not sys.platform.startswith("linux"):  # pragma: no cover
        return None
    mask = (ctypes.c_ubyte * _CPU_SET_BYTES)()
    if _libc.sched_getaffinity(0, _CPU_SET_BYTES, ctypes.byref(mask)) != 0:
        return None
    return [cpu for cpu in range(_CPU_SET_BYTES * 8) if mask[cpu // 8] >> (cpu % 8) & 1]


def set_affinity(cpus):
    """Let the calling thread, and the threads it starts from now on, run only
    on ``cpus``; OSError if refused."""
    native = getattr(os, "sched_setaffinity", None)
    if native is not None:
        return native(0, cpus)
    if _libc is None or not sys.platform.startswith("linux"):  # pragma: no cover
        raise OSError(errno.ENOSYS, "setting the CPU affinity is not supported here")
    mask = (ctypes.c_ubyte * _CPU_SET_BYTES)()
    for cpu in cpus:
        if not 0 <= cpu < _CPU_SET_BYTES * 8:
            raise OSError(errno.EINVAL, "no CPU %d on this machine" % cpu)
        mask[cpu // 8] |= 1 << (cpu % 8)
    if _libc.sched_setaffinity(0, _CPU_SET_BYTES, ctypes.byref(mask)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return None


# --- posix_fallocate (os.posix_fallocate is 3.3+) ----------------------------
def glibc_version():
    """(major, minor) of the C library when it is glibc, else None (musl, macOS)."""
    func = getattr(_libc, "gnu_get_libc_version", None)
    if func is None:
        return None
    func.restype = ctypes.c_char_p
    try:
        return tuple(int(part) for part in func().decode("ascii").split(".")[:2])
    except (ValueError, UnicodeDecodeError):  # pragma: no cover - an odd build
        return None


def interpreter_flags():
    """This interpreter's command-line flags (-O, -W, -X ...), to start another
    like it (a private helper of subprocess, there since 2.7.3; [] without it)."""
    import subprocess
    return list(getattr(subprocess, "_args_from_interpreter_flags", list)())


def posix_fallocate(fd, offset, length):
    """Reserve blocks for [offset, offset+length) of fd; OSError when refused."""
    native = getattr(os, "posix_fallocate", None)
    if native is not None:
        return native(fd, offset, length)
    if _libc is None:  # pragma: no cover
        raise OSError(errno.EOPNOTSUPP, "posix_fallocate is not available")
    func = _libc.posix_fallocate
    func.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    rc = func(fd, offset, length)  # returns the error number, not -1/errno
    if rc != 0:
        raise OSError(rc, os.strerror(rc))
    return None


#: linux/fadvise.h: drop this range of the file from the page cache
POSIX_FADV_DONTNEED = 4


def posix_fadvise_dontneed(fd):
    """Drop fd's cached pages (os.posix_fadvise is 3.3+: else libc through
    ctypes); OSError when refused or unavailable."""
    native = getattr(os, "posix_fadvise", None)
    if native is not None:
        return native(fd, 0, 0, getattr(os, "POSIX_FADV_DONTNEED", POSIX_FADV_DONTNEED))
    if _libc is None:  # pragma: no cover
        raise OSError(errno.EOPNOTSUPP, "posix_fadvise is not available")
    func = _libc.posix_fadvise
    func.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_int]
    rc = func(fd, 0, 0, POSIX_FADV_DONTNEED)  # returns the error number
    if rc != 0:
        raise OSError(rc, os.strerror(rc))
    return None


def read_into(fd, buf, offset, size):
    """read(2) up to ``size`` bytes of fd into the mmap ``buf`` at ``offset``
    (no copy: the address stays page-aligned, as O_DIRECT needs); returns the
    count. os.readv is 3.3+: else libc's read through ctypes."""
    if not PY2:
        return os.readv(fd, [memoryview(buf)[offset:offset + size]])
    func = _libc.read  # pragma: no cover - Python 2.7
    func.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    func.restype = ctypes.c_ssize_t
    while True:
        n = func(fd, buffer_address(buf) + offset, size)
        if n >= 0:
            return n
        err = ctypes.get_errno()
        if err != errno.EINTR:
            raise OSError(err, os.strerror(err))


# --- buffers -------------------------------------------------------------------
def buffer_address(obj):
    """The address of a writable buffer (an mmap), for madvise and /proc/self/smaps.

    ctypes' from_buffer works on both Pythons; its object is dropped at once so
    the mmap can still be closed (Python 3 refuses while an export is alive).
    """
    view = ctypes.c_char.from_buffer(obj)
    address = ctypes.addressof(view)
    del view
    return address


#: linux/mman.h: back this range with transparent huge pages where possible
MADV_HUGEPAGE = 14


def madvise_hugepage(address, length):
    """Ask for transparent huge pages on [address, address+length); True when
    the kernel accepted the advice (it may still fall back to 4 KiB pages).

    One ctypes path for both Pythons (mmap.madvise is 3.8+)."""
    if _libc is None or not sys.platform.startswith("linux"):  # pragma: no cover
        return False
    func = _libc.madvise
    func.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return func(address, length, MADV_HUGEPAGE) == 0


def buffer_from(obj, offset=0, size=None):
    """A zero-copy read-only view of obj[offset:offset+size] that os.write accepts.

    Python 3's memoryview works on an mmap; Python 2.7's mmap only speaks the
    old buffer protocol, so there we use ``buffer`` (whose slices would copy,
    hence the ``size`` argument instead of slicing the result).
    """
    if PY2:  # pragma: no cover
        if size is None:
            return buffer(obj, offset)  # noqa: F821
        return buffer(obj, offset, size)  # noqa: F821
    if size is None:
        return memoryview(obj)[offset:]
    return memoryview(obj)[offset:offset + size]


#: Python 2.7's GIL stays with a thread that blocks briefly in I/O (it takes
#: it straight back), Python 3's is handed to a waiting thread at once: a
#: single thread making many small sends is cheap on 2.7 and slow on 3 when
#: thousands of threads wait (acquire_in_turn decides how to wait for a lock by it).
GIL_KEPT_ACROSS_IO = PY2


# --- multiprocessing -----------------------------------------------------------
def mp_context(method=None):
    """The multiprocessing module or a context for ``method``.

    Python 2.7 has no contexts (it always forks); Python 3 honours ``method``
    ('fork', 'spawn', 'forkserver') so tests can prove spawn-safety.
    """
    import multiprocessing
    if method is None or not hasattr(multiprocessing, "get_context"):
        return multiprocessing
    return multiprocessing.get_context(method)


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


# --- who is at the other end of a unix socket (SO_PEERCRED: Linux) -----------
#: Python 2.7's socket module lacks the constant; its value on Linux by machine
#: (asm-generic is 17; powerpc 21, mips 18, sparc 0x40).
_SO_PEERCRED_BY_MACHINE = (("ppc", 21), ("powerpc", 21), ("mips", 18), ("sparc", 0x40))


def _so_peercred():
    value = getattr(socket, "SO_PEERCRED", None)
    if value is not None or not sys.platform.startswith("linux"):
        return value
    machine = os.uname()[4].lower()
    for prefix, number in _SO_PEERCRED_BY_MACHINE:
        if machine.startswith(prefix):
            return number
    return 17


def peer_uid(sock):
    """The uid of the process at the other end of unix socket ``sock``, or
    None where the system does not say (only Linux's SO_PEERCRED is used)."""
    option = _so_peercred()
    if option is None:
        return None
    size = struct.calcsize("3i")
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, option, size)
    except (OSError, socket.error):
        return None
    if len(raw) < size:
        return None
    return struct.unpack("3i", raw[:size])[1]   # (pid, uid, gid)
