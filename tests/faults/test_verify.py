"""--verify against real faults: a real server with --verify, a real client
writing real files on a real filesystem, and a fault staged on a finished
file between its write and its read-back.

The pause between write and read-back is the client's own test hook
(client/verify.HOLD_ENV): before reading a file back the writer says
``NAME.ready`` in a directory and waits for ``NAME.go``. This test process
(another process than the client) stages the fault on the file in between,
writing through its own O_DIRECT descriptor, then lets the read-back go on.

The device-level test puts the data on ext4 on a loop device and changes a
block on the loop device underneath the filesystem: the file's pages in the
page cache (buffered writes, fsync mode) still hold the old data, so only a
read that really goes to the device sees the change. It proves the read-back
is not served from the page cache, in both read modes.
"""
import csv
import io
import json
import mmap
import os
import re
import subprocess

import pytest

from diskbench import exitcodes, stamp
from diskbench import protocol as P
from diskbench.client import verify, writer
from diskbench.compat import buffer_from
from tests.helpers import communicate, wait_until
from tests.test_client_runs import client_args, client_log, of, records, start_server

#: A whole verified run (start, write, holds, read-backs, delivery) ends within this.
RUN_TIMEOUT_S = 90.0
CHUNK_MB = 10
FILE_MB = 20             # two chunks a file
BLOCK = stamp.BLOCK
MIB = 1 << 20
#: The file the faults are staged on (file 0 is read back before it: stale's source).
TARGET = 1
#: A block in the second chunk of the target file: chunk 1, block 3.
AT = CHUNK_MB * MIB + 3 * BLOCK
#: The loop device's filesystem (MiB).
LOOP_FS_MB = 160


def _direct_write(path, offset, data):
    """Write ``data`` (whole blocks) at ``offset`` through a new O_DIRECT
    descriptor (from a page-aligned buffer, as O_DIRECT needs)."""
    buf = mmap.mmap(-1, len(data))
    buf[:] = data
    fd = os.open(path, os.O_WRONLY | writer.O_DIRECT)
    try:
        os.lseek(fd, offset, os.SEEK_SET)
        assert os.write(fd, buffer_from(buf, 0, len(data))) == len(data)
    finally:
        os.close(fd)
        buf.close()


def _read(path, offset, size):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def _serve_holds(client, hold, stage):
    """Answer every hold of the client's writer until it exits: call
    ``stage(file_index, path)`` on each finished file, then let it read."""
    done = set()

    def next_event():
        for name in sorted(os.listdir(hold)):
            if name.endswith(".ready") and name not in done:
                return name
        return "exited" if client.poll() is not None else None
    while True:
        name = wait_until(next_event, RUN_TIMEOUT_S,
                          what="a file ready for read-back, or the client's exit")
        if name == "exited":
            return
        done.add(name)
        with open(os.path.join(hold, name)) as f:
            path = f.read()
        stage(int(re.search(r"-(\d+)\.dat\Z", path).group(1)), path)
        open(os.path.join(hold, name[:-len(".ready")] + ".go"), "w").close()


def run_verified(procs, tmpdir, data, stage, env=None, server_extra=("--verify",),
                 client_extra=()):
    """One client (named v) against a real server; returns (client exit code,
    its stderr, server exit code, the run's messages, report.json)."""
    slog = str(tmpdir.join("server-logs"))
    hold = str(tmpdir.mkdir("hold"))
    server, port = start_server(procs, slog, "--clients", "1", *server_extra)
    env = dict(env or {}, **{verify.HOLD_ENV: hold})
    client = procs.start(client_args(tmpdir, port, "v", data, CHUNK_MB, FILE_MB,
                                     duration=1.5, extra=["--force"] + list(client_extra)),
                         env=env)
    _serve_holds(client, hold, stage)
    out, err = communicate(client, RUN_TIMEOUT_S)
    communicate(server, RUN_TIMEOUT_S)
    with open(os.path.join(slog, "report.json")) as f:
        report = json.load(f)
    for name, key in (("report.txt", "text"), ("report.html", "html"),
                      ("clients.csv", "csv")):
        with open(os.path.join(slog, name)) as f:
            report[key] = f.read()
    report["log_dir"] = slog
    return client.returncode, err, server.returncode, records(slog), report


def _bad(msgs):
    return [(m.kind, m.file_index, m.offset) for m in of(msgs, P.BAD_BLOCK, "v")]


def _readback(msgs, index):
    found = [m for m in of(msgs, P.READBACK, "v") if m.file_index == index]
    assert len(found) == 1, found
    return found[0]


