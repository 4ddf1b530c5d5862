"""Every difference between Python 2.7 and Python 3, in one place.

Other modules import names from here and never look at ``sys.version_info``.
Text is ``unicode``/``str``; wire data is bytes; conversions happen only at the
socket (``as_bytes``/``as_text``). The system calls behind some fallbacks live
in linux.py, waiting on descriptors in pollio.py.
"""
import hmac
import os
import select
import socket
import sys
import time

from diskbench.linux import libc_monotonic

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
    # 2.7's C JSON scanner reads UTF-8 bytes itself (strings decoded strictly),
    # twice as fast as it reads the same line decoded to text first
    JSON_SCANS_BYTES = True
    BYTE_FILE = file  # noqa: F821 - its write takes bytes as they are, unicode as ASCII
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
    JSON_SCANS_BYTES = False   # 3's scanner takes text only
    BYTE_FILE = ()


try:  # greatest common divisor: math's on 3.5+, fractions' on 2.7 (gone in 3.9)
    from math import gcd  # noqa: F401 (plan.py)
except ImportError:
    from fractions import gcd  # noqa: F401


def as_bytes(s, encoding="utf-8"):
    """Text to bytes (bytes pass through)."""
    if isinstance(s, binary_type):
        return s
    return s.encode(encoding)


def path_bytes(path):
    """A file system path as the bytes the kernel gets: Python 3's str through
    os.fsencode (undecodable bytes come back as they were), 2.7's unicode in
    the file system's encoding (UTF-8 when it names none); bytes as they are.
    How long a path really is (a unix socket's address has a byte limit)."""
    if isinstance(path, binary_type):
        return path
    if PY2:
        try:
            return path.encode(sys.getfilesystemencoding() or "utf-8")
        except UnicodeError:      # text the locale cannot spell (LC_ALL=C): UTF-8's bytes
            return path.encode("utf-8")
    return os.fsencode(path)


def as_text(b, encoding="utf-8", errors="strict"):
    """Bytes to text (text passes through)."""
    if isinstance(b, text_type):
        return b
    return b.decode(encoding, errors)


def native_arg(value):
    """A word for another program's command line as this interpreter's argv
    holds one: on 2.7 bytes (text, e.g. from a hosts file, as UTF-8), so it
    never meets argv's non-ASCII bytes in one string; on 3 as it is."""
    if PY2 and isinstance(value, text_type):
        return value.encode("utf-8")
    return value


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


# --- IPv6 ------------------------------------------------------------------------
#: This Python can make IPv6 sockets (built with IPv6; the kernel may still refuse
#: them: EAFNOSUPPORT when the socket is made).
HAS_IPV6 = bool(getattr(socket, "has_ipv6", False)) and hasattr(socket, "AF_INET6")
#: The socket option that makes an IPv6 listener also take IPv4 (None where absent).
IPV6_V6ONLY = getattr(socket, "IPV6_V6ONLY", None)


def is_ipv6_address(text):
    """True when ``text`` is an IPv6 address in text form (no brackets, no
    %zone). Refusals differ: 3 raises OSError for anything inet_pton refuses,
    2.7 socket.error, UnicodeEncodeError for non-ASCII text and TypeError for
    a NUL (3: ValueError); inet_pton itself is 2.7's only on Unix."""
    if not hasattr(socket, "AF_INET6") or not hasattr(socket, "inet_pton"):  # pragma: no cover
        return False
    try:
        socket.inet_pton(socket.AF_INET6, text)
    except (socket.error, OSError, ValueError, TypeError, UnicodeError):
        return False
    return True


# --- monotonic clock (time.monotonic is 3.3+) --------------------------------
monotonic = getattr(time, "monotonic", libc_monotonic)


# --- locks under the GIL --------------------------------------------------------
def acquire_in_turn(lock):
    """Take ``lock``, on Python 3 only while running (holding the GIL).

    A blocking ``acquire`` of a contended lock hands it, on release, to a
    sleeping thread that must then wait for the GIL while it holds the lock:
    with thousands of threads waiting for the GIL every other thread piles
    up behind it (a lock convoy: docs/SCALING.md, "The figures behind the
    server's settings"). Here a
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


def interpreter_flags():
    """This interpreter's command-line flags (-O, -W, -X ...), to start another
    like it (a private helper of subprocess, there since 2.7.3; [] without it)."""
    import subprocess
    return list(getattr(subprocess, "_args_from_interpreter_flags", list)())


# --- buffers -------------------------------------------------------------------
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


# --- processes and consoles -----------------------------------------------------
def new_session():
    """Popen kwargs that put a child in its own session: a Ctrl-C on the terminal reaches
    only the parent, which forwards it (start_new_session is 3.2+)."""
    if not PY2:
        return {"start_new_session": True}
    return {"preexec_fn": os.setsid}


def write_text(stream, text):
    """``stream.write(text)`` for a console that may not take every character:
    2.7's file for a pipe or file has no encoding (unicode would go out as
    ASCII), so text goes out as UTF-8 there; a character the stream's encoding
    lacks (a C locale, PYTHONIOENCODING=ascii) goes out escaped (\\xfc). Never
    a UnicodeEncodeError. (Encoded here first: a 2.7 ctl run as another user may
    not be able to import the ascii codec file.write would use.)"""
    encoding = getattr(stream, "encoding", None)
    if encoding is None and isinstance(stream, BYTE_FILE) and isinstance(text, text_type):
        stream.write(text.encode("utf-8", "backslashreplace"))
        return
    try:
        stream.write(text)       # encoded whole before any of it is written
    except UnicodeEncodeError:
        encoding = encoding or "ascii"
        stream.write(text.encode(encoding, "backslashreplace").decode(encoding))


def write_line(stream, text):
    """One line of text on a console (write_text), flushed."""
    write_text(stream, text + "\n")
    stream.flush()


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


