"""Line framing: one message is one line, at most MAX_LINE_BYTES, and a reader
never buffers more than its limit.

Every reader of lines takes its limit and its refusal from here: a blocking
file (``read_line``: the client's sender), the server's connections
(server/handler.py splits what it receives, refusing a line past its
``--max-line-bytes``, at most this) and the control socket (its own, smaller
limit, the same LineTooLong).
"""
from diskbench.protocol.errors import ProtocolError

#: Longest line a reader accepts, newline included. A reader stops reading
#: (rather than buffering on) once a line is this long without a newline.
MAX_LINE_BYTES = 64 * 1024


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
    if len(line) > limit:
        raise LineTooLong(limit)
    return line
