"""python -m diskbench.launch: the real server, real clients, over a real or a fake ssh.

With root and openssh-server the launcher goes through the system ``ssh`` to a private
sshd the test starts on a free port of 127.0.0.1 (own host key, own authorized key, own
config; nothing of ~/.ssh is used). Without them that test is skipped with the reason,
and the same runs go through a fake ``ssh`` on PATH that runs the command here with
``/bin/sh -c`` (what ssh does on the far side), so the launcher's own logic is always
tested. Every process the launcher starts carries a tag in its environment (also the
remote clients, through --remote-env) and is killed at the end of the test.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

from diskbench import exitcodes, launch, launchargs
from tests.helpers import REPO, communicate, free_port, wait_until

SSHD = "/usr/sbin/sshd"
TAG_VAR = "DISKBENCH_TEST_TAG"
#: Client flags that make a whole run take ~3 s (the rollover rule forced on this disk).
CLIENT_FLAGS = ["--duration", "1.5", "--chunk-mb", "10", "--file-mb", "20", "--force",
                "--heartbeat-interval", "0.5", "--perf-interval", "0.5",
                "--stats-interval", "0.5", "--connect-timeout", "10"]
#: Server flags: go 2 s after the first hello without the host that never comes; end soon.
SERVER_FLAGS = ["--start-timeout", "2", "--idle-timeout", "0.5", "--progress-interval", "60"]
RUN_TIMEOUT_S = 60

FAKE_SSH = r"""#!/bin/sh
# A fake ssh: skips the options, then runs the command here as ssh's far side would.
while [ $# -gt 0 ]; do
  case "$1" in
    -o|-p|-l|-i|-F) shift 2;;
    --) shift; break;;
    -*) shift;;
    *) break;;
  esac
done
host=$1; shift
# the gate: host $FAKE_SSH_WAIT_HOST starts only once $FAKE_SSH_WAIT_FILE holds the text
if [ -n "$FAKE_SSH_WAIT_HOST" ] && [ "$host" = "$FAKE_SSH_WAIT_HOST" ]; then
  n=0
  until grep -qF -- "$FAKE_SSH_WAIT_TEXT" "$FAKE_SSH_WAIT_FILE" 2>/dev/null; do
    n=$((n + 1))
    if [ "$n" -gt "$FAKE_SSH_WAIT_POLLS" ]; then
      echo "fake ssh: $FAKE_SSH_WAIT_FILE never said $FAKE_SSH_WAIT_TEXT" >&2; exit 99
    fi
    sleep "$FAKE_SSH_WAIT_POLL_S"
  done
fi
# the host $FAKE_SSH_DIE_HOST: its client is killed (kill -9) once $FAKE_SSH_DIE_FILE
# holds $FAKE_SSH_DIE_TEXT, and its ssh ends as on a dropped connection (255)
if [ -n "$FAKE_SSH_DIE_HOST" ] && [ "$host" = "$FAKE_SSH_DIE_HOST" ]; then
  setsid /bin/sh -c "$*" &   # its own process group: the client's whole tree
  client=$!
  n=0
  until grep -qF -- "$FAKE_SSH_DIE_TEXT" "$FAKE_SSH_DIE_FILE" 2>/dev/null; do
    n=$((n + 1))
    if [ "$n" -gt "$FAKE_SSH_WAIT_POLLS" ]; then
      kill -9 -$client; echo "fake ssh: $FAKE_SSH_DIE_FILE never said $FAKE_SSH_DIE_TEXT" >&2
      exit 99
    fi
    sleep "$FAKE_SSH_WAIT_POLL_S"
  done
  kill -9 -$client
  echo "Connection to $host closed by remote host." >&2
  exit 255
fi
case "$host" in
  unreachable*) echo "ssh: connect to host $host port 22: Connection refused" >&2; exit 255;;
  exit-*) code=${host#exit-}; exit "${code%%-*}";;       # exit-N[-x]: exits N, no output
  traceback*) printf 'Traceback (most recent call last):\n  File "x", line 1\nValueError: x\n' >&2
              exit 1;;
  killed*) kill -9 $$;;
