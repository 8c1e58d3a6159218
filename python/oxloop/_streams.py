"""Stream networking (TCP and Unix transports, servers) for oxloop.

`StreamsMixin` is one of `oxloop.Loop`'s bases.
"""


class StreamsMixin:
    """create_connection, create_server, Unix variants, connect_accepted_socket,
    sendfile."""

    __slots__ = ()
