"""FakeOkx with OKX's limits on: REST requests per endpoint and window (429, code 50011),
new websocket connections per second (429 on the upgrade), subscribe requests per connection
and window (60014, then the connection is closed), oversized requests (60012, refused).
The raw protocol over aiohttp, and CCXT's real `okx` adapter for the REST answer's mapping."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import ccxt
import ccxt.pro as ccxtpro
import pytest

from fake_exchange import FakeOkx, OkxSyntheticSource
from fake_exchange.okx.limits import OkxLimiter, OkxLimits, Window

pytestmark = pytest.mark.integration

BTC = "BTC-USDT"
WAIT = 10.0


def source() -> OkxSyntheticSource:
    return OkxSyntheticSource([BTC, "ETH-USDT"], rate=50, duration=60, channels=("trades",))


def sub(channel: str = "trades", inst: str = BTC, op: str = "subscribe") -> dict[str, object]:
    return {"op": op, "args": [{"channel": channel, "instId": inst}]}


async def events(ws: aiohttp.ClientWebSocketResponse, n: int) -> list[dict[str, object]]:
    """The next ``n`` event frames (acks, errors), data frames skipped."""
    out: list[dict[str, object]] = []
    async with asyncio.timeout(WAIT):
        while len(out) < n:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"connection ended: {msg.type}")
            if msg.data == "pong":
                continue
            body = msg.json()
            if "event" in body:
                out.append(body)
    return out


def test_windows_count_what_they_let_through() -> None:
    win = Window(2, 1.0)
    assert win.allow(0.0) and win.allow(0.1)
    assert not win.allow(0.2)  # refused, and not counted
    assert win.retry_after(0.2) == pytest.approx(0.8)
    assert win.allow(1.0)  # the first one left the window
    lim = OkxLimiter(OkxLimits(rest_scale=0.1))
    assert [lim.rest("1.2.3.4", "/api/v5/market/tickers", 0.0) for _ in range(3)][:2] == [0, 0]
    assert lim.stats.limited == 1  # 20 a window x 0.1 = 2
    assert lim.rest("5.6.7.8", "/api/v5/market/tickers", 0.0) == 0  # per IP
    with pytest.raises(ValueError):
        OkxLimits(connections_per_s=0)


async def test_rest_past_an_endpoints_rate_is_refused_with_50011_and_ccxt_maps_it() -> None:
    limits = OkxLimits(rest_scale=0.25)  # tickers: 5 a window
    async with FakeOkx(source(), limits=limits) as fx, aiohttp.ClientSession() as http:
        url = f"{fx.base_url}/api/v5/market/ticker?instId={BTC}"
        statuses = [(await http.get(url)).status for _ in range(8)]
        assert statuses == [200] * 5 + [429] * 3
        resp = await http.get(url)
        assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
        assert (await resp.json())["code"] == "50011"
        # another endpoint has its own window
        assert (await http.get(f"{fx.base_url}/api/v5/market/books?instId={BTC}")).status == 200
        ex = ccxtpro.okx(fx.ccxt_config())
        try:
            await ex.load_markets()
            with pytest.raises(ccxt.RateLimitExceeded):
                for _ in range(10):
                    await ex.fetch_ticker("BTC/USDT")
        finally:
            await ex.close()
        stats = fx.limit_stats
        assert stats is not None and stats.limited >= 4


async def test_a_fourth_connection_in_a_second_is_refused() -> None:
    async with FakeOkx(source(), limits=OkxLimits()) as fx, aiohttp.ClientSession() as http:
        opened = []
        refused = 0
        start = time.monotonic()
        for _ in range(4):
            try:
                opened.append(await http.ws_connect(f"{fx.ws_url}/public"))
            except aiohttp.WSServerHandshakeError as e:
                assert e.status == 429
                refused += 1
        within_a_second = time.monotonic() - start < 1.0
        for ws in opened:
            await ws.close()
        if within_a_second:  # a loaded host may spread them over more than a second
            assert (len(opened), refused) == (3, 1)
            assert fx.limit_stats is not None and fx.limit_stats.refused_connections == 1
        await asyncio.sleep(1.0)
        async with http.ws_connect(f"{fx.ws_url}/public") as ws:  # the next second: room
            await ws.send_json(sub())
            assert (await events(ws, 1))[0]["event"] == "subscribe"


async def test_subscribe_requests_past_the_window_get_60014_and_the_connection_closes() -> None:
    limits = OkxLimits(subscribes_per_window=4, subscribe_window_s=60)
    async with FakeOkx(source(), limits=limits) as fx, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{fx.ws_url}/public") as ws:
            for i in range(4):  # subscribe / unsubscribe alternately: each is one request
                await ws.send_json(sub(op="unsubscribe" if i % 2 else "subscribe"))
            await ws.send_str("ping")  # pings are not subscribe requests
            assert [e["event"] for e in await events(ws, 4)] == [
                "subscribe", "unsubscribe", "subscribe", "unsubscribe",
            ]  # fmt: skip
            await ws.send_json(sub())
            (err,) = await events(ws, 1)
            assert (err["event"], err["code"]) == ("error", "60014")
            async with asyncio.timeout(WAIT):
                while (await ws.receive()).type not in (
                    aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING,
                ):  # fmt: skip
                    pass
        stats = fx.limit_stats
        assert stats is not None
        assert (stats.closed_for_subscribes, stats.max_subscribes) == (1, 4)
        # a new connection has a window of its own
        async with http.ws_connect(f"{fx.ws_url}/public") as ws:
            await ws.send_json(sub())
            assert (await events(ws, 1))[0]["event"] == "subscribe"


async def test_an_oversized_request_is_refused_and_the_connection_lives() -> None:
    limits = OkxLimits(max_request_bytes=200)
    async with FakeOkx(source(), limits=limits) as fx, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{fx.ws_url}/public") as ws:
            args = [{"channel": "trades", "instId": BTC}] * 10
            await ws.send_json({"op": "subscribe", "args": args})
            (err,) = await events(ws, 1)
            assert (err["event"], err["code"]) == ("error", "60012")
            assert fx.subscribed() == set()
            await ws.send_json(sub())
            assert (await events(ws, 1))[0]["event"] == "subscribe"
        assert fx.limit_stats is not None and fx.limit_stats.oversized_requests == 1


async def test_without_limits_nothing_is_counted() -> None:
    async with FakeOkx(source()) as fx, aiohttp.ClientSession() as http:
        url = f"{fx.base_url}/api/v5/market/ticker?instId={BTC}"
        assert {(await http.get(url)).status for _ in range(30)} == {200}
        assert fx.limit_stats is None
