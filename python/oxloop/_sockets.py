"""Low-level socket operations, datagrams and name resolution for oxloop.

`SocketsMixin` is one of `oxloop.Loop`'s bases.
"""


class SocketsMixin:
    """sock_* methods, create_datagram_endpoint, getaddrinfo, getnameinfo."""

    __slots__ = ()
