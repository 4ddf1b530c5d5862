"""Client hardening (issue 11): real client processes, real signals, real TCP.

- a stalled writer (SIGSTOP) is noticed, reported, and fails the client (17);
- a main process frozen past its duration is not a crashed one;
- SIGHUP to the client's process group (an ssh session dropping) is a clean stop;
- a Latin-1 byte in --name (refused) or in DIRECTORY (accepted, sent escaped)
  from a C locale never reaches the wire raw and never tracebacks;
- clients never share or delete each other's files;
- ENOSPC during calibration is a disk error;
- a server acknowledging a seq we never sent is noticed (exit 13);
- text from the server cannot forge a client log line.
"""
import json
import os
import re
import signal
import sys
import time

import pytest

from diskbench import exitcodes
from diskbench import protocol as P
from diskbench.client import writer
from diskbench.client.config import ClientConfig
from tests.faults.test_client_process import children_of, live_group_members
from tests.helpers import communicate, mounted_tmpfs, proc_state, wait_until
from tests.test_client_fakeserver import FakeServer
from tests.test_client_runs import client_args, client_log, of, records, start_server

STALL_S = 1.0
#: Every character class that breaks a line or drives a terminal.
HOSTILE = u"\u2028\u2029\u0085\u009b\u202a\u202e\u2066\u2069"


@pytest.fixture
def fake():
    srv = FakeServer()
    yield srv
    srv.close()


def stop_lines(err):
    return [line for line in err.splitlines() if ": stop (" in line]


# --- 1. a stuck writer is never "finished" -----------------------------------------
def test_stalled_writer_fails_the_client_exit_17(procs, tmpdir):
    """A writer that stops making progress is reported while it lasts, and a
    writer that had to be signalled at the end fails the client (exit 17,
    stop reason error); the server does not call the client finished."""
    slog = str(tmpdir.join("server-logs"))
    data = str(tmpdir.mkdir("data"))
    server, port = start_server(procs, slog, "--clients", "1")
    client = procs.start(client_args(tmpdir, port, "stuck", data, duration=6,
                                     extra=["--stall-timeout", str(STALL_S)]))
    wait_until(lambda: of(records(slog), P.START), 20, what="the writer's start")
    kids = children_of(tmpdir, "stuck")
    os.kill(kids["writer"], signal.SIGSTOP)
    stall = wait_until(lambda: [e for e in of(records(slog), P.ERROR)
                                if "no progress" in e.reason], 4 * STALL_S + 5,
                       what="the stall error at the server")[0]
    assert stall.source == "writer" and not stall.fatal
    out, err = communicate(client, 60)
    assert client.returncode == exitcodes.CLIENT_WRITER_STALLED, err
    assert "Traceback" not in err
    assert re.search(r"writer \(pid %d\) stalled: no progress for [\d.]+ s "
                     r"\(--stall-timeout 1 s\)" % kids["writer"], err), err
    [line] = stop_lines(err)
    assert "stop (error): the writer (pid %d) stalled" % kids["writer"] in line
    assert "exit code 17" in line
    stop = of(records(slog), P.STOP, "stuck")[0]
    assert stop.reason == P.STOP_ERROR
    assert os.listdir(data) == []
    communicate(server, 30)
    assert server.returncode == exitcodes.SERVER_INCOMPLETE
    with open(os.path.join(slog, "report.json")) as f:
        entry = json.load(f)["clients"][0]
    assert entry["state"] != "finished", entry["state_why"]
    assert "no progress for" in entry["state_why"], entry["state_why"]