esac
exec /bin/sh -c "$*"
"""


# --- machinery -------------------------------------------------------------------------
def _tagged_pids(tag):
    needle = ("%s=%s" % (TAG_VAR, tag)).encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open("/proc/%s/environ" % entry, "rb") as f:
                if needle in f.read().split(b"\0"):
                    pids.append(int(entry))
        except (IOError, OSError):
            pass
    return pids


@pytest.fixture
def tag():
    """A tag in the environment of everything a launcher test starts; all killed after."""
    value = uuid.uuid4().hex
    yield value
    for pid in _tagged_pids(value):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def fake_ssh_dir(tmpdir):
    bindir = tmpdir.mkdir("fakebin")
    path = bindir.join("ssh")
    path.write(FAKE_SSH)
    path.chmod(0o755)
    return str(bindir)


def launch_argv(hosts_file, log_dir, client_dir, tag, extra=(), client_extra=()):
    # made here: clients starting together race in the client's isdir()/makedirs()
    # (the loser exits 2 "File exists"; reported to the lead, client code is not ours)
    if not os.path.isdir(os.path.join(log_dir, "clients")):
        os.makedirs(os.path.join(log_dir, "clients"))
    return ([sys.executable, "-m", "diskbench.launch", "--hosts", hosts_file,
             "--port", "0", "--server-host", "127.0.0.1", "--log-dir", log_dir,
             "--python", sys.executable, "--remote-env", "PYTHONPATH=" + REPO,
             "--remote-env", "%s=%s" % (TAG_VAR, tag)] + list(extra) + SERVER_FLAGS +
            ["--"] + CLIENT_FLAGS + ["--log-dir", os.path.join(log_dir, "clients")] +
            list(client_extra) + [client_dir])


def start_launch(argv, tag, path_prefix=None, env_extra=None):
    env = dict(os.environ)
    env.update(env_extra or {})
    env["PYTHONPATH"] = REPO
    env[TAG_VAR] = tag
    env["PYTHONUNBUFFERED"] = "1"
    if path_prefix:
        env["PATH"] = path_prefix + os.pathsep + env.get("PATH", "")
    # own process group: communicate()'s deadline kills the launcher by its group
    return subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True,
                            preexec_fn=os.setsid)


def run_launch(argv, tag, path_prefix=None, timeout=RUN_TIMEOUT_S, env_extra=None):
    proc = start_launch(argv, tag, path_prefix, env_extra)
    out, err = communicate(proc, timeout)
    return proc.returncode, out, err


def summary_rows(out):
    """{host label: (exit column, meaning, client name)} from the launcher's final table."""
    lines = out.splitlines()
    start = max(i for i, line in enumerate(lines)
                if re.match(r"^host\s+client\s+exit\s+meaning", line))
    rows = {}
    for line in lines[start + 1:]:
        m = re.match(r"^(\S+)\s+(\S+)\s+(-|-?\d+)\s+(.*)$", line)
        if not m or line.startswith("diskbench launch:"):
            break
        rows[m.group(1)] = (m.group(3), m.group(4), m.group(2))
    return rows


def report(log_dir):
    with open(os.path.join(log_dir, "report.json")) as f:
        return json.load(f)


def write_hosts(tmpdir, text):
    path = tmpdir.join("hosts")
    path.write(text)
    return str(path)


# --- the hosts file and the command line -------------------------------------------------
def test_hosts_file_forms():
    hosts = launchargs.parse_hosts(
        "# the bench hosts\n"
        "node1\n"
        "  bench@node2:2222   python=/opt/py/bin/python dir=/mnt/nvme name=n2  # fast one\n"
        "[fd00::7]:22 name=v6\n"
        "\n"
        "root@[fd00::8]\n")
    assert [(h.address, h.user, h.port, h.python, h.directory, h.name) for h in hosts] == [
        ("node1", None, None, None, None, None),
        ("node2", "bench", 2222, "/opt/py/bin/python", "/mnt/nvme", "n2"),
        ("fd00::7", None, 22, None, None, "v6"),
        ("fd00::8", "root", None, None, None, None)]
    assert hosts[1].lineno == 3


@pytest.mark.parametrize("text, words", [
    ("", "names no host"),
    ("# only a comment\n\n", "names no host"),
    ("node1 speed=fast\n", "line 1: 'speed=fast' is not one of python=VALUE"),
    ("node1\nno de:x\n", "line 2: 'de:x' is not one of"),
    ("node:99999\n", "line 1: 'node:99999' is not HOST[:PORT]: the port must be a number "
     "from 1 to 65535"),
    ("a@b@c\n", "line 1: 'a@b@c' is not [user@]host[:port]"),
    ("n1 name=x\nn2 name=x\n", "same name="),
])
def test_bad_hosts_file_is_one_line_and_exit_2(tmpdir, text, words):
    hosts = write_hosts(tmpdir, text)
    code, out, err = run_launch([sys.executable, "-m", "diskbench.launch", "--hosts", hosts,
                                 "--", "/tmp"], "none")
    assert code == exitcodes.USAGE, err
    assert words in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("argv, words", [
    (["--hosts", "/nonexistent/hosts", "--", "/tmp"], "cannot read the hosts file"),
    (["--hosts", "{hosts}"], "the directory to measure on the hosts is missing"),
    (["--hosts", "{hosts}", "--", "--duration", "5"], "client flags after --: (the following "
     "arguments are required: DIRECTORY|too few arguments)"),  # 3 | 2.7 argparse
    (["--hosts", "{hosts}", "--", "/tmp", "--force"], "must be the DIRECTORY"),
    (["--hosts", "{hosts}", "--", "--chunk-mb", "ten", "/tmp"], "client flags after --: "
     "argument --chunk-mb: invalid int value"),
    (["--hosts", "{hosts}", "--clients", "3", "--", "/tmp"], "--clients is set by the launcher"),
    (["--hosts", "{hosts}", "--", "--server", "x:1", "/tmp"], "--server is set by the launcher"),
    (["--hosts", "{hosts}", "--remote-env", "1X=2", "--", "/tmp"], "NAME=VALUE"),
])
def test_bad_command_line_is_one_line_and_exit_2(tmpdir, argv, words):
    """``words`` is a regular expression here."""
    hosts = write_hosts(tmpdir, "node1\n")
    argv = [a.replace("{hosts}", hosts) for a in argv]
    code, out, err = run_launch([sys.executable, "-m", "diskbench.launch"] + argv, "none")
    assert code == exitcodes.USAGE, err
    assert re.search(words, err), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("hosts_text, ok", [
    ("node1\nnode2\n", False), ("node1 name=a\nnode2\nnode3\n", False),
    ("node1 name=a\nnode2\n", True), ("node1\n", True)])
