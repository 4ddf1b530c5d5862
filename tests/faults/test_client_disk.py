"""Disk faults on the client, with real processes and a real full filesystem.

A small tmpfs (root only; skipped with the reason otherwise) is too small for
--max-files files: without --force the start-up check refuses (CLIENT_SPACE);
with --force the client runs, the writer really hits ENOSPC, stops, removes its
files, sends an ERROR with the errno text, exits CLIENT_DISK_ERROR, and the
real server reports the client FAILED with that reason.

EIO cannot be produced on demand by a filesystem here, so one test injects it
into the writer's os.write (the client runs for real otherwise) and checks the
same path with errno 5.

The directory measured can stop being that directory mid-run: unmounted
lazily (its path then leads to the directory below the mount point, on
another disk) or mounted over. The writer checks each file it opens against
the directory the start-up checks measured: the client fails (exit 14,
ENODEV naming what changed) instead of going on to measure another
filesystem as this one and calling it finished, and every data file is
removed where it is, the detached filesystem's too.

A filesystem that fails mid-run (ext4's own error trigger, mounted
errors=remount-ro) stops the writer (EROFS, exit 14), and its data files can
then not be removed: that is said, naming each file left and how much, in the
log and in the report, never left on the disk under test quietly.

A tmpfs is no disk: a run there measures memory. It runs (a test may want
that), but the client says so in its log and to the server, and report.txt
and report.json carry the note beside the client's figures.
"""
import json
import os
import re
import subprocess

import pytest

from diskbench import exitcodes
from diskbench import protocol as P
from tests.helpers import communicate, mounted_ext4_loop, mounted_tmpfs, wait_until
from tests.test_client_runs import client_args, client_log, of, records, start_server

TMPFS_MB = 50
# 30 MiB files: two of them (60 MiB) cannot fit in 50 MiB, whatever the timing;
# the check wants 2 x 30 + 64 MiB, so it refuses unless --force.
DISK_ARGS = dict(chunk=10, file_mb=30)


@pytest.fixture
def small_tmpfs(tmpdir):
    for mnt in mounted_tmpfs(tmpdir, TMPFS_MB):
        yield mnt


def data_files(directory):
    return [n for n in os.listdir(directory) if n.startswith("diskbench-")]


def test_small_disk_is_refused_without_force(procs, tmpdir, small_tmpfs):
    code, out, err = procs.run(client_args(tmpdir, 1, "small", small_tmpfs,
                                           **DISK_ARGS), timeout=30)
    assert code == exitcodes.CLIENT_SPACE, err
    assert "not enough free space in %s" % small_tmpfs in err
    assert "Traceback" not in err
    assert os.listdir(small_tmpfs) == []


def test_enospc_stops_cleans_up_reports_and_exits_14(procs, tmpdir, small_tmpfs):
    slog = str(tmpdir.join("server-logs"))
    server, port = start_server(procs, slog, "--clients", "1")
    client = procs.start(client_args(tmpdir, port, "full", small_tmpfs, duration=30,
                                     extra=["--force", "--deliver-timeout", "3"],
                                     **DISK_ARGS))
    out, err = communicate(client, 60)
    assert client.returncode == exitcodes.CLIENT_DISK_ERROR, err
    assert "Traceback" not in err
    assert "--force: running anyway; not enough free space" in err
    stop_lines = [ln for ln in err.splitlines() if "stop (error)" in ln]
    assert len(stop_lines) == 1, err
    assert "the writer stopped on a disk error: ENOSPC: No space left on device" \
        in stop_lines[0] and "exit code 14" in stop_lines[0]
    assert data_files(small_tmpfs) == []
    assert "ENOSPC" in client_log(tmpdir, "full")
    # the server got the error (with errno) and reports the client FAILED with it
    communicate(server, 30)
    assert server.returncode == exitcodes.SERVER_INCOMPLETE
    msgs = records(slog)
    errors = of(msgs, P.ERROR, "full")
    assert len(errors) == 1 and errors[0].errno == 28 and errors[0].fatal
    assert errors[0].source == "writer" and errors[0].reason.startswith("ENOSPC: ")
    # the server waits (liveness.SUMMARY_GRACE_S) for the failed client's summary
    assert [m.reason for m in of(msgs, P.STOP, "full")] == [P.STOP_ERROR]
    assert "did not acknowledge" not in err  # nothing was left undelivered
    assert of(msgs, P.ROLLOVER, "full")  # it wrote one whole file before the disk filled
    with open(os.path.join(slog, "report.json")) as f:
        entry = json.load(f)["clients"][0]
    assert entry["state"] == "failed"
    assert "No space left on device" in entry["state_why"]
    assert entry["error_list"][0]["os_errno"] == 28


