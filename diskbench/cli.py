"""Command-line helpers both programs can share: safe display text, the secret rule.

- ``printable(text)``: any text that came from outside (argv, paths, the
  server's reasons, exception texts) made safe for one log or console line:
  undecodable bytes and lone surrogates become ``\\xe9``-style escapes, and
  every line break or terminal control (C0, DEL, C1 including NEL U+0085,
  U+2028/U+2029, bidi embeddings/overrides/isolates, other format controls)
  becomes a visible ``\\u2028``-style escape. So one event is one line and
  nothing can forge another.
- ``bad_name_reason(name)``: why a client name is refused (None if fine).
- ``split_host_port(text, ...)``, ``parse_host(text)``, ``join_host_port(host, port)``,
  ``peer_text(sockaddr)``: the one parser of ``HOST[:PORT]`` (IPv6 in brackets)
  and the one way an address is shown (``[::1]:7878``).
- ``read_secret(path, env_value)``: the one rule for secrets.
- ``OneLineParser``, ``prog_name``, ``SECRET_ENV``, ``DEFAULT_LOG_DIR``: what
  the server's and the client's command lines have in common.
"""
import argparse
import codecs
import logging
import os
import re
import sys

from diskbench import exitcodes
from diskbench.metrics import utc
from diskbench.protocol import DISPLAY_UNSAFE, NAME_MAX_CHARS
from diskbench.compat import HAS_IPV6, PY2, binary_type, is_ipv6_address, text_type, write_line

#: The environment variable that may hold the shared secret (both programs).
SECRET_ENV = "DISKBENCH_SECRET"
#: Default --log-dir of both programs (relative to where they are started).
DEFAULT_LOG_DIR = "diskbench-logs"
#: On a terminal the server's live table and the client's progress line are
#: redrawn this often (seconds).
REFRESH_S = 1.0
#: Default --progress-interval of both programs: without a terminal, a
#: progress line this often.
PROGRESS_INTERVAL_S = 10.0

_SURROGATE = re.compile(u"[\ud800-\udfff]")
#: Whitespace stripped from both ends of a secret (ASCII only: one rule everywhere).
SECRET_STRIP = b" \t\r\n\x0b\x0c"
_ERRORS = "diskbench-backslash"


