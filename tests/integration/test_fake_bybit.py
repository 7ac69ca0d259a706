"""The real `ccxt.pro.bybit` (not mocked) against FakeBybit on 127.0.0.1, and the protocol itself
over a raw websocket.

Each test starts its own fake on a free port; the recording (26 s of linear frames for BTC, ETH,
SOL and DOGE) is replayed fast or a small synthetic source runs.
"""

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
import orjson
import pytest

from fake_exchange import BybitReplaySource, BybitSyntheticSource, FakeBybit
from fake_exchange.bybit.recording import bybit_recording, load_bybit_recording
from fake_exchange.levels import LevelBook
from publisher.endpoints import rebase_urls

WAIT = 10.0
BTC = "BTCUSDT"
PERP = "BTC/USDT:USDT"


@contextlib.asynccontextmanager
async def bybit(fx: FakeBybit, **config: Any) -> AsyncIterator[Any]:
    ex = ccxtpro.bybit({**fx.ccxt_config(), **config})
    try:
        yield ex
    finally:
        await ex.close()


def synthetic(*markets: str, **kw: Any) -> BybitSyntheticSource:
    kw.setdefault("rate", 200)
    kw.setdefault("duration", 60)
    return BybitSyntheticSource(list(markets), seed=kw.pop("seed", 1), **kw)


async def until(pred: Callable[[], bool], timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.02)


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


