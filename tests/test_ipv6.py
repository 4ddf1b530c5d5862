"""IPv6 end to end: the one HOST[:PORT] parser (cli.split_host_port), the server on
an IPv6 address (::1, and :: taking IPv4 too), a real client over [::1], the
launcher handing [ADDR]:PORT to its clients, and every place an address is shown.

The runs need the IPv6 loopback: without it (no IPv6 in the kernel, or ::1 not
configured) they are skipped, saying so; the parser tests always run.
"""
import errno
import json
import os
import re
import select
import socket

import pytest

import diskbench
from diskbench import cli, compat, exitcodes
from diskbench.server import listener
from tests.helpers import communicate, wait_until
from tests.test_launch import (fake_ssh_dir, launch_argv, run_launch, summary_rows,  # noqa: F401
                               tag, write_hosts)

#: A whole client run (calibration, go 2 s after hello, --duration, the stop) ends within it.
CLIENT_RUN_TIMEOUT_S = 60
#: The server's report, after its last client stopped.
SERVER_END_TIMEOUT_S = 30
#: The server prints its listening line within it.
SERVER_START_TIMEOUT_S = 15
#: What the server did is in its server.log within it.
LOGGED_TIMEOUT_S = 10
#: The client's sender connects (to a listener already there) within it.
CONNECTED_TIMEOUT_S = 10
#: A one-line refusal (a wrong flag) comes at once.
REFUSAL_TIMEOUT_S = 30
#: The client's run: long enough for a ctl list to see it, two rollovers at 10 MiB.
CLIENT_FLAGS = ["--chunk-mb", "10", "--file-mb", "20", "--duration", "2.5", "--force",
                "--stats-interval", "0.5", "--heartbeat-interval", "0.5",
                "--perf-interval", "0.5", "--connect-timeout", "10"]
PORT = diskbench.DEFAULT_PORT


def _ipv6_loopback():
    """None when a socket can listen on ::1 here, else why not."""
    if not compat.HAS_IPV6:
        return "this Python has no IPv6 support (socket.has_ipv6 is False)"
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except (socket.error, OSError) as exc:
        return "no IPv6 sockets here: %s" % exc
    try:
        s.bind(("::1", 0))
    except (socket.error, OSError) as exc:
        return "cannot bind ::1 here: %s" % exc
    finally:
        s.close()
    return None


needs_ipv6 = pytest.mark.skipif(_ipv6_loopback() is not None,
                                reason=str(_ipv6_loopback()))


# --- the parser ------------------------------------------------------------------------
@pytest.mark.parametrize("text, host, port", [
    ("[::1]:7777", "::1", 7777),
    ("[::1]", "::1", PORT),                        # no port: the default, as for IPv4
    ("::1", "::1", PORT),
    ("[fd00::5]:1", "fd00::5", 1),
    ("fd00::7777", "fd00::7777", PORT),            # the last group cannot be a port here
    ("[fe80::1%eth0]:7878", "fe80::1%eth0", 7878),  # link-local with its zone
    ("[::ffff:10.0.0.5]:9", "::ffff:10.0.0.5", 9),
    ("10.0.0.5:65535", "10.0.0.5", 65535),
    ("10.0.0.5", "10.0.0.5", PORT),
    ("server.example:80", "server.example", 80),
    ("server", "server", PORT),
])
def test_host_port_forms_parse(text, host, port):
    assert cli.split_host_port(text, PORT) == (host, port)
    # and what is shown reads back the same
    assert cli.split_host_port(cli.join_host_port(host, port), None) == (host, port)


