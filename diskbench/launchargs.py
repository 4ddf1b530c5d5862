"""What the launcher works out before it starts anything: the hosts file read
into hosts, its command line split into its own, the server's and the
clients' flags, and the one command ssh runs on each host.

Pure functions, apart from the launcher's processes (launcher.py), so each
rule (quoting above all: no text from a hosts file or a flag is ever run by a
remote shell) is tested without ssh.
"""
import re
import socket

from diskbench.cli import printable, split_host_port
from diskbench.compat import native_arg, shell_quote

#: Tried in this order on a host when neither --python nor python= says which one.
DEFAULT_PYTHONS = ("python3", "python", "python2")
HOST_KEYS = ("python", "dir", "name")
#: The remote shell's "command not found"; our remote script also uses it when no Python
#: on the host can import diskbench.
REMOTE_NOT_FOUND = 127

#: A host line's first word: [user@]host[:port]; host[:port] is cli.split_host_port's.
_USER = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<rest>[^@\s]+)$")


class Usage(Exception):
    """A wrong flag or a bad hosts file: one line, exit 2."""


class Host(object):
    """One line of the hosts file."""

    def __init__(self, label, address, user=None, port=None, python=None, directory=None,
                 name=None, lineno=0):
        self.label = label
        self.address = address
        self.user = user
        self.port = port
        self.python = python
        self.directory = directory
        self.name = name
        self.lineno = lineno
        # filled in while the run goes on
        self.client = name            # the client's name (else read from its first line)
        self.told_server = False      # ctl not-coming was run for it
        self.server_knows = False     # ... and the server answered it
        self.ran = None               # a client's first line is in its output (it got
                                      # past its start-up checks: it may have said hello)
        self.proc = None
        self.log_path = None
        self.code = None
        self.why = None
        self.ended = None


def parse_hosts(text, path="hosts"):
    """Hosts from the text of a hosts file; Usage naming the line on anything odd."""
    hosts = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        fields = line.split()
        m = _USER.match(fields[0])
        where = "%s line %d" % (path, lineno)
        forms = "is not [user@]host[:port] (IPv6: [addr]:port)"
        if not m:
            raise Usage("%s: '%s' %s" % (where, printable(fields[0]), forms))
        try:
            address, port = split_host_port(m.group("rest"), None, "%s: '%s'" % (
                where, printable(fields[0])), "write [user@]host[:port], an IPv6 address "
                "in brackets ([fd00::7]:22)")
        except ValueError as exc:
            raise Usage(str(exc))
        if ":" not in address:    # a name as typed: ssh resolves it (and its config's aliases)
            address = m.group("rest") if port is None else m.group("rest").rpartition(":")[0]
        opts = {}
        for field in fields[1:]:
            key, sep, value = field.partition("=")
            if not sep or key not in HOST_KEYS or not value:
                raise Usage("%s: '%s' is not one of %s" % (
                    where, printable(field), ", ".join("%s=VALUE" % k for k in HOST_KEYS)))
            opts[key] = value
        hosts.append(Host(fields[0], address, user=m.group("user"),
                          port=port, python=opts.get("python"),
                          directory=opts.get("dir"), name=opts.get("name"),
                          lineno=lineno))
    if not hosts:
        raise Usage("%s names no host: write one [user@]host[:port] per line" % path)
    names = [h.name for h in hosts if h.name]
    if len(set(names)) != len(names):
        raise Usage("%s: two hosts have the same name=: client names must differ" % path)
    return hosts


def _option_table(parser):
    """{'--flag': takes_a_value} for the launcher's own flags."""
    table = {}
    for action in parser._actions:
        for opt in action.option_strings:
            table[opt] = action.nargs != 0
    return table


#: Launcher flags the server also gets (the launcher needs their values too).
PASSED_ON = ("--host", "--port", "--log-dir")


def split_argv(parser, argv):
    """(launcher args, server flags, client flags) from the command line.

    Tokens before ``--`` that are launcher flags (exact names, so the server's --host is
    never mistaken for --hosts) go to argparse; all others go to the server."""
    argv = list(argv)
    if "--" in argv:
        cut = argv.index("--")
        left, right = argv[:cut], argv[cut + 1:]
    else:
        left, right = argv, []
    table = _option_table(parser)
    mine, server = [], []
    i = 0
    while i < len(left):
        token = left[i]
        name = token.split("=", 1)[0]
        if name in table:
            mine.append(token)
            if table[name] and "=" not in token and i + 1 < len(left):
                i += 1
                mine.append(left[i])
        else:
            server.append(token)
        i += 1
    args = parser.parse_args(mine)
    for token in server:
        if token.split("=", 1)[0] == "--clients":
            raise Usage("--clients is set by the launcher to the number of hosts; "
                        "remove it")
    if not right:
        raise Usage("the directory to measure on the hosts is missing: end the command "
                    "with -- [client flags] DIRECTORY")
    if right[-1].startswith("-"):
        raise Usage("the last argument after -- must be the DIRECTORY on the hosts, got "
                    "'%s'" % printable(right[-1]))
    check_client_flags(right)
    for token in right[:-1]:
        if token.split("=", 1)[0] == "--server":
            raise Usage("--server is set by the launcher (--server-host, --port); remove "
                        "it from the client flags")
    return args, server, right


