"""The publisher process: one sink, one worker per exchange, a status heartbeat in Redis.

``async with Publisher(settings) as p: await p.wait()``. Stopping cancels the workers
(closing their CCXT clients), drains the sink with a deadline, writes a final status.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import orjson
import structlog

from marketbus import capacity
from marketbus.aio import cancel_and_wait
from marketbus.errors import ConfigError, MarketbusError, RedisAuthError, RedisUnavailableError
from marketbus.keys import status_key, worker_id
from marketbus.redaction import scrub
from marketbus.redis_client import connect, from_redis
from marketbus.settings import ExchangeSettings, Settings, redact_url
from publisher.control import ControlLoop
from publisher.http import OpsServer
from publisher.sink import StreamSink
from publisher.state import ConnState
from publisher.worker import ExchangeWorker

log = structlog.get_logger("marketbus.publisher")


class Publisher:
    """Runs every configured exchange worker into one Redis."""

    def __init__(self, settings: Settings, *, redis: Any = None) -> None:
        self.settings = settings
        self._own_redis = redis is None
        # no retries inside redis-py: it would re-send a pipeline whose reply was lost, out
        # of the sink's sight (duplicates); the sink and the status loop retry themselves
        self.redis = redis if redis is not None else connect(settings.redis, retries=0)
        r = settings.redis
        self.sink = StreamSink(
            self.redis,
            maxlen=r.maxlen,
            batch_size=r.batch_size,
            spool_size=r.spool_size,
            pause_at=r.pause_reading_at,
            linger_ms=r.linger_ms,
        )
        self.workers = {
            e.bus_name: ExchangeWorker(e, self.sink, settings.supervisor)
            for e in settings.exchanges
        }
        self._tasks: list[asyncio.Task[None]] = []
        self._worker_tasks: dict[str, list[asyncio.Task[None]]] = {}
        self.controls: dict[str, ControlLoop] = {}
        self._running = False
        self.ops: OpsServer | None = None
        self._stopped = asyncio.Event()
        self._started_at = time.time()

    async def check_redis(self) -> bool:
        """Ping Redis: bad credentials are fatal now; unreachable is logged and spooled."""
        try:
            await self.redis.ping()
        except Exception as e:
            err = from_redis(e)
            if isinstance(err, RedisAuthError):
                raise err from e
            log.warning(
                "redis_unreachable_at_start",
                url=redact_url(self.settings.redis.url),
                error=str(err),
                hint="records are spooled in memory until Redis answers",
            )
            return False
        await self._check_capacity()
        return True

    async def _check_capacity(self) -> None:
        """Warn when the configured streams, once full at MAXLEN, outgrow Redis' maxmemory.

        A full Redis refuses every write (``noeviction``: an outage, spooled) or evicts whole
        streams: the operator should know at start, not when it happens. Skipped when the
        user may not run INFO (a least-privilege ACL): ``marketbus doctor`` says the same.
        """
        try:
            info = await self.redis.info("memory")
        except Exception as e:
            log.debug("capacity_check_skipped", error=str(from_redis(e)))
            return
        if not isinstance(info, dict):  # a cluster client answers per node
            return
        maxmemory = int(info.get("maxmemory", 0) or 0)
        est = capacity.estimate(self.settings)
        if not capacity.fits(est.bytes, maxmemory):
            log.warning(
                "streams_may_not_fit",
                streams=est.streams,
                maxlen=est.maxlen,
                needed=capacity.human_bytes(est.bytes),
                maxmemory=capacity.human_bytes(maxmemory),
                policy=info.get("maxmemory_policy"),
                hint="lower redis.maxlen, follow fewer markets or raise maxmemory: a full Redis "
                "refuses writes (spooled, then dropped) or evicts streams",
            )

    async def start(self) -> None:
        await self.check_redis()
        if self.settings.metrics_port is not None:
            self.ops = OpsServer(self, self.settings.metrics_port, self.settings.metrics_host)
            await self.ops.start()
            log.info("ops_endpoints", url=f"http://{self.settings.metrics_host}:{self.ops.port}")
        await self.sink.start()
        self._running = True
        for w in self.workers.values():
            self._start_worker(w)
        self._tasks.append(asyncio.create_task(self._status_loop(), name="status"))
        self._tasks.append(asyncio.create_task(self._watch_sink(), name="sink-watch"))
        log.info(
            "publisher_started",
            redis=redact_url(self.settings.redis.url),
            exchanges={n: w.cfg.symbols for n, w in self.workers.items()},
        )

    def _start_worker(self, w: ExchangeWorker) -> None:
        tasks = [asyncio.create_task(w.run(), name=f"worker-{w.name}")]
        if self.settings.control:
            wid = worker_id(w.name, self.settings.instance)
            control = self.controls[w.name] = ControlLoop(self.redis, w, wid)
            tasks.append(asyncio.create_task(control.run(), name=f"control-{w.name}"))
        self._worker_tasks[w.name] = tasks

    async def add_exchange(self, cfg: ExchangeSettings) -> ExchangeWorker:
        """Start one more exchange worker in this running publisher."""
        if cfg.bus_name in self.workers:  # binance and binance-testnet are two workers
            raise ConfigError(f"exchange {cfg.bus_name!r} is running already")
        w = ExchangeWorker(cfg, self.sink, self.settings.supervisor)
        self.workers[w.name] = w
        if self._running:
            self._start_worker(w)
        log.info("exchange_added", exchange=w.name, symbols=cfg.symbols)
        return w

    async def remove_exchange(self, name: str) -> None:
        """Stop one exchange worker (its client is closed); the others never notice.

        ``name`` is the worker's bus name: ``binance``, or ``binance-testnet`` for a sandbox."""
        w = self.workers.pop(name, None)
        if w is None:
            raise ConfigError(f"exchange {name!r} is not running")
        control = self.controls.pop(name, None)
        if control is not None:
            control.stop()
        tasks = self._worker_tasks.pop(name, [])
        await asyncio.gather(*(cancel_and_wait(t, 5.0) for t in tasks))
        with contextlib.suppress(Exception):
            key, fields = self._status_fields(name, w, self.status()["sink"], final=True)
            await self.redis.hset(key, mapping=fields)
        log.info("exchange_removed", exchange=name)

    async def stop(self) -> None:
        self._running = False
        for control in self.controls.values():
            control.stop()
        tasks = [t for ts in self._worker_tasks.values() for t in ts] + self._tasks
        await asyncio.gather(*(cancel_and_wait(t, 5.0) for t in tasks))
        self._tasks.clear()
        self._worker_tasks.clear()
        await self.sink.stop(drain_timeout=5.0)
        if self.ops is not None:
            await self.ops.stop()
            self.ops = None
        with contextlib.suppress(Exception):
            await self._write_status(final=True)
        if self._own_redis:
            with contextlib.suppress(Exception):
                await self.redis.aclose()
        self._stopped.set()
        log.info("publisher_stopped", written=self.sink.stats.written)

    async def __aenter__(self) -> Publisher:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait(self) -> None:
        """Until stopped, or every worker FAILED, or the sink hit a fatal error."""
        await self._stopped.wait()

    async def _watch_sink(self) -> None:
        """End the publisher when nothing it does can succeed any more.

        A fatal Redis error (credentials changed, ACL permissions revoked) stops the writer
        for good: reading the exchange on would only fill the spool until it drops. So
        ``wait()`` returns, and the caller (``marketbus publish``) exits non-zero with the
        reason, for a supervisor to restart it and an operator to see why.
        """
        while True:
            await asyncio.sleep(0.2)
            try:
                self.sink.check()
            except MarketbusError as e:
                log.error(
                    "publisher_stopping",
                    reason=str(e),
                    hint="Redis refused our credentials or permissions: fix the ACL user or "
                    "password, then restart (marketbus doctor checks both)",
                )
                self._stopped.set()
                return
            if self.workers and all(w.state is ConnState.FAILED for w in self.workers.values()):
                log.error("all_workers_failed")
                self._stopped.set()
                return

    def status(self) -> dict[str, Any]:
        s = self.sink.stats
        return {
            "workers": {n: w.status() for n, w in self.workers.items()},
            "sink": {
                "accepted": s.accepted,
                "written": s.written,
                "pending": self.sink.pending,
                "overflow": s.overflow,
                "rejected": s.rejected,
                "write_errors": s.write_errors,
                "redis_up": s.redis_up,
                "refusing": s.refusing,
                "refused": s.refused,
                "reading_paused": self.sink.congested,
                "pauses": s.pauses,
                "paused_s": round(s.paused_s, 3),
                "last_error": s.last_error,
            },
        }

    async def _write_status(self, final: bool = False) -> None:
        sink = self.status()["sink"]
        ttl = max(10, int(self.settings.supervisor.status_interval_s * 5))
        pipe = self.redis.pipeline(transaction=False)
        for name, w in self.workers.items():
            key, fields = self._status_fields(name, w, sink, final)
            pipe.hset(key, mapping=fields)
            pipe.expire(key, ttl)
        await pipe.execute()

    def _status_fields(
        self, name: str, w: ExchangeWorker, sink: dict[str, Any], final: bool
    ) -> tuple[str, dict[str, Any]]:
        """The status key of one worker and the fields written there."""
        st = w.status()
        st["sink"] = sink
        st["updated_ms"] = int(time.time() * 1000)
        st["uptime_s"] = round(time.time() - self._started_at, 1)
        st["instance"] = self.settings.instance
        if final:
            st["state"] = ConnState.STOPPED.value
        key = status_key(worker_id(name, self.settings.instance))
        # error texts from libraries may quote a URL or a secret: scrubbed like log lines
        return key, {"state": st["state"], "json": scrub(orjson.dumps(st).decode())}

    async def _status_loop(self) -> None:
        while True:
            try:
                await self._write_status()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                err = from_redis(e)
                if not isinstance(err, RedisUnavailableError):
                    log.warning("status_write_failed", error=str(err))
            await asyncio.sleep(self.settings.supervisor.status_interval_s)