@pytest.mark.parametrize("text, words", [
    ("[::1", "has a '[' without its ']'"),
    ("::1:7777", "is ambiguous: an IPv6 address with a port goes in brackets, [::1]:7777 "
                 "(or [::1:7777] for the address ::1:7777 on the default port)"),
    ("2001:db8::1:80", "is ambiguous: an IPv6 address with a port goes in brackets, "
                       "[2001:db8::1]:80"),
    ("[zz::]:1", "the host [zz::] is not an IPv6 address (only an IPv6 address goes in "
                 "brackets)"),
    ("[10.0.0.5]:1", "the host [10.0.0.5] is not an IPv6 address (only an IPv6 address "
                     "goes in brackets)"),
    ("zz::1", "the host zz::1 is not an IPv6 address (a host name or IPv4 address holds "
              "no ':')"),
    ("host:1:2", "the host host:1:2 is not an IPv6 address"),
    ("[::1]x", "only :PORT may follow the ']'"),
    ("[::1]:", "the port must be a number from 1 to 65535"),
    ("[::1]:0", "the port must be a number from 1 to 65535"),
    ("[::1]:65536", "the port must be a number from 1 to 65535"),
    ("host:http", "the port must be a number from 1 to 65535"),
    (":7878", "the host is missing"),
    ("[]:7878", "the host [] is not an IPv6 address"),
    ("[fe80::1%]:1", "the host [fe80::1%] is not an IPv6 address"),
    ("::1]", "the host ::1] has a bracket without its pair"),
])
def test_bad_host_port_forms_say_why_and_the_fix(text, words):
    with pytest.raises(ValueError) as info:
        cli.split_host_port(text, PORT, "--server %s" % text, "THE FIX")
    message = str(info.value)
    assert message.startswith("--server %s" % text) and message.endswith("; THE FIX"), message
    assert words in message, message
    assert "\n" not in message


def test_join_and_peer_text_put_ipv6_in_brackets_and_unmap_ipv4():
    assert cli.join_host_port("::1", 7878) == "[::1]:7878"
    assert cli.join_host_port("10.0.0.5", 7878) == "10.0.0.5:7878"
    assert cli.join_host_port("node1", 1) == "node1:1"
    assert cli.peer_text(("::1", 5, 0, 0)) == "[::1]:5"
    assert cli.peer_text(("127.0.0.1", 6)) == "127.0.0.1:6"
    # an IPv4 client of a dual-stack listener is shown as the IPv4 address it is
    assert cli.peer_text(("::ffff:10.0.0.5", 7, 0, 0)) == "10.0.0.5:7"


def test_ipv6_address_check_is_the_same_on_both_pythons():
    """compat.is_ipv6_address: 2.7's inet_pton raises UnicodeEncodeError for non-ASCII
    text and TypeError for a NUL, 3's OSError and ValueError: all are 'no'."""
    assert compat.is_ipv6_address(u"::1") and compat.is_ipv6_address("fd00::5")
    assert compat.is_ipv6_address(u"::ffff:10.0.0.5")
    for text in (u"zz::", u"10.0.0.5", u"\xe9::1", u"::1\x00", u"", u"fe80::1%eth0"):
        assert not compat.is_ipv6_address(text), text
    assert cli.ipv6_address(u"fe80::1%eth0") == "fe80::1%eth0"
    assert cli.ipv6_address(u"fe80::1%e th") is None


def test_listen_host_takes_brackets_and_refuses_what_no_bind_could_take():
    assert cli.listen_host("[::1]") == "::1"
    assert cli.listen_host("::") == "::"
    assert cli.listen_host("0.0.0.0") == "0.0.0.0" and cli.listen_host("") == ""
    for text, words in (("zz::", "zz:: is not an IPv6 address"),
                        ("[::1", "[::1 has a bracket without its pair"),
                        ("a b", "a b holds a space")):
        with pytest.raises(ValueError) as info:
            cli.listen_host(text)
        assert str(info.value).startswith(words) and ":: for every interface" in \
            str(info.value), info.value