def check_client_flags(flags):
    """Refuse client flags the client would refuse, here, before any ssh: parsed by the
    client's own parser (the hosts run the same diskbench). Where that parser cannot be
    had, the hosts' clients say it themselves (exit 2 in the table). Returns the parsed
    flags (None without the parser)."""
    try:
        from diskbench.client.__main__ import build_parser as client_parser
        parser = client_parser()
    except Exception:  # noqa: BLE001 - a refactored client: its own check still runs on the hosts
        return None

    def error(message):
        raise Usage("client flags after --: %s" % message)
    parser.error = error
    return parser.parse_args(list(flags))


def check_shared_name(hosts, client_flags):
    """A --name among the client flags names the client of every host without a name=
    alike: the server takes the first and refuses the others (and a refused one that
    said its name is no host that never came). Usage when two or more hosts would
    share it."""
    parsed = check_client_flags(client_flags)
    shared = getattr(parsed, "name", None)
    unnamed = [h for h in hosts if not h.name]
    if shared is not None and len(unnamed) > 1:
        raise Usage("--name %s after -- names the client of %d hosts alike, and the "
                    "server takes only the first: give each host its own name= in the "
                    "hosts file, or drop --name (each client then makes a unique one)"
                    % (printable(shared), len(unnamed)))


def remote_command(host, client_flags, server_addr, python=None, remote_env=()):
    """The one string ssh hands to the host's login shell.

    It runs ``sh -c SCRIPT`` so the script is POSIX sh whatever the login shell is; the
    script exports the --remote-env variables, picks the first Python that can import
    diskbench (exit 127 with one line if none can) and execs the client, every word
    quoted."""
    flags = list(client_flags[:-1])
    directory = host.directory or client_flags[-1]
    if host.name:
        flags += ["--name", host.name]
    # one kind of string on 2.7: argv's bytes beside the hosts file's text
    words = [native_arg(w) for w in
             ["-m", "diskbench.client", "--server", server_addr] + flags + [directory]]
    pythons = [native_arg(p) for p in
               ([host.python or python] if (host.python or python) else DEFAULT_PYTHONS)]
    lines = ["export %s=%s" % (name, shell_quote(value))
             for name, value in (native_arg(item).split("=", 1) for item in remote_env)]
    lines += [
        "for py in %s; do" % " ".join(shell_quote(p) for p in pythons),
        '  if command -v "$py" >/dev/null 2>&1 && "$py" -c "import diskbench" '
        ">/dev/null 2>&1; then",
        '    exec "$py" %s' % " ".join(shell_quote(w) for w in words),
        "  fi",
        "done",
        # the names tried are one quoted word too (a python= of `...` or $(...) is
        # text here, never run); printf, not echo: echo may read backslashes
        """printf '%%s\\n' "diskbench launch: no Python that can import diskbench on """
        """$(hostname) (tried "%s")" >&2""" % shell_quote(" ".join(pythons)),
        "exit %d" % REMOTE_NOT_FOUND,
    ]
    return "sh -c " + shell_quote("\n".join(lines))


def ssh_argv(args, host, command):
    argv = [args.ssh, "-n", "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=%d" % max(1, int(round(args.connect_timeout)))]
    for opt in args.ssh_option:
        argv += ["-o", opt]
    argv += list(args.ssh_arg)
    if host.port:
        argv += ["-p", str(host.port)]
    if host.user:
        argv += ["-l", host.user]
    return [native_arg(w) for w in argv + ["--", host.address, command]]


def default_server_host(args):
    """The host the clients are told to reach the server at: --server-host, else
    --host when it is one address, else this machine's name."""
    if args.server_host:
        return args.server_host
    if args.host not in ("0.0.0.0", "::", ""):
        return args.host
    return socket.getfqdn()


def is_loopback(name):
    """True when every address ``name`` resolves to here is a loopback one."""
    try:
        infos = socket.getaddrinfo(name, None)
    except (socket.error, socket.gaierror, UnicodeError):
        return False
    return bool(infos) and all(info[4][0].startswith("127.") or info[4][0] == "::1"
                               for info in infos)
