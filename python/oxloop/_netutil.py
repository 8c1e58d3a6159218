"""Checks and socket options shared by oxloop's networking code (streams,
datagrams, `sock_*`), each with asyncio's exact error."""

import logging
import os
import socket

from . import _core

try:
    import ssl as _ssl
except ImportError:  # pragma: no cover
    _ssl = None

__all__ = ("check_ssl_socket", "check_ssl_timeouts", "check_unix_stream_socket",
           "remove_stale_socket_file", "set_reuseport", "unix_stream_socket_for")

logger = logging.getLogger("asyncio")


def check_ssl_socket(sock):
    """asyncio's refusal of an `ssl.SSLSocket` where a plain one goes."""
    if _ssl is not None and isinstance(sock, _ssl.SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")


def check_ssl_timeouts(has_ssl, handshake_timeout, shutdown_timeout):
    """asyncio's refusal of TLS timeouts without TLS."""
    if has_ssl:
        return
    if handshake_timeout is not None:
        raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
    if shutdown_timeout is not None:
        raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")


def check_unix_stream_socket(sock):
    """asyncio's check of a socket passed to create_unix_connection/server."""
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise ValueError(
            f"A UNIX Domain Stream Socket was expected, got {sock!r}")


def set_reuseport(sock):
    """SO_REUSEPORT, or asyncio's ValueError where it is missing."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("reuse_port not supported by socket module")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        raise ValueError("reuse_port not supported by socket module, "
                         "SO_REUSEPORT defined but not implemented.")


def unix_stream_socket_for(path, sock):
    """create_unix_connection/server with a path: asyncio's refusal of a
    sock as well, then the path (`os.fspath`) and a new AF_UNIX stream
    socket."""
    if sock is not None:
        raise ValueError("path and sock can not be specified at the same time")
    return os.fspath(path), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)


def remove_stale_socket_file(path):
    """Before binding a Unix socket: removes a stale socket file at `path`
    (natively, as asyncio's own exempt stat and remove); the abstract
    namespace (a leading NUL) has no file. A failure is logged, as asyncio
    does (the directory may allow creating sockets only)."""
    if path[0] in (0, "\x00"):
        return
    try:
        _core.remove_socket_path(os.fsencode(path))
    except FileNotFoundError:
        pass
    except OSError as err:
        logger.error("Unable to check or remove stale UNIX socket %r: %r",
                     path, err)