# --- 2. a paused client is not a crashed one ----------------------------------------
def test_frozen_main_past_duration_is_a_normal_stop(procs, tmpdir, fake):
    """A main process frozen while its writer stopped itself on time (its
    DURATION_GRACE_S safety net, exit 0) ends as a normal duration stop, not
    "died unexpectedly (exit code 0)"; the pause is said in the log."""
    data = str(tmpdir.mkdir("data"))
    duration = 1.5
    # 300 MiB files: few rollover messages, so the writer's pipe to the frozen
    # main process (~270 small messages) never fills and blocks it
    client = procs.start(client_args(tmpdir, fake.port, "frozen", data, file_mb=300,
                                     duration=duration, extra=["--force"]))
    wait_until(lambda: fake.of_type(P.START), 20, what="start")
    kids = children_of(tmpdir, "frozen")
    os.kill(client.pid, signal.SIGSTOP)
    try:
        # unreaped by its stopped parent, the finished writer is a zombie
        wait_until(lambda: proc_state(kids["writer"]) == "Z",
                   duration + writer.DURATION_GRACE_S + 10,
                   what="the writer to stop itself while main is frozen")
    finally:
        os.kill(client.pid, signal.SIGCONT)
    out, err = communicate(client, 60)
    assert client.returncode == exitcodes.OK, err
    assert "died unexpectedly" not in err and "Traceback" not in err
    assert re.search(r"main process was paused for [\d.]+ s", err), err
    [line] = stop_lines(err)
    assert "stop (duration): ran the configured 1.5 s (the writer stopped itself" \
        in line and "exit code 0" in line
    assert fake.of_type(P.STOP)[0].reason == P.STOP_DURATION
    assert not fake.of_type(P.ERROR)
    assert os.listdir(data) == []


# --- 3. SIGHUP ------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_sighup_to_the_process_group_stops_cleanly_exit_16(procs, tmpdir, fake, method):
    """SIGHUP to the whole process group (what a dropped ssh session's
    terminal does) stops the client like SIGTERM: the children ignore it (also
    under spawn, where they inherit no handler), the summary is sent, the
    files are removed, exit 16."""
    if method != "fork" and sys.version_info[0] == 2:
        pytest.skip("Python 2.7 only forks")
    data = str(tmpdir.mkdir("data"))
    client = procs.start(client_args(tmpdir, fake.port, "hangup", data, duration=60),
                         env={"DISKBENCH_START_METHOD": method})
    wait_until(lambda: fake.of_type(P.START), 20, what="start")
    wait_until(lambda: os.listdir(data), 10, what="a data file")
    hangup = time.time()
    os.killpg(client.pid, signal.SIGHUP)
    out, err = communicate(client, 30)
    assert client.returncode == exitcodes.CLIENT_INTERRUPTED, err
    assert "Traceback" not in err and "died unexpectedly" not in err
    assert "interrupted by signal %d" % signal.SIGHUP in err
    assert "(start method %s)" % method in err  # the log says which one it used
    stop = fake.of_type(P.STOP)[0]
    assert stop.reason == P.STOP_SIGNAL and stop.bytes_written > 0
    # the writer outlived the hangup: it finished its chunk and sent its last
    # interval when told to stop (a writer the hangup killed sent nothing after)
    assert max(m.t_end for m in fake.of_type(P.PERF)) > hangup
    assert fake.of_type(P.BYE)
    assert os.listdir(data) == []
    # (under spawn, multiprocessing's resource tracker leaves just after main)
    wait_until(lambda: not live_group_members(client.pid), 5,
               what="no process of the client left")


def test_sighup_under_nohup_is_ignored(procs, tmpdir, fake):
    """Started with SIGHUP ignored (nohup), the client keeps ignoring it: a
    hangup does not stop the run; SIGTERM still does (exit 16)."""
    data = str(tmpdir.mkdir("data"))
    args = client_args(tmpdir, fake.port, "nohup", data, duration=60)[2:]
    code = ("import runpy, signal, sys; signal.signal(signal.SIGHUP, signal.SIG_IGN); "
            "sys.argv = ['diskbench.client'] + sys.argv[1:]; "
            "runpy.run_module('diskbench.client', run_name='__main__')")
    client = procs.start(["-c", code] + args)
    wait_until(lambda: fake.of_type(P.START), 20, what="start")
    os.killpg(client.pid, signal.SIGHUP)
    heartbeats = len(fake.of_type(P.HEARTBEAT))
    wait_until(lambda: len(fake.of_type(P.HEARTBEAT)) >= heartbeats + 2, 10,
               what="two more heartbeats after the hangup")
    assert client.poll() is None and not fake.of_type(P.STOP)
    os.kill(client.pid, signal.SIGTERM)
    out, err = communicate(client, 30)
    assert client.returncode == exitcodes.CLIENT_INTERRUPTED, err
    assert "SIGHUP is ignored (nohup?): running detached" in err
    assert "interrupted by signal %d" % signal.SIGTERM in err