def _backslash_bytes(exc):
    """Decode error handler: each undecodable byte becomes ``\\xNN``."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    bad = bytearray(exc.object[exc.start:exc.end])
    return u"".join(u"\\x%02x" % b for b in bad), exc.end


codecs.register_error(_ERRORS, _backslash_bytes)


def _escape(match):
    code = ord(match.group(0))
    if 0xdc80 <= code <= 0xdcff:  # Python 3's surrogateescape of byte 0x80-0xff
        return u"\\x%02x" % (code - 0xdc00)
    if code <= 0xff:
        return u"\\x%02x" % code
    return u"\\u%04x" % code


def as_display(value):
    """Text for ``value`` (bytes decoded as UTF-8, bad bytes as ``\\xNN``).

    Control characters are left as they are: use ``printable`` for log lines.
    """
    if not isinstance(value, (binary_type, text_type)):
        try:
            value = text_type(value)
        except UnicodeError:  # Python 2: an exception holding non-ASCII bytes
            value = str(value)
    if isinstance(value, binary_type):
        return value.decode("utf-8", _ERRORS)
    return value


def printable(text):
    """``text`` as one safe line: every unsafe character shown as an escape."""
    return DISPLAY_UNSAFE.sub(_escape, as_display(text))


def display_path(path):
    """A path as UTF-8-safe text to show or send (``/data/caf\\xe9``), one line."""
    return printable(path)


def bad_name_reason(name):
    """None when ``name`` may be a client name, else why not (one line, no echo
    of unsafe characters)."""
    if isinstance(name, binary_type):
        try:
            name = name.decode("utf-8")
        except UnicodeDecodeError:
            return "--name %s is not UTF-8 text; use a UTF-8 (or ASCII) name" % \
                printable(name)
    if _SURROGATE.search(name):  # Python 3's form of bytes that were not UTF-8
        return "--name %s is not UTF-8 text; use a UTF-8 (or ASCII) name" % \
            printable(name)
    if not name:
        return "--name must not be empty"
    if DISPLAY_UNSAFE.search(name):
        return ("--name %s holds a control, line-break, bidi or undecodable "
                "character; use printable text" % printable(name))
    if len(name) > NAME_MAX_CHARS:
        return "--name is %d characters long; use at most %d" % (len(name),
                                                                 NAME_MAX_CHARS)
    return None


#: The longest label and host name a resolver looks up (RFC 1035), in ASCII (IDNA) form.
HOST_LABEL_MAX = 63
HOST_NAME_MAX = 253


def host_name(text):
    """``text`` (a host name or IPv4 address) as the ASCII name a resolver is asked
    for (IDNA for a non-ASCII name: the same on both Pythons, where 3 would encode
    it itself and 2.7 send raw UTF-8), as a native str. ValueError saying why when
    no resolver could ever find it: not UTF-8, a space or control, an empty label,
    a label or name too long (Python 3's socket raises UnicodeError there, 2.7's
    gaierror)."""
    if isinstance(text, binary_type):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("is not UTF-8 text")
    if _SURROGATE.search(text):
        raise ValueError("is not UTF-8 text")
    if not text:
        raise ValueError("is empty")
    if DISPLAY_UNSAFE.search(text) or re.search(u"\\s", text, re.UNICODE):
        raise ValueError("holds a space or a control character")
    labels = text.split(u".")
    rooted = labels[-1] == u"" and len(labels) > 1   # "host.": kept as typed
    if rooted:
        labels.pop()
    ascii_labels = []
    for label in labels:
        if not label:
            raise ValueError("has an empty label (a dot first, or two dots in a row)")
        try:
            ascii_label = label.encode("idna")
        except UnicodeError:
            if len(label) <= HOST_LABEL_MAX:
                raise ValueError("holds a character no host name may (IDNA)")
            ascii_label = label
        if len(ascii_label) > HOST_LABEL_MAX:
            raise ValueError("has a label over %d characters" % HOST_LABEL_MAX)
        ascii_labels.append(ascii_label.decode("ascii") if isinstance(
            ascii_label, binary_type) else ascii_label)
    name = u".".join(ascii_labels) + (u"." if rooted else u"")
    if len(name.rstrip(u".")) > HOST_NAME_MAX:
        raise ValueError("is over %d characters" % HOST_NAME_MAX)
    return str(name)


#: A %zone after a link-local IPv6 address (fe80::1%eth0): an interface name or number.
_ZONE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_PORT = re.compile(r"^[0-9]{1,5}$")
#: What every refusal of a HOST[:PORT] ends with, unless its caller says otherwise.
ADDRESS_FORMS = "HOST[:PORT] (an IPv6 address in brackets: [ADDRESS]:PORT)"


def _as_text(text):
    if isinstance(text, binary_type):
        try:
            return text.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("is not UTF-8 text")
    return text


def ipv6_address(text):
    """``text`` as a native str when it is an IPv6 address (``fd00::5``, a
    link-local one with its zone ``fe80::1%eth0``), else None."""
    addr, pct, zone = text.partition(u"%")
    if pct and not _ZONE.match(zone):
        return None
    if not is_ipv6_address(addr):
        return None
    return str(text)


def _ipv6_host(text, bracketed):
    """The IPv6 address ``text`` (checked) as the resolver and bind take it."""
    host = ipv6_address(text)
    if host is None:
        raise ValueError("is not an IPv6 address (%s)" % (
            "only an IPv6 address goes in brackets" if bracketed else
            "a host name or IPv4 address holds no ':'"))
    if not HAS_IPV6:  # pragma: no cover - a Python built without IPv6
        raise ValueError("is an IPv6 address and this Python has no IPv6 support")
    return host


def parse_host(text):
    """A host as the resolver (and bind) is asked for it: an IPv6 address, bare
    or in brackets (``::1``, ``[::1]``), without the brackets; a name or IPv4
    address through host_name. ValueError saying why not (a phrase that
    follows "the host")."""
    text = _as_text(text)
    if text.startswith(u"[") or text.endswith(u"]"):
        if not (text.startswith(u"[") and text.endswith(u"]")):
            raise ValueError("has a bracket without its pair")
        return _ipv6_host(text[1:-1], True)
    if u":" in text:
        return _ipv6_host(text, False)
    return host_name(text)


def split_host_port(text, default_port=None, what=None, hint=None):
    """(host, port) of ``HOST[:PORT]``: the one parser of the form, for --server,
    the launcher's hosts and anything else that takes it. The host comes back as
    parse_host gives it; the port as an int, ``default_port`` when none is given.

    ``host:7878``, ``10.0.0.5:7878``, ``[fd00::5]:7878``, and without a port
    ``host``, ``[fd00::5]`` and ``fd00::5``. An IPv6 address with a port must be
    in brackets: ``::1:7777`` (also the address 0:0:0:0:0:0:1:7777) is refused
    as ambiguous rather than taken either way. ValueError, one line starting with
    ``what`` (default: the text) and ending with ``hint`` (default: the forms),
    on anything else.
    """
    what = what or printable(text)
    hint = hint or "write %s" % ADDRESS_FORMS
    try:
        text = _as_text(text)
    except ValueError as exc:
        raise ValueError("%s: the host %s; %s" % (what, exc, hint))

    def bad(why):
        return ValueError("%s %s; %s" % (what, why, hint))
    if text.startswith(u"["):
        close = text.find(u"]")
        if close < 0:
            raise bad("has a '[' without its ']'")
        host, rest = text[:close + 1], text[close + 1:]
        if rest and not rest.startswith(u":"):
            raise bad("is not HOST[:PORT]: only :PORT may follow the ']'")
        port = rest[1:] if rest else None
    elif text.count(u":") > 1:     # an IPv6 address without brackets: no port
        head, _, tail = text.rpartition(u":")
        if _PORT.match(tail) and ipv6_address(head) is not None:
            raise bad("is ambiguous: an IPv6 address with a port goes in brackets, "
                      "[%s]:%s%s" % (head, tail, " (or [%s] for the address %s on the "
                                                 "default port)" % (text, text)
                                     if ipv6_address(text) is not None else ""))
        host, port = text, None
    else:
        host, sep, port = text.partition(u":")
        port = port if sep else None
    if port is None:
        port = default_port
    elif not _PORT.match(port) or not 0 < int(port) < 65536:
        raise bad("is not HOST[:PORT]: the port must be a number from 1 to 65535")
    else:
        port = int(port)
    if not host:
        raise bad("is not HOST[:PORT]: the host is missing")
    try:
        return parse_host(host), port
    except ValueError as exc:
        raise ValueError("%s: the host %s %s; %s" % (what, printable(host), exc, hint))


def listen_host(text):
    """--host of the server (and of the launcher, which passes it on): "" or an
    address or name as parse_host takes it, ``[::1]`` as ``::1``. ValueError
    (a phrase after the flag) on anything no bind could take."""
    if text == "":
        return ""
    try:
        return parse_host(text)
    except ValueError as exc:
        raise ValueError("%s %s; give an address of this machine (0.0.0.0 for every IPv4 "
                         "interface, :: for every interface)" % (printable(text), exc))


def join_host_port(host, port):
    """``HOST:PORT`` as it is shown and handed on, an IPv6 address in brackets
    (``[::1]:7878``): what split_host_port reads back."""
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def peer_text(sockaddr):
    """A socket address (accept, getpeername, getsockname; 2-tuple for IPv4,
    4-tuple for IPv6) shown as join_host_port does; an IPv4 peer of a
    dual-stack listener (``::ffff:10.0.0.5``) as the IPv4 address it is."""
    host, port = sockaddr[0], sockaddr[1]
    if host.lower().startswith("::ffff:") and "." in host:
        host = host[len("::ffff:"):]
    return join_host_port(host, port)


def read_secret(path=None, env_value=None):
    """The shared secret as bytes, or None when none is given.

    One rule for both programs: ``path`` (a file) wins over ``env_value``
    (DISKBENCH_SECRET); the text must be UTF-8 without NUL or other control
    characters; ASCII whitespace is stripped from both ends. An empty secret
    file (or one holding only whitespace) is an error; an empty environment
    variable counts as unset. Raises ValueError with a one-line message naming
    the fix.
    """
    if path is not None:
        where = "--secret-file %s" % printable(path)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except (IOError, OSError) as exc:
            raise ValueError("cannot read %s (%s); fix the path" % (
                where, printable(exc.strerror or exc)))
    elif env_value is not None:
        where = "DISKBENCH_SECRET"
        raw = env_value
        if isinstance(raw, text_type) and not PY2:
            raw = raw.encode("utf-8", "surrogateescape")
        elif isinstance(raw, text_type):
            raw = raw.encode("utf-8")
    else:
        return None
    raw = raw.strip(SECRET_STRIP)
    if not raw:
        if path is None:
            return None
        raise ValueError("%s is empty; put the shared secret in it" % where)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("%s is not UTF-8 text (a binary file?); use a printable "
                         "secret, e.g. from 'openssl rand -hex 32'" % where)
    if DISPLAY_UNSAFE.search(text):
        raise ValueError("%s holds control or binary characters; use a printable "
                         "secret, e.g. from 'openssl rand -hex 32'" % where)
    return raw


def prog_name(module):
    """The command as the user typed it, for usage lines: the console script's
    name (``diskbench-server``) when run as one, else ``python -m MODULE``."""
    script = console_script()
    return os.path.basename(script) if script else "python -m %s" % module


def console_script():
    """This process's console script (sys.argv[0], e.g. .../bin/diskbench-server)
    when it runs as one, else None (``python -m``: argv[0] is a .py file)."""
    script = sys.argv[0] if sys.argv else ""
    base = os.path.basename(script)
    if not base or base.endswith(".py") or base.startswith("-"):
        return None
    return script


DAY_S = 24 * 3600
#: Longest time any flag may give (30 days): beyond it is a typo, not a plan.
MAX_SECONDS = 30 * DAY_S
#: Longest interval between a client's reports or checks (its --*-interval,
#: --stall-timeout, --progress-interval: 1 day). Shorter than MAX_SECONDS on
#: purpose: a run may last weeks, but a report less often than daily says
#: nothing while the run lasts.
MAX_INTERVAL_S = float(DAY_S)


def parsed(text, convert, what):
    """``convert(text)``, or the argparse error saying it is not ``what``."""
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not %s" % (text, what))


def seconds(text):
    """argparse type: a time in seconds, above 0 and at most MAX_SECONDS."""
    value = parsed(text, float, "a number of seconds")
    if not 0 < value <= MAX_SECONDS:  # also refuses nan and inf
        raise argparse.ArgumentTypeError("must be more than 0 and at most %d seconds "
                                         "(%d days), got %s" % (
                                             MAX_SECONDS, MAX_SECONDS // DAY_S, text))
    return value


def port(text):
    """argparse type: a TCP port, 0 (any free one) to 65535."""
    value = parsed(text, int, "a port number")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be 0 to 65535 (0: any free port), got %s"
                                         % text)
    return value


class UtcFormatter(logging.Formatter):
    """Log lines stamped '2026-11-23 10:00:00.123Z' (UTC, metrics.utc): the one
    timestamp format of server.log, client logs, the console and report.txt."""

    def formatTime(self, record, datefmt=None):
        return utc(record.created)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr naming the fix (never the
    usage block) and exit code USAGE."""

    def error(self, message):
        usage_error(self.prog, "%s (see %s --help)" % (message, self.prog))


def usage_error(prog, message):
    """One line ``PROG: error: MESSAGE`` on stderr, then exit USAGE."""
    say(prog, message)
    sys.exit(exitcodes.USAGE)


def say(prog, message, kind="error"):
    """One line ``PROG: KIND: MESSAGE`` on stderr: any text, bytes or exception,
    made printable, on any console (compat.write_line)."""
    write_line(sys.stderr, u"%s: %s: %s" % (prog, kind, printable(message)))
