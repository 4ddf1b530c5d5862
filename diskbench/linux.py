"""The Linux system calls diskbench makes through libc (ctypes), each with
the stdlib's own call first where the running Python has it.

Separate from compat.py, which holds only what differs between Python 2.7 and
Python 3: these are what the kernel offers (clock, CPU affinity, fallocate,
fadvise, madvise, SO_PEERCRED), whichever Python asks. Imports nothing of
diskbench (compat.py takes its 2.7 monotonic clock from here).
"""
import ctypes
import ctypes.util
import errno
import os
import socket
import struct
import sys


# --- the C library ----------------------------------------------------------
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
    # no argtypes: the one call below passes an int and a ctypes array, which
    # ctypes passes as they are; checking them each time doubled the call's cost
    func.restype = ctypes.c_int
    return func


_clock_gettime = _load_clock_gettime()


# --- monotonic clock (compat.monotonic on 2.7) -------------------------------
_CLOCK_MONOTONIC = 1  # linux/time.h


#: The timespec every call fills: the GIL is held through the call (PyDLL)
#: and both fields are read by one slice, so a thread reads a whole reading,
#: its own or one taken after its call began (never half of each). A new
#: struct per call cost more than the call (2.7 reads the clock per message).
_NOW = (ctypes.c_long * 2)()


def libc_monotonic():
    """Seconds from an arbitrary fixed point; never goes backwards (2.7's
    monotonic, from clock_gettime; kept importable on 3 so it can be tested)."""
    if _clock_gettime(_CLOCK_MONOTONIC, _NOW) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    sec, nsec = _NOW[:]
    return sec + nsec * 1e-9


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


# --- which C library --------------------------------------------------------
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


# --- preallocation and the page cache (os.posix_f* are 3.3+) -----------------
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
    if hasattr(os, "readv"):
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


# --- buffers ------------------------------------------------------------------
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
