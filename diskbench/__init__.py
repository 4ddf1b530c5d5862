"""diskbench: a distributed storage benchmark (one server, many clients)."""

__version__ = "0.1.0"

#: The TCP port server and client agree on when none is given.
DEFAULT_PORT = 7878
