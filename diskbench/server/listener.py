"""The listener: the thread that accepts connections, refuses those over
the connection limits before any thread exists for them, backs off while file
descriptors run out, and starts a handler thread per connection.

Separate from master.py (the run loop): what happens at accept() is its own
set of limits and fallbacks, counted in the registry and logged sparingly
here; the master passes itself as ``ctx`` (its limits, registry and I/O
threads).
"""
import errno
import socket
import threading
import time

from diskbench.cli import peer_text
from diskbench.compat import IPV6_V6ONLY, socketserver, start_new_thread
from diskbench.server import handler as handler_mod
from diskbench.server import Sparse, log
from diskbench.server import registry as reg

#: accept() failing for want of file descriptors: wait this long before the
#: next try, doubling up to ACCEPT_BACKOFF_MAX_S (instead of spinning).
ACCEPT_BACKOFF_S = 0.05
ACCEPT_BACKOFF_MAX_S = 1.0
#: File descriptors kept for everything but connections (logs, listener,
#: report files, libraries).
FD_RESERVE = 32
#: Stack of each connection's thread: what a handler needs (JSON nested up to
#: the interpreter's recursion limit, then refused) with room to spare, not the
#: platform's 8 MiB: thousands of connections stay small (virtual memory).
HANDLER_STACK_BYTES = 512 * 1024
_FD_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


#: --host that means every IPv4 interface, as it always has (the default is 0.0.0.0).
ALL_IPV4 = ("", "0.0.0.0")
#: --host that means every interface, IPv6 and (dual stack, where allowed) IPv4.
ALL_IPV6 = "::"


def listen_address(host, port):
    """(family, socket address) to bind for --host and --port.

    An IPv4 address, "" or 0.0.0.0 (every IPv4 interface) listens on IPv4;
    an IPv6 address (``::``, ``::1``, ``fe80::1%eth0``) on IPv6; a name on its
    first IPv4 address when it has one (as before IPv6 was taken), else its
    first IPv6 one. socket.gaierror when the name does not resolve."""
    if host in ALL_IPV4:
        return socket.AF_INET, (host, port)
    infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0,
                               socket.AI_PASSIVE)
    for family in (socket.AF_INET, getattr(socket, "AF_INET6", None)):
        for info in infos:
            if info[0] == family:
                return family, info[4]
    raise socket.gaierror(socket.EAI_FAMILY, "no IPv4 or IPv6 address")


