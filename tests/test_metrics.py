"""oxloop.metrics: the Prometheus text and the prometheus_client and
OpenTelemetry exporters, each read back with its own parser or reader.

oxloop-only API (the ``oxloop`` fixture). prometheus-client and
opentelemetry-sdk are in requirements-dev.txt.
"""

import asyncio
import gc
import os
import time
import weakref

import pytest


def _busy_loop(oxloop):
    """A loop with stats on that ran a slow callback and moved bytes."""
    loop = oxloop.new_event_loop(stats=True)

    def sleepy():
        time.sleep(0.02)

    async def main():
        async def echo(reader, writer):
            writer.write(await reader.readexactly(100))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"a" * 100)
        assert await reader.readexactly(100) == b"a" * 100
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        await _pipe_and_udp_bytes(loop)
        loop.call_soon(sleepy)
        await asyncio.sleep(0.01)

    loop.run_until_complete(main())
    loop.call_later(100, lambda: None)
    return loop


async def _pipe_and_udp_bytes(loop):
    """50 bytes through a pipe (one transport per end), a 30-byte datagram
    and its echo (both endpoints on the loop)."""
    got = loop.create_future()

    class Reader(asyncio.Protocol):
        def data_received(self, data):
            got.set_result(data)

    rfd, wfd = os.pipe()
    rt, _ = await loop.connect_read_pipe(Reader, os.fdopen(rfd, "rb", 0))
    wt, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(wfd, "wb", 0))
    wt.write(b"p" * 50)
    assert await got == b"p" * 50
    wt.close()
    rt.close()
    echoed = loop.create_future()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            if data.startswith(b"u"):
                self.transport.sendto(b"e" * len(data), addr)
            else:
                echoed.set_result(data)

    server, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    client, _ = await loop.create_datagram_endpoint(
        Echo, remote_addr=server.get_extra_info("sockname"))
    client.sendto(b"u" * 30)
    assert await echoed == b"e" * 30
    client.close()
    server.close()
    await asyncio.sleep(0)


# Bytes per kind of transport that `_busy_loop` moves, in and out alike.
_BYTES = {"stream": 200, "pipe": 50, "udp": 60}


def _families(text):
    from prometheus_client.parser import text_string_to_metric_families

    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(fams, family, sample=None, **labels):
    for s in fams[family].samples:
        if (sample is None or s.name == sample) and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise KeyError((family, sample, labels))


def _named(slow, suffix):
    (entry,) = [s for s in slow if s["name"].endswith(suffix)]
    return entry


def _check_prometheus(fams, stats, **labels):
    assert _value(fams, "oxloop_callbacks", "oxloop_callbacks_total", **labels) == stats["callbacks"]
    assert fams["oxloop_callbacks"].type == "counter"
    assert _value(fams, "oxloop_timers", **labels) == stats["timers"] == 1
    for kind, n in _BYTES.items():
        assert _value(fams, "oxloop_transport_received_bytes", transport=kind, **labels) == n
        assert _value(fams, "oxloop_transport_sent_bytes", transport=kind, **labels) == n
        assert stats["transports"][kind] == {"bytes_in": n, "bytes_out": n}
    assert stats["transports"]["bytes_in"] == stats["transports"]["bytes_out"] == sum(_BYTES.values())
    lag = fams["oxloop_callback_lag_seconds"]
    assert lag.type == "summary"
    assert _value(fams, "oxloop_callback_lag_seconds", quantile="0.99", **labels) == pytest.approx(
        stats["lag_p99_ms"] / 1e3)
    assert _value(fams, "oxloop_callback_lag_seconds", "oxloop_callback_lag_seconds_count",
                  **labels) == stats["lag_count"]
    assert _value(fams, "oxloop_busy_ratio", **labels) == pytest.approx(stats["busy_ratio"])
    # (On a busy machine another callback may have been slower.)
    slowest = _named(stats["slow_callbacks"], "sleepy")
    assert _value(fams, "oxloop_slow_callback_seconds", name=slowest["name"],
                  location=slowest["location"], **labels) == pytest.approx(slowest["duration_ms"] / 1e3)


def test_prometheus_text_parses_back_to_the_stats(oxloop):
    from oxloop.metrics import prometheus_text

    loop = _busy_loop(oxloop)
    try:
        text = prometheus_text(loop, labels={"loop": 'main "1"'})
        stats = loop.stats()
    finally:
        loop.close()
    _check_prometheus(_families(text), stats, loop='main "1"')


def test_prometheus_collector_in_a_registry(oxloop):
    from prometheus_client import CollectorRegistry, generate_latest

    from oxloop.metrics import PrometheusCollector

    loop = _busy_loop(oxloop)
    registry = CollectorRegistry()
    registry.register(PrometheusCollector(loop))
    try:
        text = generate_latest(registry).decode()
        stats = loop.stats()
    finally:
        loop.close()
    _check_prometheus(_families(text), stats)


def test_prometheus_collector_keeps_no_loop_alive(oxloop):
    from prometheus_client import CollectorRegistry, generate_latest

    from oxloop.metrics import PrometheusCollector

    loop = oxloop.new_event_loop(stats=True)
    registry = CollectorRegistry()
    registry.register(PrometheusCollector(loop))
    ref = weakref.ref(loop)
    loop.close()
    del loop
    gc.collect()
    assert ref() is None
    assert b"oxloop_" not in generate_latest(registry)


def _otel():
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    return MeterProvider(metric_readers=[reader]), reader


def _otel_points(reader):
    points = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                points[m.name] = (m, list(m.data.data_points))
    return points


def test_opentelemetry_export_reads_back(oxloop):
    from oxloop.metrics import instrument_opentelemetry

    provider, reader = _otel()
    loop = _busy_loop(oxloop)
    try:
        instrument_opentelemetry(loop, meter_provider=provider, attributes={"loop": "main"})
        points = _otel_points(reader)
        stats = loop.stats()
    finally:
        loop.close()
        provider.shutdown()
    _, (point,) = points["oxloop.callbacks"]
    assert point.value >= stats["callbacks"] - 1  # the reading itself may be counted
    assert point.attributes == {"loop": "main"}
    for name in ("oxloop.transport.received", "oxloop.transport.sent"):
        by_kind = {p.attributes["transport"]: p for p in points[name][1]}
        assert {k: p.value for k, p in by_kind.items()} == _BYTES
        assert by_kind["pipe"].attributes == {"loop": "main", "transport": "pipe"}
    assert points["oxloop.transport.sent"][0].unit == "By"
    assert points["oxloop.timers"][1][0].value == 1
    assert points["oxloop.callback.lag.p99"][1][0].value == pytest.approx(stats["lag_p99_ms"] / 1e3)
    slow = points["oxloop.slow_callback.duration"][1]
    (top,) = [p for p in slow if p.attributes["name"].endswith("sleepy")]
    assert top.value >= 0.02
    assert top.attributes["location"] == _named(stats["slow_callbacks"], "sleepy")["location"]


def test_opentelemetry_keeps_no_loop_alive(oxloop):
    from oxloop.metrics import instrument_opentelemetry

    provider, reader = _otel()
    loop = oxloop.new_event_loop(stats=True)
    instruments = instrument_opentelemetry(loop, meter_provider=provider)
    ref = weakref.ref(loop)
    loop.close()
    del loop
    gc.collect()
    try:
        assert ref() is None
        assert instruments.instruments
        for _, pts in _otel_points(reader).values():
            assert pts == []
    finally:
        provider.shutdown()
