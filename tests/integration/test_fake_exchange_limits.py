"""The fake as strict as Binance (``FakeExchange(..., limits=BinanceLimits(...))``): request
weight per window (429 with Retry-After, then a 418 ban for a client that keeps going),
streams per websocket connection, incoming messages per second per connection.

The weight window is driven by a clock the test owns, so no assertion depends on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import ccxt
import ccxt.pro as ccxtpro
import orjson
import pytest

from fake_exchange import FakeExchange, SyntheticSource
from fake_exchange.limits import BinanceLimits, MessageMeter, WeightLimiter, rest_weight

WAIT = 10.0


class Clock:
    """Epoch seconds a test moves by hand."""

    def __init__(self, now: float = 1_700_000_020.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def strict(
    limits: BinanceLimits, clock: Clock | None = None, symbols: int = 3
) -> AsyncIterator[FakeExchange]:
    source = SyntheticSource(symbols, rate=100)
    async with FakeExchange(source, autoplay=False, limits=limits, clock=clock or Clock()) as fx:
        yield fx


def source_ids(fx: FakeExchange) -> list[str]:
    """Symbol ids the synthetic source publishes."""
    return cast(SyntheticSource, fx.source).symbols()


async def get(http: aiohttp.ClientSession, fx: FakeExchange, path: str) -> aiohttp.ClientResponse:
    resp = await http.get(f"{fx.base_url}{path}")
    await resp.read()
    return resp


# ---------------------------------------------------------------------------- pure rules


def test_weights_follow_binance_spot() -> None:
    assert rest_weight("/api/v3/depth", {}) == 5  # default limit 100
    assert [rest_weight("/api/v3/depth", {"limit": str(n)}) for n in (5, 100, 101, 500)] == [
        5,
        5,
        25,
        25,
    ]
    assert rest_weight("/api/v3/depth", {"limit": "1000"}) == 50
    assert rest_weight("/api/v3/depth", {"limit": "5000"}) == 250
    assert rest_weight("/api/v3/exchangeInfo", {}) == 20
    assert rest_weight("/api/v3/ticker/24hr", {"symbol": "BTCUSDT"}) == 2
    assert rest_weight("/api/v3/ticker/24hr", {}) == 80
    assert rest_weight("/api/v3/ticker/24hr", {"symbols": '["A","B"]'}) == 2
    assert rest_weight("/api/v3/ping", {}) == 1


def test_weight_windows_are_fixed_and_a_client_that_keeps_going_is_banned() -> None:
    lim = WeightLimiter(BinanceLimits(weight_per_window=10, window_s=60, ban_after=2, ban_s=120))
    t = 600.0  # a window starts here
    assert lim.charge("a", 5, t).status == 200
    assert lim.charge("a", 5, t + 1).used == 10
    first = lim.charge("a", 1, t + 50)
    assert (first.status, first.retry_after) == (429, 10)  # to the window's end
    assert lim.charge("b", 5, t + 50).status == 200  # per IP
    assert lim.charge("a", 1, t + 51).status == 429
    ban = lim.charge("a", 1, t + 52)
    assert (ban.status, ban.retry_after) == (418, 120)
    # the ban outlives the window; then a fresh window serves again
    assert lim.charge("a", 1, t + 100).status == 418
    assert lim.charge("a", 1, t + 172).status == 200
    # a second ban lasts twice as long
    for _ in range(2):
        assert lim.charge("a", 10, t + 173).status == 429
    assert lim.charge("a", 10, t + 174).retry_after == 240
    assert (lim.stats.limited, lim.stats.bans, lim.stats.max_used) == (4, 2, 10)


def test_message_meter_allows_five_in_any_second() -> None:
    meter = MessageMeter(5)
    assert all(meter.allow(t) for t in (0.0, 0.1, 0.2, 0.3, 0.4))
    assert not meter.allow(0.9)
    again = MessageMeter(5)
    assert all(again.allow(t) for t in (0.0, 0.3, 0.6, 0.9, 1.2, 1.5, 1.8, 2.1))


# ---------------------------------------------------------------------------- REST


async def test_429_with_retry_after_then_418_ban_over_http() -> None:
    clock = Clock(1_700_000_020.0)  # 40 s into a minute
    limits = BinanceLimits(weight_per_window=25, ban_after=2, ban_s=120)
    async with strict(limits, clock) as fx, aiohttp.ClientSession() as http:
        sym = source_ids(fx)[0]
        ok = await get(http, fx, f"/api/v3/depth?symbol={sym}&limit=100")
        assert ok.status == 200 and ok.headers["X-MBX-USED-WEIGHT-1M"] == "5"
        ok = await get(http, fx, "/api/v3/exchangeInfo")
        assert ok.status == 200 and ok.headers["X-MBX-USED-WEIGHT-1M"] == "25"
        limited = await get(http, fx, f"/api/v3/depth?symbol={sym}")
        assert limited.status == 429
        assert limited.headers["Retry-After"] == "20"  # the minute ends in 20 s
        body = orjson.loads(await limited.read())
        assert body["code"] == -1003 and "6000" not in body["msg"] and "25" in body["msg"]
        assert (await get(http, fx, "/api/v3/ping")).status == 429
        banned = await get(http, fx, "/api/v3/ping")  # kept going after two 429s
        assert banned.status == 418 and banned.headers["Retry-After"] == "120"
        assert "banned until" in orjson.loads(await banned.read())["msg"]
        clock.now += 60  # a new minute, still banned
        assert (await get(http, fx, "/api/v3/ping")).status == 418
        clock.now += 61
        assert (await get(http, fx, "/api/v3/ping")).status == 200
        stats = fx.limit_stats
        assert stats is not None and (stats.limited, stats.bans, stats.banned) == (2, 1, 2)


async def test_ccxt_sees_rate_limit_errors_with_retry_after() -> None:
    clock = Clock()
    async with strict(BinanceLimits(weight_per_window=20, ban_after=0), clock) as fx:
        ex = ccxtpro.binance(fx.ccxt_config())
        try:
            await ex.load_markets()  # exchangeInfo: 20, the whole window
            symbol = fx.markets[0]
            with pytest.raises(ccxt.DDoSProtection):  # 418 straight away: ban_after=0
                await ex.fetch_order_book(symbol, 100)
            assert ex.last_response_headers["Retry-After"] == "120"
        finally:
            await ex.close()


async def test_limits_are_off_by_default() -> None:
    async with (
        FakeExchange(SyntheticSource(3, rate=100), autoplay=False) as fx,
        aiohttp.ClientSession() as http,
    ):
        assert fx.limit_stats is None
        for _ in range(50):
            resp = await get(http, fx, "/api/v3/exchangeInfo")
            assert resp.status == 200 and "X-MBX-USED-WEIGHT-1M" not in resp.headers


# ---------------------------------------------------------------------------- websocket


async def _acks(ws: aiohttp.ClientWebSocketResponse, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(WAIT):
        while len(out) < n:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            out.append(orjson.loads(msg.data))
    return out


async def test_a_sixth_message_within_a_second_closes_the_connection() -> None:
    async with strict(BinanceLimits()) as fx, aiohttp.ClientSession() as http:
        stream = source_ids(fx)[0].lower() + "@aggTrade"
        async with http.ws_connect(fx.ws_url) as ws:
            for i in range(6):
                await ws.send_str(
                    orjson.dumps({"method": "SUBSCRIBE", "params": [stream], "id": i}).decode()
                )
            acks = await _acks(ws, 5)
            assert [a["id"] for a in acks] == [0, 1, 2, 3, 4]
            async with asyncio.timeout(WAIT):
                msg = await ws.receive()
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == 1008
        stats = fx.limit_stats
        assert stats is not None and stats.closed_for_messages == 1
        async with asyncio.timeout(WAIT):  # the connection and its streams are gone
            while fx.subscribed_streams():
                await asyncio.sleep(0.01)


async def test_messages_paced_within_the_limit_keep_the_connection() -> None:
    async with strict(BinanceLimits(messages_per_second=2)) as fx, aiohttp.ClientSession() as http:
        stream = source_ids(fx)[0].lower() + "@aggTrade"
        async with http.ws_connect(fx.ws_url) as ws:
            for i in range(4):
                await ws.send_str(
                    orjson.dumps({"method": "SUBSCRIBE", "params": [stream], "id": i}).decode()
                )
                await _acks(ws, 1)
                await asyncio.sleep(0.55)
            assert not ws.closed
        stats = fx.limit_stats
        assert stats is not None and stats.closed_for_messages == 0


def _streams(fx: FakeExchange, n: int) -> list[str]:
    kinds = ("aggTrade", "trade", "ticker", "depth@100ms")
    ids = source_ids(fx)
    return [f"{s.lower()}@{k}" for s in ids for k in kinds][:n]


async def test_more_than_1024_streams_on_one_connection_are_refused() -> None:
    async with strict(BinanceLimits(), symbols=300) as fx, aiohttp.ClientSession() as http:
        streams = _streams(fx, 1_025)
        async with http.ws_connect(fx.ws_url) as ws:
            sub = {"method": "SUBSCRIBE", "params": streams[:1_024], "id": 1}
            await ws.send_str(orjson.dumps(sub).decode())
            assert (await _acks(ws, 1)) == [{"result": None, "id": 1}]
            sub = {"method": "SUBSCRIBE", "params": streams[1_023:], "id": 2}  # one new
            await ws.send_str(orjson.dumps(sub).decode())
            [refused] = await _acks(ws, 1)
            assert refused["id"] == 2 and refused["error"]["code"] == 2
            assert "1024 at most" in refused["error"]["msg"]
            assert len(fx.subscribed_streams()) == 1_024
            await ws.send_str(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 3}).decode())
            [listed] = await _acks(ws, 1)
            assert len(listed["result"]) == 1_024 and streams[1_024] not in listed["result"]
        # a second connection holds its own 1,024
        async with http.ws_connect(fx.ws_url) as ws2:
            sub = {"method": "SUBSCRIBE", "params": streams[1_024:], "id": 1}
            await ws2.send_str(orjson.dumps(sub).decode())
            assert (await _acks(ws2, 1)) == [{"result": None, "id": 1}]
        stats = fx.limit_stats
        assert stats is not None and stats.refused_subscriptions == 1


async def test_a_combined_url_naming_too_many_streams_is_refused() -> None:
    limits = BinanceLimits(streams_per_connection=10)
    async with strict(limits, symbols=5) as fx, aiohttp.ClientSession() as http:
        names = "/".join(_streams(fx, 11))
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(f"{fx.base_url}/stream?streams={names}")
        assert info.value.status == 400
        ten = "/".join(_streams(fx, 10))
        async with http.ws_connect(f"{fx.base_url}/stream?streams={ten}"):
            await fx.wait_subscribed(_streams(fx, 10), timeout=WAIT)
        stats = fx.limit_stats
        assert stats is not None and stats.refused_connections == 1