def test_a_name_for_every_host_in_the_client_flags_is_refused(tmpdir, tag, hosts_text, ok):
    """-- --name X gives every host without a name= the same client name: the server
    would take the first and refuse the rest (each host then neither came nor was
    counted out). Refused at once, one line, exit 2, when two hosts would share it;
    with one such host it is that host's name (here the fake ssh is never reached:
    the hosts do not exist, so the run ends with none)."""
    hosts = write_hosts(tmpdir, hosts_text)
    argv = [sys.executable, "-m", "diskbench.launch", "--hosts", hosts, "--port", "0",
            "--server-host", "127.0.0.1", "--log-dir", str(tmpdir.join("logs")), "--ssh",
            "/nonexistent/ssh", "--", "--name", "same", "/tmp"]
    code, out, err = run_launch(argv, tag)
    assert "Traceback" not in err
    if ok:
        assert code == exitcodes.LAUNCH_NO_HOST, (out, err)
        return
    assert code == exitcodes.USAGE, err
    assert "--name same after -- names the client of" in err and "name=" in err, err
    assert len(err.strip().splitlines()) == 1
    assert not os.path.exists(str(tmpdir.join("logs", "server.log")))


def test_server_flags_pass_through_and_host_is_not_hosts():
    """--host (the server's) must never be taken for --hosts; unknown flags go to the server."""
    parser = launch.build_parser()
    args, server, client = launchargs.split_argv(parser, [
        "--hosts", "h", "--host", "10.0.0.1", "--start-timeout", "5", "--verbose",
        "--ssh-arg=-F", "--ssh-arg=/dev/null", "--", "--duration", "9", "/mnt/d"])
    assert args.hosts == "h" and args.host == "10.0.0.1"
    assert args.ssh_arg == ["-F", "/dev/null"]
    assert server == ["--start-timeout", "5", "--verbose"]
    assert client == ["--duration", "9", "/mnt/d"]
    assert launchargs.default_server_host(args) == "10.0.0.1"


def test_remote_command_survives_any_directory_name(tmpdir):
    """The command ssh hands to a shell keeps every word as it was: run it through sh."""
    evil = str(tmpdir.join("it's a $(touch PWNED) `touch PWNED2` \"dir\" ;"))
    host = launchargs.Host("h", "h", directory=evil, name="n 1")
    # a stand-in python that prints its argv proves the quoting word by word
    fake_py = tmpdir.join("py")
    fake_py.write("#!/bin/sh\nif [ \"$1\" = -c ]; then exit 0; fi\n"
                  "for a in \"$@\"; do printf '%s\\n' \"$a\"; done\n")
    fake_py.chmod(0o755)
    command = launchargs.remote_command(host, ["--duration", "1", "/ignored"], "srv:1",
                                    python=str(fake_py))
    out = subprocess.check_output(["/bin/sh", "-c", command], cwd=str(tmpdir))
    assert out.decode().splitlines() == [
        "-m", "diskbench.client", "--server", "srv:1", "--duration", "1", "--name", "n 1",
        evil]
    assert not tmpdir.join("PWNED").exists() and not tmpdir.join("PWNED2").exists()


def test_server_that_cannot_start_gives_its_code_and_no_ssh(tmpdir, tag):
    """The server's own one-line error and exit code (3: port in use); no host is tried."""
    import socket
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        hosts = write_hosts(tmpdir, "unreachable-never-tried\n")
        argv = launch_argv(hosts, str(tmpdir.join("logs")), str(tmpdir), tag,
                           extra=["--host", "127.0.0.1"])
        argv[argv.index("--port") + 1] = str(busy.getsockname()[1])
        code, out, err = run_launch(argv, tag, fake_ssh_dir(tmpdir))
    finally:
        busy.close()
    assert code == exitcodes.SERVER_BIND, (out, err)
    assert "diskbench.server: error:" in err and "unreachable-never-tried" not in err + out


# --- whole runs through a fake ssh ---------------------------------------------------------
def test_fake_ssh_run_two_hosts_and_one_unreachable(tmpdir, tag):
    """The run goes on with the hosts that started; the one that failed is one line, and
    the server is told it will not come; the end table names each host's client."""
    d1, d2 = str(tmpdir.mkdir("d1")), str(tmpdir.mkdir("d2 with space"))
    hosts = write_hosts(tmpdir, "fake1 name=a dir=%s\nfake2\nunreachable-host\n" % d1)
    log_dir = str(tmpdir.join("logs"))
    code, out, err = run_launch(launch_argv(hosts, log_dir, d2, tag), tag,
                                fake_ssh_dir(tmpdir))
    # the server's run completed with the 2 clients it was told to expect; a host failed
    assert code == exitcodes.LAUNCH_CLIENT_FAILED, (out, err)
    failed = [line for line in err.splitlines() if "unreachable-host" in line]
    assert failed[0] == "diskbench launch: ssh to unreachable-host failed: ssh: connect to " \
        "host unreachable-host port 22: Connection refused", err
    assert failed[1].startswith("diskbench launch: told the server that unreachable-host "
                                "will not come: "), err
    assert len(failed) == 2, err
    assert "Traceback" not in err
    rows = summary_rows(out)
    assert rows["fake1"][0] == "0" and rows["fake2"][0] == "0", out
    assert rows["unreachable-host"][0] == "255" and "Connection refused" in \
        rows["unreachable-host"][1]
    data = report(log_dir)
    by_name = dict((c["client"], c) for c in data["clients"])
    assert len(by_name) == 2 and "a" in by_name
    b = [n for n in by_name if n != "a"][0]       # fake2's own default name
    assert (rows["fake1"][2], rows["fake2"][2], rows["unreachable-host"][2]) == ("a", b, "-")
    assert all(c["state"] == "finished" for c in by_name.values())
    assert by_name["a"]["target_dir"] == d1 and by_name[b]["target_dir"] == d2
    assert data["run"]["expected_client_count"] == 2
    assert any(w.startswith("host unreachable-host will not come (ssh failed: ") and
               w.endswith("the run waits for 2 clients, not 3")
               for w in data["run"]["server_warnings"]), data["run"]["server_warnings"]
    assert os.path.exists(os.path.join(log_dir, "launch-3-unreachable-host.log"))


