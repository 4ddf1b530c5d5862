"""How the server's interpreter is tuned for thousands of handler threads.

Three process-wide settings, made once when the server binds (``tune``), the
full garbage collections they leave to the main loop (``FullCollector``), and
one made before the server even starts: glibc's per-thread cache off
(``reexec_untcached``). ``CpuGauge`` says how much of its one CPU the server
needs: what decides how many clients it can serve on time.

Why one CPU (``--cpu``, default: the least busy one at start): only the
thread holding the GIL runs Python, so a second core gives the server
nothing but GIL handoffs between cores: a thread woken by its socket on the
other core spins and sleeps for the GIL, and on Python 2.7 the holder takes
it straight back. The kernel's own work for the sockets is not bound by it.

Why the full collection is not left to CPython: each connection's thread,
handler, socket, locks and registry entry are ~55 objects the collector
tracks, so with thousands of connections a full (oldest-generation)
collection walks hundreds of thousands of them and stops every thread while
it does. CPython starts one
whenever the long-lived objects grew by a quarter, every few seconds while
clients join, then every several seconds as queued records come and go, and
each one was an ack p99 spike. These collections found no garbage at all while messages flowed:
the per-message path makes no reference cycles, so reference counting frees
it, and the young collections (left as they are) take the short-lived
cycles (2.7's pure-Python JSON encoder makes some). What could leave
long-lived cycles is rarer: connections that end, errors kept with their
traceback. So full collections are paid for by connection churn instead:
one after as many closed connections as there are open ones (at least
FULL_GC_MIN_CLOSED), from the main loop. CPython's own rule is back once the
run is over (``restore``).

The figures behind these settings: docs/SCALING.md, "The figures behind the
server's settings".
"""
import gc
import logging
import os
import resource
import sys
import time

from diskbench import compat, linux

#: sys.setswitchinterval for the server on Python 3 (default 0.005 s). Every
#: thread waiting for the GIL asks its holder to drop it after this long; with
#: thousands of handler threads waiting, at 5 ms the recorder is made to drop
#: the GIL in the middle of its batches and waits behind the crowd to get it
#: back, and the acks fall behind. Threads here give the GIL away at every
#: receive and send anyway, so no thread holds it that long.
SWITCH_INTERVAL_S = 0.1
#: The oldest generation's threshold while serving: never reached, so
#: CPython never starts a full collection on its own (FullCollector does).
GC_FULL_NEVER = 1 << 30
#: A full collection runs after this many closed connections at least (and
#: after as many as are open, when more are open): its cost, a walk of every
#: tracked object, grows with the open connections.
FULL_GC_MIN_CLOSED = 1000

#: The most clients one server on Python 2.7 kept its acks on time for on
#: every VM measured (make bench-server; docs/SCALING.md). What sets the
#: limit is the CPU it needs (CpuGauge and CPU_BUSY say that for any host at
#: run time); this says it before the run, for the interpreter that needs
#: the most.
PY2_CLIENTS_MEASURED = 2500


def capacity_warning(clients, py2=compat.PY2):
    """A warning for a run of ``clients`` (--clients) that a server on this
    interpreter was measured to fall behind with, else None."""
    if not py2 or not clients or clients <= PY2_CLIENTS_MEASURED:
        return None
    return ("on the slowest host measured, a server on Python 2.7 kept its acks on "
            "time for up to %d clients (README: How many clients); with --clients %d "
            "it may fall seconds behind at times (nothing is lost; the report says so "
            "and how much of its CPU it needed): run the "
            "server on Python 3 (the clients may stay on 2.7), or split the fleet "
            "over several servers" % (PY2_CLIENTS_MEASURED, clients))


#: The share of its one CPU past which the server's acks fell behind in
#: every committed make bench-server run (docs/SCALING.md, "Where acks fall
#: behind"), lower on 2.7. Past this over a CPU_WINDOW_S the server says so
#: (README: How many clients).
CPU_BUSY = 0.55 if compat.PY2 else 0.65
#: The span its CPU use is measured over: long enough that a burst of hellos
#: or a full collection does not count as load, short enough to show one.
CPU_WINDOW_S = 10.0