# --- 5. non-UTF-8 argv from a C locale ---------------------------------------------
C_LOCALE = {"LC_ALL": "C", "LANG": "C"}


def test_latin1_name_is_refused_with_exit_2(procs, tmpdir):
    """A Latin-1 byte in --name (lone surrogate on Python 3, a raw byte on 2.7)
    is refused with one line, escaped, never a traceback."""
    data = str(tmpdir.mkdir("data"))
    proc = procs.start(["-m", "diskbench.client", b"--name", b"caf\xe9",
                        "--log-dir", str(tmpdir.join("logs")), data], env=C_LOCALE)
    out, err = communicate(proc, 30)
    assert proc.returncode == exitcodes.USAGE, err
    assert err.strip() == ("python -m diskbench.client: error: --name caf\\xe9 is not UTF-8 "
                           "text; use a UTF-8 (or ASCII) name"), err


def test_latin1_directory_is_used_and_sent_escaped(procs, tmpdir, fake):
    """A Latin-1 byte in DIRECTORY is the real disk path: the client writes
    there, and sends (and logs) the escaped display form, never the raw text."""
    base = str(tmpdir.mkdir("data")).encode("utf-8")
    data = os.path.join(base, b"caf\xe9")
    os.mkdir(data)
    args = client_args(tmpdir, fake.port, "latin", "PLACEHOLDER")
    proc = procs.start(args[:-1] + [data], env=C_LOCALE)
    out, err = communicate(proc, 60)
    assert proc.returncode == exitcodes.OK, err
    assert "Traceback" not in err
    hello = fake.of_type(P.HELLO)[0]
    assert hello.directory == base.decode("utf-8") + u"/caf\\xe9"
    assert fake.of_type(P.START) and fake.of_type(P.ROLLOVER)
    assert os.listdir(data) == []  # written there, and cleaned up
    assert "/caf\\xe9 (" in client_log(tmpdir, "latin")


# --- 6. a client only ever deletes its own files --------------------------------------
def test_names_with_one_safe_form_never_share_a_log(procs, tmpdir):
    """Names that map to the same file-name form ("a/b", "a_b", "a b") get
    their own client log (a short hash of the real name is added)."""
    data = str(tmpdir.mkdir("data"))
    names = ["a/b", "a_b", "a b"]
    started = [procs.start(client_args(tmpdir, 1, n, data, extra=[
        "--connect-timeout", "0.2"])) for n in names]
    for proc in started:
        out, err = communicate(proc, 60)
        assert proc.returncode == exitcodes.CLIENT_SERVER, err
    logs = sorted(os.listdir(str(tmpdir.join("logs"))))
    assert len(logs) == 3 and "client-a_b.log" in logs, logs
    for name in names:
        path = str(tmpdir.join("logs", "client-%s.log" % writer.safe_name(name)))
        with open(path) as f:
            assert "client %s:" % name in f.read()


def test_clients_started_together_share_a_new_log_dir(procs, tmpdir):
    """Clients started at once on one host (or one NFS home) create the same
    log dir: the one that loses the race must go on, not exit on EEXIST."""
    data = str(tmpdir.mkdir("data"))
    started = [procs.start(client_args(tmpdir, 1, "racer%d" % i, data, extra=[
        "--connect-timeout", "0.2"])) for i in range(12)]
    for proc in started:
        out, err = communicate(proc, 60)
        assert proc.returncode == exitcodes.CLIENT_SERVER, err   # no server: 13, not 10
    assert len(os.listdir(str(tmpdir.join("logs")))) == 12


