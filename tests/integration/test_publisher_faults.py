"""The publisher against every fault the fake exchange and Redis can cause.

Real redis-server, the real fake exchange, the real ccxt.pro.binance: nothing is mocked.
Each test asserts behaviour (state, reconnects, every trade id once); the recovery times
are measured and printed at the end of the module (``-s`` not needed) for
docs/reliability.md, never asserted.
"""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import AsyncIterator, Iterator, MutableMapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from structlog.testing import capture_logs

from consumers import Consumer
from fake_exchange import FakeExchange, FrameSource, SyntheticSource
from marketbus import codec
from marketbus.keys import stream_key
from marketbus.models import Channel, Trade
from marketbus.settings import Settings, load_settings
from publisher.app import Publisher
from publisher.sink import StreamSink
from publisher.state import ConnState
from publisher.worker import ExchangeWorker
from tests.factories import trade
from tests.redis_server import RedisServer, running_redis

pytestmark = pytest.mark.integration

SUP = {
    "backoff_min_s": 0.2,
    "backoff_max_s": 1.0,
    "heartbeat_s": 2.0,
    "healthy_after_s": 1.0,
    "status_interval_s": 0.5,
}
SYMBOLS = ["BTC/USDT", "ETH/USDT"]
KINDS = {Channel.TRADES: "aggTrade", Channel.TICKER: "ticker"}


# -- measured figures, printed at the end --------------------------------------------------
@dataclass
class Result:
    fault: str
    caused_by: str
    recovery_s: float | None
    sent: int
    stored: int
    consumed: int | None
    note: str = ""


RESULTS: list[Result] = []


