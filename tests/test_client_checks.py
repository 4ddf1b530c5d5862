"""Each start-up check of the real client (a subprocess): message and exit code,
one line on stderr, no traceback."""
import os
import re
import subprocess

import pytest

from diskbench import exitcodes
from diskbench import protocol as P
from diskbench.compat import PY2
from tests.test_client_fakeserver import FakeServer

CLIENT = ["-m", "diskbench.client"]


def run_client(procs, tmpdir, args, env=None, timeout=60):
    logs = str(tmpdir.join("logs"))
    return procs.run(CLIENT + ["--log-dir", logs, "--connect-timeout", "1"] + args,
                     timeout=timeout, env=env)


def error_line(err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err
    errors = [ln for ln in lines if "ERROR" in ln or "error:" in ln]
    assert len(errors) == 1, err
    return errors[0]


def test_directory_missing(procs, tmpdir):
    code, out, err = run_client(procs, tmpdir, [str(tmpdir.join("nope"))])
    assert code == exitcodes.CLIENT_DIRECTORY
    assert "does not exist; create it or pass an existing DIRECTORY" in error_line(err)


def test_hostile_directory_name_is_one_escaped_line_in_the_log_and_on_stderr(procs, tmpdir):
    """Every client log record passes the printable filter: a path holding a line
    separator shows it as an escape, on stderr and in the log file."""
    name = u"nope\u2028FORGED line"
    path = os.path.join(str(tmpdir), name.encode("utf-8") if PY2 else name)
    code, out, err = run_client(procs, tmpdir, ["--name", "hostile", path])
    assert code == exitcodes.CLIENT_DIRECTORY
    assert u"nope\\u2028FORGED line does not exist" in error_line(err)
    with open(str(tmpdir.join("logs", "client-hostile.log")), "rb") as f:
        logged = f.read().decode("utf-8")
    assert u"\u2028" not in logged + err and u"nope\\u2028FORGED" in logged


def test_directory_is_a_file(procs, tmpdir):
    f = tmpdir.join("file")
    f.write("x")
    code, out, err = run_client(procs, tmpdir, [str(f)])
    assert code == exitcodes.CLIENT_DIRECTORY
    assert "is not a directory" in error_line(err)


def _read_only_dir(tmpdir):
    path = str(tmpdir.mkdir("ro"))
    if os.geteuid() == 0:  # root writes through mode bits: use a read-only mount
        if subprocess.call(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", path],
                           stderr=open(os.devnull, "w")) != 0:
            pytest.skip("cannot mount a read-only tmpfs here")
    else:
        os.chmod(path, 0o555)
    return path


def test_directory_not_writable(procs, tmpdir):
    path = _read_only_dir(tmpdir)
    try:
        code, out, err = run_client(procs, tmpdir, [path])
    finally:
        if os.geteuid() == 0:
            subprocess.call(["umount", path])
    assert code == exitcodes.CLIENT_DIRECTORY
    assert re.search(r"is not writable \(.+\); choose a writable directory", error_line(err))


def test_not_enough_free_space(procs, tmpdir):
    code, out, err = run_client(procs, tmpdir, ["--file-mb", "100000000", str(tmpdir)])
    assert code == exitcodes.CLIENT_SPACE
    line = error_line(err)
    assert re.search(r"not enough free space in .*: 2 files of 100000000 MiB \+ 64 MiB "
                     r"margin need 200000064 MiB, \d+ MiB are free; free some space or "
                     r"lower --file-mb / --max-files", line), line


def test_file_smaller_than_chunk_is_a_usage_error(procs, tmpdir):
    code, out, err = run_client(procs, tmpdir, ["--chunk-mb", "20", "--file-mb", "10",
                                                str(tmpdir)])
    assert code == exitcodes.USAGE
    assert "--file-mb 10 is smaller than --chunk-mb 20; use --file-mb 20 or more" \
        in error_line(err)


def test_chunk_below_minimum_is_refused_with_the_reason(procs, tmpdir):
    code, out, err = run_client(procs, tmpdir, ["--chunk-mb", "5", str(tmpdir)])
    assert code == exitcodes.USAGE
    assert error_line(err) == ("python -m diskbench.client: error: --chunk-mb 5 is below "
                               "the 10 MiB "
                               "minimum: smaller chunks measure the cost of each write call "
                               "more than the disk's throughput; use --chunk-mb 10 or more")


def test_rollover_rule_refuses_with_the_numbers(procs, tmpdir):
    code, out, err = run_client(procs, tmpdir, ["--file-mb", "20000", "--duration", "1",
                                                str(tmpdir)])
    assert code == exitcodes.CLIENT_ROLLOVER
    line = error_line(err)
    m = re.search(r"at (\d+) MiB/s, 1 s gives ~(\d+\.\d) rollovers of 20000 MiB files "
                  r"\(at least 2 needed\); use --duration >= (\d+)", line)
    assert m, line
    speed, rolls, need = float(m.group(1)), float(m.group(2)), int(m.group(3))
    assert rolls < 2 and need >= 2 * 20000 / (speed + 1)
    assert line.endswith("(or --force to run anyway)"), line
    assert os.listdir(str(tmpdir)) == ["logs"]  # calibration file removed


def test_force_runs_anyway_then_server_unreachable(procs, tmpdir):
    from tests.helpers import free_port
    port = free_port()
    code, out, err = run_client(procs, tmpdir, [
        "--file-mb", "20000", "--duration", "1", "--force",
        "--server", "127.0.0.1:%d" % port, str(tmpdir)])
    assert "--force: running anyway" in err
    assert code == exitcodes.CLIENT_SERVER
    assert re.search(r"cannot reach the diskbench server at 127.0.0.1:%d within 1 s "
                     r"\(.*\); start the server or fix --server" % port, error_line(err))


def test_force_warns_once_and_never_offers_force(procs, tmpdir):
    """Under --force each overridden check is one warning (the plan from go is
    checked again, the same plan here), which does not tell to use --force."""
    srv = FakeServer()
    data = str(tmpdir.mkdir("data"))
    try:
        code, out, err = run_client(procs, tmpdir, [
            "--server", "127.0.0.1:%d" % srv.port, "--name", "forced", "--file-mb", "20000",
            "--duration", "0.5", "--max-files", "1", "--force", data])
    finally:
        srv.close()
    assert code == 0, err
    warned = [ln for ln in err.splitlines() if "--force: running anyway" in ln]
    assert any("rollovers of 20000 MiB files" in ln for ln in warned), err
    assert len(warned) == len(set(warned)) and "or --force" not in err, err


def test_server_rejected_prints_its_reason(procs, tmpdir):
    srv = FakeServer(reject="protocol version 9 is not supported")
    try:
        code, out, err = run_client(procs, tmpdir, [
            "--server", "127.0.0.1:%d" % srv.port, "--file-mb", "20", str(tmpdir)])
    finally:
        srv.close()
    assert code == exitcodes.CLIENT_SERVER
    assert "server refused us: protocol version 9 is not supported" in error_line(err)


def test_bad_server_address_is_a_usage_error(procs, tmpdir):
    code, out, err = run_client(procs, tmpdir, ["--server", "host:notaport", str(tmpdir)])
    assert code == exitcodes.USAGE
    assert "is not HOST[:PORT]" in error_line(err)


def test_help_states_units_and_psutil(procs, tmpdir):
    code, out, err = procs.run(CLIENT + ["--help"])
    assert code == 0
    text = " ".join(out.split())
    for needle in ("MiB = 2^20 bytes", "psutil is optional", "pip install psutil",
                   "/proc (Linux only)", "--preallocate", "--connect-timeout",
                   "DISKBENCH_SECRET"):
        assert needle in text, needle


def test_o_direct_refused_falls_back_to_fsync_and_says_so(procs, tmpdir):
    srv = FakeServer()
    data = str(tmpdir.mkdir("data"))
    try:
        code, out, err = run_client(procs, tmpdir, [
            "--server", "127.0.0.1:%d" % srv.port, "--name", "nodirect", "--file-mb", "20",
            "--duration", "1.5", data], env={"DISKBENCH_FAKE_NO_ODIRECT": "1"})
    finally:
        srv.close()
    assert code == 0, err
    assert "O_DIRECT refused" in err and "sync_mode=fsync" in err
    assert srv.of_type(P.HELLO)[0].sync_mode == P.SYNC_FSYNC
    assert srv.of_type(P.START)[0].sync_mode == P.SYNC_FSYNC
    assert all(p.sync_mode == P.SYNC_FSYNC for p in srv.of_type(P.PERF))
    assert any("O_DIRECT refused" in n.text for n in srv.of_type(P.NOTE))
    assert os.listdir(data) == []