def test_listen_address_picks_the_family_of_the_host():
    assert listener.listen_address("0.0.0.0", 5) == (socket.AF_INET, ("0.0.0.0", 5))
    assert listener.listen_address("", 5) == (socket.AF_INET, ("", 5))
    assert listener.listen_address("127.0.0.1", 5) == (socket.AF_INET, ("127.0.0.1", 5))
    family, address = listener.listen_address("::1", 5)
    assert family == socket.AF_INET6 and address[:2] == ("::1", 5)
    family, address = listener.listen_address("::", 0)
    assert family == socket.AF_INET6 and address[:2] == ("::", 0)


def _info(family, sockaddr):
    return (family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)


def test_listen_address_of_a_name_is_its_ipv4_address_first_else_ipv6(monkeypatch):
    """A name with both listens where it did before IPv6 (its IPv4 address), one with
    only IPv6 addresses on the first of them."""
    answers = {"both.test": [_info(socket.AF_INET6, ("fd00::5", 5, 0, 0)),
                             _info(socket.AF_INET, ("10.0.0.5", 5))],
               "v6only.test": [_info(socket.AF_INET6, ("fd00::6", 5, 0, 0)),
                               _info(socket.AF_INET6, ("fd00::7", 5, 0, 0))]}
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: answers[host])
    assert listener.listen_address("both.test", 5) == (socket.AF_INET, ("10.0.0.5", 5))
    assert listener.listen_address("v6only.test", 5) == (socket.AF_INET6,
                                                         ("fd00::6", 5, 0, 0))


@needs_ipv6
def test_the_client_tries_every_address_of_a_name_ipv6_too(monkeypatch):
    """A name whose first address refuses and whose second is the server on ::1: the
    client's sender connects through the second (getaddrinfo, each address in turn)."""
    from diskbench import protocol as P
    from diskbench.client import sender
    from tests.helpers import free_port
    from tests.test_protocol import SAMPLE
    server = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    server.bind(("::1", 0))
    server.listen(1)
    server.settimeout(CONNECTED_TIMEOUT_S)
    port = server.getsockname()[1]
    answers = [_info(socket.AF_INET, ("127.0.0.1", free_port())),      # nobody there
               _info(socket.AF_INET6, ("::1", port, 0, 0))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: answers)
    s = sender.Sender("server.test", port, "n", SAMPLE[P.C2S][P.HELLO])
    s.start()
    try:
        conn, peer = server.accept()
        try:
            conn.settimeout(CONNECTED_TIMEOUT_S)
            assert conn.recv(1).startswith(b"{")            # its hello
        finally:
            conn.close()
    finally:
        s.close(0.5)
        server.close()


def test_bind_error_without_ipv6_names_the_fix():
    from argparse import Namespace
    from diskbench.server.__main__ import _bind_error
    exc = socket.error(errno.EAFNOSUPPORT, "Address family not supported by protocol")
    text = _bind_error(Namespace(host="::1", port=7878), exc)
    assert text.startswith("cannot listen on [::1]:7878: this machine has no IPv6") and \
        "use --host 0.0.0.0" in text, text
    exc = socket.error(errno.EADDRNOTAVAIL, "Cannot assign requested address")
    text = _bind_error(Namespace(host="fd00::99", port=1), exc)
    assert text.startswith("cannot listen on [fd00::99]:1 (Cannot assign"), text