def process_cpu_s():
    """CPU seconds (user + system) of this process, all threads, to the
    microsecond (getrusage: os.times counts 10 ms clock ticks, and a short
    run's CPU read as 0 on a fast host)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuGauge(object):
    """The server's own CPU use as a fraction of one CPU (its threads share
    one GIL: one CPU is what it has, whatever ``--cpu`` says): over the run,
    and in its busiest CPU_WINDOW_S. The main loop samples it every tick."""

    def __init__(self, clock=compat.monotonic, cpu=process_cpu_s):
        self.clock, self.cpu = clock, cpu
        self.start = self.mark = (clock(), cpu())
        self.busiest = None           # fraction of one CPU; None before a window ends
        self.warning = None           # what it said, once (live and in the report)

    def sample(self):
        """Close a window when one has passed; the first window over CPU_BUSY
        sets ``warning`` and returns it (once per run), otherwise None."""
        clock = self.clock()
        span = clock - self.mark[0]
        if span < CPU_WINDOW_S:   # the CPU time only then: getrusage walks every
            return None           # thread in the kernel
        now = (clock, self.cpu())
        used = (now[1] - self.mark[1]) / span
        self.mark = now
        self.busiest = used if self.busiest is None else max(self.busiest, used)
        if used <= CPU_BUSY or self.warning is not None:
            return None
        self.warning = ("the server needed %.0f%% of its one CPU over %.0f s: past about "
                "%.0f%% its acks fall behind (README: How many clients); "
                "nothing is lost, but for more clients run the server on Python 3 "
                "or on a faster CPU, or split the fleet over several servers" % (
                    used * 100.0, span, CPU_BUSY * 100.0))
        return self.warning

    def summary(self, messages):
        """report.json's run.server_cpu: ``messages`` is how many the server
        accepted (for the CPU per message that sizes a server)."""
        wall = self.clock() - self.start[0]
        used = self.cpu() - self.start[1]
        return dict(cpu_s=used,
                    mean_percent_of_one_cpu=used * 100.0 / wall if wall > 0 else None,
                    busiest_percent_of_one_cpu=None if self.busiest is None
                    else self.busiest * 100.0,
                    window_s=CPU_WINDOW_S, message_count=messages,
                    ms_per_1000_messages=used * 1e6 / messages if messages else None)


#: glibc (2.26 and later) keeps, per thread, a cache of freed blocks up to
#: 1 KiB (tcache: up to 7 of each size) for that thread's next malloc. A
#: handler thread frees its lines and messages, then sleeps in recv, so with
#: thousands of handler threads these caches hold memory nobody can use
#: (CPython's own allocator takes only blocks up to 256 bytes on 2.7, 512
#: on 3; lines and larger objects come from malloc). The cache
#: can only be turned off before the process starts (the dynamic loader reads
#: GLIBC_TUNABLES), so the server re-executes itself once, same pid.
TUNABLES_ENV = "GLIBC_TUNABLES"
TCACHE_OFF = "glibc.malloc.tcache_count=0"
TCACHE_SINCE_GLIBC = (2, 26)
#: Set in the re-executed server's environment: it never re-executes again
#: (a loader that drops GLIBC_TUNABLES, as for set-user-ID programs, would
#: otherwise make it loop).
REEXEC_ENV = "DISKBENCH_REEXECUTED"

log = logging.getLogger("diskbench.server")


def untcached_env(env, glibc):
    """``env`` with glibc's per-thread cache off, or None when there is
    nothing to change: not glibc (``glibc``: its version, or None), one
    without the cache, or GLIBC_TUNABLES already says (the user's choice)."""
    if glibc is None or glibc < TCACHE_SINCE_GLIBC or REEXEC_ENV in env:
        return None
    current = env.get(TUNABLES_ENV, "")
    if "tcache_count" in current:
        return None
    new = dict(env)
    new[REEXEC_ENV] = "1"
    new[TUNABLES_ENV] = current + ":" + TCACHE_OFF if current else TCACHE_OFF
    return new


def reexec_untcached(args):
    """Become ``sys.executable``, its flags and ``args`` (same pid, same
    streams) with glibc's per-thread cache off, when ``untcached_env`` says
    so; otherwise return. An exec that fails is said and the server runs on."""
    env = untcached_env(os.environ, linux.glibc_version())
    if env is None or not sys.executable:
        return
    argv = [sys.executable] + compat.interpreter_flags() + list(args)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, argv, env)
    except OSError as exc:
        sys.stderr.write("diskbench server: warning: cannot restart with %s=%s (%s); "
                         "running with more memory per thread\n" % (
                             TUNABLES_ENV, TCACHE_OFF, exc.strerror or exc))


#: --cpu values besides a list of CPU numbers.
CPU_AUTO, CPU_ALL = "auto", "all"


def tune(cpu=CPU_AUTO):
    """Server start, before any thread is started (they inherit the CPUs):
    the CPUs (``cpu``: CPU_AUTO, CPU_ALL or a list), the GIL switch interval
    for thousands of threads (Python 2.7 has none: its GIL is handed over at
    blocking calls and every 100 bytecodes), no automatic full garbage
    collection (module docstring), and log records without the thread and
    process (the server's formats show neither, and a handler thread, started
    without threading.Thread, would get a dummy Thread object, never freed, at
    its first log call). Returns what ``restore`` needs to undo it (a server
    run in-process), and the CPUs it runs on (None: any)."""
    allowed = linux.get_affinity()
    before = (getattr(sys, "getswitchinterval", lambda: None)(), gc.get_threshold(),
              allowed, (logging.logThreads, logging.logProcesses))
    logging.logThreads = logging.logProcesses = False
    cpus = choose_cpus(cpu, allowed)
    if cpus is not None:
        try:
            linux.set_affinity(cpus)
        except OSError as exc:   # an optimisation only: say so and go on
            log.warning("cannot keep the server on CPU %s (%s); it runs on any",
                        format_cpus(cpus), exc.strerror or exc)
            cpus = None
    if before[0] is not None:
        sys.setswitchinterval(SWITCH_INTERVAL_S)
    young, middle = before[1][:2]
    gc.set_threshold(young, middle, GC_FULL_NEVER)
    return before, cpus


