"""Export an oxloop loop's health: Prometheus text, prometheus_client, OpenTelemetry.

    import oxloop, oxloop.metrics
    loop = oxloop.new_event_loop(stats=True)

    oxloop.metrics.prometheus_text(loop)          # text format, no dependency

    from prometheus_client import REGISTRY        # pip install prometheus-client
    REGISTRY.register(oxloop.metrics.PrometheusCollector(loop))

    oxloop.metrics.instrument_opentelemetry(loop)  # pip install opentelemetry-sdk

Every exporter reads ``loop.stats()`` when it is scraped or collected (from
any thread) and holds the loop only by a weak reference: a collected loop
exports nothing. The names (prefix ``oxloop``):

| metric | type | what |
| --- | --- | --- |
| oxloop_callbacks_total | counter | callbacks and native I/O calls run |
| oxloop_iterations_total | counter | loop iterations |
| oxloop_callback_lag_seconds | summary | how late callbacks start (quantiles 0.5, 0.9, 0.99) |
| oxloop_callback_lag_max_seconds | gauge | the latest start |
| oxloop_busy_seconds_total / oxloop_idle_seconds_total | counter | time in callbacks / waiting in the poll |
| oxloop_busy_ratio | gauge | busy / (busy + idle) |
| oxloop_ready_callbacks, oxloop_timers, oxloop_fds | gauge | queued callbacks, scheduled timers, watched fds |
| oxloop_blocking_callbacks_total | counter | callbacks past the blocking threshold |
| oxloop_transport_received_bytes_total / oxloop_transport_sent_bytes_total | counter | bytes through transports (label transport: stream, pipe, udp) |
| oxloop_slow_callback_seconds | gauge | the slowest callbacks (labels kind, name, location) |

OpenTelemetry uses the same data under dotted names (``oxloop.callbacks``,
``oxloop.callback.lag.p99``, ``oxloop.transport.received``, ...).
"""

import weakref

__all__ = ("PrometheusCollector", "instrument_opentelemetry", "prometheus_text")

_QUANTILES = (("0.5", "lag_p50_ms"), ("0.9", "lag_p90_ms"), ("0.99", "lag_p99_ms"))
# The kinds of transport whose bytes `loop.stats()["transports"]` counts.
_TRANSPORT_KINDS = ("stream", "pipe", "udp")


def _families(stats, prefix):
    """(name, type, help, [(sample suffix, extra labels, value)]) per metric."""
    p = prefix
    lag = [("", {"quantile": q}, stats[key] / 1e3) for q, key in _QUANTILES]
    lag += [("_count", {}, stats["lag_count"]), ("_sum", {}, stats["lag_sum_s"])]
    tr = stats["transports"]
    kinds = [k for k in _TRANSPORT_KINDS if k in tr]
    fams = [
        (f"{p}_callbacks", "counter", "Callbacks and native I/O calls run.",
         [("_total", {}, stats["callbacks"])]),
        (f"{p}_iterations", "counter", "Loop iterations.",
         [("_total", {}, stats["iterations"])]),
        (f"{p}_callback_lag_seconds", "summary",
         "How late callbacks start (timers: after their deadline; others: after being queued).",
         lag),
        (f"{p}_callback_lag_max_seconds", "gauge", "The latest callback start.",
         [("", {}, stats["lag_max_ms"] / 1e3)]),
        (f"{p}_busy_seconds", "counter", "Time spent running callbacks.",
         [("_total", {}, stats["busy_s"])]),
        (f"{p}_idle_seconds", "counter", "Time spent waiting in the poll.",
         [("_total", {}, stats["idle_s"])]),
        (f"{p}_busy_ratio", "gauge", "Busy time / (busy + idle time).",
         [("", {}, stats["busy_ratio"])]),
        (f"{p}_ready_callbacks", "gauge", "Callbacks ready to run.",
         [("", {}, stats["ready"])]),
        (f"{p}_timers", "gauge", "Scheduled timers.", [("", {}, stats["timers"])]),
        (f"{p}_fds", "gauge", "Watched file descriptors.", [("", {}, stats["fds"])]),
        (f"{p}_blocking_callbacks", "counter",
         "Callbacks that held the loop past the blocking threshold.",
         [("_total", {}, stats["blocking_callbacks"])]),
        (f"{p}_transport_received_bytes", "counter", "Bytes received by transports.",
         [("_total", {"transport": k}, tr[k]["bytes_in"]) for k in kinds]),
        (f"{p}_transport_sent_bytes", "counter", "Bytes sent by transports.",
         [("_total", {"transport": k}, tr[k]["bytes_out"]) for k in kinds]),
        (f"{p}_slow_callback_seconds", "gauge", "The slowest callbacks seen.",
         [("", {"kind": s["kind"], "name": s["name"], "location": s["location"]},
           s["duration_ms"] / 1e3) for s in stats["slow_callbacks"]]),
    ]
    return fams