# Runs the real client with the writer process's os.write failing with EIO
# after 3 chunks (fork start method: the writer inherits the patch; the main
# process's start-up calibration, which shares OsOps, is left alone).
EIO_CLIENT = """
import errno, os, sys
from diskbench.client import writer
main_pid = os.getpid()
calls = [0]
def failing_write(fd, data):
    if os.getpid() == main_pid:
        return os.write(fd, data)
    calls[0] += 1
    if calls[0] > 3:
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    return os.write(fd, data)
writer.OsOps.write = staticmethod(failing_write)
from diskbench.client.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def test_eio_in_the_writer_stops_cleans_up_and_exits_14(procs, tmpdir):
    from tests.test_client_fakeserver import FakeServer
    fake = FakeServer()
    try:
        data = str(tmpdir.mkdir("data"))
        args = client_args(tmpdir, fake.port, "eio", data, duration=30)
        code, out, err = procs.run(["-c", EIO_CLIENT] + args[2:], timeout=60,
                                   env={"DISKBENCH_START_METHOD": "fork"})
        assert code == exitcodes.CLIENT_DISK_ERROR, err
        assert "Traceback" not in err
        assert "the writer stopped on a disk error: EIO: Input/output error" in err
        assert data_files(data) == []
        err_msg = wait_until(lambda: fake.of_type(P.ERROR), 5, what="error")[0]
        assert err_msg.errno == 5 and err_msg.source == "writer" and err_msg.fatal
        assert fake.of_type(P.STOP)[0].reason == P.STOP_ERROR
        assert fake.of_type(P.STOP)[0].chunks_written == 3
    finally:
        fake.close()


#: A moved directory ends the client within this (it writes at RAM speed).
MOVED_TIMEOUT_S = 60.0
#: Room for --max-files 2 files of 10 MiB and the start-up check's margin.
ROOMY_TMPFS_MB = 160


@pytest.fixture
def roomy_tmpfs(tmpdir):
    for mnt in mounted_tmpfs(tmpdir, ROOMY_TMPFS_MB):
        yield mnt


@pytest.mark.parametrize("how", ["umount-lazy", "mounted-over"])
def test_directory_unmounted_or_mounted_over_midrun_fails_exit_14(procs, tmpdir,
                                                                  roomy_tmpfs, how):
    small_tmpfs = roomy_tmpfs
    slog = str(tmpdir.join("server-logs"))
    server, port = start_server(procs, slog, "--clients", "1")
    client = procs.start(client_args(tmpdir, port, "moved", small_tmpfs, chunk=10,
                                     file_mb=10, duration=30))
    wait_until(lambda: of(records(slog), P.ROLLOVER, "moved"), 30,
               what="the first rollover at the server")
    held = os.open(small_tmpfs, os.O_RDONLY)   # the measured filesystem, whatever its path
    try:
        if how == "umount-lazy":
            subprocess.check_call(["umount", "-l", small_tmpfs])
        else:
            subprocess.check_call(["mount", "-t", "tmpfs", "-o", "size=%dm" % TMPFS_MB,
                                   "tmpfs", small_tmpfs])
        out, err = communicate(client, MOVED_TIMEOUT_S)
        measured = os.listdir("/proc/self/fd/%d" % held)
    finally:
        os.close(held)
        if how == "mounted-over":
            subprocess.call(["umount", small_tmpfs])
    assert client.returncode == exitcodes.CLIENT_DISK_ERROR, err
    assert "Traceback" not in err
    [line] = [ln for ln in err.splitlines() if "stop (error)" in ln]
    assert "the writer stopped on a disk error: ENODEV: %s is no longer the directory " \
        "the run measured" % small_tmpfs in line, line
    assert "exit code 14" in line
    # nothing left: neither where it wrote nor where the path leads now
    assert data_files(small_tmpfs) == [] and \
        [n for n in measured if n.startswith("diskbench-")] == []
    assert "could not remove" not in err
    communicate(server, 30)
    assert server.returncode == exitcodes.SERVER_INCOMPLETE
    with open(os.path.join(slog, "report.json")) as f:
        entry = json.load(f)["clients"][0]
    assert entry["state"] == "failed"
    assert "is no longer the directory the run measured" in entry["state_why"]


#: The loop-mounted ext4 of the failing-filesystem test.
EXT4_MB = 200


@pytest.fixture
def ext4(tmpdir):
    for fs in mounted_ext4_loop(tmpdir, EXT4_MB):
        yield fs


def test_files_a_failed_filesystem_keeps_are_named_in_the_report(procs, tmpdir, ext4):
    slog = str(tmpdir.join("server-logs"))
    server, port = start_server(procs, slog, "--clients", "1")
    client = procs.start(client_args(tmpdir, port, "rofs", ext4.path, chunk=10,
                                     file_mb=20, duration=30))
    wait_until(lambda: of(records(slog), P.ROLLOVER, "rofs"), 30,
               what="the first rollover at the server")
    ext4.fail()    # read-only from now on: nothing can be written nor removed
    out, err = communicate(client, MOVED_TIMEOUT_S)
    assert client.returncode == exitcodes.CLIENT_DISK_ERROR, err
    assert "Traceback" not in err
    left = sorted(data_files(ext4.path))
    assert left, "the failed filesystem kept no file: nothing to say"
    communicate(server, 30)
    with open(os.path.join(slog, "report.json")) as f:
        entry = json.load(f)["clients"][0]
    assert entry["state"] == "failed"
    [said] = [n for n in entry["notices"] if n.startswith("could not remove")]
    assert said.startswith("could not remove %d data file%s (" % (
        len(left), "" if len(left) == 1 else "s")), said
    sizes = sum(os.path.getsize(os.path.join(ext4.path, n)) for n in left)
    assert "(%.1f MiB) from %s: " % (sizes / float(1 << 20), ext4.path) in said, said
    assert sorted(re.findall(r"(diskbench-\S+\.dat) \(E[A-Z]+: ", said)) == left, said
    assert said in client_log(tmpdir, "rofs")


def test_a_directory_on_tmpfs_is_said_to_measure_memory(procs, tmpdir, roomy_tmpfs):
    slog = str(tmpdir.join("server-logs"))
    server, port = start_server(procs, slog, "--clients", "1")
    code, out, err = procs.run(client_args(tmpdir, port, "ram", roomy_tmpfs, chunk=10,
                                           file_mb=20, duration=1.5), timeout=60)
    assert code == exitcodes.OK, err
    said = ("%s is on tmpfs, which keeps files in memory: the figures are the memory's, "
            "not a disk's; give a directory on the disk to measure" % roomy_tmpfs)
    assert "WARNING: " + said in err
    communicate(server, 30)
    with open(os.path.join(slog, "report.json")) as f:
        entry = json.load(f)["clients"][0]
    assert said in entry["notices"]
    with open(os.path.join(slog, "report.txt")) as f:
        text = " ".join(f.read().split())   # (wrapped at 120 columns)
    assert "note: " + said in text


@pytest.fixture
def overlay_two_filesystems(tmpdir, roomy_tmpfs):
    """An overlayfs whose lower layer is a tmpfs and upper layer is on tmpdir's
    filesystem: a new file's device there is not its directory's."""
    lower = os.path.join(roomy_tmpfs, "lower")
    os.mkdir(lower)
    upper, work, merged = (str(tmpdir.mkdir(n)) for n in ("upper", "work", "merged"))
    proc = subprocess.Popen(["mount", "-t", "overlay", "overlay", "-o",
                             "lowerdir=%s,upperdir=%s,workdir=%s" % (lower, upper, work),
                             merged], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.communicate()[0]
    if proc.returncode != 0:
        pytest.skip("cannot mount an overlayfs here: %s" % out.decode("utf-8", "replace"))
    try:
        yield merged
    finally:
        subprocess.call(["umount", "-l", merged])


def test_a_run_on_an_overlayfs_of_two_filesystems_finishes(procs, tmpdir,
                                                           overlay_two_filesystems):
    """The directory check compares the directory, never a file's device with
    it: on this overlayfs they differ, and the run is whole (exit 0)."""
    data = overlay_two_filesystems
    probe = os.path.join(data, "probe")
    with open(probe, "w") as f:
        differs = os.fstat(f.fileno()).st_dev != os.stat(data).st_dev
    os.unlink(probe)
    slog = str(tmpdir.join("server-logs"))
    server, port = start_server(procs, slog, "--clients", "1")
    code, out, err = procs.run(client_args(tmpdir, port, "overlay", data, chunk=10,
                                           file_mb=20, duration=1.5), timeout=60)
    assert code == exitcodes.OK, err
    assert differs, "this overlayfs gives files its directory's device: nothing tested"
    assert data_files(data) == []
    communicate(server, 30)
    assert server.returncode == exitcodes.OK


#: A killed run's leftover data file: first too big for the next run's space
#: check on the roomy tmpfs, then small enough to run beside.
LEFTOVER_MB, SMALL_LEFTOVER_MB = 100, 20


def test_data_files_of_a_killed_run_are_named_by_the_next_run(procs, tmpdir, roomy_tmpfs):
    """A run killed with every process (kill -9 of the group, a crash, a
    reboot) leaves its data files: the next client on that directory names
    them, in the space refusal they cause and, when it runs, in its log and
    the report."""
    leftover = os.path.join(roomy_tmpfs, "diskbench-old-4242-0.dat")
    with open(leftover, "wb") as f:
        f.write(os.urandom(1 << 20) * LEFTOVER_MB)
    code, out, err = procs.run(client_args(tmpdir, 1, "next", roomy_tmpfs, chunk=10,
                                           file_mb=10, duration=1.5), timeout=60)
    assert code == exitcodes.CLIENT_SPACE, err
    assert "(%.1f MiB of it are held by 1 data file of another diskbench run: " \
        "diskbench-old-4242-0.dat)" % LEFTOVER_MB in err, err
    with open(leftover, "r+b") as f:
        f.truncate(SMALL_LEFTOVER_MB << 20)
    slog = str(tmpdir.join("server-logs"))
    server, port = start_server(procs, slog, "--clients", "1")
    code, out, err = procs.run(client_args(tmpdir, port, "next", roomy_tmpfs, chunk=10,
                                           file_mb=10, duration=1.5), timeout=60)
    assert code == exitcodes.OK, err
    said = ("1 data file of another diskbench run (%.1f MiB: diskbench-old-4242-0.dat) is "
            "in %s: left by a client killed before it could remove them, or written by "
            "one running now; remove them if none is" % (SMALL_LEFTOVER_MB, roomy_tmpfs))
    assert "WARNING: " + said in err
    assert data_files(roomy_tmpfs) == ["diskbench-old-4242-0.dat"]   # (not ours to remove)
    communicate(server, 30)
    with open(os.path.join(slog, "report.json")) as f:
        assert said in json.load(f)["clients"][0]["notices"]
