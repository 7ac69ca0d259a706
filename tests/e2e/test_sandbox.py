"""Testnets end to end: the Binance fake stands in for Binance's testnet (CCXT's sandbox urls,
rebased onto it) -> real ccxt.pro.binance in sandbox mode -> publisher -> Redis -> Consumer;
the OKX fake for OKX's demo trading (its header and ``?brokerId=9999`` websocket urls).

Records land under ``md:{binance-testnet:...}``; a live and a testnet worker of one exchange
in one publisher keep their streams, records and status apart. Whether the real testnets
answer is not tested here (no network).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from consumers import Consumer
from fake_exchange import FakeExchange, FakeOkx, OkxSyntheticSource, SyntheticSource
from fake_exchange.binance_frames import USDM
from marketbus.keys import parse_stream_key
from marketbus.settings import RedisSettings, load_settings
from marketbus_cli.inspect import inspect, worker_health
from publisher.app import Publisher
from tests.e2e.conftest import stream_name
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
FAST = {"status_interval_s": 0.2, "heartbeat_s": 30, "backoff_min_s": 0.2, "backoff_max_s": 1}


def source(total: int, seed: int) -> SyntheticSource:
    return SyntheticSource(SYMBOLS, rate=500, total=total, channels=("aggTrade",), seed=seed)


def sent_trades(fx: FakeExchange, symbol: str) -> list[tuple[str, float, float, int]]:
    sid = symbol.replace("/", "")
    return [
        (str(f.payload["a"]), float(f.payload["p"]), float(f.payload["q"]), f.payload["T"])
        for f in fx.sent
        if f.payload.get("e") == "aggTrade" and f.payload.get("s") == sid
    ]


def stored_trades(c: Consumer, exchange: str, symbol: str) -> list[tuple[str, float, float, int]]:
    rows = c.buffer(exchange, symbol, "trades").table().to_pylist()
    return [(r["id"], r["price"], r["amount"], r["ts_ms"]) for r in rows]


@asynccontextmanager
async def running(
    redis_server: RedisServer, exchanges: list[dict[str, Any]]
) -> AsyncIterator[Publisher]:
    settings = load_settings(redis={"url": redis_server.url}, exchanges=exchanges, supervisor=FAST)
    async with Publisher(settings) as pub:
        yield pub


async def fresh_redis(redis_server: RedisServer) -> aioredis.Redis:
    r = aioredis.Redis.from_url(redis_server.url)
    await r.flushdb()
    return r


async def wait_stored(c: Consumer, expected: int, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while sum(len(b) for b in c.buffers.values()) < expected:
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # anything extra (a duplicate, a stray record) shows up now


async def exchanges_in_redis(r: aioredis.Redis) -> set[str]:
    return {parse_stream_key(k).exchange async for k in r.scan_iter(match="md:{*}:*")}


async def status_of(r: aioredis.Redis, worker: str) -> dict[str, Any]:
    raw = await r.hget(f"mb:status:{worker}", "json")
    assert raw is not None, f"no status for {worker}"
    st: dict[str, Any] = orjson.loads(raw)
    return st


def subscribed(symbols: Sequence[str]) -> list[str]:
    return [stream_name(s, "aggTrade") for s in symbols]


@pytest.mark.parametrize("parser", ["ccxt", "native"])
async def test_a_sandbox_publisher_keys_everything_as_the_testnet(
    redis_server: RedisServer, parser: str
) -> None:
    r = await fresh_redis(redis_server)
    cfg = {"name": "binance", "sandbox": True, "symbols": SYMBOLS, "channels": ["trades"],
           "parser": parser}  # fmt: skip
    async with FakeExchange(source(600, seed=3), autoplay=False) as fx:
        cfg["url"] = fx.base_url
        async with running(redis_server, [cfg]) as pub:
            assert set(pub.workers) == {"binance-testnet"}
            await fx.wait_subscribed(subscribed(SYMBOLS), timeout=20)
            w = pub.workers["binance-testnet"]
            # the session's client is CCXT's binance in sandbox mode, its test urls rebased
            assert w._client.id == "binance" and w._client.isSandboxModeEnabled
            assert w._client.urls["apiBackup"]["public"] == "https://api.binance.com/api/v3"
            assert w._client.urls["api"]["public"] == f"{fx.base_url}/api/v3"
            markets = [f"binance-testnet:{s}" for s in SYMBOLS]
            async with Consumer(redis_server.url, markets, ["trades"], backfill=0,
                                block_ms=100) as c:  # fmt: skip
                fx.play()
                await fx.wait_done(30)
                await wait_stored(c, 600)
                for s in SYMBOLS:
                    assert stored_trades(c, "binance-testnet", s) == sent_trades(fx, s), s
                assert sum(len(b) for b in c.buffers.values()) == 600
                assert c.stats.invalid == 0
            assert w.stats.invalid == 0 and w.trade_ids.gaps == 0
            assert w.status()["native_frames"] == (600 if parser == "native" else 0)
            await asyncio.sleep(0.4)  # a status write
            st = await status_of(r, "binance-testnet")
            assert st["exchange"] == "binance-testnet" and st["state"] == "CONNECTED"
            # what `marketbus health --exchange binance-testnet` and `inspect` read
            rs = RedisSettings(url=redis_server.url)
            ok, why = await worker_health(rs, "binance-testnet", 60.0)
            assert ok, why
            seen = await inspect(rs)
            assert {(x["exchange"], x["symbol"], x["length"]) for x in seen["streams"]} == {
                ("binance-testnet", sym, len(sent_trades(fx, sym))) for sym in SYMBOLS
            }
            assert [x["exchange"] for x in seen["workers"]] == ["binance-testnet"]
    assert await exchanges_in_redis(r) == {"binance-testnet"}
    assert await r.exists("mb:status:binance") == 0
    await r.aclose()


async def test_live_and_testnet_in_one_publisher_stay_apart(redis_server: RedisServer) -> None:
    """Two Binance workers, one live and one in sandbox mode, each on its own fake (different
    trades: other seeds and counts): every stream, record and status says which it is."""
    r = await fresh_redis(redis_server)
    async with AsyncExitStack() as stack:
        live = await stack.enter_async_context(FakeExchange(source(500, seed=1), autoplay=False))
        test = await stack.enter_async_context(FakeExchange(source(300, seed=2), autoplay=False))
        exchanges: list[dict[str, Any]] = [
            {"name": "binance", "symbols": SYMBOLS, "channels": ["trades"], "url": live.base_url},
            {"name": "binance", "sandbox": True, "symbols": SYMBOLS, "channels": ["trades"],
             "url": test.base_url},
        ]  # fmt: skip
        pub = await stack.enter_async_context(running(redis_server, exchanges))
        assert set(pub.workers) == {"binance", "binance-testnet"}
        await live.wait_subscribed(subscribed(SYMBOLS), timeout=20)
        await test.wait_subscribed(subscribed(SYMBOLS), timeout=20)
        markets = [f"{ex}:{s}" for ex in ("binance", "binance-testnet") for s in SYMBOLS]
        c = await stack.enter_async_context(
            Consumer(redis_server.url, markets, ["trades"], backfill=0, block_ms=100)
        )
        live.play()
        test.play()
        await asyncio.gather(live.wait_done(30), test.wait_done(30))
        await wait_stored(c, 800)
        for s in SYMBOLS:
            assert stored_trades(c, "binance", s) == sent_trades(live, s), s
            assert stored_trades(c, "binance-testnet", s) == sent_trades(test, s), s
        assert sent_trades(live, SYMBOLS[0]) != sent_trades(test, SYMBOLS[0])
        assert sum(len(b) for b in c.buffers.values()) == 800
        assert await exchanges_in_redis(r) == {"binance", "binance-testnet"}
        assert {w.name: w.trade_ids.gaps for w in pub.workers.values()} == {
            "binance": 0,
            "binance-testnet": 0,
        }
        await asyncio.sleep(0.4)
        assert (await status_of(r, "binance"))["records"] == 500
        assert (await status_of(r, "binance-testnet"))["records"] == 300
        # the testnet worker goes; the live one and its status never notice
        await pub.remove_exchange("binance-testnet")
        assert (await status_of(r, "binance-testnet"))["state"] == "STOPPED"
        await asyncio.sleep(0.4)
        st = await status_of(r, "binance")
        assert st["state"] == "CONNECTED" and st["reconnects"] == 0
        assert set(pub.workers) == {"binance"}
    await r.aclose()


async def test_okx_demo_trading_through_the_okx_fake(redis_server: RedisServer) -> None:
    r = await fresh_redis(redis_server)
    symbols = ["AAA/USDT", "BBB/USDT"]
    src = OkxSyntheticSource(symbols, rate=400, total=400, seed=5, channels=("trades",))
    async with FakeOkx(src, autoplay=False) as fx:
        cfg = {"name": "okx", "sandbox": True, "symbols": symbols, "channels": ["trades"],
               "url": fx.base_url}  # fmt: skip
        async with running(redis_server, [cfg]) as pub:
            await fx.wait_subscribed([("trades", s.replace("/", "-")) for s in symbols], 20)
            w = pub.workers["okx-testnet"]
            assert w._client.headers["x-simulated-trading"] == "1"  # on every REST request
            assert list(w._client.clients) == [f"ws://127.0.0.1:{fx.port}/ws/v5/public"
                                               "?brokerId=9999"]  # fmt: skip
            markets = [f"okx-testnet:{s}" for s in symbols]
            async with Consumer(redis_server.url, markets, ["trades"], backfill=0,
                                block_ms=100) as c:  # fmt: skip
                fx.play()
                await fx.wait_done(timeout=30)
                await wait_stored(c, 400)
                for s in symbols:
                    rows = c.buffer("okx-testnet", s, "trades").table().to_pylist()
                    sent = [x for f in fx.sent if f.channel == "trades"
                            and f.inst_id == s.replace("/", "-") for x in f.payload["data"]]  # fmt: skip
                    assert [(t["id"], t["price"]) for t in rows] == [
                        (x["tradeId"], float(x["px"])) for x in sent
                    ], s
                assert sum(len(b) for b in c.buffers.values()) == 400
            assert w.status()["native_frames"] == 400  # OKX's native parser, as live
    assert await exchanges_in_redis(r) == {"okx-testnet"}
    await r.aclose()


async def test_binance_usdm_testnet_through_the_usdm_fake(redis_server: RedisServer) -> None:
    """USD-M's testnet urls (``testnet.binancefuture.com/fapi``, ``fstream.binancefuture.com``,
    split into ``/public/ws`` and ``/market/ws`` as live) rebased onto the USD-M fake."""
    r = await fresh_redis(redis_server)
    perp = "AAA/USDT:USDT"
    src = SyntheticSource([perp], rate=300, total=300, seed=6, venue=USDM, channels=("aggTrade",))
    async with FakeExchange(src, autoplay=False) as fx:
        cfg = {"name": "binanceusdm", "sandbox": True, "symbols": [perp],
               "channels": ["trades", "book"], "url": fx.base_url}  # fmt: skip
        async with running(redis_server, [cfg]) as pub:
            await fx.wait_subscribed(["aaausdt@aggTrade", "aaausdt@depth@100ms"], timeout=20)
            w = pub.workers["binanceusdm-testnet"]
            assert w._client.urls["apiBackup"]["fapiPublic"] == "https://fapi.binance.com/fapi/v1"
            # CCXT's connection urls: the category url, then its stream number (/0, /1)
            assert {u.rsplit("/", 1)[0] for u in w._client.clients} == {
                f"ws://127.0.0.1:{fx.port}/market/ws",
                f"ws://127.0.0.1:{fx.port}/public/ws",
            }
            markets = [f"binanceusdm-testnet:{perp}"]
            async with Consumer(redis_server.url, markets, ["trades", "book"], backfill=0,
                                block_ms=100) as c:  # fmt: skip
                fx.play()
                await fx.wait_done(timeout=30)
                async with asyncio.timeout(20):
                    while len(c.buffer("binanceusdm-testnet", perp, "trades")) < 300:
                        await asyncio.sleep(0.05)
                assert stored_trades(c, "binanceusdm-testnet", perp) == [
                    (str(f.payload["a"]), float(f.payload["p"]), float(f.payload["q"]),
                     f.payload["T"]) for f in fx.sent if f.payload.get("e") == "aggTrade"
                ]  # fmt: skip
                assert len(c.buffer("binanceusdm-testnet", perp, "book")) > 0
            assert w.trade_ids.gaps == 0 and w.stats.invalid == 0
    assert await exchanges_in_redis(r) == {"binanceusdm-testnet"}
    await r.aclose()