def test_fake_ssh_run_with_a_non_ascii_log_dir_and_host(tmpdir, tag):
    """--log-dir /.../journaux-e-acute and a host line that is not ASCII: on 2.7 the path is
    bytes from argv, the host's label text; the run completes, the dead host is told
    to the server, and nothing raises (the server's control socket, the per-host log
    files, ctl not-coming)."""
    from diskbench.compat import PY2
    name = u"journaux-\u00e9"
    log_dir = os.path.join(str(tmpdir), name.encode("utf-8") if PY2 else name)
    hosts = tmpdir.join("hosts")
    hosts.write_binary(u"fake1 name=a\nunreachable-h\u00f4te\n".encode("utf-8"))
    code, out, err = run_launch(launch_argv(str(hosts), log_dir, str(tmpdir.mkdir("d")),
                                            tag), tag, fake_ssh_dir(tmpdir))
    assert code == exitcodes.LAUNCH_CLIENT_FAILED, (out, err)
    assert "Traceback" not in err + out, err
    assert u"told the server that unreachable-h\u00f4te will not come: " in err, err
    rows = summary_rows(out)
    assert rows["fake1"][:1] == ("0",), out
    data = report(log_dir)
    assert [(c["client"], c["state"]) for c in data["clients"]] == [("a", "finished")]


#: A --start-timeout far beyond the test's deadline (RUN_TIMEOUT_S): a run that waited
#: for it could not end in time.
LARGE_START_TIMEOUT_S = 600


def test_fake_ssh_dead_host_does_not_cost_the_start_timeout(tmpdir, tag):
    """A host whose ssh fails at once is taken off the count the server waits for
    (ctl not-coming): with --start-timeout far beyond the test's deadline, the run
    starts and ends with the others, well under the timeout."""
    hosts = write_hosts(tmpdir, "fake1 name=a\nunreachable-dead\nfake2 name=b\n")
    log_dir = str(tmpdir.join("logs"))
    argv = launch_argv(hosts, log_dir, str(tmpdir.mkdir("d")), tag)
    argv[argv.index("--start-timeout") + 1] = str(LARGE_START_TIMEOUT_S)
    began = time.time()
    code, out, err = run_launch(argv, tag, fake_ssh_dir(tmpdir))
    elapsed = time.time() - began
    assert code == exitcodes.LAUNCH_CLIENT_FAILED, (out, err)
    assert RUN_TIMEOUT_S < LARGE_START_TIMEOUT_S and elapsed < LARGE_START_TIMEOUT_S / 10.0
    data = report(log_dir)
    assert sorted(c["client"] for c in data["clients"]) == ["a", "b"]
    assert all(c["state"] == "finished" for c in data["clients"])
    assert data["run"]["exit_code"] == exitcodes.OK      # no "2 of 3": nobody was missing
    assert not any("--start-timeout" in w for w in data["run"]["server_warnings"])
    rows = summary_rows(out)
    assert rows["unreachable-dead"][0] == "255" and rows["fake1"][2] == "a"


def test_ctl_not_coming_lowers_the_count_only_before_go():
    """The registry waits for one client fewer per host that will not come, releases
    go when those present are enough, and changes nothing once go was sent."""
    from diskbench.server import registry as reg
    from tests.test_server_fakes import hello_fields
    from diskbench import protocol as P
    r = reg.Registry(expected_clients=3)
    hello = P.make(P.HELLO, P.C2S, name="c1", seq=1, ts=time.time(), **hello_fields())
    r.hello(hello, time.time(), 1, "127.0.0.1:1", lambda m: True)
    assert "waits for 2 clients" in r.not_coming("h2", "ssh failed")
    assert not r.go_released and r.expected_clients == 2
    assert "go is sent" in r.not_coming("h3", "ssh failed")
    assert r.go_released and r.expected_clients == 1
    assert "already sent" in r.not_coming("h4", "late") and r.expected_clients == 1
    assert not r.none_coming
    assert [n for n in r.notes if "will not come" in n] == [
        "host h2 will not come (ssh failed): the run waits for 2 clients, not 3",
        "host h3 will not come (ssh failed): the run waits for 1 client, not 2"]


def test_ctl_not_coming_of_every_host_completes_a_run_none_came_to():
    """The count goes down to 0, not 1: with no client there and none to wait for, the
    run is complete at once (no hello will ever start --start-timeout)."""
    from diskbench.server import registry as reg
    r = reg.Registry(expected_clients=2)
    assert "waits for 1 client" in r.not_coming("h1", "client exited 10")
    assert not r.is_complete() and not r.none_coming
    assert r.not_coming("h2", "exit 1") == "no client came and none will: the run ends"
    assert r.expected_clients == 0 and r.none_coming and r.is_complete()
    assert r.notes[-1] == ("host h2 will not come (exit 1): no client came and no more "
                           "will (the run waited for 1 client): the run ends with none")


