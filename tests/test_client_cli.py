"""diskbench/cli.py: the display rule (printable), names, and the one secret rule."""
import pytest

from diskbench import cli, exitcodes
from diskbench.compat import PY2
from tests.helpers import wait_until




@pytest.mark.parametrize("raw,shown", [
    (u"plain caf\u00e9", u"plain caf\u00e9"),
    (u"a\nb\rc\x1b[31m", u"a\\x0ab\\x0dc\\x1b[31m"),
    (u"nel\u0085 csi\u009b", u"nel\\x85 csi\\x9b"),
    (u"ls\u2028ps\u2029", u"ls\\u2028ps\\u2029"),
    (u"\u202a\u202e\u2066\u2069", u"\\u202a\\u202e\\u2066\\u2069"),
    (b"caf\xe9", u"caf\\xe9"),
    (u"caf\udce9", u"caf\\xe9"),       # Python 3's surrogateescape of byte 0xe9
    (u"lone\ud800", u"lone\\ud800")])
def test_printable_escapes_every_line_break_and_control(raw, shown):
    """printable() leaves printable text alone and makes every line break,
    terminal/bidi control and undecodable byte a visible escape."""
    assert cli.printable(raw) == shown


def test_read_secret_strips_and_refuses_empty(tmpdir):
    """The secret rule: file wins, whitespace stripped, bytes returned; an empty
    file is an error, an empty environment variable is no secret."""
    path = str(tmpdir.join("s"))
    with open(path, "wb") as f:
        f.write(b"  s3cret\n")
    assert cli.read_secret(path, "from-env") == b"s3cret"
    assert cli.read_secret(None, " env-secret\n") == b"env-secret"
    assert cli.read_secret(None, "") is None
    assert cli.read_secret(None, None) is None
    with open(path, "wb") as f:
        f.write(b"\n")
    with pytest.raises(ValueError) as info:
        cli.read_secret(path, None)
    assert "is empty" in str(info.value)


def test_bad_name_reason():
    """Names: 1-128 printable characters of UTF-8 text."""
    assert cli.bad_name_reason(u"node-1.rack_2") is None
    assert cli.bad_name_reason(u"n\u00f8de") is None
    assert "not UTF-8" in cli.bad_name_reason(b"caf\xe9")
    assert "at most 128" in cli.bad_name_reason(u"x" * 129)
    assert "control" in cli.bad_name_reason(u"a\u2029b")


@pytest.mark.parametrize("argv0,shown", [
    ("/usr/lib/python3/site-packages/diskbench/client/__main__.py",
     "python -m diskbench.client"),
    ("/home/u/venv/bin/diskbench-client", "diskbench-client"),
    ("", "python -m diskbench.client"),
    ("-c", "python -m diskbench.client")])
def test_usage_lines_name_the_command_that_was_run(monkeypatch, argv0, shown):
    monkeypatch.setattr("sys.argv", [argv0, "--help"])
    assert cli.prog_name("diskbench.client") == shown


def _native(text):
    """An argument as this Python's argv holds it (2.7: UTF-8 bytes)."""
    return text.encode("utf-8") if PY2 else text


@pytest.mark.parametrize("args,code", [
    (["diskbench.client", "--server", u"n\xf6:x", "DIR"], exitcodes.USAGE),
    (["diskbench.server", "--secret-file", u"/nowhere/n\xf6"], exitcodes.USAGE),
    (["diskbench.server", "ctl", "--log-dir", u"/nowhere/n\xf6", "list"],
     exitcodes.CTL_NO_SERVER),
    (["diskbench.launch", "--hosts", u"/nowhere/n\xf6", "--", "DIR"], exitcodes.USAGE),
    (["diskbench.report", u"/nowhere/n\xf6"], exitcodes.USAGE)])
def test_error_lines_echo_non_ascii_text_on_any_stderr(procs, args, code):
    """Every command's error line holds what it was given, whatever stderr takes:
    UTF-8 into a pipe (2.7: a stream with no encoding), escaped where the
    console's encoding lacks it; one line and the documented code, no traceback."""
    for env, shown in (({}, u"n\xf6"), ({"PYTHONIOENCODING": "ascii"}, u"n\\xf6")):
        got, out, err = procs.run(["-m"] + [_native(a) for a in args], env=env)
        assert got == code and "Traceback" not in err, (args, env, err)
        assert len(err.strip().splitlines()) == 1 and shown in err, (args, env, err)


@pytest.mark.parametrize("host", ["a..b", "10.0.0..5", "x" * 64 + ".example", "a b",
                                  b"caf\xe9" if PY2 else "caf\udce9"])   # not UTF-8
def test_a_server_host_no_resolver_could_find_is_a_wrong_flag(procs, tmpdir, host):
    """--server (client) and --server-host (launch) with a host that can never
    resolve: one line naming the fix, exit 2, before anything starts, the same on
    both Pythons (3's socket raised UnicodeError in the sender thread)."""
    hosts = tmpdir.join("hosts")
    hosts.write("h1\n")
    for args, flag in ((["diskbench.client", "--server", host + ":7878", "--log-dir",
                         str(tmpdir), str(tmpdir.join("data"))], "--server"),
                       (["diskbench.launch", "--hosts", str(hosts), "--server-host", host,
                         "--", "/data"], "--server-host")):
        code, out, err = procs.run(["-m"] + args)
        assert code == exitcodes.USAGE and "Traceback" not in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err
        assert "error: %s " % flag in err and ": the host " in err, err


def test_the_sender_says_at_once_it_cannot_resolve_a_name_idna_refuses():
    """Past the flags (a sender made by other code): Python 3's socket raises
    UnicodeError for such a name, 2.7's gaierror; both are the one fatal line."""
    from diskbench.client import sender
    from tests.test_protocol import SAMPLE
    from diskbench import protocol as P
    s = sender.Sender(u"x" * 64 + u".example", 1, "n", SAMPLE[P.C2S][P.HELLO])
    s.start()
    try:
        wait_until(lambda: s.fatal is not None, 10, what="the sender's fatal line")
        assert s.fatal.startswith("cannot resolve the server's host name x") and \
            "fix --server" in s.fatal, s.fatal
    finally:
        s.close(1.0)