def test_leftover_cleanup_spares_a_longer_names_files(tmpdir):
    """The supervisor's leftover cleanup removes exactly its own
    diskbench-NAME-PID-N.dat files: client "a" (writer pid 1) never removes
    client "a-1"'s (writer pid 2) files, nor look-alikes. (A unit test: two
    writers with chosen pids cannot be staged.)"""
    import logging
    from diskbench.client.supervisor import WRITER, Supervisor
    from tests.test_client_fakeserver import HELLO
    data = str(tmpdir.mkdir("data"))
    ours = ["diskbench-a-1-0.dat", "diskbench-a-1-17.dat"]
    theirs = ["diskbench-a-1-2-0.dat", "diskbench-a-10-0.dat", "diskbench-a-1-x.dat",
              "diskbench-a-1-3.dat.bak", "diskbench-a-1-" + writer.safe_name("a/b")
              + "-1-0.dat", "diskbench-%s-1-0.dat" % writer.safe_name("a b")]
    for n in ours + theirs:
        open(os.path.join(data, n), "w").close()
    cfg = ClientConfig(host="127.0.0.1", port=1, name="a", directory=data, keep_data=False)
    log = logging.getLogger("test-leftovers")
    sup = Supervisor(cfg, dict(HELLO), log)

    class _Writer(object):
        pid = 1
    sup.procs = {WRITER: _Writer()}
    sup._remove_leftovers()
    assert sorted(os.listdir(data)) == sorted(theirs)


# --- 7. exit codes tell the truth ---------------------------------------------------------
CALIBRATION_TMPFS_MB = 20


@pytest.fixture
def tiny_tmpfs(tmpdir):
    for mnt in mounted_tmpfs(tmpdir, CALIBRATION_TMPFS_MB):
        yield mnt


def test_enospc_in_calibration_with_force_is_a_disk_error_14(procs, tmpdir, tiny_tmpfs):
    """ENOSPC while calibrating (--force past the space check) is the disk's
    error, CLIENT_DISK_ERROR (14), not a directory error (10)."""
    code, out, err = procs.run(client_args(tmpdir, 1, "tiny", tiny_tmpfs, chunk=10,
                                           file_mb=30, extra=["--force"]), timeout=60)
    assert code == exitcodes.CLIENT_DISK_ERROR, err
    assert "Traceback" not in err
    assert "calibration write in %s failed (ENOSPC: No space left on device)" \
        % tiny_tmpfs in err
    assert os.listdir(tiny_tmpfs) == []


# --- 8. takeover detection ------------------------------------------------------------
def test_ack_beyond_our_seq_is_noticed_exit_13(procs, tmpdir):
    """A server acknowledging a seq this client never sent (a peer took over
    its name and poisoned the seqs) is logged naming both numbers; its acks
    are not trusted, the results are saved, and the client exits 13, not 0."""
    huge = 10 ** 9
    srv = FakeServer(ack_upto=huge)
    try:
        data = str(tmpdir.mkdir("data"))
        proc = procs.start(client_args(tmpdir, srv.port, "victim", data, duration=1.5,
                                       extra=["--deliver-timeout", "2"]))
        out, err = communicate(proc, 60)
    finally:
        srv.close()
    assert proc.returncode == exitcodes.CLIENT_SERVER, err
    assert "Traceback" not in err
    assert re.search(r"the server acknowledged seq %d but this client has only sent "
                     r"up to seq \d+" % huge, err), err
    assert len(re.findall("acknowledged seq %d but" % huge, err)) == 1  # once
    path = str(tmpdir.join("logs", "client-victim.undelivered.jsonl"))
    with open(path) as f:
        kept = [json.loads(line)["type"] for line in f]
    assert P.STOP in kept and P.START in kept
    [line] = stop_lines(err)
    assert "exit code 13" in line