class TCPServer(socketserver.ThreadingTCPServer):
    """Accepts; refuses a connection over --max-connections or --max-per-address
    before any thread is started for it (it is closed at once, nothing sent).

    Listens on the family of its address (listen_address): ``::`` takes IPv4
    too (IPV6_V6ONLY off) where the system lets it (``dual_stack``)."""

    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, ctx, family=socket.AF_INET):
        self.ctx = ctx
        self.address_family = family
        self.dual_stack = None        # for an IPv6 "::": whether IPv4 comes in too
        self.accept_failures = 0      # in the current burst of failed accepts
        # The accept queue holds a whole storm of clients connecting at once
        # (the kernel caps it at net.core.somaxconn).
        self.request_queue_size = max(self.request_queue_size, ctx.max_connections)
        self.conn_lock = threading.Lock()
        self.open_conns = {}          # accepted socket -> peer address
        self.per_address = {}         # peer address -> open connections
        self.limit_log = Sparse()     # refused connections, logged sparingly
        socketserver.ThreadingTCPServer.__init__(self, address, handler_mod.Handler)

    def server_bind(self):
        if self.address_family != socket.AF_INET and self.server_address[0] == ALL_IPV6:
            self.dual_stack = False
            if IPV6_V6ONLY is not None:
                try:
                    self.socket.setsockopt(socket.IPPROTO_IPV6, IPV6_V6ONLY, 0)
                    self.dual_stack = True
                except (socket.error, OSError):
                    pass
        socketserver.ThreadingTCPServer.server_bind(self)

    def get_request(self):
        """accept(), backing off while file descriptors are exhausted: the
        listening socket stays readable, so retrying at once would spin."""
        try:
            request = socketserver.ThreadingTCPServer.get_request(self)
        except socket.error as exc:
            if getattr(exc, "errno", None) not in _FD_ERRNOS:
                raise
            self.accept_failures += 1
            self.accept_failed(exc, self.accept_failures)
            time.sleep(min(ACCEPT_BACKOFF_MAX_S,
                           ACCEPT_BACKOFF_S * 2 ** min(self.accept_failures - 1, 10)))
            raise
        if self.accept_failures:
            self.accept_recovered(self.accept_failures)
            self.accept_failures = 0
        return request

    def verify_request(self, request, client_address):
        address = client_address[0]
        ctx = self.ctx
        with self.conn_lock:
            total, mine = len(self.open_conns), self.per_address.get(address, 0)
            if total < ctx.max_connections and mine < ctx.max_per_address:
                self.open_conns[request] = address
                self.per_address[address] = mine + 1
                return True
        if total >= ctx.max_connections:
            self.limit_hit(reg.REJECT_TOO_MANY_CONNECTIONS, client_address,
                          "%d connections are open (--max-connections %d)"
                          % (total, ctx.max_connections))
        else:
            self.limit_hit(reg.REJECT_TOO_MANY_FROM_ADDRESS, client_address,
                          "%d connections from %s are open (--max-per-address %d)"
                          % (mine, address, ctx.max_per_address))
        # Close it now: Python 2.7 leaves a refused socket to the garbage collector.
        socketserver.ThreadingTCPServer.shutdown_request(self, request)
        return False

    def limit_hit(self, kind, client_address, why):
        """A connection refused by a limit (accept thread): count, log sparingly."""
        self.ctx.registry.count_rejected(kind)
        said = self.limit_log.note(kind)
        if said is not None:
            log.warning("refused connection from %s (%s): %s%s", peer_text(client_address),
                        kind, why, said)

    def accept_failed(self, exc, failures):
        """accept() failed for want of descriptors: count it, log once a burst."""
        self.ctx.registry.count_rejected(reg.REJECT_FD_EXHAUSTED)
        if failures == 1:
            log.warning("cannot accept connections: %s (out of file descriptors); "
                        "backing off and retrying; raise 'ulimit -n' or lower "
                        "--max-connections", getattr(exc, "strerror", None) or exc)

    def accept_recovered(self, failures):
        log.warning("accepting connections again after %d failed accepts (out of file "
                    "descriptors)", failures)

    def shutdown_request(self, request):
        # Called once for every accepted socket (refused or served), never twice.
        with self.conn_lock:
            address = self.open_conns.pop(request, None)
            if address is not None:
                left = self.per_address.get(address, 1) - 1
                if left > 0:
                    self.per_address[address] = left
                else:
                    self.per_address.pop(address, None)
        socketserver.ThreadingTCPServer.shutdown_request(self, request)

    def handle_error(self, request, client_address):
        # A handler bug must not print to the console silently and go on unseen.
        log.exception("internal error on the connection from %s", peer_text(client_address))

    def process_request_thread(self, request, client_address):
        """socketserver's, but a connection whose handshake ended with an
        accepted hello is handed to the I/O threads instead of closed."""
        handler = None
        try:
            handler = self.RequestHandlerClass(request, client_address, self)
        except Exception:
            self.handle_error(request, client_address)
        if handler is not None and handler.adopted:
            self.ctx.ioloop.adopt(handler)
        else:
            self.shutdown_request(request)

    def process_request(self, request, client_address):
        """A handler thread per connection, started without waiting for it to
        run: threading.Thread.start waits, a GIL hand-over and back per
        connection, which held a storm of hellos at the accept
        (docs/SCALING.md). Like a daemon thread, it never holds up exit."""
        start_new_thread(self.process_request_thread, (request, client_address))


def fit_fd_limit(max_connections, warn):
    """Raise RLIMIT_NOFILE as far as allowed; if it still cannot hold
    ``max_connections`` (--max-connections), return the lower number that fits
    and ``warn`` it (a refused connection is better than accept() failing for
    everyone)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return max_connections
    want = max_connections + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(hard, want)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < want:
        fit = max(1, soft - FD_RESERVE)
        warn(
            "the open-file limit is %d (hard limit %s), too low for "
            "--max-connections %d: using --max-connections %d; raise it with "
            "'ulimit -n %d' (as root if needed)" % (
                soft, "unlimited" if hard == resource.RLIM_INFINITY else hard,
                max_connections, fit, want))
        max_connections = fit
    return max_connections

