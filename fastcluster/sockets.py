"""The listening sockets the master binds before it forks its workers (one per --bind)."""

from __future__ import annotations

import errno
import os
import socket
import stat

from .config import BindAddress
from .errors import ConfigError


def create_listener(bind: BindAddress, backlog: int, defer_accept: int = 0) -> socket.socket:
    """Bind and listen, or raise ConfigError with one line saying why not. `defer_accept`: seconds
    of TCP_DEFER_ACCEPT for a TCP socket (0 clears it, on an inherited socket too)."""
    if bind.kind == "fd":
        sock = _adopt_fd(bind.fd, backlog)
        _defer_accept(sock, defer_accept)
        return sock
    sock = socket.socket(bind.family, socket.SOCK_STREAM)
    try:
        if bind.kind == "unix":
            _remove_stale_unix_socket(bind.path)
            sock.bind(bind.path)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if bind.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((bind.host, bind.port))
            _defer_accept(sock, defer_accept)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError("cannot bind %s: address already in use" % bind) from None
        raise ConfigError("cannot bind %s: %s" % (bind, exc.strerror or exc)) from None
    return sock


def _defer_accept(sock: socket.socket, seconds: int) -> None:
    """The workers read a connection at once when its listener has TCP_DEFER_ACCEPT (the loop's
    Server._add): the kernel queues it for accept() only once its first bytes have arrived, or
    once `seconds` have passed (Linux rounds them up to its SYN-ACK retransmission steps)."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, seconds)


def _adopt_fd(fd: int, backlog: int) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ConfigError("fd://%d is not a usable socket: %s" % (fd, exc.strerror or exc)) from None
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise ConfigError("fd://%d is not a stream socket" % fd)
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.listen(backlog)
    sock.set_inheritable(False)     # (the app's own child processes do not get the listening socket)
    return sock


def _remove_stale_unix_socket(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError("cannot bind unix:%s: the path exists and is not a socket" % path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # left behind by a server that is gone
        return
    except OSError:
        return
    finally:
        probe.close()
    raise ConfigError("cannot bind unix:%s: address already in use" % path)


def describe(sock: socket.socket) -> tuple:
    """(url for the listening line, SERVER_NAME, SERVER_PORT, short form for the seed's lines)."""
    if sock.family == socket.AF_UNIX:
        path = sock.getsockname()
        if isinstance(path, bytes):
            path = path.decode("utf-8", "surrogateescape")
        # PEP 3333: SERVER_NAME and SERVER_PORT are never empty; a unix socket has no port
        return "unix:" + path, "localhost", "80", "unix:" + path
    host, port = sock.getsockname()[:2]
    shown = "[%s]" % host if sock.family == socket.AF_INET6 else host
    return "http://%s:%d" % (shown, port), host, str(port), "port %d" % port