def test_no_host_started_stops_the_server_exit_21(tmpdir, tag):
    """ssh failing and a host without diskbench: one line each, exit 21, nothing hangs."""
    hosts = write_hosts(tmpdir, "unreachable1\nfake python=/nonexistent/python3\n")
    log_dir = str(tmpdir.join("logs"))
    # a --server-grace beyond the test's deadline: only the launcher's own stop ends it
    code, out, err = run_launch(launch_argv(hosts, log_dir, str(tmpdir), tag,
                                            extra=["--server-grace", "600"]), tag,
                                fake_ssh_dir(tmpdir))
    assert code == exitcodes.LAUNCH_NO_HOST, (out, err)
    mine = [line for line in err.splitlines() if line.startswith("diskbench launch:") and
            "told the server that" not in line]   # (tested in the start-timeout test)
    assert len([line for line in mine if "unreachable1" in line]) == 1, err
    missing = [line for line in mine if line.startswith("diskbench launch: fake:")]
    assert len(missing) == 1 and "no Python there can import diskbench" in missing[0] \
        and "pip install" in missing[0] and "tried /nonexistent/python3" in missing[0], err
    assert summary_rows(out)["fake"][0] == str(launchargs.REMOTE_NOT_FOUND)
    assert "no client ran on any host" in err


#: A launcher whose every host ended before hello ends within this (the server ends its
#: run at once); with --server-grace and --start-timeout at LARGE_START_TIMEOUT_S, a
#: launcher that waited for either could not.
NO_CLIENT_END_S = 20
MISSING_DIR = "/nonexistent/diskbench-test-dir"
_BRIEF = exitcodes.brief
#: Hosts that all end before their client's hello, and the meaning each row must give.
NO_CLIENT_CASES = {
    # the real client, its DIRECTORY missing (exit 10): 1 host, and 2
    "missing-dir": (["fake1 dir=%s" % MISSING_DIR],
                    {"fake1": ("10", _BRIEF(exitcodes.CLIENT_DIRECTORY, exitcodes.CLIENT))}),
    "missing-dir-2": (["fake1 dir=%s" % MISSING_DIR, "fake2 dir=%s" % MISSING_DIR],
                      {"fake1": ("10", _BRIEF(exitcodes.CLIENT_DIRECTORY, exitcodes.CLIENT)),
                       "fake2": ("10", _BRIEF(exitcodes.CLIENT_DIRECTORY, exitcodes.CLIENT))}),
    # what /bin/false does (exit 1, no output), beside a session ending 0 with no client
    "exit-1-and-0": (["exit-1", "exit-0"],
                     {"exit-1": ("1", "exit 1 with no output"),
                      "exit-0": ("0", "exit 0, but no diskbench client ran there")}),
    # a traceback really is exit 1's meaning; ssh killed by a signal; a code of no table
    "traceback-killed-42": (["traceback-1", "killed-1", "exit-42"],
                            {"traceback-1": ("1", _BRIEF(exitcodes.INTERNAL,
                                                         exitcodes.CLIENT)),
                             "killed-1": ("-9", "ssh was killed by signal 9"),
                             "exit-42": ("42", "exit 42")}),
}


@pytest.mark.parametrize("case", sorted(NO_CLIENT_CASES))
def test_fake_ssh_every_client_ends_before_hello_exit_21_at_once(tmpdir, tag, case):
    """Whatever each host's code, when none of their clients came: the server ends its
    run at once (no --start-timeout, no --server-grace), its report says none came and
    why, the launcher exits 21 with one line per host saying what its code means."""
    lines, expected = NO_CLIENT_CASES[case]
    hosts = write_hosts(tmpdir, "".join(line + "\n" for line in lines))
    log_dir = str(tmpdir.join("logs"))
    argv = launch_argv(hosts, log_dir, str(tmpdir), tag,
                       extra=["--server-grace", str(LARGE_START_TIMEOUT_S)])
    argv[argv.index("--start-timeout") + 1] = str(LARGE_START_TIMEOUT_S)
    code, out, err = run_launch(argv, tag, fake_ssh_dir(tmpdir), timeout=NO_CLIENT_END_S)
    assert NO_CLIENT_END_S < LARGE_START_TIMEOUT_S
    assert code == exitcodes.LAUNCH_NO_HOST, (out, err)
    assert "Traceback" not in err and "server-grace" not in err, err
    rows = summary_rows(out)
    assert sorted(rows) == sorted(expected), out
    for label, (exit_column, meaning) in expected.items():
        assert rows[label][0] == exit_column and rows[label][1].startswith(meaning), out
    for label, (_, meaning) in expected.items():
        said = [line for line in err.splitlines()
                if line.startswith("diskbench launch: %s: " % label)]
        assert len(said) == 1 and meaning in said[0], err
    assert "no client ran on any host" in err
    data = report(log_dir)
    assert data["clients"] == [] and data["run"]["exit_code"] == exitcodes.SERVER_INCOMPLETE
    assert data["run"]["interrupted_by"] is None
    warnings = data["run"]["server_warnings"]
    for label in expected:
        assert len([w for w in warnings if w.startswith("host %s will not come (" % label)]) \
            == 1, warnings
    assert warnings[-1].endswith("no client came and no more will (the run waited for "
                                 "1 client): the run ends with none"), warnings
    with open(os.path.join(log_dir, "report.txt")) as f:
        text = f.read()
    assert "clients: 0 (none came)" in text and "INTERRUPTED" not in text


