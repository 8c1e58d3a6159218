"""Address resolution helpers shared by oxloop's networking code.

`ensure_resolved()` is asyncio's `_ensure_resolved`: numeric hosts are turned
into an addrinfo tuple directly (`ipaddr_info`, asyncio's `_ipaddr_info`);
anything else goes through `loop.getaddrinfo()` (the default executor).
The datagram, socket and stream code all resolve through it.
"""

import socket

__all__ = ("ensure_resolved", "ipaddr_info")

_HAS_IPv6 = hasattr(socket, "AF_INET6")


def ipaddr_info(host, port, family, type, proto, flowinfo=0, scopeid=0):
    """The addrinfo tuple for an already numeric host (asyncio's
    `_ipaddr_info`), or None when getaddrinfo() is needed."""
    if not hasattr(socket, "inet_pton"):
        return None
    if proto not in {0, socket.IPPROTO_TCP, socket.IPPROTO_UDP} or host is None:
        return None
    if type == socket.SOCK_STREAM:
        proto = socket.IPPROTO_TCP
    elif type == socket.SOCK_DGRAM:
        proto = socket.IPPROTO_UDP
    else:
        return None
    if port is None:
        port = 0
    elif isinstance(port, bytes) and port == b"":
        port = 0
    elif isinstance(port, str) and port == "":
        port = 0
    else:
        # A service name like "http" needs getaddrinfo.
        try:
            port = int(port)
        except (TypeError, ValueError):
            return None
    if family == socket.AF_UNSPEC:
        afs = [socket.AF_INET]
        if _HAS_IPv6:
            afs.append(socket.AF_INET6)
    else:
        afs = [family]
    if isinstance(host, bytes):
        host = host.decode("idna")
    if "%" in host:
        # inet_pton rejects an IPv6 zone index ('::1%lo0').
        return None
    for af in afs:
        try:
            socket.inet_pton(af, host)
        except OSError:
            continue
        if _HAS_IPv6 and af == socket.AF_INET6:
            return af, type, proto, "", (host, port, flowinfo, scopeid)
        return af, type, proto, "", (host, port)
    return None


async def ensure_resolved(loop, address, *, family=0, type=socket.SOCK_STREAM,
                          proto=0, flags=0):
    """asyncio's `_ensure_resolved`: a list of addrinfo tuples for
    `address` (host, port[, flowinfo, scopeid]); numeric hosts skip
    `loop.getaddrinfo()`."""
    host, port = address[:2]
    info = ipaddr_info(host, port, family, type, proto, *address[2:])
    if info is not None:
        return [info]
    return await loop.getaddrinfo(host, port, family=family, type=type,
                                  proto=proto, flags=flags)
