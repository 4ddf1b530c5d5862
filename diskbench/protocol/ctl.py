"""The control channel, both ends' half: where its socket is, what a request
and an answer are, and the rules both ends know.

``python -m diskbench.server ctl`` (server/ctl.py) talks to a running server
(server/control.py) over LOG_DIR/control.sock: one request line, then answer
lines ending in CTL_DONE, which carries ctl's exit code. Directions of their
own, so no network message can pass for a control one or the reverse; built,
MACed (with the run's secret, when it has one) and checked by
make/encode/decode like every other message. Answers are not signed: they
only report. Apart from both ends (as gunicorn keeps its ctl protocol apart
from its client and server), so neither imports the other.
"""
import os

from diskbench import exitcodes
from diskbench.compat import path_bytes
from diskbench.protocol.catalogue import _BYTES, _NAME, _SECONDS, _TEXT, SPECS
from diskbench.protocol.fields import Int, Num, Optional, Str

#: The socket's name in --log-dir.
SOCKET_NAME = "control.sock"
#: The longest path a unix socket may have on Linux (sun_path, 108 bytes with
#: its NUL). A longer one is reached through /proc/self/fd (``unix_op``).
SOCKET_PATH_MAX = 107
#: Where Linux shows a process's open descriptors as paths.
PROC_FD_DIR = "/proc/self/fd"
#: A request signed longer ago than this (or this far in the future) is
#: refused: a captured request cannot be replayed later, and one that
#: reaches a server frozen meanwhile is not carried out after ctl said it
#: had no answer (ctl waits REPLY_WAIT_S: the rest is the server's to answer).
MAX_AGE_S = 5.0
REPLY_WAIT_S = 2 * MAX_AGE_S
#: The longest request line (a request holds at most one client name).
MAX_REQUEST_BYTES = 4096
#: The exit codes a server's answer may carry (anything else is a refusal).
ANSWER_CODES = (exitcodes.OK, exitcodes.INTERNAL, exitcodes.USAGE, exitcodes.CTL_NO_SERVER,
                exitcodes.CTL_NO_CLIENT, exitcodes.CTL_REFUSED)

CTL_REQUEST = "control-request"   # ctl -> server
CTL_REPLY = "control-reply"       # server -> ctl
CTL_LIST = "list"                 # request: one CTL_CLIENT line per client, then done
CTL_STOP = "stop"                 # request: send STOP to one client (the field client)
CTL_END = "end"                   # request: end the run as one SIGINT does
CTL_NOT_COMING = "not-coming"     # request: a host's client will not come (launcher)
CTL_CLIENT = "client"             # reply: one client's line of `ctl list`
CTL_DONE = "done"                 # reply, always last: ctl's exit code and what happened
SPECS[CTL_REQUEST] = {
    CTL_LIST: dict(),
    CTL_STOP: dict(client=_NAME),
    CTL_END: dict(),
    # client: its client's name when the launcher knows it (one that said hello came)
    CTL_NOT_COMING: dict(host=Str(255), reason=_TEXT, client=Optional(_NAME)),
}
SPECS[CTL_REPLY] = {
    CTL_CLIENT: dict(client=_NAME, host=Str(255), state=Str(32), reason=_TEXT,
                     peer=Optional(Str(128)), written_bytes=_BYTES, rollovers=_BYTES,
                     mib_s_now=Num(0.0, 1e9), heartbeat_age_s=Optional(_SECONDS)),
    CTL_DONE: dict(code=Int(0, 255), text=_TEXT),
}


def socket_path(log_dir):
    return os.path.join(log_dir, SOCKET_NAME)


def unix_op(sock, op, path):
    """``sock.bind(path)`` or ``sock.connect(path)`` (``op``), also for a path
    longer than a unix socket address may be: then through the directory
    opened as /proc/self/fd/N (Linux), so a deep --log-dir still has ctl."""
    if len(path_bytes(path)) <= SOCKET_PATH_MAX or \
            not os.path.isdir(PROC_FD_DIR):
        return getattr(sock, op)(path)
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        return getattr(sock, op)(os.path.join(PROC_FD_DIR, "%d" % fd,
                                              os.path.basename(path)))
    finally:
        os.close(fd)