#: The fake ssh's gate polls its file this often, for at most GATE_WAIT_S.
GATE_POLL_S = 0.05
GATE_WAIT_S = 30


def gate(host, path, text):
    """The environment that holds ``host``'s fake ssh until file ``path`` holds ``text``."""
    return {"FAKE_SSH_WAIT_HOST": host, "FAKE_SSH_WAIT_FILE": path,
            "FAKE_SSH_WAIT_TEXT": text, "FAKE_SSH_WAIT_POLL_S": str(GATE_POLL_S),
            "FAKE_SSH_WAIT_POLLS": str(int(GATE_WAIT_S / GATE_POLL_S))}


def dies(host, path, text):
    """The environment that kills ``host``'s client (kill -9) once file ``path`` holds
    ``text``, its fake ssh then ending with 255 (a dropped connection)."""
    return {"FAKE_SSH_DIE_HOST": host, "FAKE_SSH_DIE_FILE": path, "FAKE_SSH_DIE_TEXT": text,
            "FAKE_SSH_WAIT_POLL_S": str(GATE_POLL_S),
            "FAKE_SSH_WAIT_POLLS": str(int(GATE_WAIT_S / GATE_POLL_S))}


def test_fake_ssh_host_whose_client_said_hello_then_died_still_counts(tmpdir, tag):
    """Host dying1's client says hello, then dies with its ssh (255) before go; host
    late3 starts only once the server has heard of dying1's end. The launcher tells
    the server (ctl not-coming, naming the client), which must not wait for one client
    fewer: its client came (it is counted among those present), and go sent then would
    leave late3 out of the common start. The report says it went away, not that its
    host never came, and counts the 3 clients expected."""
    hosts = write_hosts(tmpdir, "dying1 name=a\nok2 name=b\nlate3 name=c\n")
    log_dir = str(tmpdir.join("logs"))
    argv = launch_argv(hosts, log_dir, str(tmpdir.mkdir("d")), tag,
                       extra=["--heartbeat-timeout", "2", "--rejoin-grace", "1"])
    argv[argv.index("--start-timeout") + 1] = str(LARGE_START_TIMEOUT_S)
    server_log = os.path.join(log_dir, "server.log")
    env = gate("late3", server_log, "host dying1")
    env.update(dies("dying1", server_log, "client a joined"))
    code, out, err = run_launch(argv, tag, fake_ssh_dir(tmpdir), env_extra=env)
    assert code == exitcodes.SERVER_INCOMPLETE, (out, err)   # a went away
    assert "Traceback" not in err
    rows = summary_rows(out)
    assert rows["dying1"][0] == "255" and rows["ok2"][0] == rows["late3"][0] == "0", out
    data = report(log_dir)
    states = dict((c["client"], c["state"]) for c in data["clients"])
    assert states == {"a": "went away", "b": "finished", "c": "finished"}, states
    assert data["run"]["expected_client_count"] == 3, data["run"]
    assert not [w for w in data["run"]["server_warnings"] if "will not come" in w]
    starts = [c.get("start_at_ts") for c in data["clients"] if c["client"] in "bc"]
    assert starts[0] is not None and starts[0] == starts[1], starts   # one common start


@pytest.mark.parametrize("first", ["not-coming", "hello"])
def test_fake_ssh_one_client_ends_before_hello_the_other_runs(tmpdir, tag, first):
    """One host's client exits 10 (its DIRECTORY missing) before hello, the other's runs,
    in either order (the fake ssh holds one host until the server logged the other):
    the run goes on with the one at once (not after --start-timeout) and completes; the
    report names the host that never came and why."""
    hosts = write_hosts(tmpdir, "fake1 name=a\nfake2 name=b dir=%s\n" % MISSING_DIR)
    log_dir = str(tmpdir.join("logs"))
    argv = launch_argv(hosts, log_dir, str(tmpdir.mkdir("d")), tag)
    argv[argv.index("--start-timeout") + 1] = str(LARGE_START_TIMEOUT_S)
    server_log = os.path.join(log_dir, "server.log")
    held = gate("fake1", server_log, "host fake2 will not come") if first == "not-coming" \
        else gate("fake2", server_log, "client a joined")
    code, out, err = run_launch(argv, tag, fake_ssh_dir(tmpdir), env_extra=held)
    assert code == exitcodes.LAUNCH_CLIENT_FAILED, (out, err)
    rows = summary_rows(out)
    assert rows["fake1"][:2] == ("0", _BRIEF(exitcodes.OK, exitcodes.CLIENT)), out
    assert rows["fake2"][:2] == ("10", _BRIEF(exitcodes.CLIENT_DIRECTORY, exitcodes.CLIENT))
    data = report(log_dir)
    assert [(c["client"], c["state"]) for c in data["clients"]] == [("a", "finished")]
    assert data["run"]["exit_code"] == exitcodes.OK and data["run"]["expected_client_count"] == 1
    assert ["host fake2 will not come (%s): the run waits for 1 client, not 2" % _BRIEF(
        exitcodes.CLIENT_DIRECTORY, exitcodes.CLIENT)] == [
        w for w in data["run"]["server_warnings"] if "will not come" in w]
    assert not any("--start-timeout" in w for w in data["run"]["server_warnings"])