def _assert_failed_for_data(code, err, scode, report, tmpdir, kind):
    assert code == exitcodes.CLIENT_BAD_DATA, err
    assert "Traceback" not in err
    assert scode == exitcodes.SERVER_BAD_DATA
    entry = report["clients"][0]
    assert entry["state"] == "failed" and "did not come back" in entry["state_why"]
    assert entry["verification"]["bad_blocks_by_kind"][kind] >= 1
    assert "THE DATA DID NOT COME BACK" in report["text"]
    log = client_log(tmpdir, "v")
    assert "bad block (%s)" % kind in log and "exit code %d" % exitcodes.CLIENT_BAD_DATA in log


@pytest.mark.parametrize("by", ["server", "client"])
def test_verify_no_fault_zero_bad_blocks(procs, tmpdir, by):
    """A run with --verify (the server's, reaching the client in its go, or
    the client's own) and no fault reads every file back whole, finds
    every block as written: zero bad blocks, exit codes 0, and the report says
    "data verified: ... 0 bad blocks" with the read figures apart from the
    writes: in report.txt's table, clients.csv's columns and report.html's
    read-back chart (beside the write one, a point per file read back)."""
    data = str(tmpdir.mkdir("data"))
    flag = ("--verify",)
    code, err, scode, msgs, report = run_verified(
        procs, tmpdir, data, lambda i, p: None, server_extra=flag if by == "server" else (),
        client_extra=flag if by == "client" else ())
    assert code == 0 and scode == 0, err
    backs = of(msgs, P.READBACK, "v")
    assert backs and all(m.bytes == m.file_bytes for m in backs)
    assert all(m.read_mode == P.READ_DIRECT for m in backs)
    assert sum(m.data[k] for m in backs for k in P.BAD_KINDS) == 0 and not _bad(msgs)
    # every file written was read back (the rollovers' full files and the last one)
    assert sorted(m.file_index for m in backs) == list(range(len(backs)))
    assert len(backs) >= len(of(msgs, P.ROLLOVER, "v"))
    v = report["clients"][0]["verification"]
    assert v["bad_block_count"] == 0 and v["read_mib_s"] > 0
    assert v["read_mib"] == sum(m.bytes for m in backs) / float(MIB)
    assert v["requested_by"] == by
    assert re.search(r"data verified: [\d.]+ GiB on 1 client, 0 bad blocks", report["text"])
    assert os.listdir(data) == []   # read back, then removed
    table = report["text"].split("\n\n")[1].splitlines()
    assert table[0].split()[-4:] == ["read", "MiB/s", "bad", "blocks"]
    assert table[1].split()[-2:] == ["%.1f" % v["read_mib_s"], "0"]
    rows = list(csv.DictReader(io.StringIO(report["csv"] if not isinstance(
        report["csv"], bytes) else report["csv"].decode("utf-8"))))
    assert float(rows[0]["read_mib_s"]) == v["read_mib_s"] and rows[0]["bad_block_count"] == "0"
    charts = re.findall(r'data-chart="(\w+)"', report["html"])
    assert charts[:2] == ["throughput", "read"]
    svg = report["html"].split('data-chart="read"', 1)[1].split("</svg>", 1)[0]
    paths = re.findall(r'<path class="series" data-client="v"[^>]* d="([^"]*)"', svg)
    assert len(paths) == 1 and len(re.findall(r"[ML]", paths[0])) == len(backs)


