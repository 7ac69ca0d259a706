"""Operator endpoints: ``/healthz``, ``/readyz`` and Prometheus ``/metrics``.

Metrics are read from the workers' and sink's own counters at scrape time (a custom
collector), so the hot path pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from publisher.state import ConnState

if TYPE_CHECKING:
    from publisher.app import Publisher

STATES = [s.value for s in ConnState]

EXCHANGE_COUNTERS = (
    # (key in the worker's status, metric name, help)
    ("frames", "marketbus_frames", "frames received"),
    ("records", "marketbus_records", "records published"),
    ("invalid", "marketbus_invalid", "records skipped as invalid"),
    ("reconnects", "marketbus_reconnects", "reconnects"),
    ("errors", "marketbus_errors", "session errors"),
    ("trade_gaps", "marketbus_trade_gaps", "trade id gaps seen"),
    ("book_resyncs", "marketbus_book_resyncs", "order books resynchronized (gap or bad checksum)"),
    ("trades_missing", "marketbus_trades_missing", "trades missing in id gaps"),
    ("trade_id_resets", "marketbus_trade_id_resets", "exchange-side trade-id sequence resets"),
    ("bugs", "marketbus_worker_bugs", "unmapped exceptions (bugs) that failed a worker"),
)
"""Per-exchange counters, read from ``ExchangeWorker.status()`` at scrape time."""


class PublisherCollector(Collector):
    """Exposes a publisher's counters as Prometheus metrics."""

    def __init__(self, publisher: Publisher) -> None:
        self._p = publisher

    def collect(self) -> Iterator[Any]:
        counters = {
            key: CounterMetricFamily(name, doc, labels=["exchange"])
            for key, name, doc in EXCHANGE_COUNTERS
        }
        state = GaugeMetricFamily(
            "marketbus_state", "1 for the current state", labels=["exchange", "state"]
        )
        age = GaugeMetricFamily(
            "marketbus_last_frame_age_seconds", "since the last frame", labels=["exchange"]
        )
        subscribed = GaugeMetricFamily(
            "marketbus_subscribed_markets", "markets subscribed", labels=["exchange", "channel"]
        )
        for name, w in list(self._p.workers.items()):
            st = w.status()
            for key, family in counters.items():
                family.add_metric([name], st[key])
            for s in STATES:
                state.add_metric([name, s], 1.0 if st["state"] == s else 0.0)
            if st["last_frame_age_s"] is not None:
                age.add_metric([name], st["last_frame_age_s"])
            for channel, symbols in st["subscriptions"].items():
                subscribed.add_metric([name, channel], len(symbols))
        yield from counters.values()
        yield from (state, age, subscribed)
        sink = self._p.sink.stats
        yield CounterMetricFamily(
            "marketbus_written", "records written to Redis", value=sink.written
        )
        yield CounterMetricFamily(
            "marketbus_spool_overflow", "records dropped: spool full", value=sink.overflow
        )
        yield CounterMetricFamily(
            "marketbus_write_errors", "failed Redis writes", value=sink.write_errors
        )
        yield GaugeMetricFamily(
            "marketbus_spool_size", "records waiting for Redis", value=self._p.sink.pending
        )
        yield GaugeMetricFamily(
            "marketbus_redis_up", "1 when the last write succeeded", value=float(sink.redis_up)
        )
        yield GaugeMetricFamily(
            "marketbus_spool_capacity", "records the spool holds while Redis is away",
            value=self._p.settings.redis.spool_size,
        )  # fmt: skip
        yield CounterMetricFamily(
            "marketbus_redis_refused", "writes Redis refused for now (OOM, READONLY...), retried",
            value=sink.refused,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "marketbus_reading_paused", "1 while exchange sockets wait for the writer",
            value=float(self._p.sink.congested),
        )  # fmt: skip
        yield CounterMetricFamily(
            "marketbus_backpressure_pauses", "times reading paused for the writer",
            value=sink.pauses,
        )  # fmt: skip
        yield CounterMetricFamily(
            "marketbus_backpressure_paused_seconds", "time reading was paused for the writer",
            value=sink.paused_s,
        )  # fmt: skip
        lag = self._p.sink.last_lag_ms
        if lag is not None:
            yield GaugeMetricFamily(
                "marketbus_publish_lag_ms",
                "exchange event time to Redis write, last batch",
                value=lag,
            )


def make_app(publisher: Publisher) -> web.Application:
    registry = CollectorRegistry()
    registry.register(PublisherCollector(publisher))

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def readyz(_: web.Request) -> web.Response:
        status = publisher.status()
        ready = status["sink"]["redis_up"] and all(
            w["state"] == ConnState.CONNECTED.value for w in status["workers"].values()
        )
        return web.Response(
            body=orjson.dumps({"ready": ready, **status}),
            status=200 if ready else 503,
            content_type="application/json",
        )

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


class OpsServer:
    """The endpoints on ``host:port`` for the publisher's lifetime."""

    def __init__(self, publisher: Publisher, port: int, host: str = "0.0.0.0") -> None:
        self._runner = web.AppRunner(make_app(publisher), access_log=None)
        self._host = host
        self._port = port
        self.port: int | None = None

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        await self._runner.cleanup()