def _launched_and_both_writing(argv, tag, tmpdir, log_dir):
    """The launch started (fake ssh) once the server says both clients write."""
    proc = start_launch(argv, tag, fake_ssh_dir(tmpdir))
    server_log = os.path.join(log_dir, "server.log")

    def both_writing():
        if not os.path.exists(server_log):
            return False
        with open(server_log) as f:
            return f.read().count("started writing") == 2
    try:
        wait_until(both_writing, 30, what="both clients writing")
    except AssertionError:
        proc.kill()
        raise
    return proc


def test_server_killed_mid_run_is_one_line_and_a_documented_exit(tmpdir, tag):
    """The server is killed (kill -9, the OOM killer) while both hosts' clients write:
    the launcher says so in one line with the fix (re-render from perf.jsonl) and exits
    5, a code its table documents (it passed the server's -9 on: exit 247); the
    clients keep what was not acknowledged and exit 13. A re-render then reports the
    run, each client unfinished."""
    hosts = write_hosts(tmpdir, "fake1 name=a\nfake2 name=b\n")
    log_dir = str(tmpdir.join("logs"))
    argv = launch_argv(hosts, log_dir, str(tmpdir.mkdir("d")), tag,
                       client_extra=["--duration", "6", "--deliver-timeout", "2"])
    proc = _launched_and_both_writing(argv, tag, tmpdir, log_dir)
    servers = [pid for pid in _tagged_pids(tag) if b"diskbench.server\0--clients" in
               open("/proc/%d/cmdline" % pid, "rb").read()]
    assert len(servers) == 1, servers
    os.kill(servers[0], signal.SIGKILL)
    out, err = communicate(proc, RUN_TIMEOUT_S)
    assert proc.returncode == exitcodes.SERVER_INCOMPLETE, (out, err)
    assert proc.returncode in exitcodes.codes(exitcodes.LAUNCH)
    said = [line for line in err.splitlines() if "killed by signal 9" in line]
    assert len(said) == 1 and "python -m diskbench.report %s" % log_dir in said[0], err
    assert "Traceback" not in err + out
    assert out.splitlines()[-1] == "diskbench launch: exit 5 (server killed by signal 9)"
    rows = summary_rows(out)
    assert rows["fake1"][0] == rows["fake2"][0] == str(exitcodes.CLIENT_SERVER), out
    code, _, err = run_launch([sys.executable, "-m", "diskbench.report", log_dir], tag)
    assert code == exitcodes.OK, err
    assert sorted(c["state"] for c in report(log_dir)["clients"]) == ["running", "running"]


def test_sigint_is_forwarded_to_the_server_which_stops_the_clients(tmpdir, tag):
    hosts = write_hosts(tmpdir, "fake1 name=a\nfake2 name=b\n")
    log_dir = str(tmpdir.join("logs"))
    argv = launch_argv(hosts, log_dir, str(tmpdir.mkdir("d")), tag,
                       client_extra=["--duration", "120"])
    proc = _launched_and_both_writing(argv, tag, tmpdir, log_dir)
    proc.send_signal(signal.SIGINT)
    out, err = communicate(proc, RUN_TIMEOUT_S)
    assert proc.returncode == exitcodes.SERVER_INTERRUPTED, (out, err)
    assert "asked the server to stop" in err
    rows = summary_rows(out)
    assert rows["fake1"][0] == rows["fake2"][0] == str(exitcodes.CLIENT_INTERRUPTED), out


# --- the real ssh -----------------------------------------------------------------------------
def _sshd_missing():
    if os.geteuid() != 0:
        return "not root: a private sshd cannot be started"
    for tool in (SSHD, "/usr/bin/ssh-keygen"):
        if not os.path.exists(tool):
            return "%s missing (apt-get install openssh-server; make test-multihost does)" \
                % tool
    if not any(os.access(os.path.join(d, "ssh"), os.X_OK)
               for d in os.environ.get("PATH", "").split(os.pathsep)):
        return "no ssh client on PATH (apt-get install openssh-client)"
    return None