# --- 9. no line forging in the client log ------------------------------------------------
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z [A-Z]+ ")  # metrics.utc


def _assert_unforged(text, stderr):
    for ch in HOSTILE:
        assert ch not in text and ch not in stderr, repr(ch)
    for line in text.splitlines():
        assert LOG_LINE.match(line), repr(line)
    assert "\\u2028FORGED" in text


def test_server_reasons_cannot_forge_client_log_lines(procs, tmpdir):
    """A server's refusal text with Unicode line breaks, NEL, C1 and bidi
    controls is logged as one line with visible escapes (log and console)."""
    reason = u"no\u2028FORGED 2026-01-01 00:00:00,000 INFO fake" + HOSTILE
    srv = FakeServer(reject=reason)
    try:
        data = str(tmpdir.mkdir("data"))
        code, out, err = procs.run(client_args(tmpdir, srv.port, "forge", data))
    finally:
        srv.close()
    assert code == exitcodes.CLIENT_SERVER, err
    _assert_unforged(client_log(tmpdir, "forge"), err)


def test_server_stop_reason_cannot_forge_client_log_lines(procs, tmpdir, fake):
    """The server's stop reason reaches the log and console as one line."""
    data = str(tmpdir.mkdir("data"))
    proc = procs.start(client_args(tmpdir, fake.port, "forge2", data, duration=60))
    wait_until(lambda: fake.of_type(P.START), 20, what="start")
    fake.stop_clients(u"bye\u2028FORGED" + HOSTILE)
    out, err = communicate(proc, 30)
    assert proc.returncode == exitcodes.CLIENT_INTERRUPTED, err
    _assert_unforged(client_log(tmpdir, "forge2"), err)


# --- 4. every wrong flag: exit 2 and one line ----------------------------------------------
def _mem_available_mib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    return None


BAD_NAMES = [u"a" + ch + u"b" for ch in HOSTILE + u"\x1b\x7f\t"] + [u"n" * 129]
BAD_FLAGS = [
    ["--duration", "inf"], ["--duration", "nan"], ["--duration", "2e9"],
    ["--duration", "-1"], ["--perf-interval", "inf"], ["--stats-interval", "1e6"],
    ["--heartbeat-interval", "nan"], ["--connect-timeout", "inf"],
    ["--deliver-timeout", "1e12"], ["--stall-timeout", "0"], ["--stall-timeout", "inf"],
    ["--max-files", "100001"], ["--max-files", "0"], ["--chunk-mb", "1.5"],
    ["--chunk-mb", "ten"], ["--file-mb", "99999999999999"], ["--start-method", "bogus"],
    ["--max-files", "1e3"],
]


def _run_bad(procs, tmpdir, flags, env=None):
    code, out, err = procs.run(["-m", "diskbench.client", "--log-dir",
                                str(tmpdir.join("logs"))] + flags + [str(tmpdir)],
                               env=env, timeout=30)
    assert code == exitcodes.USAGE, (flags, err)
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for ch in HOSTILE + u"\x1b":
        assert ch not in err
    return err


@pytest.mark.parametrize("flags", BAD_FLAGS, ids=lambda f: " ".join(f))
def test_bad_flag_exits_2_with_one_line(procs, tmpdir, flags):
    """Non-finite, absurd or malformed values: exit 2, one line, no traceback."""
    err = _run_bad(procs, tmpdir, flags)
    assert flags[0] in err


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: repr(n[:3]))
def test_bad_name_exits_2_with_one_line(procs, tmpdir, name):
    """Names with any line break, terminal or bidi control, or over 128
    characters are refused; the line shows the name escaped."""
    arg = name.encode("utf-8")
    err = _run_bad(procs, tmpdir, [b"--name", arg])
    assert "--name" in err
    if len(name) > 128:
        assert "129 characters long; use at most 128" in err
    else:
        assert "holds a control, line-break, bidi or undecodable character" in err


