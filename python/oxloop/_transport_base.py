"""What oxloop's transport classes over a native core (`self._core`) share:
the repr and the unclosed-transport warning of the stream and pipe
transports (`OwnedCore`), the plain delegations of the stream and
datagram transports (`CoreDelegates`), and the byte counts of the pipe and
datagram transports (`CoreStatsInfo`; a stream core answers
`get_extra_info` itself). Each comes first in its class's
bases, before the `asyncio` transport classes whose methods raise
NotImplementedError."""

import warnings

__all__ = ("CoreDelegates", "CoreStatsInfo", "OwnedCore")


class OwnedCore:
    """A transport that owns its native core: repr from the core, and a
    ResourceWarning (then the core disposed of) if it is collected open."""

    __slots__ = ()

    def __repr__(self):
        return f"<{type(self).__name__} {self._core._repr_info()}>"

    def __del__(self, _warn=warnings.warn):
        core = self.__dict__.get("_core")
        if core is not None and core._is_open():
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            core._dispose()


class CoreDelegates:
    """Transport methods that are the core's own."""

    __slots__ = ()

    def close(self):
        self._core.close()

    def abort(self):
        self._core.abort()

    def is_closing(self):
        return self._core.is_closing()

    def get_protocol(self):
        return self._core.get_protocol()

    def get_write_buffer_size(self):
        return self._core.get_write_buffer_size()

    def get_write_buffer_limits(self):
        return self._core.get_write_buffer_limits()

    def set_write_buffer_limits(self, high=None, low=None):
        self._core.set_write_buffer_limits(high, low)


class CoreStatsInfo:
    """`get_extra_info("oxloop_stats")`: the bytes the core counted,
    `{"bytes_in": ..., "bytes_out": ...}` (as stream transports report
    them); any other name from the transport's extra info."""

    __slots__ = ()

    def get_extra_info(self, name, default=None):
        if name == "oxloop_stats":
            return self._core._stats()
        return super().get_extra_info(name, default)