@pytest.fixture
def sshd(tmpdir):
    """A private sshd on a free port of 127.0.0.1 and the ssh options that reach it."""
    why = _sshd_missing()
    if why:
        pytest.skip(why)
    d = tmpdir.mkdir("sshd")
    host_key, user_key = str(d.join("host_key")), str(d.join("user_key"))
    for key in (host_key, user_key):
        subprocess.check_call(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key])
    shutil.copy(user_key + ".pub", str(d.join("authorized_keys")))
    port = free_port()
    config = d.join("sshd_config")
    config.write("\n".join([
        "Port %d" % port, "ListenAddress 127.0.0.1", "HostKey %s" % host_key,
        "AuthorizedKeysFile %s" % d.join("authorized_keys"),
        "PidFile %s" % d.join("sshd.pid"), "StrictModes no", "UsePAM no",
        "PermitRootLogin prohibit-password", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PubkeyAuthentication yes", ""]))
    if not os.path.isdir("/run/sshd"):  # privilege separation dir the package would make
        os.makedirs("/run/sshd", 0o755)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, close_fds=True)
    import socket

    def banner():
        assert proc.poll() is None, "sshd exited: %s" % proc.stdout.read()
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=1)
        except (IOError, OSError):
            return False
        try:
            return s.recv(4).startswith(b"SSH-")
        finally:
            s.close()
    try:
        wait_until(banner, 10, what="the private sshd's banner")
        options = ["--ssh-option", "IdentityFile=%s" % user_key,
                   "--ssh-option", "IdentitiesOnly=yes",
                   "--ssh-option", "UserKnownHostsFile=%s" % d.join("known_hosts"),
                   "--ssh-option", "StrictHostKeyChecking=no",
                   "--ssh-option", "LogLevel=ERROR",
                   "--ssh-arg=-F", "--ssh-arg=/dev/null"]
        yield port, options
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_real_ssh_two_hosts_and_one_closed_port(tmpdir, tag, sshd):
    port, options = sshd
    closed = free_port()
    d1, d2 = str(tmpdir.mkdir("d1")), str(tmpdir.mkdir("d2"))
    hosts = write_hosts(tmpdir, "127.0.0.1:%d name=ssh-a dir=%s\n"
                                "root@127.0.0.1:%d name=ssh-b\n"
                                "127.0.0.1:%d name=nobody\n" % (port, d1, port, closed))
    log_dir = str(tmpdir.join("logs"))
    code, out, err = run_launch(launch_argv(hosts, log_dir, d2, tag, extra=options), tag)
    # the run completed with the 2 clients the server was told to expect; a host failed
    assert code == exitcodes.LAUNCH_CLIENT_FAILED, (out, err)
    failed = [line for line in err.splitlines() if ":%d" % closed in line]
    assert len(failed) == 2 and "ssh to 127.0.0.1:%d failed: ssh: connect to host " \
        "127.0.0.1 port %d: Connection refused" % (closed, closed) in failed[0], err
    assert failed[1].startswith("diskbench launch: told the server that 127.0.0.1:%d "
                                "will not come: " % closed), err
    rows = summary_rows(out)
    assert rows["127.0.0.1:%d" % port][0] == "0", out
    assert rows["root@127.0.0.1:%d" % port][0] == "0", out
    assert rows["127.0.0.1:%d" % closed][0] == "255", out
    clients = dict((c["client"], c) for c in report(log_dir)["clients"])
    assert sorted(clients) == ["ssh-a", "ssh-b"]
    assert all(c["state"] == "finished" for c in clients.values())
    assert clients["ssh-a"]["target_dir"] == d1 and clients["ssh-b"]["target_dir"] == d2


# --- the compose file ----------------------------------------------------------------------
COMPOSE = os.path.join(REPO, "deploy", "compose.yaml")


def _load_compose():
    try:
        import yaml
    except ImportError:
        pytest.skip("PyYAML missing (make test installs it from requirements-test.txt)")
    with open(COMPOSE) as f:
        return yaml.safe_load(f)


def _flag(command, name):
    return command[command.index(name) + 1]


def test_compose_file_has_the_structure_compose_expects():
    """No Docker engine here: the file is parsed and its wiring checked."""
    doc = _load_compose()
    services, volumes = doc["services"], doc["volumes"]
    assert isinstance(services, dict) and isinstance(volumes, dict)
    clients = dict((name, svc) for name, svc in services.items()
                   if "diskbench.client" in svc.get("command", []))
    server = services["server"]
    assert int(_flag(server["command"], "--clients")) == len(clients) == 3
    assert "7878:7878" in server["ports"]
    names, data = set(), set()
    for name, svc in services.items():
        assert isinstance(svc["image"], str) and svc["image"].startswith("python:")
        assert all(isinstance(word, str) for word in svc["command"])
        for entry in svc["volumes"]:
            source, target = entry.split(":")[:2]
            assert target.startswith("/")
            if not source.startswith((".", "/")):
                assert source in volumes, "%s uses undeclared volume %s" % (name, source)
            else:
                assert source == ".." and target == svc["working_dir"]  # the repository
    for name, svc in clients.items():
        assert svc["depends_on"] == ["server"]  # the <<: *client merge key was resolved
        command = svc["command"]
        assert command[:3] == ["python", "-m", "diskbench.client"]
        assert _flag(command, "--server") == "server:7878"
        names.add(_flag(command, "--name"))
        mount = [v for v in svc["volumes"] if v.endswith(":" + command[-1])]
        assert len(mount) == 1, "%s: its DIRECTORY %s is not a volume" % (name, command[-1])
        data.add(mount[0].split(":")[0])
    assert len(names) == len(data) == len(clients)  # own name, own volume each


def test_compose_commands_are_accepted_by_the_real_programs(procs, tmpdir):
    """Each service's command, run here with paths moved into tmp: every flag parses."""
    doc = _load_compose()
    for name, svc in doc["services"].items():
        command = list(svc["command"])
        if command[:3] == ["python", "-m", "diskbench.client"]:
            command[command.index("--log-dir") + 1] = str(tmpdir.join(name, "logs"))
            command[-1] = str(tmpdir.join(name, "missing-dir"))
            code, out, err = procs.run(command[1:] + ["--connect-timeout", "1"])
            assert code == exitcodes.CLIENT_DIRECTORY, (name, err)  # got past the flags
        elif command[:3] == ["python", "-m", "diskbench.server"]:
            command[command.index("--log-dir") + 1] = str(tmpdir.join(name))
            proc = procs.start(command[1:] + ["--port", "0", "--quiet"])
            line = proc.stdout.readline().decode()
            assert "listening on" in line, communicate(proc, 10)
            proc.send_signal(signal.SIGTERM)
            communicate(proc, 30)
            assert proc.returncode == exitcodes.SERVER_INTERRUPTED