def test_unknown_start_method_env_exits_2_naming_the_valid_ones(procs, tmpdir):
    """DISKBENCH_START_METHOD must be one this Python offers; the line names them."""
    err = _run_bad(procs, tmpdir, [], env={"DISKBENCH_START_METHOD": "threads"})
    assert "DISKBENCH_START_METHOD threads is not a start method here; use one of " \
        "fork" in err


def test_chunk_beyond_available_memory_exits_2(procs, tmpdir):
    """A --chunk-mb whose buffer cannot be allocated is refused before any
    allocation, saying how much memory is available."""
    avail = _mem_available_mib()
    if avail is None:
        pytest.skip("no MemAvailable in /proc/meminfo")
    chunk = avail + 1024
    err = _run_bad(procs, tmpdir, ["--chunk-mb", str(chunk), "--file-mb", str(chunk)])
    m = re.search(r"--chunk-mb %d needs a %d MiB buffer \(\+ 64 MiB margin\) but only "
                  r"(\d+) MiB of memory are available" % (chunk, chunk), err)
    assert m, err
    assert abs(int(m.group(1)) - avail) < 1024


#: Runs the real client under a file size limit (``ulimit -f``) of argv[1] MiB.
FSIZE_CLIENT = """
import resource, sys
limit = int(sys.argv.pop(1)) << 20
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
from diskbench.client.__main__ import main
sys.exit(main(sys.argv[1:]))
"""
FSIZE_LIMIT_MB = 25


@pytest.mark.parametrize("whose", ["client", "server"])
def test_file_size_above_ulimit_f_is_refused_before_writing(procs, tmpdir, whose):
    """A --file-mb above the file size limit (its own or the server's plan) is
    refused at once, naming the limit and the fix, instead of a run that fails
    with EFBIG once a file reaches the limit."""
    data = str(tmpdir.mkdir("data"))
    slog = str(tmpdir.join("server-logs"))
    server, port = start_server(procs, slog, "--clients", "1", *(
        ["--chunk-mb", "10", "--file-mb", "40"] if whose == "server" else []))
    args = client_args(tmpdir, port, "fsize", data, file_mb=40, duration=30)
    if whose == "server":
        at = args.index("--file-mb")
        del args[at:at + 2]
    code, out, err = procs.run(["-c", FSIZE_CLIENT, str(FSIZE_LIMIT_MB)] + args[2:],
                               timeout=60)
    assert code == exitcodes.USAGE, err
    assert "Traceback" not in err
    said = ("--file-mb 40 is above this process's file size limit (ulimit -f: %d MiB); "
            "raise it (ulimit -f unlimited) or use --file-mb 20 or less" % FSIZE_LIMIT_MB)
    if whose == "client":
        assert err.strip().splitlines() == ["python -m diskbench.client: error: " + said]
    else:
        assert "the run plan from the server cannot run here: " + said in err
        errors = wait_until(lambda: of(records(slog), P.ERROR, "fsize"), 10,
                            what="the plan's refusal at the server")
        assert said in errors[0].reason
    assert os.listdir(data) == []


@pytest.mark.parametrize("content,why", [
    (b"", "is empty"), (b" \n\t\n", "is empty"),
    (b"\x00\x01\x02binary\xff", "is not UTF-8 text"),
    (b"caf\xe9-latin1", "is not UTF-8 text"),
    (b"abc\x00def", "holds control or binary characters"),
    (u"ab\u2028cd".encode("utf-8"), "holds control or binary characters")])
def test_bad_secret_file_exits_2(procs, tmpdir, content, why):
    """One rule for secrets: UTF-8 text without controls, whitespace stripped,
    an empty file is an error."""
    path = str(tmpdir.join("secret"))
    with open(path, "wb") as f:
        f.write(content)
    err = _run_bad(procs, tmpdir, ["--secret-file", path])
    assert "--secret-file %s %s" % (path, why) in err