@pytest.fixture(scope="module", autouse=True)
def _print_results(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if tr is None or capture is None or not RESULTS:
        return
    lines = ["", "| fault | how caused | recovery (s) | sent | stored | consumed | note |"]
    lines.append("|---|---|---|---|---|---|---|")
    for r in RESULTS:
        rec = "-" if r.recovery_s is None else f"{r.recovery_s:.2f}"
        con = "-" if r.consumed is None else str(r.consumed)
        lines.append(
            f"| {r.fault} | {r.caused_by} | {rec} | {r.sent} | {r.stored} | {con} | {r.note} |"
        )
    with capture.global_and_fixture_disabled():
        for line in lines:
            tr.write_line(line)


# -- helpers -------------------------------------------------------------------------------
def _trade(fields: Any) -> Trade:
    record = codec.decode_fields(fields)
    assert isinstance(record, Trade)
    return record


def stream_name(symbol: str, kind: str) -> str:
    return symbol.replace("/", "").lower() + "@" + kind


def settings_for(
    redis_url: str,
    fx: FakeExchange,
    symbols: Sequence[str],
    channels: Sequence[Channel] = (Channel.TICKER, Channel.TRADES),
    guard_frames: bool = True,
) -> Settings:
    return load_settings(
        redis={"url": redis_url, "batch_size": 256},
        exchanges=[{"name": "binance", "symbols": list(symbols), "url": fx.base_url,
                    "channels": list(channels), "guard_frames": guard_frames,
                    # the frame guard off is CCXT's own behaviour: its own parser too
                    "parser": "auto" if guard_frames else "ccxt"}],
        supervisor=SUP,
    )  # fmt: skip


@dataclass
class Rig:
    fx: FakeExchange
    pub: Publisher
    worker: ExchangeWorker
    redis: Any  # redis-py's stubs type stream replies as Optional everywhere
    consumer: Consumer | None
    logs: list[MutableMapping[str, Any]]

    def states(self) -> list[str]:
        return [e["new"] for e in self.logs if e.get("event") == "state"]

    async def trade_ids(self, symbol: str) -> list[int]:
        entries = await self.redis.xrange(stream_key("binance", symbol, "trades"))
        return [int(_trade(f).id) for _, f in entries]

    async def stored(self) -> int:
        total = 0
        for s in SYMBOLS:
            for ch in ("trades", "ticker"):
                total += await self.redis.xlen(stream_key("binance", s, ch))
        return total

    def sent(self) -> int:
        """What the exchange sent: every trade it generated (on the socket or during the
        gap, served by REST) plus the ticker frames it wrote."""
        return self.generated_trades() + self.tickers_written()

    def generated_trades(self) -> int:
        # the fake's aggTrade history (what /api/v3/aggTrades serves): every trade generated
        history = self.fx._state().agg_trades
        return sum(len(history.get(s.replace("/", ""), ())) for s in SYMBOLS)

    def tickers_written(self) -> int:
        ids = {s.replace("/", "") for s in SYMBOLS}
        return sum(
            1
            for f in self.fx.sent
            if f.payload.get("s") in ids and f.payload.get("e") == "24hrTicker"
        )

    async def stored_trades(self) -> int:
        return sum([await self.redis.xlen(stream_key("binance", s, "trades")) for s in SYMBOLS])

    def consumed(self) -> int | None:
        if self.consumer is None:
            return None
        return sum(len(b) for b in self.consumer.buffers.values())

    async def wait_state(self, state: ConnState, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while self.worker.state is not state:
                await asyncio.sleep(0.02)

    async def wait_reconnected(self, before: int, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while not (
                self.worker.stats.reconnects > before and self.worker.state is ConnState.CONNECTED
            ):
                await asyncio.sleep(0.02)

    async def first_new_record_ms(self, after_ns: int, timeout: float = 20.0) -> int:
        """Redis time (entry id ms) of the first record received after ``after_ns``."""
        keys = [stream_key("binance", s, ch) for s in SYMBOLS for ch in ("trades", "ticker")]
        async with asyncio.timeout(timeout):
            while True:
                best: int | None = None
                for key in keys:
                    for eid, fields in await self.redis.xrevrange(key, count=50):
                        if codec.decode_fields(fields).recv_ns > after_ns:
                            ms = int(eid.split(b"-")[0])
                            best = ms if best is None else min(best, ms)
                if best is not None:
                    return best
                await asyncio.sleep(0.05)

    async def settle(self, timeout: float = 20.0) -> None:
        """Until the sink wrote everything and the consumer caught up with Redis."""
        async with asyncio.timeout(timeout):
            while self.pub.sink.pending:
                await asyncio.sleep(0.02)
            if self.consumer is not None:
                while self.consumed() != await self.stored():
                    await asyncio.sleep(0.05)


@asynccontextmanager
async def rig(
    redis_url: str,
    source: FrameSource,
    symbols: Sequence[str] = SYMBOLS,
    *,
    channels: Sequence[Channel] = (Channel.TICKER, Channel.TRADES),
    consumer: bool = True,
    wait: bool = True,
    before_start: Any = None,
    guard_frames: bool = True,
) -> AsyncIterator[Rig]:
    with capture_logs() as logs:
        async with FakeExchange(source, autoplay=False) as fx:
            if before_start is not None:
                before_start(fx)
            settings = settings_for(redis_url, fx, symbols, channels, guard_frames)
            client = aioredis.Redis.from_url(redis_url, retry=Retry(NoBackoff(), 0))
            try:
                async with Publisher(settings) as pub:
                    worker = pub.workers["binance"]
                    good = [s for s in symbols if "/" in s]
                    if wait:
                        await fx.wait_subscribed(
                            [stream_name(s, KINDS[c]) for s in good for c in channels], 20
                        )
                    if consumer and good:
                        markets = [f"binance:{s}" for s in good]
                        async with Consumer(redis_url, markets, channels, backfill=0,
                                            block_ms=100, count=5000) as c:  # fmt: skip
                            fx.play()
                            yield Rig(fx, pub, worker, client, c, logs)
                    else:
                        fx.play()
                        yield Rig(fx, pub, worker, client, None, logs)
            finally:
                await client.aclose()


def assert_consecutive(ids: list[int], what: str) -> None:
    assert ids, f"{what}: no trades in Redis"
    assert len(ids) == len(set(ids)), f"{what}: duplicates"
    assert ids == list(range(ids[0], ids[0] + len(ids))), f"{what}: gap"


async def check_complete(r: Rig) -> None:
    """Every trade id in Redis once and consecutive; every aggTrade the fake wrote is there."""
    names = {s.replace("/", ""): s for s in SYMBOLS}
    written: dict[str, set[int]] = {s: set() for s in SYMBOLS}
    for f in list(r.fx.sent):
        if f.payload.get("e") == "aggTrade" and f.payload["s"] in names:
            written[names[f.payload["s"]]].add(f.payload["a"])
    for symbol in SYMBOLS:
        async with asyncio.timeout(20):  # the source keeps going: wait for what was written
            while not written[symbol] <= set(ids := await r.trade_ids(symbol)):
                await asyncio.sleep(0.05)
        assert_consecutive(ids, symbol)
    await r.settle()
    assert r.worker.trade_ids.gaps == 0 and r.worker.trade_ids.missing == 0


def source(rate: float = 300.0, duration: float = 5.0) -> SyntheticSource:
    return SyntheticSource(SYMBOLS, rate=rate, duration=duration, channels=("aggTrade", "ticker"))


async def finish(r: Rig) -> tuple[int, int, int | None]:
    """After the (finite) source ended: sent, stored, consumed; every generated trade stored."""
    await r.fx.wait_done(30)
    await check_complete(r)
    assert await r.stored_trades() == r.generated_trades()
    # tickers are snapshots, never backfilled: those in flight on a broken socket are lost
    assert await r.stored() - await r.stored_trades() <= r.tickers_written()
    return r.sent(), await r.stored(), r.consumed()


async def fault_then_recover(
    r: Rig, name: str, caused_by: str, inject: Any, *, note: str = ""
) -> float:
    """Run 0.5 s, inject, wait for a reconnect and a new record; record and return recovery."""
    await asyncio.sleep(0.5)
    before = r.worker.stats.reconnects
    t0_ms = time.time() * 1000
    inject()
    await r.wait_reconnected(before)
    mark = time.time_ns()
    first = await r.first_new_record_ms(mark)
    recovery = (first - t0_ms) / 1000
    assert r.worker.state is ConnState.CONNECTED
    assert r.fx.subscribed_streams() == {
        stream_name(s, k) for s in SYMBOLS for k in ("aggTrade", "ticker")
    }
    sent, stored, consumed = await finish(r)
    RESULTS.append(Result(name, caused_by, recovery, sent, stored, consumed, note))
    return recovery


# -- exchange faults -----------------------------------------------------------------------
@pytest.mark.parametrize("abrupt", [True, False], ids=["abrupt", "clean"])
async def test_closed_socket_reconnects_and_backfills_the_gap(
    redis: aioredis.Redis, redis_server: RedisServer, abrupt: bool
) -> None:
    async with rig(redis_server.url, source(400, duration=4)) as r:

        def inject() -> None:
            # refuse for 1 s so the gap is long: the fake keeps generating trades meanwhile
            r.fx.faults.refuse(1.0)
            r.fx.faults.close_all(abrupt=abrupt)

        kind = "TCP abort (1006)" if abrupt else "close frame 1000"
        await fault_then_recover(
            r, f"socket closed ({'abrupt' if abrupt else 'clean'})",
            f"`close_all(abrupt={abrupt})` + `refuse(1)`: {kind}, 1 s gap",
            inject, note="gap trades fetched over REST",
        )  # fmt: skip
        assert "RECONNECTING" in r.states()
        assert r.worker.stats.backfills >= 1 and r.worker.stats.backfilled > 0
        RESULTS[-1].note += f" ({r.worker.stats.backfilled} backfilled)"


async def test_a_reconnect_frees_the_old_adapter_kept_out_of_full_gc_passes(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """While connected, the adapter is frozen (out of gen-2 scans, publisher/gc_policy.py);
    after a reconnect the old one, cycles and all, is collected: no leak per reconnect."""
    async with rig(redis_server.url, source(duration=3), consumer=False) as r:
        await r.wait_state(ConnState.CONNECTED)
        assert gc.get_freeze_count() > 0
        old = weakref.ref(r.worker._client)
        before = r.worker.stats.reconnects
        r.fx.faults.close_all(abrupt=True)
        await r.wait_reconnected(before)
        assert r.worker._client is not old()
        gc.collect()
        assert old() is None, "the closed adapter is still alive"
        assert gc.get_freeze_count() > 0  # the new one is frozen in turn
    assert gc.get_freeze_count() == 0  # publisher stopped: nothing left frozen


async def test_gc_freeze_off_leaves_the_collector_alone(redis_server: RedisServer) -> None:
    """``supervisor.gc_freeze = false``: for a publisher sharing its process with a bot."""
    gc.unfreeze()
    async with FakeExchange(source(duration=2)) as fx:
        settings = load_settings(
            redis={"url": redis_server.url},
            exchanges=[{"name": "binance", "symbols": SYMBOLS, "url": fx.base_url}],
            supervisor={**SUP, "gc_freeze": False},
        )
        async with Publisher(settings) as pub:
            w = pub.workers["binance"]
            await w.wait_connected(timeout=20)
            async with asyncio.timeout(20):
                while not w.stats.records:
                    await asyncio.sleep(0.05)
            assert gc.get_freeze_count() == 0


async def test_stall_longer_than_heartbeat_is_caught_by_the_watchdog(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    async with rig(redis_server.url, source(duration=6)) as r:
        await fault_then_recover(
            r, "stall 3 s", "`stall(3)`: socket open, pings answered, no data",
            lambda: r.fx.faults.stall(3.0), note="watchdog (heartbeat 2 s)",
        )  # fmt: skip
        states = r.states()
        i = states.index("RECONNECTING")
        assert states[i - 1] == "CONNECTED" and "CONNECTED" in states[i + 1 :]
        assert r.worker.stats.reconnects >= 1
        assert "no frame" in (r.worker.stats.last_error or "")


async def test_malformed_frame_wedges_ccxt_and_only_the_watchdog_notices(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """With the frame guard off (``guard_frames=False``): CCXT's own behaviour, which the
    watchdog is the last line against."""
    loop_errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
    try:
        async with rig(redis_server.url, source(duration=6), guard_frames=False) as r:
            await fault_then_recover(
                r, "malformed frame, guard off", "`send_garbage(kind='malformed')`",
                lambda: r.fx.faults.send_garbage(1, kind="malformed"),
                note="ccxt hangs silently; watchdog reconnects; trades backfilled",
            )  # fmt: skip
            # nothing raised through ccxt: the session ended by our watchdog alone
            assert "no frame" in (r.worker.stats.last_error or "")
    finally:
        loop.set_exception_handler(None)
    # the decode error died inside ccxt's receive callback: only the loop handler saw it
    assert loop_errors, "expected ccxt's decode error at the event loop's exception handler"


@pytest.mark.parametrize("kind", ["malformed", "truncated"])
async def test_bad_frames_are_counted_and_skipped_without_loss(
    redis: aioredis.Redis, redis_server: RedisServer, kind: str
) -> None:
    loop_errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
    try:
        async with rig(redis_server.url, source(duration=3)) as r:
            await asyncio.sleep(0.5)
            t0_ms = time.time() * 1000
            mark = time.time_ns()
            r.fx.faults.send_garbage(3, kind=kind)
            first = await r.first_new_record_ms(mark)
            sent, stored, consumed = await finish(r)
            # three bad frames on every connection the publisher holds (one per channel here)
            assert r.worker.stats.malformed in (3, 6)
            assert r.worker.stats.reconnects == 0 and r.worker.state is ConnState.CONNECTED
            assert stored == sent  # nothing lost: the socket was never given up
            assert any(e.get("event") == "malformed_frame_skipped" for e in r.logs)
            RESULTS.append(
                Result(f"{kind} frames (guard on)", f"`send_garbage(3, kind='{kind}')`",
                       max(0.0, (first - t0_ms) / 1000), sent, stored, consumed,
                       "counted and skipped, no reconnect")
            )  # fmt: skip
    finally:
        loop.set_exception_handler(None)
    assert not loop_errors


async def test_unknown_event_is_ignored(redis: aioredis.Redis, redis_server: RedisServer) -> None:
    async with rig(redis_server.url, source(duration=2)) as r:
        await asyncio.sleep(0.5)
        stored_before = await r.stored()
        t0_ms = time.time() * 1000
        mark = time.time_ns()
        r.fx.faults.send_garbage(3, kind="unknown_event")
        first = await r.first_new_record_ms(mark)
        sent, stored, consumed = await finish(r)
        assert r.worker.stats.reconnects == 0 and r.worker.stats.errors == 0
        assert r.worker.state is ConnState.CONNECTED and stored > stored_before
        assert stored == sent  # nothing lost at all: no socket was broken
        RESULTS.append(
            Result("unknown event type", "`send_garbage(3, kind='unknown_event')`",
                   max(0.0, (first - t0_ms) / 1000), sent, stored, consumed,
                   "ignored, no reconnect")
        )  # fmt: skip


async def test_rate_limited_reconnect_honours_retry_after(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    async with rig(redis_server.url, source()) as r:

        def inject() -> None:
            r.fx.faults.http_error(429, count=1, retry_after=2)  # > backoff_max_s (1 s)
            r.fx.faults.close_all()

        recovery = await fault_then_recover(
            r, "429 on reconnect", "`http_error(429, retry_after=2)` + `close_all()`",
            inject, note="waited Retry-After 2 s (> backoff max 1 s)",
        )  # fmt: skip
        assert r.worker.stats.last_backoff_s >= 2.0
        assert recovery >= 2.0
        waits = [e["retry_in_s"] for e in r.logs if "retry_in_s" in e]
        assert max(waits) >= 2.0
        assert "DDoSProtection" in (r.worker.stats.last_error or "")


async def test_server_error_on_reconnect_is_retried(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    async with rig(redis_server.url, source()) as r:

        def inject() -> None:
            r.fx.faults.http_error(500, count=2)
            r.fx.faults.close_all()

        await fault_then_recover(
            r, "HTTP 500 on reconnect", "`http_error(500, count=2)` + `close_all()`",
            inject, note="2 failed load_markets, then back",
        )  # fmt: skip
        assert r.worker.stats.reconnects >= 3
        assert "OperationFailed" in (r.worker.stats.last_error or "")


async def test_refused_connections_reconnect_when_the_refusal_ends(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    async with rig(redis_server.url, source(duration=5)) as r:

        def inject() -> None:
            r.fx.faults.refuse(2.0)
            r.fx.faults.close_all()

        recovery = await fault_then_recover(
            r, "refused 2 s", "`refuse(2)` + `close_all()`: 503 on REST and handshake",
            inject, note="reconnects within backoff max of the end",
        )  # fmt: skip
        assert recovery >= 2.0
        assert r.worker.stats.reconnects >= 2


# -- bad configuration, bad credentials ------------------------------------------------------
async def test_unknown_symbol_is_dropped_and_the_rest_publish(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    async with rig(redis_server.url, source(), [*SYMBOLS, "NOPE-USDT"], consumer=False) as r:
        await asyncio.sleep(0.5)
        await r.settle()
        assert r.worker.state is ConnState.CONNECTED
        assert list(r.worker.dropped) == ["NOPE-USDT"]
        assert "NOPE-USDT" in r.worker.dropped["NOPE-USDT"]
        assert r.worker.markets == SYMBOLS
        assert any(e.get("event") == "unknown_symbol_dropped" for e in r.logs)
        for s in SYMBOLS:
            assert await r.trade_ids(s)


async def test_all_symbols_unknown_is_failed(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    async with rig(
        redis_server.url, source(), ["NOPE-USDT", "ZZZ-USDT"], consumer=False, wait=False
    ) as r:
        await r.wait_state(ConnState.FAILED)
        assert "unknown symbol" in (r.worker.stats.last_error or "")
        assert "NOPE-USDT" in (r.worker.stats.last_error or "")
        assert r.worker.stats.reconnects == 0
        await asyncio.wait_for(r.pub.wait(), 5)  # the publisher stops: nothing to run


async def test_bad_credentials_are_failed_not_retried(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    def bad_key(fx: FakeExchange) -> None:
        fx.faults.http_error(401, count=1)

    async with rig(
        redis_server.url, source(), consumer=False, wait=False, before_start=bad_key
    ) as r:
        await r.wait_state(ConnState.FAILED)
        assert "AuthenticationError" in (r.worker.stats.last_error or "")
        assert "RECONNECTING" not in r.states()


# -- Redis faults ----------------------------------------------------------------------------
async def test_redis_killed_and_restarted_loses_and_duplicates_nothing() -> None:
    with running_redis("--appendonly", "yes", "--appendfsync", "always") as server:
        src = source(600, duration=5)
        async with rig(server.url, src) as r:
            await asyncio.sleep(1.5)
            t0_ms = time.time() * 1000
            server.kill()  # SIGKILL, mid-write
            await asyncio.sleep(1.5)
            pending_during = r.pub.sink.pending
            server.start()
            mark = time.time_ns()
            first = await r.first_new_record_ms(mark - 1_500_000_000)
            sent, stored, consumed = await finish(r)
            for s in SYMBOLS:
                tick = await r.redis.xrange(stream_key("binance", s, "ticker"))
                recv = [codec.decode_fields(f).recv_ns for _, f in tick]
                assert len(recv) == len(set(recv)), f"{s}: duplicate tickers"
            sink = r.pub.sink.stats
            assert sent == stored, (sent, stored)
            assert consumed == stored
            assert sink.overflow == 0 and pending_during > 0 and sink.write_errors > 0
            assert r.worker.state is ConnState.CONNECTED
            RESULTS.append(
                Result("Redis SIGKILL + restart", "SIGKILL, down 1.5 s, restart (AOF always)",
                       (first - t0_ms) / 1000, sent, stored, consumed,
                       f"{pending_during} spooled; {sink.resend_skipped} not re-sent")
            )  # fmt: skip


async def test_batch_stored_before_the_reply_was_lost_is_not_written_twice() -> None:
    """Redis stored the head of a batch, then the reply was lost: the retry skips it."""
    with running_redis("--appendonly", "yes", "--appendfsync", "always") as server:
        client = aioredis.Redis.from_url(server.url, retry=Retry(NoBackoff(), 0))
        other: Any = aioredis.Redis.from_url(server.url)
        key = stream_key("binance", "BTC/USDT", "trades")
        records = [trade(i, symbol="BTC/USDT") for i in range(40)]
        sink = StreamSink(client, batch_size=100, retry_min_s=1.0, retry_max_s=1.0)
        try:
            async with sink:
                server.kill()
                for rec in records:
                    sink.put(rec)
                async with asyncio.timeout(10):
                    while sink.stats.write_errors == 0:
                        await asyncio.sleep(0.01)
                server.start()
                # what the lost attempt had stored: the first 25 records
                for rec in records[:25]:
                    await other.xadd(key, codec.encode(rec))
                await asyncio.wait_for(sink.drain(), 10)
            entries = await other.xrange(key)
            got = [codec.decode_fields(f) for _, f in entries]
            assert got == records
            assert sink.stats.resend_skipped == 25
        finally:
            await client.aclose()
            await other.aclose()
