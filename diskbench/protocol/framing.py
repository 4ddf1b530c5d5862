"""Line framing: one message is one line, at most a limit of bytes with its
newline (MAX_LINE_BYTES unless a reader has a smaller one), and a reader never
buffers more than its limit.

Every reader of lines takes the rule from here (``line_over``, ``pending_over``)
and refuses with LineTooLong: a blocking file (``read_line``: ctl's answers),
the server's connections (server/handler.py, its ``--max-line-bytes``), the
client's connection (client/sender.py) and the control socket (its own,
smaller limit).
"""
from diskbench.protocol.errors import ProtocolError

#: Longest line a reader accepts, newline included. A reader stops reading
#: (rather than buffering on) once a line is this long without a newline.
MAX_LINE_BYTES = 64 * 1024


def line_over(line, limit=MAX_LINE_BYTES):
    """True when the complete ``line`` (its newline included, or the last bytes
    of a stream) is over ``limit`` bytes."""
    return len(line) > limit


def pending_over(pending, limit=MAX_LINE_BYTES):
    """True when ``pending``, a line whose newline has not come yet, can only end
    over ``limit``: it already holds ``limit`` bytes, so a reader stops here."""
    return len(pending) >= limit


class LineTooLong(ProtocolError):
    def __init__(self, limit):
        ProtocolError.__init__(self, ProtocolError.TOO_LONG,
                               "line longer than the %d-byte limit" % limit)


def read_line(rfile, limit=MAX_LINE_BYTES):
    """Read one line from a binary file object (e.g. ``socket.makefile('rb')``).

    Returns the line including its newline, or b'' at end of stream (a last
    line without a newline is returned as it is). Never buffers more than
    ``limit`` bytes: a longer line raises LineTooLong, after which the stream
    is beyond repair and should be closed.
    """
    line = rfile.readline(limit + 1)
    if line_over(line, limit):
        raise LineTooLong(limit)
    return line
