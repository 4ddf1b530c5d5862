"""Each fact once: a value both programs (or several modules) rely on is defined
in one module and the others take it from there, so the sides cannot drift.

Per fact, the rule it sets is checked where a test can see it: both command
lines' defaults and bounds agree, the client's name rule is the protocol's at
its boundary, the display's unsafe set covers the wire's, and every reader of
lines refuses at the same length (the framing rule). A source scan checks that
no other module defines the fact's name again.
"""
import ast
import io
import os
import socket
import time

import pytest

from diskbench import cli, launch, plan, protocol
from diskbench.client import __main__ as client_main
from diskbench.client import config
from diskbench.metrics import MIB
from diskbench.protocol import ctl as channel
from diskbench.server import __main__ as server_main
from diskbench.server import control
from tests.helpers import REPO, wait_until
from tests.test_server_fakes import FakeClient, ServerProc

#: Each fact by the name of its one definition: the module that defines it.
FACTS = {
    "STALL_TIMEOUT_S": "diskbench/plan.py",
    "MIN_INTERVAL_S": "diskbench/plan.py",
    "HEARTBEAT_INTERVAL_S": "diskbench/plan.py",
    "MAX_MB": "diskbench/plan.py",
    "REFRESH_S": "diskbench/cli.py",
    "PROGRESS_INTERVAL_S": "diskbench/cli.py",
    "DEFAULT_LOG_DIR": "diskbench/cli.py",
    "MAX_SECONDS": "diskbench/cli.py",
    "MAX_INTERVAL_S": "diskbench/cli.py",
    "NAME_MAX_CHARS": "diskbench/protocol/catalogue.py",
    "FILES_MAX": "diskbench/protocol/catalogue.py",
    "TEXT_MAX_CHARS": "diskbench/protocol/text.py",
    "UNSAFE": "diskbench/protocol/text.py",
    "DISPLAY_UNSAFE": "diskbench/protocol/text.py",
    "MAX_LINE_BYTES": "diskbench/protocol/framing.py",
    "RUN_MARKER": "diskbench/report/__init__.py",
    "OPERATOR_STOP_REASON": "diskbench/server/control.py",
    "OPERATOR_ENDED": "diskbench/server/finalreport.py",
}
#: Names an earlier copy of a fact had (each now gone).
FORMER_COPIES = ("DEFAULT_HEARTBEAT_S", "MAX_PLAN_MB", "MAX_FILE_MB", "MAX_DURATION_S",
                 "REASON_MAX_CHARS", "EXIT_MEANING", "MEANINGS_OF_CLIENT", "_UNSAFE",
                 "_CONTROL_CHARS", "_CTL_CODES")