def choose_cpus(cpu, allowed):
    """The CPUs to run on, or None to leave them be (CPU_ALL, one allowed,
    or a platform that cannot say)."""
    if cpu == CPU_ALL or not allowed or len(allowed) < 2:
        return None
    if cpu == CPU_AUTO:
        return [least_busy_cpu(allowed, current_cpu())]
    return list(cpu)


#: --cpu auto looks this long at how busy each CPU is before it picks one.
CPU_SAMPLE_S = 0.2


def least_busy_cpu(allowed, here=None, idle=None, sample_s=CPU_SAMPLE_S):
    """The allowed CPU that was idle the most over ``sample_s`` (/proc/stat),
    ``here`` (the one the server started on) among equals: a server pinned
    to the CPU it happened to start on, beside a busy process pinned or
    settled there, got part of a CPU and fell behind (issue 28). Where the
    kernel cannot say, ``here``, else the last allowed CPU. ``idle``: the
    reader (tests)."""
    read = idle or cpu_idle_ticks
    first = read()
    time.sleep(sample_s)
    second = read()
    fallback = here if here in allowed else allowed[-1]
    if not first or not second:
        return fallback
    gained = dict((c, second[c] - first[c]) for c in allowed if c in first and c in second)
    if not gained:
        return fallback
    most = max(gained.values())
    # a tick of noise is no difference: stay where the kernel put us
    if gained.get(fallback, -1) >= most - CPU_TICKS_SAME:
        return fallback
    return max(sorted(gained), key=lambda c: gained[c])


#: Idle ticks (of USER_HZ) within which two CPUs count as equally busy.
CPU_TICKS_SAME = 2


def cpu_idle_ticks(path="/proc/stat"):
    """{cpu: idle + iowait ticks} from /proc/stat, or None."""
    try:
        with open(path) as f:
            out = {}
            for line in f:
                if line.startswith("cpu") and line[3:4].isdigit():
                    parts = line.split()
                    out[int(parts[0][3:])] = int(parts[4]) + int(parts[5])
            return out or None
    except (IOError, OSError, ValueError, IndexError):
        return None


def parse_cpus(text, allowed=None):
    """--cpu's value: CPU_AUTO, CPU_ALL or a list like "1" or "0,2"; ValueError
    naming the fix for anything else, or a CPU outside ``allowed``."""
    text = text.strip().lower()
    if text in (CPU_AUTO, CPU_ALL):
        return text
    try:
        cpus = sorted(set(int(part) for part in text.split(",")))
    except ValueError:
        cpus = [-1]
    if not cpus or cpus[0] < 0:
        raise ValueError("use %s, %s or CPU numbers like 1 or 0,2, not %r" % (
            CPU_AUTO, CPU_ALL, text))
    if allowed and not set(cpus) <= set(allowed):
        raise ValueError("CPU %s: this process may only run on CPU %s" % (
            format_cpus(cpus), format_cpus(allowed)))
    return cpus


def format_cpus(cpus):
    return ",".join("%d" % cpu for cpu in cpus)


def current_cpu():
    """The CPU this process last ran on (/proc/self/stat), or None."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[36])    # field 39 of stat(5), counted after the name
    except (IOError, OSError, IndexError, ValueError):
        return None


def restore(before):
    """Undo ``tune`` (the run is over)."""
    switch, thresholds, allowed, log_fields = before
    logging.logThreads, logging.logProcesses = log_fields
    if switch is not None:
        sys.setswitchinterval(switch)
    gc.set_threshold(*thresholds)
    if allowed:
        linux.set_affinity(allowed)


class FullCollector(object):
    """Counts closed connections (any thread); the main loop's ``maybe_collect``
    runs a full collection once enough have closed."""

    def __init__(self, min_closed=FULL_GC_MIN_CLOSED, collect=gc.collect):
        self.min_closed = min_closed
        self.collect = collect
        self.closed = 0               # connections closed since the last one
        self.runs = 0
        self.worst_s = 0.0            # the longest one (every thread waited that long)

    def connection_closed(self):
        self.closed += 1              # under the caller's lock; a lost count is harmless

    def maybe_collect(self, open_connections):
        """Collect when as many connections closed as are open (at least
        ``min_closed``); returns the objects freed, or None if not due."""
        if self.closed < max(self.min_closed, open_connections):
            return None
        return self.run("%d connections closed" % self.closed)

    def run(self, why):
        self.closed = 0
        started = time.time()
        freed = self.collect()
        took = time.time() - started
        self.runs += 1
        self.worst_s = max(self.worst_s, took)
        log.info("full garbage collection (%s): %d objects freed in %.0f ms", why,
                 freed, took * 1000.0)
        return freed
