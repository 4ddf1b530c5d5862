"""Shared test machinery: real processes with guaranteed cleanup, deadlines not sleeps.

Every process a test starts goes through ``Procs``; each is started in its own
process group and killed (with all its children) when the test ends, and an
atexit reaper catches anything a crashed test left behind.
"""
import atexit
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Where the repository's history is when the tests run from a copy of the tree
#: without it (scripts/mutate.py sets it).
GIT_DIR_ENV = "DISKBENCH_GIT_DIR"


def git_dir():
    """The repository's .git, also from a copy of the tree (GIT_DIR_ENV)."""
    return os.environ.get(GIT_DIR_ENV) or os.path.join(REPO, ".git")
_LIVE = set()


class LogLines(logging.Handler):
    """``with LogLines(name) as said:`` the messages logger ``name`` logs
    meanwhile (``said.lines``), at any level, whatever other tests did to
    logging (an in-process server sets its logger's level and propagation)."""

    def __init__(self, name):
        logging.Handler.__init__(self, logging.DEBUG)
        self.lines, self.log = [], logging.getLogger(name)

    def emit(self, record):
        self.lines.append(record.getMessage())

    def __enter__(self):
        self.was = (self.log.disabled, self.log.level)
        self.log.disabled = False
        self.log.setLevel(logging.DEBUG)
        self.log.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.log.removeHandler(self)
        self.log.disabled, level = self.was
        self.log.setLevel(level)


