"""Network namespaces as separate hosts on one machine: a reusable test harness.

``Fleet`` builds one server namespace holding a bridge with ``SERVER_ADDR`` and N
client namespaces, each joined to that bridge by its own veth pair and holding its own
address (``10.231.0.11``, ``.12``, ...): real routing over real interfaces, addresses
that exist only inside these namespaces. Names carry the pid and a random part, so
concurrent runs never meet, and ``close()`` (also run at exit) deletes every namespace
after killing what runs inside, even when the test failed.

Needs root and ``ip netns`` (iproute2); ``unavailable()`` says why not, for a skip.
"""
import atexit
import os
import signal
import subprocess
import sys
import uuid

from tests.helpers import _LIVE, env_for_child, tagged_env

IP = "ip"
SUBNET_PREFIX = "10.231.0."
SERVER_ADDR = SUBNET_PREFIX + "1"
PREFIX_LEN = 24
FIRST_CLIENT_HOST = 11
BRIDGE = "br0"
#: Interface name inside each client namespace, and the one a test cuts.
CLIENT_IF = "eth0"

_OPEN = []


def _ip(*args):
    """Run ``ip ARGS``; raise with ip's own message on failure."""
    proc = subprocess.Popen((IP,) + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError("ip %s: %s" % (" ".join(args), err.decode("utf-8", "replace")
                                          .strip()))
    return out.decode("utf-8", "replace")


def unavailable():
    """None when namespaces can be made here, else the reason (for pytest.skip)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "not root: ip netns needs root"
    probe = "dbprobe-%d-%s" % (os.getpid(), uuid.uuid4().hex[:6])
    try:
        _ip("netns", "add", probe)
    except OSError:
        return "the ip command (iproute2) is missing"
    except RuntimeError as exc:
        return "ip netns does not work here: %s" % exc
    try:
        _ip("netns", "del", probe)
    except RuntimeError:
        pass
    return None


class Fleet(object):
    """A server namespace and ``clients`` client namespaces on one bridge."""

    def __init__(self, clients=3):
        tag = "%d-%s" % (os.getpid() % 100000, uuid.uuid4().hex[:4])
        self.server_ns = "dbs-%s" % tag
        self.client_ns = ["dbc%d-%s" % (i + 1, tag) for i in range(clients)]
        self.client_addr = [SUBNET_PREFIX + str(FIRST_CLIENT_HOST + i) for i in range(clients)]
        self.made = []
        _OPEN.append(self)
        try:
            self._build()
        except Exception:
            self.close()
            raise

    def _build(self):
        s = self.server_ns
        _ip("netns", "add", s)
        self.made.append(s)
        _ip("-n", s, "link", "set", "lo", "up")
        _ip("-n", s, "link", "add", BRIDGE, "type", "bridge")
        _ip("-n", s, "addr", "add", "%s/%d" % (SERVER_ADDR, PREFIX_LEN), "dev", BRIDGE)
        _ip("-n", s, "link", "set", BRIDGE, "up")
        for i, (ns, addr) in enumerate(zip(self.client_ns, self.client_addr)):
            _ip("netns", "add", ns)
            self.made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            # made inside the server namespace (no name in the root namespace to clash)
            inner, outer = "vc%d" % i, "vs%d" % i
            _ip("-n", s, "link", "add", inner, "type", "veth", "peer", "name", outer)
            _ip("-n", s, "link", "set", inner, "netns", ns)
            _ip("-n", ns, "link", "set", inner, "name", CLIENT_IF)
            _ip("-n", ns, "addr", "add", "%s/%d" % (addr, PREFIX_LEN), "dev", CLIENT_IF)
            _ip("-n", ns, "link", "set", CLIENT_IF, "up")
            _ip("-n", s, "link", "set", outer, "master", BRIDGE)
            _ip("-n", s, "link", "set", outer, "up")

    def argv(self, ns, argv):
        return [IP, "netns", "exec", ns] + list(argv)

    def start(self, procs, ns, argv, env=None, stdout=subprocess.PIPE):
        """Start ``argv`` inside namespace ``ns``, owned by the ``procs`` fixture.

        A piped stdout must be read while the process runs (a full pipe blocks its
        writer); give a file for output nobody reads until the end."""
        child_env, tag = tagged_env(env)
        proc = subprocess.Popen(self.argv(ns, argv), env=child_env,
                                stdin=subprocess.PIPE, stdout=stdout,
                                stderr=subprocess.PIPE, preexec_fn=os.setsid, close_fds=True)
        proc.group_tag = tag
        procs.procs.append(proc)
        _LIVE.add(proc)
        return proc

    def link(self, index, up):
        """Cut (``up=False``) or restore client ``index``'s only link."""
        _ip("-n", self.client_ns[index], "link", "set", CLIENT_IF, "up" if up else "down")

    def close(self):
        """Kill what runs inside, then delete every namespace made (idempotent)."""
        for ns in reversed(self.made):
            try:
                pids = _ip("netns", "pids", ns).split()
            except RuntimeError:
                pids = []
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
            try:
                _ip("netns", "del", ns)
            except RuntimeError:
                pass
        self.made = []
        if self in _OPEN:
            _OPEN.remove(self)


def _close_all():
    for fleet in list(_OPEN):
        fleet.close()


atexit.register(_close_all)


#: sitecustomize.py that moves Python's wall clock (time.time, time.time_ns) by the
#: offset in DISKBENCH_TEST_CLOCK_OFFSET_S, in every process of the interpreter it is
#: on the path of (fork and spawn children too); the monotonic clock is left alone.
#: libfaketime would do it below Python, but its 0.9.10 (Debian 12) makes Python 3's
#: time.sleep fail with EINVAL when the monotonic clock is left alone
#: (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)) and hangs it when it is not.
CLOCK_SHIFT = '''"""Test clock shift (tests/netns.py): the wall clock moved, monotonic untouched."""
import os
import time

_offset = float(os.environ.get("DISKBENCH_TEST_CLOCK_OFFSET_S") or 0)
_step_file = os.environ.get("DISKBENCH_TEST_CLOCK_STEP_FILE")  # moved once it exists
if _offset:
    _real_time = time.time

    def _moved():
        if _step_file and not os.path.exists(_step_file):
            return _real_time()
        return _real_time() + _offset
    time.time = _moved
    if hasattr(time, "time_ns"):
        time.time_ns = lambda: int(_moved() * 1e9)
'''


def clock_shift_env(directory, offset_s, step_file=None):
    """Environment for a child whose wall clock runs ``offset_s`` ahead (``directory``
    receives the sitecustomize.py); with ``step_file``, only from the moment that
    file exists (a step in the middle of a run), in every process at once."""
    path = os.path.join(str(directory), "sitecustomize.py")
    with open(path, "w") as f:
        f.write(CLOCK_SHIFT)
    env = {"PYTHONPATH": os.pathsep.join([str(directory), env_for_child()["PYTHONPATH"]]),
           "DISKBENCH_TEST_CLOCK_OFFSET_S": repr(float(offset_s))}
    if step_file:
        env["DISKBENCH_TEST_CLOCK_STEP_FILE"] = str(step_file)
    return env