def _urls(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [u for v in node.values() for u in _urls(v)]
    return []


def sent(fx: FakeBybit, category: str, topic: str) -> list[dict[str, Any]]:
    return [f.payload for f in fx.sent if (f.category, f.topic) == (category, topic)]


def recorded_frames(topic: str) -> list[dict[str, Any]]:
    rec = load_bybit_recording(bybit_recording())
    return [f.frame for f in rec.frames if f.frame["topic"] == topic]


def states(frames: list[dict[str, Any]]) -> dict[int, tuple[list[list[str]], list[list[str]]]]:
    """u -> (bids, asks) of the book the frames build, only along unbroken chains."""
    book, out, last = LevelBook("x"), {}, None
    for f in frames:
        data = f["data"]
        if f["type"] == "snapshot":
            book.clear()
        elif last is None or data["u"] != last + 1:
            last = None  # broken chain: nothing is known until the next snapshot
            continue
        book.apply(data["a"], data["b"])
        last = data["u"]
        out[last] = (book.bids(), book.asks())
    return out


# ----------------------------------------------------------------------------- markets and urls


async def test_load_markets_asks_instruments_per_category_and_every_url_points_at_the_fake() -> (
    None
):
    async with FakeBybit(BybitReplaySource(), autoplay=False) as fx, bybit(fx) as ex:
        called: list[str] = []
        fetch = ex.fetch

        async def spy(url: str, *a: Any, **k: Any) -> Any:
            called.append(url)
            return await fetch(url, *a, **k)

        ex.fetch = spy
        markets = await ex.load_markets()
        base = f"{fx.base_url}/v5/market/instruments-info?category="
        assert sorted(called) == sorted(
            [f"{base}spot", f"{base}linear&limit=1000", f"{base}linear&limit=1000&status=PreLaunch"]
        )
        assert len(markets) == 1357
        assert markets["BTC/USDT"]["id"] == markets[PERP]["id"] == BTC
        assert markets[PERP]["swap"] and markets[PERP]["linear"] and markets["BTC/USDT"]["spot"]
        assert {"BTC/USDT", PERP} <= set(fx.markets)
        host = f"{fx.host}:{fx.port}"
        urls = _urls(ex.urls["api"])
        assert len(urls) == 14 and all(host in u for u in urls)


async def test_the_publishers_url_rewrite_reaches_the_same_paths() -> None:
    async with FakeBybit(synthetic("AAA/USDT", "AAA/USDT:USDT")) as fx:
        ex = ccxtpro.bybit({"enableRateLimit": False, "options": fx.ccxt_config()["options"]})
        try:
            ex.urls = {**ex.urls, "api": rebase_urls(ex.urls["api"], fx.base_url)}
            assert ex.urls["api"] == fx.ccxt_config()["urls"]["api"]
            spot = await asyncio.wait_for(ex.watch_ticker("AAA/USDT"), WAIT)
            perp = await asyncio.wait_for(ex.watch_ticker("AAA/USDT:USDT"), WAIT)
            assert (spot["symbol"], perp["symbol"]) == ("AAA/USDT", "AAA/USDT:USDT")
            assert set(ex.clients) == {f"{fx.ws_url}/spot", f"{fx.ws_url}/linear"}
        finally:
            await ex.close()


# ----------------------------------------------------------------------------- websocket data


async def test_the_recording_reaches_ccxt_trades_tickers_and_book() -> None:
    async with FakeBybit(BybitReplaySource(speed=20, symbols=[BTC]), autoplay=False) as fx:
        async with bybit(fx) as ex:
            await ex.load_markets()
            trades: list[Any] = []
            tickers: list[Any] = []
            books: list[Any] = []
            candles: list[Any] = []
            async with (
                looping(lambda: ex.watch_trades(PERP), trades),
                looping(lambda: ex.watch_ticker(PERP), tickers),
                looping(lambda: ex.watch_order_book(PERP), books),
                looping(lambda: ex.watch_ohlcv(PERP, "1m"), candles),
            ):
                topics = [
                    ("linear", f"{t}.{BTC}")
                    for t in ("publicTrade", "tickers", "orderbook.50", "kline.1")
                ]
                await fx.wait_subscribed(topics)
                fx.play()
                await fx.wait_done(WAIT)
                rows = [r for f in sent(fx, "linear", f"publicTrade.{BTC}") for r in f["data"]]
                book_frames = sent(fx, "linear", f"orderbook.50.{BTC}")
                await until(lambda: len({t["id"] for b in trades for t in b}) == len(rows))
                await until(lambda: ex.orderbooks[PERP]["timestamp"] == book_frames[-1]["ts"])
        assert len(rows) == 10  # BTCUSDT's recorded trades, each once
        got = {t["id"]: t for batch in trades for t in batch}
        assert list(got) == [r["i"] for r in rows]
        for r in rows:
            t = got[r["i"]]
            assert (t["symbol"], t["price"], t["amount"], t["timestamp"]) == (
                PERP, float(r["p"]), float(r["v"]), r["T"])  # fmt: skip
            assert t["side"] == r["S"].lower()
        merged: dict[str, Any] = {}
        for f in sent(fx, "linear", f"tickers.{BTC}"):
            merged = dict(f["data"]) if f["type"] == "snapshot" else {**merged, **f["data"]}
        last = ex.tickers[PERP]
        assert last["last"] == float(merged["lastPrice"]) and last["bid"] == float(
            merged["bid1Price"]
        )
        assert book_frames[0]["type"] == "snapshot" and len(book_frames) > 100
        bids, asks = states(book_frames)[book_frames[-1]["data"]["u"]]
        ob = ex.orderbooks[PERP]
        assert ob["bids"] == [[float(p), float(q)] for p, q in bids]
        assert ob["asks"] == [[float(p), float(q)] for p, q in asks]
        assert len(ob["bids"]) == len(ob["asks"]) == 50
        assert ob["nonce"] is None  # ccxt keeps no sequence of Bybit's books
        klines = [k for f in sent(fx, "linear", f"kline.1.{BTC}") for k in f["data"]]
        recorded = [k for f in recorded_frames(f"kline.1.{BTC}") for k in f["data"]]
        assert len(klines) == len(recorded) == 16
        assert all(k["start"] % 60_000 == 0 and k["end"] - k["start"] == 59_999 for k in klines)
        shifts = {k["start"] - r["start"] for k, r in zip(klines, recorded, strict=True)}
        assert len(shifts) == 1  # one candle stays one candle, however fast the replay
        last = klines[-1]
        assert ex.ohlcvs[PERP]["1m"][-1] == [
            last["start"],
            *(float(last[x]) for x in ("open", "high", "low", "close", "volume")),
        ]
        assert len(ex.ohlcvs[PERP]["1m"]) == len({k["start"] for k in recorded})


async def test_one_id_is_two_markets_told_apart_by_the_url() -> None:
    async with FakeBybit(synthetic("AAA/USDT", "AAA/USDT:USDT", channels=("publicTrade",))) as fx:
        async with bybit(fx) as ex:
            spot = await asyncio.wait_for(ex.watch_trades("AAA/USDT"), WAIT)
            perp = await asyncio.wait_for(ex.watch_trades("AAA/USDT:USDT"), WAIT)
            assert {t["symbol"] for t in spot} == {"AAA/USDT"}
            assert {t["symbol"] for t in perp} == {"AAA/USDT:USDT"}
            assert all(t["id"].isdigit() for t in spot) and all("-" in t["id"] for t in perp)
            spot_rows = {r["i"] for f in sent(fx, "spot", "publicTrade.AAAUSDT") for r in f["data"]}
            assert {t["id"] for t in spot} <= spot_rows


async def test_ccxt_applies_a_book_gap_without_noticing() -> None:
    """Why the publisher checks `u` itself: ccxt 4.5.90 raises nothing and keeps a book that
    is not the exchange's."""
    source = synthetic("AAA/USDT:USDT", channels=("orderbook",), total=40, rate=100)
    async with FakeBybit(source, autoplay=False) as fx, bybit(fx) as ex:
        first = asyncio.create_task(ex.watch_order_book("AAA/USDT:USDT"))
        await fx.wait_subscribed([("linear", "orderbook.50.AAAUSDT")])
        await asyncio.wait_for(first, WAIT)
        fx.book_gap(1, "AAAUSDT")
        books: list[Any] = []
        async with looping(lambda: ex.watch_order_book("AAA/USDT:USDT"), books):
            fx.play()
            await fx.wait_done(WAIT)
            frames = sent(fx, "linear", "orderbook.50.AAAUSDT")
            await until(lambda: ex.orderbooks["AAA/USDT:USDT"]["timestamp"] == frames[-1]["ts"])
        [(_, _, dropped)] = fx.dropped_book_updates
        us = [f["data"]["u"] for f in frames]
        assert dropped["data"]["u"] == us[1] - 1  # the snapshot's next one never came
        truth = states(sorted([*frames, dropped], key=lambda f: f["data"]["u"]))
        view = fx.market.views[("linear", "orderbook.50.AAAUSDT")]
        assert truth[us[-1]] == (view.bids, view.asks)
        got = ex.orderbooks["AAA/USDT:USDT"]
        as_floats = [[float(p), float(q)] for p, q in truth[us[-1]][0]]
        assert got["bids"] != as_floats or got["asks"] != [
            [float(p), float(q)] for p, q in truth[us[-1]][1]
        ]  # ccxt's book is not the exchange's, and nothing said so


async def test_ping_pong_keeps_an_idle_connection_alive_and_missing_pongs_time_out() -> None:
    source = synthetic("AAA/USDT:USDT", channels=("publicTrade",))
    async with FakeBybit(source, autoplay=False) as fx:
        async with bybit(fx, streaming={"keepAlive": 150}) as ex:
            pending = asyncio.create_task(ex.watch_trades("AAA/USDT:USDT"))
            await fx.wait_subscribed([("linear", "publicTrade.AAAUSDT")])
            await asyncio.sleep(1.0)  # no data at all: only pings and pongs
            assert fx.pings >= 3 and not pending.done()
            pending.cancel()
        fx.answer_pings = False
        async with bybit(fx, streaming={"keepAlive": 150}) as ex:
            with pytest.raises(ccxt.RequestTimeout):
                await asyncio.wait_for(ex.watch_trades("AAA/USDT:USDT"), WAIT)


async def test_close_all_fails_a_pending_watch_and_the_next_one_resubscribes() -> None:
    source = synthetic("AAA/USDT:USDT", channels=("orderbook",))
    async with FakeBybit(source) as fx, bybit(fx) as ex:
        await asyncio.wait_for(ex.watch_order_book("AAA/USDT:USDT"), WAIT)
        pending = asyncio.create_task(ex.watch_order_book("AAA/USDT:USDT"))
        await asyncio.sleep(0.05)
        fx.faults.close_all()
        with pytest.raises(ccxt.NetworkError):
            for _ in range(50):
                await asyncio.wait_for(pending, WAIT)
                pending = asyncio.create_task(ex.watch_order_book("AAA/USDT:USDT"))
        book = await asyncio.wait_for(ex.watch_order_book("AAA/USDT:USDT"), WAIT)
        snaps = [f for f in fx.sent if f.payload["type"] == "snapshot"]
        assert len({f.conn_id for f in snaps}) == 2  # a new connection, a new snapshot
        assert book["bids"] and book["asks"]


# ----------------------------------------------------------------------------- raw protocol


async def test_websocket_protocol_acks_snapshots_refusals_and_pongs() -> None:
    source = synthetic("AAA/USDT", "AAA/USDT:USDT", channels=("orderbook",))
    async with FakeBybit(source, autoplay=False) as fx, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{fx.ws_url}/linear") as ws:

            async def ask(op: str, *args: str) -> dict[str, Any]:
                await ws.send_str(
                    orjson.dumps({"op": op, "req_id": "r1", "args": list(args)}).decode()
                )
                return dict(orjson.loads((await ws.receive(WAIT)).data))

            ack = await ask("subscribe", "orderbook.50.AAAUSDT", "tickers.AAAUSDT")
            assert ack["success"] is True and ack["op"] == "subscribe" and ack["req_id"] == "r1"
            book, ticker = [orjson.loads((await ws.receive(WAIT)).data) for _ in range(2)]
            assert (book["type"], book["topic"]) == ("snapshot", "orderbook.50.AAAUSDT")
            assert book["data"]["u"] == 1_000_000 and len(book["data"]["b"]) == 25
            assert ticker["type"] == "snapshot" and "openInterestValue" in ticker["data"]
            refused = await ask("subscribe", "publicTrade.AAAUSDT", "orderbook.50.AAAUSDT")
            assert refused["success"] is False
            assert refused["ret_msg"] == "error:already subscribed,topic:orderbook.50.AAAUSDT"
            assert ("linear", "publicTrade.AAAUSDT") not in fx.subscribed()  # the whole batch
            assert (await ask("unsubscribe", "orderbook.50.AAAUSDT"))["success"] is True
            assert (await ask("subscribe", "orderbook.50.AAAUSDT"))["success"] is True
            again = orjson.loads((await ws.receive(WAIT)).data)
            assert again["type"] == "snapshot" and again["data"]["u"] == book["data"]["u"]
            unknown = await ask("subscribe", "orderbook.20.AAAUSDT")
            assert unknown["ret_msg"] == "error:handler not found,topic:orderbook.20.AAAUSDT"
            await ws.send_str('{"op":"ping","req_id":"p"}')
            pong = orjson.loads((await ws.receive(WAIT)).data)
            assert pong["op"] == "pong" and pong["req_id"] == "p"
        async with http.ws_connect(f"{fx.ws_url}/spot") as ws:
            await ws.send_str('{"op":"ping","req_id":"p"}')
            pong = orjson.loads((await ws.receive(WAIT)).data)
            assert (pong["op"], pong["ret_msg"], pong["success"]) == ("ping", "pong", True)
        async with http.get(f"{fx.base_url}/v5/public/inverse") as resp:
            assert resp.status == 404  # only spot and linear are served
        assert fx.pings == 2 and fx.sent[0].payload["topic"] == "orderbook.50.AAAUSDT"


# ----------------------------------------------------------------------------- REST and faults


async def test_rest_answers_from_what_was_published() -> None:
    source = synthetic("AAA/USDT", "AAA/USDT:USDT", total=1200, rate=2000)
    async with FakeBybit(source) as fx, bybit(fx) as ex:
        await fx.wait_done(WAIT)
        linear = [r for r in fx.market.trades[("linear", "AAAUSDT")]]
        spot = [r for r in fx.market.trades[("spot", "AAAUSDT")]]
        assert len(linear) == len(spot) == 200
        got = await ex.fetch_trades("AAA/USDT:USDT", limit=1000)
        # ccxt sorts Bybit's newest-first rows by time (stably: one millisecond's trades come
        # reversed), so compare them as sets of (time, id, price)
        assert sorted((t["timestamp"], t["id"], t["price"]) for t in got) == sorted(
            (r["T"], r["i"], float(r["p"])) for r in linear
        )  # all of them
        got = await ex.fetch_trades("AAA/USDT", limit=1000)
        assert sorted(t["id"] for t in got) == sorted(r["i"] for r in spot[-60:])  # spot: 60
        ticker = await ex.fetch_ticker("AAA/USDT:USDT")
        state = fx.market.ticker("linear", "AAAUSDT")
        assert ticker["last"] == float(state["lastPrice"]) and ticker["bid"] == float(
            state["bid1Price"]
        )
        book = await ex.fetch_order_book("AAA/USDT", 5)
        mirror = fx.market.book("spot", "AAAUSDT")
        assert book["bids"] == [[float(p), float(q)] for p, q in mirror.bids(5)]
        assert ex.milliseconds() - await ex.fetch_time() < 5_000
        async with aiohttp.ClientSession() as http:
            for query, msg in (("category=linear&symbol=NOPE", "params error: symbol invalid"),
                               ("category=inverse&symbol=AAAUSDT", "Illegal category")):  # fmt: skip
                async with http.get(f"{fx.base_url}/v5/market/recent-trade?{query}") as resp:
                    body = await resp.json()
                assert resp.status == 200 and (body["retCode"], body["retMsg"]) == (10001, msg)


@pytest.mark.parametrize(
    ("status", "error"),
    [(429, ccxt.RateLimitExceeded), (500, ccxt.ExchangeError), (403, ccxt.AuthenticationError)],
)
async def test_http_errors_have_bybit_bodies_and_map_to_ccxt_errors(
    status: int, error: type[Exception]
) -> None:
    async with FakeBybit(BybitReplaySource(), autoplay=False) as fx, bybit(fx) as ex:
        fx.faults.http_error(status)
        with pytest.raises(error):
            await ex.load_markets()
        fx.faults.refuse(5)
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await ex.fetch_time()
        fx.faults.clear()
        assert await ex.fetch_time() > 0


async def test_cli_speaks_bybit_and_exits_cleanly_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fake_exchange", "--exchange", "bybit", "--speed", "0", "--loop",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), WAIT)).decode().strip()
        assert line.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession() as http:
            body = await (await http.get(f"{line}/v5/market/time")).json()
            assert body["retCode"] == 0 and int(body["result"]["timeSecond"]) > 0
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), WAIT) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_only_loopback_hosts() -> None:
    with pytest.raises(ValueError):
        FakeBybit(BybitReplaySource(), host="0.0.0.0")
