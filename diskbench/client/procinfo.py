"""Facts about a process (the writer): alive?, CPU time, RSS, huge pages.

psutil when it is importable (optional: ``pip install psutil``), else Linux's
/proc. Every function returns None instead of raising when the process is gone
or the information is not available.
"""
import os

try:  # optional dependency: the client runs without it
    import psutil
    PSUTIL_VERSION = getattr(psutil, "__version__", "unknown")
except ImportError:  # pragma: no cover - exercised by a test with psutil hidden
    psutil = None
    PSUTIL_VERSION = None

SOURCE_PSUTIL = "psutil"
SOURCE_PROC = "proc"
NO_PSUTIL_NOTE = ("psutil is not installed: writer CPU%/RSS are read from /proc "
                  "(Linux only); install it with 'pip install psutil'")

try:
    CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
except (ValueError, OSError, AttributeError):  # pragma: no cover
    CLOCK_TICKS = 100


def _proc_stat_fields(pid):
    """Fields of /proc/PID/stat after the command name (index 0 = state)."""
    with open("/proc/%d/stat" % pid) as f:
        text = f.read()
    return text[text.rindex(")") + 2:].split()


def is_alive(pid):
    """True when ``pid`` exists and is not a zombie."""
    if psutil is not None:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except Exception:  # NoSuchProcess, AccessDenied ...
            return False
    try:
        return _proc_stat_fields(pid)[0] not in ("Z", "X")
    except (IOError, OSError, ValueError, IndexError):
        pass
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def proc_cpu_seconds(pid):
    """utime + stime of ``pid`` in seconds from /proc, or None."""
    try:
        fields = _proc_stat_fields(pid)
        return (int(fields[11]) + int(fields[12])) / float(CLOCK_TICKS)
    except (IOError, OSError, ValueError, IndexError):
        return None


def proc_status(pid, keys):
    """{key: the number after it} for the lines of /proc/PID/status named in
    ``keys`` (sizes in KiB), or None when it cannot be read or one is missing."""
    found = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in keys:
                    found[key] = int(value.split()[0])
    except (IOError, OSError, ValueError, IndexError):
        return None
    return found if len(found) == len(keys) else None


def proc_rss_bytes(pid):
    """VmRSS of ``pid`` in bytes from /proc, or None."""
    status = proc_status(pid, ("VmRSS",))
    return None if status is None else status["VmRSS"] * 1024


def huge_page_bytes(address, smaps="/proc/self/smaps"):
    """Bytes of the mapping that holds ``address`` backed by transparent huge
    pages (its AnonHugePages in smaps), or None when that cannot be read."""
    try:
        with open(smaps) as f:
            inside = False
            for line in f:
                head = line.split(None, 1)[0]
                if "-" in head and not head.endswith(":"):  # a new mapping
                    lo, hi = [int(x, 16) for x in head.split("-")]
                    inside = lo <= address < hi
                elif inside and head == "AnonHugePages:":
                    return int(line.split()[1]) * 1024
    except (IOError, OSError, ValueError, IndexError):
        return None
    return None


class CpuSampler(object):
    """CPU% of one process between successive ``sample()`` calls.

    100% = one core fully busy (like top and psutil).
    """

    def __init__(self, pid, use_psutil=True, clock=None):
        from diskbench.compat import monotonic
        self.pid = pid
        self.clock = clock or monotonic
        self.proc = None
        if use_psutil and psutil is not None:
            try:
                self.proc = psutil.Process(pid)
                self.proc.cpu_percent(None)  # prime: the next call measures from here
            except Exception:
                self.proc = None
        self.source = SOURCE_PSUTIL if self.proc is not None else SOURCE_PROC
        self.last_cpu = proc_cpu_seconds(pid)
        self.last_t = self.clock()

    def sample(self):
        """(cpu_percent, rss_bytes) or None when the process is gone."""
        if self.proc is not None:
            try:
                return self.proc.cpu_percent(None), self.proc.memory_info().rss
            except Exception:
                return None
        cpu, now = proc_cpu_seconds(self.pid), self.clock()
        rss = proc_rss_bytes(self.pid)
        if cpu is None or rss is None:
            return None
        pct = 0.0
        if self.last_cpu is not None and now > self.last_t:
            pct = max(0.0, (cpu - self.last_cpu) / (now - self.last_t) * 100.0)
        self.last_cpu, self.last_t = cpu, now
        return pct, rss


def file_size_limit_bytes():
    """This process's file size limit (RLIMIT_FSIZE, ``ulimit -f``) in bytes, or
    None when there is none (or it cannot be read). Writing past it is EFBIG
    (Python ignores the SIGXFSZ that would otherwise kill the writer)."""
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, AttributeError, ValueError, OSError):
        return None
    return None if soft == resource.RLIM_INFINITY or soft < 0 else int(soft)


def available_memory_bytes(meminfo_path="/proc/meminfo"):
    """Memory a new allocation can get without swapping (MemAvailable), or None.

    /proc/meminfo first (Linux 3.14+), then psutil; None when neither knows.
    """
    try:
        with open(meminfo_path) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    parts = line.split()
                    return int(parts[1]) * 1024  # the kernel writes kB (KiB)
    except (IOError, OSError, ValueError, IndexError):
        pass
    if psutil is not None:
        try:
            return int(psutil.virtual_memory().available)
        except Exception:  # not supported here
            pass
    return None