# --- the command lines: one line, exit 2 ------------------------------------------------
@pytest.mark.parametrize("args, words", [
    (["diskbench.client", "--server", "[::1", "{logs}", "{dir}"],
     "--server [::1 has a '[' without"),
    (["diskbench.client", "--server", "::1:7777", "{logs}", "{dir}"],
     "--server ::1:7777 is ambiguous"),
    (["diskbench.client", "--server", "[zz::]:1", "{logs}", "{dir}"],
     "--server [zz::]:1: the host [zz::] is not an IPv6 address"),
    (["diskbench.server", "--host", "zz::", "{logs}"],
     "argument --host: zz:: is not an IPv6 address"),
    (["diskbench.server", "--host", "[::1", "{logs}"],
     "argument --host: [::1 has a bracket without"),
    (["diskbench.launch", "--hosts", "{hosts}", "--host", "[zz::]", "--", "{dir}"],
     "--host [zz::] is not an IPv6 address"),
    (["diskbench.launch", "--hosts", "{hosts}", "--server-host", "[::1", "--", "{dir}"],
     "--server-host [::1: the host has a bracket without its pair"),
    (["diskbench.launch", "--hosts", "{bad_hosts}", "--", "{dir}"],
     "hosts line 1: '[::1' has a '[' without its ']'"),
])
def test_bad_ipv6_forms_are_one_line_and_exit_2(procs, tmpdir, args, words):
    hosts = write_hosts(tmpdir, "node1\n")
    bad_hosts = str(tmpdir.join("bad_hosts"))
    with open(bad_hosts, "w") as f:
        f.write("[::1\n")
    places = {"{hosts}": [hosts], "{bad_hosts}": [bad_hosts], "{dir}": [str(tmpdir)],
              "{logs}": ["--log-dir", str(tmpdir.join("logs"))]}
    argv = []
    for a in args:
        argv += places.get(a, [a])
    code, out, err = procs.run(["-m"] + argv, timeout=REFUSAL_TIMEOUT_S)
    assert code == exitcodes.USAGE, (argv, code, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert words in err, err
    assert not os.path.exists(str(tmpdir.join("logs")))   # refused before anything


# --- real runs over the IPv6 loopback --------------------------------------------------
def _read(path):
    with open(path) as f:
        return f.read()


def _start_server(procs, log_dir, *extra):
    """The real server on a free port; (process, the HOST:PORT of its listening line,
    the port)."""
    proc = procs.start(["-m", "diskbench.server", "--port", "0", "--log-dir", log_dir,
                        "--quiet"] + list(extra))
    seen = []

    def listening():
        if select.select([proc.stdout], [], [], 0.1)[0]:
            seen.append(proc.stdout.readline().decode("utf-8", "replace"))
            if seen[-1]:
                return re.search(r"listening on (\S+:(\d+)) ", seen[-1])
        assert proc.poll() is None, "server exited: %s %s" % (
            "".join(seen), communicate(proc, SERVER_START_TIMEOUT_S)[1])
        return None
    m = wait_until(listening, SERVER_START_TIMEOUT_S, what="the server's listening line")
    return proc, m.group(1), int(m.group(2))


def _logged(path, *texts):
    """Wait until server.log (written by the recorder's thread) holds every text."""
    wait_until(lambda: os.path.exists(path) and all(t in _read(path) for t in texts),
               LOGGED_TIMEOUT_S, what="%r in %s" % (texts, path))


def _ctl_list(procs, log_dir):
    code, out, err = procs.run(["-m", "diskbench.server", "ctl", "--log-dir", log_dir,
                                "list"], timeout=REFUSAL_TIMEOUT_S)
    return out if code == exitcodes.OK else ""


@needs_ipv6
def test_server_on_ipv6_loopback_and_a_client_over_brackets_whole_run(procs, tmpdir):
    """server --host ::1, client --server [::1]:PORT: a whole run; the listening
    line, the client's log, server.log, ctl list, run.json and report.json all
    show [::1]:PORT."""
    slog = str(tmpdir.join("server-logs"))
    data = str(tmpdir.mkdir("data"))
    server, where, port = _start_server(procs, slog, "--host", "::1", "--clients", "1",
                                        "--idle-timeout", "0.5")
    assert where == "[::1]:%d" % port
    _logged(os.path.join(slog, "server.log"), "listening on [::1]:%d," % port)
    client = procs.start(["-m", "diskbench.client", "--server", "[::1]:%d" % port,
                          "--name", "v6", "--log-dir", str(tmpdir.join("logs"))] +
                         CLIENT_FLAGS + [data])
    listed = wait_until(lambda: re.search(r"(?m)^v6\s+\S+\s+(\S+)", _ctl_list(procs, slog)),
                        CLIENT_RUN_TIMEOUT_S, interval=0.2, what="ctl list to show v6")
    assert re.match(r"^\[::1\]:\d+$", listed.group(1)), listed.group(0)
    out, err = communicate(client, CLIENT_RUN_TIMEOUT_S)
    assert client.returncode == exitcodes.OK, err
    assert "Traceback" not in err
    communicate(server, SERVER_END_TIMEOUT_S)
    assert server.returncode == exitcodes.OK
    assert "connected to server [::1]:%d" % port in \
        _read(str(tmpdir.join("logs", "client-v6.log")))
    with open(os.path.join(slog, "report.json")) as f:
        report = json.load(f)
    (entry,) = report["clients"]
    assert entry["state"] == "finished" and entry["rollover_count"] >= 2
    assert entry["peer"] == listed.group(1)
    with open(os.path.join(slog, "run.json")) as f:
        run = f.read()
    assert '"peer": "%s"' % entry["peer"] in run
    _logged(os.path.join(slog, "server.log"), "connection 1 from %s" % entry["peer"])


@needs_ipv6
def test_server_on_all_ipv6_takes_ipv4_clients_too(procs, tmpdir):
    """--host :: listens on [::] and, dual stack, takes IPv4: an IPv4 client is
    shown as its IPv4 address (not ::ffff:127.0.0.1), an IPv6 one in brackets."""
    slog = str(tmpdir.join("server-logs"))
    server, where, port = _start_server(procs, slog, "--host", "::")
    assert where == "[::]:%d" % port
    log_path = os.path.join(slog, "server.log")
    _logged(log_path, "listening on [::]:%d," % port,
            "--host :: takes IPv4 clients too (dual stack)")
    socks = [socket.create_connection(("127.0.0.1", port), LOGGED_TIMEOUT_S),
             socket.create_connection(("::1", port), LOGGED_TIMEOUT_S)]
    try:
        wanted = ["from 127.0.0.1:%d" % socks[0].getsockname()[1],
                  "from [::1]:%d" % socks[1].getsockname()[1]]
        _logged(log_path, *wanted)
    finally:
        for s in socks:
            s.close()
    assert "::ffff:" not in _read(log_path)


@needs_ipv6
@pytest.mark.parametrize("host, server_host", [("[::1]", None), ("::", "[::1]")])
def test_launcher_hands_its_clients_the_ipv6_address_in_brackets(tmpdir, tag, host,
                                                                 server_host):
    """The launcher's server on ::1 (--host [::1]: the clients' address comes from
    it) or on :: (--server-host [::1]): each client gets --server [::1]:PORT and
    connects over IPv6."""
    hosts = write_hosts(tmpdir, "fake1 name=a\n")
    log_dir = str(tmpdir.join("logs"))
    argv = launch_argv(hosts, log_dir, str(tmpdir.mkdir("d")), tag, extra=["--host", host])
    at = argv.index("--server-host")
    if server_host is None:
        del argv[at:at + 2]
    else:
        argv[at + 1] = server_host
    code, out, err = run_launch(argv, tag, fake_ssh_dir(tmpdir))
    assert code == exitcodes.OK, (out, err)
    m = re.search(r"listening on (\S+):(\d+) ", out)
    assert m.group(1) == ("[::1]" if host == "[::1]" else "[::]"), out
    assert summary_rows(out)["fake1"][0] == "0", out
    with open(os.path.join(log_dir, "report.json")) as f:
        (client,) = json.load(f)["clients"]
    assert client["state"] == "finished" and client["peer"].startswith("[::1]:"), client
    client_log = _read(os.path.join(log_dir, "launch-1-fake1.log"))
    assert "connected to server [::1]:%s" % m.group(2) in client_log, client_log