def wait_until(predicate, timeout=10.0, interval=0.02, what="condition"):
    """Poll ``predicate`` until it returns truthy; fail the test at the deadline."""
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def env_for_child(extra=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


#: Set in the environment of every process a test starts (its value names that
#: start), so a group whose leader is gone is killed only where it is ours.
GROUP_TAG_VAR = "DISKBENCH_TEST_GROUP"


def tagged_env(env=None):
    """env_for_child(env) with a fresh GROUP_TAG_VAR; returns (env, tag): set
    the tag as the started Popen's ``group_tag`` so cleanup can find its group."""
    tag = uuid.uuid4().hex
    child_env = env_for_child(env)
    child_env[GROUP_TAG_VAR] = tag
    return child_env, tag


def _kill_group(proc, sig=signal.SIGKILL):
    """Kill ``proc``'s process group, also children that outlived it.

    While the leader is not reaped its pid (the group's id) cannot be reused,
    so killpg is safe. Once it is reaped, the id may already belong to a
    stranger's new group (pid_max is 32768 here; tests running side by side
    start thousands of processes), so only the members carrying this start's
    tag are killed: a killpg then once killed another test's server."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            pass
        return
    for pid in _tagged_members(proc.pid, getattr(proc, "group_tag", None)):
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def _tagged_members(pgid, tag):
    if tag is None:
        return []
    needle = ("%s=%s" % (GROUP_TAG_VAR, tag)).encode("ascii")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as f:
                if int(f.read().rsplit(b")", 1)[1].split()[2]) != pgid:
                    continue
            with open("/proc/%s/environ" % entry, "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(entry))
        except (IOError, OSError, IndexError, ValueError):
            continue   # gone while we looked
    return found


def _reap_all():
    for proc in list(_LIVE):
        _kill_group(proc)
        try:
            proc.wait()
        except OSError:
            pass
        _LIVE.discard(proc)


atexit.register(_reap_all)


def _child_setup():
    """In the child before exec: its own process group, and SIGHUP/SIGINT at
    their defaults whatever the test run inherited (nohup, a background job),
    so the product's own signal handling is what the tests see."""
    os.setsid()
    for signum in (signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)


class Procs(object):
    """Starts ``python -m <module>`` processes and kills them all at cleanup."""

    def __init__(self, python=None):
        self.python = python or sys.executable
        self.procs = []

    def start(self, args, env=None, cwd=None, stdin=None):
        """Start ``python *args`` in its own process group; stdout/stderr piped."""
        child_env, tag = tagged_env(env)
        proc = subprocess.Popen(
            [self.python] + list(args), cwd=cwd or REPO, env=child_env,
            stdin=stdin if stdin is not None else subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=_child_setup, close_fds=True)
        proc.group_tag = tag
        self.procs.append(proc)
        _LIVE.add(proc)
        return proc

    def run(self, args, timeout=60, env=None):
        """Run to completion; return (exit code, stdout text, stderr text)."""
        proc = self.start(args, env=env)
        out, err = communicate(proc, timeout)
        return proc.returncode, out, err

    def cleanup(self):
        for proc in self.procs:
            _kill_group(proc)  # also children that outlived their parent
            try:
                proc.wait()
            except OSError:
                pass
            for stream in (proc.stdout, proc.stderr, proc.stdin):
                if stream is not None:
                    try:
                        stream.close()
                    except (OSError, IOError):
                        pass  # 2.7: a reader thread is still inside readline()
            _LIVE.discard(proc)

class PatchedServer(object):
    """``procs`` whose server is started through ``code``, run in the server
    process before its main: a fault injected into the real server."""

    def __init__(self, procs, code):
        self.procs, self.code = procs, code

    def start(self, args, env=None):
        assert list(args[:2]) == ["-m", "diskbench.server"]
        return self.procs.start(["-c", self.code + "\nimport sys\nfrom diskbench.server."
                                 "__main__ import main\nsys.exit(main(sys.argv[1:]))\n"]
                                + list(args[2:]), env=env)



def communicate(proc, timeout):
    """Popen.communicate with a deadline on both Pythons (2.7 has no timeout=)."""
    import threading
    timer = threading.Timer(timeout, _kill_group, [proc])
    timer.start()
    try:
        out, err = proc.communicate()
    finally:
        timer.cancel()
    return out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def connect(port, timeout=5.0):
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return sock


def thp_mode():
    """The kernel's transparent huge page mode ('always', 'madvise', 'never'),
    or None where there is no such setting."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().split("[")[1].split("]")[0]
    except (IOError, OSError, IndexError):
        return None


def mounted_tmpfs(tmpdir, size_mb):
    """A real tmpfs of ``size_mb`` MiB mounted under ``tmpdir`` (a generator for a
    pytest fixture: yields the mount point, unmounts at the end); skips the
    test with the reason where it cannot be mounted (not root)."""
    import pytest
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (running as uid %d)"
                    % os.geteuid())
    mnt = str(tmpdir.mkdir("tmpfs"))
    proc = subprocess.Popen(["mount", "-t", "tmpfs", "-o", "size=%dm" % size_mb,
                             "tmpfs", mnt], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    out = proc.communicate()[0]
    if proc.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % out.decode("utf-8", "replace")
                    .strip())
    try:
        yield mnt
    finally:
        subprocess.call(["umount", "-l", mnt])


def mounted_ext4_loop(tmpdir, size_mb):
    """A real ext4 of ``size_mb`` MiB on a loop device (an image file in
    ``tmpdir``), mounted ``errors=remount-ro`` under ``tmpdir`` (a generator
    for a pytest fixture: yields an ``Ext4Loop``, unmounts at the end); skips
    the test with the reason where it cannot be made (not root, no loop
    devices, no mkfs.ext4)."""
    import pytest
    if os.geteuid() != 0:
        pytest.skip("a loop-mounted ext4 needs root (running as uid %d)" % os.geteuid())
    fs = Ext4Loop(str(tmpdir.join("ext4.img")), str(tmpdir.mkdir("ext4")))
    with open(fs.image, "wb") as f:
        f.truncate(size_mb << 20)
    for cmd in (["mkfs.ext4", "-q", "-F", fs.image], fs.mount_cmd()):
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        except OSError as exc:
            pytest.skip("cannot run %s: %s" % (cmd[0], exc))
        out = proc.communicate()[0]
        if proc.returncode != 0:
            pytest.skip("cannot make a loop-mounted ext4 here (%s): %s" % (
                " ".join(cmd), out.decode("utf-8", "replace").strip()))
    try:
        yield fs
    finally:
        subprocess.call(["umount", "-l", fs.path])


class Ext4Loop(object):
    """A loop-mounted ext4 (``mounted_ext4_loop``): its error trigger and a
    remount, as after a crash of what used it."""

    def __init__(self, image, path):
        self.image = image
        self.path = path

    def mount_cmd(self):
        return ["mount", "-o", "loop,errors=remount-ro", self.image, self.path]

    def device(self):
        with open("/proc/self/mounts") as f:
            for line in f:
                fields = line.split()
                if fields[1] == self.path:
                    return os.path.basename(fields[0])
        raise AssertionError("%s is not mounted" % self.path)

    def fail(self):
        """A filesystem error now (ext4's own trigger): it goes read-only and
        what was not on the device is lost."""
        with open("/sys/fs/ext4/%s/trigger_fs_error" % self.device(), "w") as f:
            f.write("diskbench test\n")

    def remount(self):
        """Unmount (lazily: a killed process's files go with it) and mount
        again: what is read now is what the device holds."""
        subprocess.check_call(["umount", "-l", self.path])
        subprocess.check_call(self.mount_cmd())


def ctl_request(log_dir, line, timeout=10.0):
    """Send one raw request line on a server's control socket; the answer's
    messages (the server closes after its last line)."""
    from diskbench import protocol
    from diskbench.protocol import ctl as channel
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(channel.socket_path(log_dir))
    try:
        sock.sendall(line)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    return [protocol.decode(x, protocol.CTL_REPLY) for x in data.splitlines()]


def proc_state(pid):
    """The /proc state letter of ``pid`` (None when gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (IOError, OSError):
        return None