def _top_level_names(path):
    with io.open(os.path.join(REPO, path), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    names = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        for target in targets:
            for n in ast.walk(target):
                if isinstance(n, ast.Name):
                    names.add(n.id)
    return names


def _product_modules():
    for root, _, files in os.walk(os.path.join(REPO, "diskbench")):
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.relpath(os.path.join(root, name), REPO)


def test_each_fact_is_defined_in_one_module():
    defined = dict((name, []) for name in list(FACTS) + list(FORMER_COPIES))
    for path in _product_modules():
        for name in _top_level_names(path) & set(defined):
            defined[name].append(path)
    assert dict((n, p) for n, p in defined.items() if n in FACTS) == \
        dict((n, [p]) for n, p in FACTS.items())
    assert [n for n in FORMER_COPIES if defined[n]] == []


def _default(parser, flag):
    for action in parser._actions:
        if flag in action.option_strings:
            return action.default
    raise AssertionError("no %s" % flag)


def test_both_command_lines_share_their_common_defaults():
    server, client, launcher = (server_main.build_parser(), client_main.build_parser(),
                                launch.build_parser())
    assert _default(server, "--stall-timeout") == _default(client, "--stall-timeout") == \
        plan.STALL_TIMEOUT_S
    assert _default(server, "--progress-interval") == \
        _default(client, "--progress-interval") == cli.PROGRESS_INTERVAL_S
    assert _default(client, "--log-dir") == _default(launcher, "--log-dir") == \
        cli.DEFAULT_LOG_DIR
    assert _default(server, "--log-dir") == os.path.join(".", cli.DEFAULT_LOG_DIR)
    assert config.ClientConfig().stall_timeout_s == plan.STALL_TIMEOUT_S
    assert config.ClientConfig().heartbeat_interval_s == plan.HEARTBEAT_INTERVAL_S


def _client_flags_error(*flags):
    args = client_main.build_parser().parse_args(list(flags) + ["/tmp"])
    client_main._take_plan_defaults(args)
    return client_main._check_flags(args)


def test_time_flag_bounds_hold_at_their_edge_on_both_command_lines():
    """Any time flag up to MAX_SECONDS (30 days), a client's intervals up to
    MAX_INTERVAL_S (1 day): the bound itself is accepted, just past it refused."""
    assert cli.seconds(str(cli.MAX_SECONDS)) == cli.MAX_SECONDS
    with pytest.raises(Exception) as err:
        cli.seconds(str(cli.MAX_SECONDS + 1))
    assert "(%d days)" % (cli.MAX_SECONDS // cli.DAY_S) in str(err.value)
    assert _client_flags_error("--duration", str(cli.MAX_SECONDS)) is None
    assert "--duration" in _client_flags_error("--duration", str(cli.MAX_SECONDS + 1))
    for flag in ("--heartbeat-interval", "--stall-timeout", "--progress-interval"):
        assert _client_flags_error(flag, str(cli.MAX_INTERVAL_S)) is None, flag
        assert flag in _client_flags_error(flag, str(cli.MAX_INTERVAL_S + 1)), flag
    assert cli.MAX_INTERVAL_S < cli.MAX_SECONDS


def test_size_caps_hold_at_their_edge_on_both_command_lines():
    top = str(plan.MAX_MB)
    assert _client_flags_error("--file-mb", top, "--chunk-mb", top) is None
    assert "--file-mb" in _client_flags_error("--file-mb", str(plan.MAX_MB + 1))
    assert "--chunk-mb" in _client_flags_error("--chunk-mb", str(plan.MAX_MB + 1))
    assert server_main.build_parser().parse_args(["--chunk-mb", top]).chunk_mb == \
        [plan.MAX_MB]
    with pytest.raises(SystemExit):
        server_main.build_parser().parse_args(["--chunk-mb", str(plan.MAX_MB + 1)])
    # what the docs say of it (1 PiB) and the protocol's integers both hold
    assert plan.MAX_MB * MIB == 2 ** 50
    assert plan.MAX_MB * MIB < protocol.MAX_INT


def test_interval_minimums_hold_at_their_edge_on_both_command_lines(procs, tmpdir):
    """plan.MIN_INTERVAL_S, the one statement of each interval's floor: the
    floor itself is accepted by the client and the server, just below it is
    one line naming the floor (the real server command: exit 2)."""
    for field, least in sorted(plan.MIN_INTERVAL_S.items()):
        flag = plan.FLAGS[field]
        assert _client_flags_error(flag, repr(least)) is None, flag
        said = _client_flags_error(flag, repr(least * 0.99))
        assert said and "%s %g or more" % (flag, least) in said, said
        server = server_main.build_parser()
        assert server_main.plan_from_args(server.parse_args([flag, repr(least)]))
        with pytest.raises(ValueError) as err:
            server_main.plan_from_args(server.parse_args([flag, repr(least * 0.99)]))
        assert "%g s minimum" % least in str(err.value)
    code, out, err = procs.run(["-m", "diskbench.server", "--port", "0", "--log-dir",
                                str(tmpdir.join("logs")), "--perf-interval", "1e-9"])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--perf-interval 1e-09 is below its" in err and "Traceback" not in err


def test_max_files_bound_is_the_protocols_on_the_client():
    assert _client_flags_error("--max-files", str(protocol.FILES_MAX)) is None
    assert "--max-files" in _client_flags_error("--max-files", str(protocol.FILES_MAX + 1))
    field = protocol.SPECS[protocol.C2S][protocol.HELLO]["max_files"]
    assert field.check(protocol.FILES_MAX) == protocol.FILES_MAX
    with pytest.raises(ValueError):
        field.check(protocol.FILES_MAX + 1)


def test_client_name_rule_is_the_protocols_at_its_length():
    longest, over = u"n" * protocol.NAME_MAX_CHARS, u"n" * (protocol.NAME_MAX_CHARS + 1)
    assert cli.bad_name_reason(longest) is None
    assert "%d" % protocol.NAME_MAX_CHARS in cli.bad_name_reason(over)
    ok = protocol.make(protocol.NOTE, name=longest, seq=1, text=u"x")
    assert protocol.decode(protocol.encode(ok)).name == longest
    with pytest.raises(ValueError):
        protocol.make(protocol.NOTE, name=over, seq=1, text=u"x")


def test_display_refuses_every_character_the_wire_refuses():
    """The display's set (cli: escaped on screen, refused in --name) is wider than
    the wire's, never narrower: a name the client accepts, the server accepts."""
    missed = [hex(code) for code in range(0x10000)
              if protocol.UNSAFE.match(u"%c" % code) and
              not protocol.DISPLAY_UNSAFE.match(u"%c" % code)]
    assert missed == []
    assert protocol.DISPLAY_UNSAFE.match(u"\u200b") and \
        not protocol.UNSAFE.match(u"\u200b")   # a zero-width space: display only


def test_text_bound_is_the_protocols_for_every_sender():
    reason = u"r" * protocol.TEXT_MAX_CHARS
    stop = protocol.make(protocol.STOP, protocol.S2C, reason=reason)
    assert protocol.decode(protocol.encode(stop), protocol.S2C).reason == reason
    assert len(protocol.clean_text(u"x" * (protocol.TEXT_MAX_CHARS + 5))) == \
        protocol.TEXT_MAX_CHARS


# --- the framing rule: every reader refuses at the same length ------------------------
def _padded(limit, extra, seq=1):
    """A valid NOTE line of exactly ``limit + extra`` bytes, newline included."""
    ts = int(time.time()) + 0.5   # one length of its repr for both lines

    def line(n):
        return protocol.encode(protocol.make(protocol.NOTE, name=u"framed", seq=seq,
                                             ts=ts, text=u"x" * n))
    n = limit - len(line(0)) + extra
    out = line(n)
    assert len(out) == limit + extra
    return out


@pytest.mark.parametrize("extra,refused", [(0, False), (1, True)])
def test_read_line_takes_a_line_of_the_limit_and_refuses_one_byte_more(extra, refused):
    limit = 1024
    data = _padded(limit, extra)
    if refused:
        with pytest.raises(protocol.LineTooLong):
            protocol.read_line(io.BytesIO(data), limit)
    else:
        assert protocol.read_line(io.BytesIO(data), limit) == data


@pytest.mark.parametrize("extra,refused", [(0, False), (1, True)])
def test_control_request_of_the_limit_is_read_and_one_byte_more_refused(extra, refused):
    here, there = socket.socketpair()
    try:
        line = b"x" * (channel.MAX_REQUEST_BYTES + extra - 1) + b"\n"
        here.sendall(line)
        deadline = control.monotonic() + 5
        if refused:
            with pytest.raises(protocol.LineTooLong):
                control._read_request(there, deadline)
        else:
            assert control._read_request(there, deadline) == line
    finally:
        here.close()
        there.close()


def _text(path):
    try:
        with io.open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except (IOError, OSError):
        return u""


@pytest.mark.parametrize("extra,refused", [(0, False), (1, True)])
def test_server_takes_a_line_of_its_limit_and_refuses_one_byte_more(procs, tmpdir, extra,
                                                                     refused):
    """The real server with --max-line-bytes: the same boundary as read_line."""
    limit = 1024
    logs = str(tmpdir.join("logs"))
    server = ServerProc(procs, logs,
                        ["--quiet", "--clients", "1", "--max-line-bytes", str(limit)])
    client = FakeClient(server.port, "framed")
    try:
        client.hello()
        client.wait_for(protocol.GO)
        client.raw(_padded(limit, extra, seq=2))
        if refused:   # said in server.log, and the connection closed
            wait_until(lambda: client.closed_by_server, what="the server to close")
            wait_until(lambda: "line longer than the %d-byte limit" % limit in _text(
                os.path.join(logs, "server.log")), what="the refusal in server.log")
        else:
            client.wait_acked(2)
            assert not client.closed_by_server
    finally:
        client.close()


def test_the_codecs_example_line_speaks_this_protocol_version():
    """The codec's docstring shows a wire line: its version is the one spoken."""
    from diskbench.protocol import codec
    assert '{"v": %d, "type": "perf"' % protocol.PROTOCOL_VERSION in codec.__doc__