def _escape(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels_text(labels):
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(v):
    if isinstance(v, bool):
        v = int(v)
    if isinstance(v, int):
        return str(v)
    return repr(float(v))


def prometheus_text(loop, *, prefix="oxloop", labels=None):
    """The loop's stats in the Prometheus text exposition format (0.0.4)."""
    labels = dict(labels or {})
    lines = []
    for name, typ, doc, samples in _families(loop.stats(), prefix):
        if typ == "counter":  # the 0.0.4 format names a counter by its sample
            name += "_total"
            samples = [("", extra, value) for _, extra, value in samples]
        lines.append(f"# HELP {name} {_escape(doc)}")
        lines.append(f"# TYPE {name} {typ}")
        for suffix, extra, value in samples:
            lines.append(f"{name}{suffix}{_labels_text({**labels, **extra})} {_number(value)}")
    return "\n".join(lines) + "\n"


class PrometheusCollector:
    """A ``prometheus_client`` collector for one loop (weakly held):
    ``registry.register(PrometheusCollector(loop))``."""

    def __init__(self, loop, *, prefix="oxloop", labels=None):
        from prometheus_client.metrics_core import Metric  # optional dependency

        self._metric = Metric
        self._loop = weakref.ref(loop)
        self._prefix = prefix
        self._labels = dict(labels or {})

    def collect(self):
        loop = self._loop()
        if loop is None:
            return
        stats = loop.stats()
        del loop
        for name, typ, doc, samples in _families(stats, self._prefix):
            metric = self._metric(name, doc, typ)
            for suffix, extra, value in samples:
                metric.add_sample(name + suffix, {**self._labels, **extra}, value)
            yield metric

    def describe(self):
        # Registering must not read the loop (it may be another thread's).
        return []


class OpenTelemetryInstruments:
    """What ``instrument_opentelemetry`` registered (keeps the callbacks)."""

    def __init__(self, instruments):
        self.instruments = instruments


def instrument_opentelemetry(loop, meter_provider=None, *, attributes=None):
    """Register observable instruments for the loop's stats with an
    OpenTelemetry meter (the global provider unless one is given). The loop
    is held weakly; a collected or closed loop reports nothing."""
    from opentelemetry import metrics  # optional dependency
    from opentelemetry.metrics import Observation

    from . import __version__

    meter = metrics.get_meter("oxloop", __version__, meter_provider=meter_provider)
    ref = weakref.ref(loop)
    attrs = dict(attributes or {})

    def reader(get):
        def callback(_options):
            lp = ref()
            if lp is None or lp.is_closed():
                return []
            return [Observation(get(lp.stats()), attrs)]
        return callback

    def transport_reader(key):
        def callback(_options):
            lp = ref()
            if lp is None or lp.is_closed():
                return []
            tr = lp.stats()["transports"]
            return [Observation(tr[k][key], {**attrs, "transport": k})
                    for k in _TRANSPORT_KINDS if k in tr]
        return callback

    def slow_reader(_options):
        lp = ref()
        if lp is None or lp.is_closed():
            return []
        return [Observation(s["duration_ms"] / 1e3,
                            {**attrs, "kind": s["kind"], "name": s["name"],
                             "location": s["location"]})
                for s in lp.stats()["slow_callbacks"]]

    counters = [
        ("oxloop.callbacks", "{callback}", "Callbacks and native I/O calls run",
         lambda s: s["callbacks"]),
        ("oxloop.iterations", "{iteration}", "Loop iterations", lambda s: s["iterations"]),
        ("oxloop.busy", "s", "Time spent running callbacks", lambda s: s["busy_s"]),
        ("oxloop.idle", "s", "Time spent waiting in the poll", lambda s: s["idle_s"]),
        ("oxloop.blocking_callbacks", "{callback}",
         "Callbacks that held the loop past the blocking threshold",
         lambda s: s["blocking_callbacks"]),
    ]
    per_transport = [
        ("oxloop.transport.received", "By", "Bytes received by transports", "bytes_in"),
        ("oxloop.transport.sent", "By", "Bytes sent by transports", "bytes_out"),
    ]
    gauges = [
        ("oxloop.callback.lag.p50", "s", "Median callback lag", lambda s: s["lag_p50_ms"] / 1e3),
        ("oxloop.callback.lag.p90", "s", "90th percentile callback lag",
         lambda s: s["lag_p90_ms"] / 1e3),
        ("oxloop.callback.lag.p99", "s", "99th percentile callback lag",
         lambda s: s["lag_p99_ms"] / 1e3),
        ("oxloop.callback.lag.max", "s", "Largest callback lag", lambda s: s["lag_max_ms"] / 1e3),
        ("oxloop.busy_ratio", "1", "Busy time / (busy + idle time)", lambda s: s["busy_ratio"]),
        ("oxloop.ready", "{callback}", "Callbacks ready to run", lambda s: s["ready"]),
        ("oxloop.timers", "{timer}", "Scheduled timers", lambda s: s["timers"]),
        ("oxloop.fds", "{fd}", "Watched file descriptors", lambda s: s["fds"]),
    ]
    made = []
    for name, unit, doc, get in counters:
        made.append(meter.create_observable_counter(
            name, callbacks=[reader(get)], unit=unit, description=doc))
    for name, unit, doc, key in per_transport:
        made.append(meter.create_observable_counter(
            name, callbacks=[transport_reader(key)], unit=unit, description=doc))
    for name, unit, doc, get in gauges:
        made.append(meter.create_observable_gauge(
            name, callbacks=[reader(get)], unit=unit, description=doc))
    made.append(meter.create_observable_gauge(
        "oxloop.slow_callback.duration", callbacks=[slow_reader], unit="s",
        description="The slowest callbacks seen"))
    return OpenTelemetryInstruments(made)
