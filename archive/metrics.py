"""The archiver's operator endpoints: ``/healthz``, ``/readyz`` and Prometheus ``/metrics``.

As the publisher's (``publisher/http.py``, which this package may not import: the layers), the
figures are read from :class:`archive.ArchiverStats` at scrape time by a custom collector, so
the archiving loop pays nothing for them. Metric names start with ``marketbus_archive_``;
docs/operations.md says what each means and which alert reads it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from archive.archiver import Archiver
from archive.status import state_of

COUNTERS = (
    # (ArchiverStats field, metric name, help)
    ("rows", "marketbus_archive_rows", "rows written in committed Parquet files"),
    ("bytes", "marketbus_archive_bytes", "bytes of committed Parquet files"),
    ("files", "marketbus_archive_files", "Parquet files committed"),
    ("commits", "marketbus_archive_commits", "commits (each: files + manifest, then XACK)"),
    ("acked", "marketbus_archive_acked", "entries acknowledged after their commit"),
    ("skipped", "marketbus_archive_skipped", "entries read again that were archived already"),
    ("invalid", "marketbus_archive_invalid", "entries that are not marketbus records"),
    ("trimmed", "marketbus_archive_trimmed", "pending entries MAXLEN deleted before archiving"),
    ("write_errors", "marketbus_archive_write_errors", "failed commits (disk full, unwritable)"),
    ("redis_errors", "marketbus_archive_redis_errors", "Redis errors (retried)"),
    ("resets", "marketbus_archive_resets", "streams whose consumer group Redis lost"),
    ("adopted", "marketbus_archive_adopted", "entries adopted from members no longer running"),
)


class ArchiverCollector(Collector):
    """Exposes an archiver's figures as Prometheus metrics."""

    def __init__(self, archiver: Archiver, maxlen: int | None = None) -> None:
        self._a = archiver
        self._maxlen = maxlen

    def collect(self) -> Iterator[Any]:
        st = self._a.stats
        for field, name, doc in COUNTERS:
            yield CounterMetricFamily(name, doc, value=getattr(st, field))
        gauges: list[tuple[str, str, float | None]] = [
            ("marketbus_archive_writable", "1 while commits succeed", float(st.writable)),
            ("marketbus_archive_redis_up", "1 while Redis answers", float(st.redis_up)),
            ("marketbus_archive_buffered_rows", "rows read, not yet committed", st.buffered),
            ("marketbus_archive_streams", "streams followed", st.streams),
            ("marketbus_archive_lag_entries",
             "entries of the group not yet archived (lag + pending), summed over streams",
             st.lag),
            ("marketbus_archive_lag_max_entries",
             "the same on the stream furthest behind (what MAXLEN bounds)", st.lag_max),
            ("marketbus_archive_stream_maxlen",
             "the MAXLEN the streams are trimmed to (redis.maxlen)", self._maxlen),
            ("marketbus_archive_last_commit_age_seconds", "since the last successful commit",
             None if st.last_commit_ms is None else time.time() - st.last_commit_ms / 1000),
        ]  # fmt: skip
        for name, doc, value in gauges:
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=float(value))


def make_app(archiver: Archiver, maxlen: int | None = None) -> web.Application:
    registry = CollectorRegistry()
    registry.register(ArchiverCollector(archiver, maxlen))

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def readyz(_: web.Request) -> web.Response:
        st = archiver.stats
        state = state_of(archiver)
        ready = state == "archiving"
        body = {
            "ready": ready, "state": state, "name": archiver.config.name, "lag": st.lag,
            "lag_max": st.lag_max, "maxlen": maxlen, "last_error": st.last_error,
        }  # fmt: skip
        return web.Response(
            body=orjson.dumps(body), status=200 if ready else 503, content_type="application/json"
        )

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


class MetricsServer:
    """The endpoints on ``host:port`` for the archiver's lifetime (port 0: any free one,
    then :attr:`port`)."""

    def __init__(self, app: web.Application, port: int, host: str = "127.0.0.1") -> None:
        self._runner = web.AppRunner(app, access_log=None)
        self._host = host
        self._port = port
        self.port: int | None = None

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        await self._runner.cleanup()