def test_verify_block_overwritten_after_write_is_corrupt(procs, tmpdir):
    """A block overwritten by another process after the write and before the
    read-back, one byte of its body changed (its stamp intact), is found:
    kind corrupt, at its file and offset, expected stamp named, its check
    failing; the client fails with CLIENT_BAD_DATA and the server with
    SERVER_BAD_DATA."""
    def stage(index, path):
        if index == TARGET:
            block = bytearray(_read(path, AT, BLOCK))
            block[BLOCK // 2] ^= 0x01
            _direct_write(path, AT, bytes(block))
    code, err, scode, msgs, report = run_verified(procs, tmpdir, str(tmpdir.mkdir("d")),
                                                  stage)
    assert _bad(msgs) == [("corrupt", TARGET, AT)]
    bad = of(msgs, P.BAD_BLOCK, "v")[0]
    assert "file %d chunk 1 block 3" % TARGET in bad.expected
    assert bad.found.endswith("file %d chunk 1 block 3 (checks FAIL)" % TARGET)
    assert _readback(msgs, TARGET).corrupt == 1
    _assert_failed_for_data(code, err, scode, report, tmpdir, "corrupt")


def test_verify_two_blocks_swapped_are_misplaced(procs, tmpdir):
    """Two blocks of a file swapped on disk are each found misplaced at the
    offset where it was read (valid blocks of this run, stamped for elsewhere)."""
    other = 5 * BLOCK

    def stage(index, path):
        if index == TARGET:
            a, b = _read(path, other, BLOCK), _read(path, AT, BLOCK)
            _direct_write(path, other, b)
            _direct_write(path, AT, a)
    code, err, scode, msgs, report = run_verified(procs, tmpdir, str(tmpdir.mkdir("d")),
                                                  stage)
    assert sorted(_bad(msgs)) == [("misplaced", TARGET, other), ("misplaced", TARGET, AT)]
    assert _readback(msgs, TARGET).misplaced == 2
    _assert_failed_for_data(code, err, scode, report, tmpdir, "misplaced")


def test_verify_block_from_earlier_file_is_stale(procs, tmpdir):
    """A block replaced by the block at the same offset of an earlier file
    (what a lost write leaves) is found stale, at its offset; a report
    rebuilt from perf.jsonl says the same of the read-back."""
    kept = {}

    def stage(index, path):
        if index == TARGET - 1:
            kept["block"] = _read(path, AT, BLOCK)
        elif index == TARGET:
            _direct_write(path, AT, kept["block"])
    code, err, scode, msgs, report = run_verified(procs, tmpdir, str(tmpdir.mkdir("d")),
                                                  stage)
    assert _bad(msgs) == [("stale", TARGET, AT)]
    assert "file %d" % (TARGET - 1) in of(msgs, P.BAD_BLOCK, "v")[0].found
    _assert_failed_for_data(code, err, scode, report, tmpdir, "stale")
    again = str(tmpdir.mkdir("again"))
    rcode, _, rerr = procs.run(["-m", "diskbench.report", report["log_dir"], "--out", again])
    assert rcode == 0, rerr
    with open(os.path.join(again, "report.json")) as f:
        rebuilt = json.load(f)["clients"][0]
    assert rebuilt["verification"] == report["clients"][0]["verification"]
    assert rebuilt["verification"]["requested_by"] == "server"
    assert rebuilt["state"] == "failed" and "did not come back" in rebuilt["state_why"]
    # from perf.jsonl alone (no server plan in run.json, as an older server
    # wrote it): the start messages say the read-back was run
    older = str(tmpdir.mkdir("older"))
    with open(os.path.join(report["log_dir"], "run.json")) as f:
        marker = json.load(f)
    marker.pop("plan_given")
    marker.pop("report_facts", None)
    with open(os.path.join(older, "run.json"), "w") as f:
        json.dump(marker, f)
    for name in ("perf.jsonl", "report.json"):
        with open(os.path.join(report["log_dir"], name), "rb") as f, \
                open(os.path.join(older, name), "wb") as out:
            out.write(f.read())
    rcode, _, rerr = procs.run(["-m", "diskbench.report", older])
    assert rcode == 0, rerr
    with open(os.path.join(older, "report.json")) as f:
        assert json.load(f)["clients"][0]["verification"] == rebuilt["verification"]


def test_verify_truncated_file_is_missing_counted_beyond_the_cap(procs, tmpdir):
    """A file truncated after its write (in its first chunk, so its whole
    second chunk is past the end): every block past the end is missing, the
    first at the new end; the first MAX_BAD_REPORTED are sent one by one and
    all are counted (none lost beyond the cap)."""
    cut = 2 * BLOCK

    def stage(index, path):
        if index == TARGET:
            with open(path, "r+b") as f:
                f.truncate(cut)
    code, err, scode, msgs, report = run_verified(procs, tmpdir, str(tmpdir.mkdir("d")),
                                                  stage)
    lost = (FILE_MB * MIB - cut) // BLOCK
    bad = _bad(msgs)
    assert len(bad) == verify.MAX_BAD_REPORTED < lost
    assert bad[0] == ("missing", TARGET, cut)
    assert all(b == ("missing", TARGET, cut + i * BLOCK) for i, b in enumerate(bad))
    back = _readback(msgs, TARGET)
    assert back.missing == lost and back.bytes == cut
    assert report["clients"][0]["verification"]["bad_block_count"] == lost
    _assert_failed_for_data(code, err, scode, report, tmpdir, "missing")


# --- the device underneath ------------------------------------------------------------
def _sh(*args):
    return subprocess.check_output(list(args), stderr=subprocess.STDOUT).decode().strip()


@pytest.fixture
def loop_ext4(tmpdir):
    """ext4 on a loop device over an image file: (mount point, loop device)."""
    if os.geteuid() != 0:
        pytest.skip("a loop device needs root")
    image, mnt = str(tmpdir.join("disk.img")), str(tmpdir.mkdir("loopfs"))
    with open(image, "wb") as f:
        f.truncate(LOOP_FS_MB * MIB)
    try:
        _sh("mkfs.ext4", "-q", "-F", "-b", str(BLOCK), image)
        dev = _sh("losetup", "-f", "--show", image)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip("cannot make a loop device here: %s" % exc)
    try:
        _sh("mount", dev, mnt)
        yield mnt, dev
    finally:
        subprocess.call(["umount", "-l", mnt])
        subprocess.call(["losetup", "-d", dev])


def _device_offset(path, offset):
    """Where byte ``offset`` of ``path`` lies on its device (filefrag's extents)."""
    out = _sh("filefrag", "-v", "-b%d" % BLOCK, path)
    want = offset // BLOCK
    for m in re.finditer(r"^\s*\d+:\s+(\d+)\.\.\s*(\d+):\s+(\d+)\.\.", out, re.M):
        first, last, physical = (int(g) for g in m.groups())
        if first <= want <= last:
            return (physical + want - first) * BLOCK + offset % BLOCK
    raise AssertionError("no extent holds block %d of %s:\n%s" % (want, path, out))


@pytest.mark.parametrize("direct", [True, False], ids=["o_direct", "fadvise"])
def test_verify_change_on_the_device_under_the_page_cache_is_seen(procs, tmpdir,
                                                                   loop_ext4, direct):
    """A block changed on the device underneath the filesystem (written to the
    loop device, not through the file) is found corrupt: the read-back went
    to the device. The file's pages are in the page cache with the old,
    correct data when the block changes (read through the cache just before;
    fincore shows them); a read served from the cache would find nothing.
    O_DIRECT reads go around the cache; in fadvise mode (buffered writes)
    fsync + posix_fadvise(DONTNEED) before the read drop it."""
    mnt, dev = loop_ext4
    seen = {}

    def stage(index, path):
        if index == TARGET:
            _read(path, 0, FILE_MB * MIB)   # every page of the file cached, good data
            if _has("fincore"):
                seen["cached"] = _sh("fincore", "-nb", "-o", "RES", path)
            _direct_write(dev, _device_offset(path, AT), b"\xa5" * BLOCK)
    env = {} if direct else {writer.FAKE_NO_ODIRECT_ENV: "1"}
    code, err, scode, msgs, report = run_verified(procs, tmpdir, mnt, stage, env=env)
    assert _bad(msgs) == [("corrupt", TARGET, AT)], err
    assert _readback(msgs, TARGET).read_mode == (P.READ_DIRECT if direct else P.READ_DROPPED)
    if seen.get("cached") is not None:
        assert int(seen["cached"]) == FILE_MB * MIB
    _assert_failed_for_data(code, err, scode, report, tmpdir, "corrupt")


def _has(tool):
    return any(os.access(os.path.join(d, tool), os.X_OK)
               for d in os.environ.get("PATH", "").split(os.pathsep))


def test_verify_end_read_back_longer_than_the_stop_timeout_is_waited_for(procs, tmpdir):
    """The read-back at the end of a run may take longer than the supervisor's
    stop timeout (big files, a slow disk): while it makes progress the writer
    is waited for, not signalled; every file is read back and the client
    exits 0. (All files are read at the end here: --max-files leaves room for
    the whole run, and the first one is held past CHILD_STOP_TIMEOUT_S.)"""
    from diskbench.client.supervisor import CHILD_STOP_TIMEOUT_S
    from diskbench.compat import monotonic

    def stage(index, path):
        if index == 0:
            until = monotonic() + CHILD_STOP_TIMEOUT_S + 1.0
            wait_until(lambda: monotonic() >= until, CHILD_STOP_TIMEOUT_S + 5,
                       what="a read-back slower than the stop timeout")
    code, err, scode, msgs, report = run_verified(
        procs, tmpdir, str(tmpdir.mkdir("d")), stage,
        client_extra=["--max-files", "1000", "--file-mb", "100"])
    assert code == 0 and scode == 0, err
    assert "did not stop" not in err and "sending signal" not in err
    backs = of(msgs, P.READBACK, "v")
    assert sorted(m.file_index for m in backs) == list(range(len(backs)))
    rolled = set(m.file_index for m in of(msgs, P.ROLLOVER, "v"))
    assert rolled and rolled <= set(m.file_index for m in backs) and not _bad(msgs)
