"""The real `ccxt.pro.binanceusdm` (not mocked) against the Binance fake's USD-M venue on
127.0.0.1: REST under /fapi/v1, websockets on the /public and /market urls CCXT picks, replay of
BINANCE_FUTURES.jsonl and a synthetic market with mark prices, liquidations and open interest,
faults and limits."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import ccxt
import ccxt.pro as ccxtpro
import pytest

from fake_exchange import FakeExchange, ReplaySource, SyntheticSource, bundled_recording
from fake_exchange.binance_frames import USDM
from fake_exchange.limits import USDM_LIMITS
from fake_exchange.recording import load_recording
from fake_exchange.sources import USDM_DEFAULT_CHANNELS

WAIT = 15.0
PERPS = ["SUSHI/USDT:USDT", "AKRO/USDT:USDT", "KEEP/USDT:USDT", "CTK/USDT:USDT"]


def replay(speed: float = 20.0, **kw: Any) -> ReplaySource:
    return ReplaySource(bundled_recording(USDM), speed=speed, **kw)


def synthetic(total: int | None = 2_000, **kw: Any) -> SyntheticSource:
    return SyntheticSource(["AAA/USDT:USDT", "BBB/USDT:USDT"], rate=400, total=total, seed=5,
                           venue=USDM, channels=USDM_DEFAULT_CHANNELS, **kw)  # fmt: skip


@contextlib.asynccontextmanager
async def usdm(fx: FakeExchange) -> AsyncIterator[Any]:
    ex = ccxtpro.binanceusdm(fx.ccxt_config())
    try:
        yield ex
    finally:
        await ex.close()


@contextlib.asynccontextmanager
async def looping(fn: Callable[[], Awaitable[Any]], sink: list[Any]) -> AsyncIterator[None]:
    """Keep calling a ccxt watch in a task (holds the subscription), collect its results."""

    async def run() -> None:
        while True:
            sink.append(await fn())

    task = asyncio.create_task(run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(pred: Callable[[], bool], timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.02)


def paths(fx: FakeExchange) -> dict[str, str]:
    """Stream -> the url path of the connection holding it."""
    return {s: c.request.path for c in fx._conns.values() for s in c.streams}


def _urls(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [u for v in node.values() for u in _urls(v)]
    return []


async def test_ccxt_loads_linear_markets_from_fapi_and_every_url_points_at_the_fake() -> None:
    async with FakeExchange(replay(), autoplay=False) as fx, usdm(fx) as ex:
        markets = await ex.load_markets()
        info = load_recording(bundled_recording(USDM)).exchange_info
        assert len(markets) == len(info["symbols"]) == len(fx.markets) == 122
        assert sorted(markets) == fx.markets
        sushi = markets["SUSHI/USDT:USDT"]
        assert (sushi["type"], sushi["linear"], sushi["id"]) == ("swap", True, "SUSHIUSDT")
        assert markets["BTC/USDT:USDT-210924"]["type"] == "future"
        host = f"127.0.0.1:{fx.port}"
        assert all(host in u for u in _urls(ex.urls["api"]))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{fx.base_url}/api/v3/exchangeInfo") as resp:  # not spot
                assert resp.status == 404 and (await resp.json())["code"] == -1020


async def test_every_recorded_trade_reaches_ccxt_once_on_the_market_url() -> None:
    async with FakeExchange(replay(), autoplay=False) as fx, usdm(fx) as ex:
        got: list[Any] = []
        params = {"name": "aggTrade"}
        async with looping(lambda: ex.watch_trades_for_symbols(PERPS, params=params), got):
            books: list[Any] = []
            async with looping(lambda: ex.watch_order_book("SUSHI/USDT:USDT"), books):
                streams = [p.split(":")[0].replace("/", "").lower() + "@aggTrade" for p in PERPS]
                await fx.wait_subscribed([*streams, "sushiusdt@depth@100ms"], WAIT)
                where = paths(fx)
                assert where["sushiusdt@aggTrade"].startswith("/market/ws/")
                assert where["sushiusdt@depth@100ms"].startswith("/public/ws/")
                fx.play()
                await fx.wait_done(WAIT)
                sent = [f.payload for f in fx.sent if f.stream.endswith("@aggTrade")]
                assert len(sent) == 51  # every aggTrade of the recording
                await until(lambda: sum(len(b) for b in got) >= len(sent))
                await asyncio.sleep(0.2)
        trades = [t for batch in got for t in batch]
        assert sorted((t["symbol"], t["id"]) for t in trades) == sorted(
            (f"{p['s'].removesuffix('USDT')}/USDT:USDT", str(p["a"])) for p in sent
        )
        # the book: the exchange's own at its last update
        snap = fx.market.depth("SUSHIUSDT", 20)
        last = books[-1]
        assert last["nonce"] == snap["lastUpdateId"]
        assert last["bids"][:20] == [[float(p), float(q)] for p, q in snap["bids"]]


async def test_a_dropped_aggtrade_is_a_gap_in_the_ids_and_rest_still_has_it() -> None:
    async with FakeExchange(replay(), autoplay=False) as fx, usdm(fx) as ex:
        got: list[Any] = []
        params = {"name": "aggTrade"}
        perp = "CTK/USDT:USDT"
        async with looping(lambda: ex.watch_trades_for_symbols([perp], params=params), got):
            await fx.wait_subscribed(["ctkusdt@aggTrade"], WAIT)
            fx.drop("ctkusdt@aggTrade", 1)
            fx.play()
            await fx.wait_done(WAIT)
            await until(lambda: sum(len(b) for b in got) >= 20)
            await asyncio.sleep(0.2)
        ids = [int(t["id"]) for batch in got for t in batch]
        assert fx.dropped == {"ctkusdt@aggTrade": 1} and len(ids) == 20  # of 21 recorded
        rest = await ex.fetch_trades(perp, limit=100)
        all_ids = [int(t["id"]) for t in rest]
        assert len(all_ids) == 21 and all_ids == list(range(all_ids[0], all_ids[0] + 21))
        assert ids == [i for i in all_ids if i != all_ids[0]]  # the first one was dropped


async def test_a_dropped_depth_diff_raises_checksum_error_and_the_next_watch_resyncs() -> None:
    async with FakeExchange(synthetic(), autoplay=False) as fx, usdm(fx) as ex:
        perp = "AAA/USDT:USDT"
        task = asyncio.create_task(ex.watch_order_book(perp))
        await fx.wait_subscribed(["aaausdt@depth@100ms"], WAIT)
        fx.play()
        await asyncio.wait_for(task, WAIT)
        fx.faults.depth_gap(1, perp)
        with pytest.raises(ccxt.ChecksumError):
            async with asyncio.timeout(WAIT):
                while True:
                    await ex.watch_order_book(perp)
        assert fx.faults.depth_dropped == {"aaausdt@depth@100ms": 1}
        await asyncio.wait_for(ex.watch_order_book(perp), WAIT)  # a fresh snapshot
        await fx.wait_done(WAIT)
        snap = fx.market.depth("AAAUSDT", 10)
        await until(lambda: ex.orderbooks[perp]["nonce"] == snap["lastUpdateId"])
        book = ex.orderbooks[perp]
        assert book["bids"][:10] == [[float(p), float(q)] for p, q in snap["bids"]]
        assert book["asks"][:10] == [[float(p), float(q)] for p, q in snap["asks"]]


async def test_mark_prices_liquidations_and_open_interest_are_what_the_fake_sent() -> None:
    async with FakeExchange(synthetic(), autoplay=False) as fx, usdm(fx) as ex:
        marks: list[Any] = []
        liqs: list[Any] = []
        perp = "AAA/USDT:USDT"
        async with (
            looping(lambda: ex.watch_mark_prices([perp]), marks),
            looping(lambda: ex.watch_liquidations_for_symbols([perp]), liqs),
        ):
            await fx.wait_subscribed(["aaausdt@markPrice@1s", "aaausdt@forceOrder"], WAIT)
            assert paths(fx)["aaausdt@markPrice@1s"].startswith("/market/ws/")
            fx.play()
            await fx.wait_done(WAIT)
            sent_m = [f.payload for f in fx.sent if f.stream == "aaausdt@markPrice@1s"]
            sent_l = [f.payload for f in fx.sent if f.stream == "aaausdt@forceOrder"]
            await until(lambda: sum(len(b) for b in liqs) >= len(sent_l))
            await until(lambda: bool(marks) and marks[-1][perp]["info"] == sent_m[-1])
        got_l = [x for batch in liqs for x in batch]
        assert [(x["side"], x["price"], x["contracts"], x["timestamp"]) for x in got_l] == [
            (p["o"]["S"].lower(), float(p["o"]["ap"]), float(p["o"]["q"]), p["o"]["T"])
            for p in sent_l
        ]
        last = sent_m[-1]
        mark = marks[-1][perp]
        assert (mark["markPrice"], mark["indexPrice"]) == (float(last["p"]), float(last["i"]))
        funding = await ex.fetch_funding_rate(perp)
        assert (funding["fundingRate"], funding["fundingTimestamp"]) == (
            float(last["r"]),
            last["T"],
        )
        oi = await ex.fetch_open_interest(perp)
        assert oi["openInterestAmount"] == float(
            fx.market.open_interest["AAAUSDT"][-1]["openInterest"]
        )


async def test_rest_answers_in_usdm_shapes() -> None:
    async with FakeExchange(replay(speed=0), autoplay=False) as fx:
        fx.play()
        await fx.wait_done(WAIT)
        base = f"{fx.base_url}/fapi/v1"
        async with aiohttp.ClientSession() as http:

            async def get(path: str, status: int = 200) -> Any:
                async with http.get(base + path) as resp:
                    assert resp.status == status, path
                    return await resp.json()

            depth = await get("/depth?symbol=SUSHIUSDT&limit=5")
            assert list(depth) == ["lastUpdateId", "E", "T", "bids", "asks"]
            agg = await get("/aggTrades?symbol=SUSHIUSDT&limit=3")
            assert len(agg) == 3 and all("M" not in r for r in agg)
            trades = await get("/trades?symbol=SUSHIUSDT&limit=3")
            assert trades and all("isBestMatch" not in r for r in trades)
            ticker = await get("/ticker/24hr?symbol=SUSHIUSDT")
            assert "bidPrice" not in ticker and ticker["lastPrice"]
            premium = await get("/premiumIndex")
            assert len(premium) == 122 and {"markPrice", "lastFundingRate"} <= premium[0].keys()
            oi = await get("/openInterest?symbol=SUSHIUSDT")
            assert oi["openInterest"] == "0"  # the recording has none: a quiet answer
            klines = await get("/klines?symbol=CTKUSDT&interval=1m")
            assert klines and len(klines[0]) == 12
            assert (await get("/openInterest?symbol=NOPE", 400))["code"] == -1121
            assert (await get("/klines?symbol=CTKUSDT&interval=1s", 400))["code"] == -1120
            assert (await get("/fundingRate?symbol=SUSHIUSDT", 404))["code"] == -1020


async def test_wrong_category_urls_and_usdm_limits_are_refused() -> None:
    async with FakeExchange(replay(), autoplay=False, limits=USDM_LIMITS) as fx:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(f"ws://127.0.0.1:{fx.port}/public/ws") as ws:
                await ws.send_json({"method": "SUBSCRIBE", "params": ["sushiusdt@aggTrade"],
                                    "id": 1})  # fmt: skip
                reply = await ws.receive_json(timeout=WAIT)
                assert reply["error"]["code"] == 2 and "sushiusdt@aggTrade" in reply["error"]["msg"]
                await ws.send_json({"method": "SUBSCRIBE", "params": ["sushiusdt@depth@100ms"],
                                    "id": 2})  # fmt: skip
                assert await ws.receive_json(timeout=WAIT) == {"result": None, "id": 2}
            many = "/".join(f"{s.lower()}@aggTrade" for s in sorted(fx._symbol_ids)[:100])
            many += "/" + "/".join(f"{s.lower()}@kline_1m" for s in sorted(fx._symbol_ids)[:101])
            async with http.get(f"{fx.base_url}/market/stream?streams={many}") as resp:
                assert resp.status == 400  # 201 streams on one connection
            async with http.ws_connect(f"ws://127.0.0.1:{fx.port}/market/ws") as ws:
                for i in range(11):  # 10 messages a second at most
                    await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": i})
                closed = None
                async with asyncio.timeout(WAIT):
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.CLOSE:
                            closed = msg.data
                assert closed == 1008 or ws.close_code == 1008
            statuses = []
            for _ in range(61):  # 40 a call, 2,400 a minute
                async with http.get(f"{fx.base_url}/fapi/v1/ticker/24hr") as resp:
                    statuses.append(resp.status)
                    used = resp.headers.get("X-MBX-USED-WEIGHT-1M")
            assert statuses[:60] == [200] * 60 and statuses[60] == 429 and used == "2400"
        stats = fx.limit_stats
        assert stats is not None
        assert (stats.refused_connections, stats.closed_for_messages, stats.limited) == (1, 1, 1)


async def test_the_cli_serves_usdm_replay_and_synthetic() -> None:
    for extra in (["--speed", "0", "--loop"], ["--synthetic", "2", "--rate", "50"]):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fake_exchange", "--exchange", "binanceusdm", *extra,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), WAIT)).decode().strip()
            assert line.startswith("http://127.0.0.1:")
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{line}/fapi/v1/exchangeInfo") as resp:
                    info = await resp.json()
                assert any(s["symbol"] == "SUSHIUSDT" for s in info["symbols"])
                async with http.get(f"{line}/fapi/v1/premiumIndex") as resp:
                    assert resp.status == 200
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), WAIT) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_the_cli_refuses_a_spot_recording_for_usdm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fake_exchange", "--exchange", "binanceusdm",
        "--recording", str(bundled_recording()),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), WAIT)
    assert proc.returncode != 0 and out == b""  # no url: nothing served
    assert b"the recording holds binance, not binanceusdm" in err
