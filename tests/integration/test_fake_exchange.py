"""The real `ccxt.pro.binance` (not mocked) against FakeExchange on 127.0.0.1.

Each test starts its own fake on a free port; the bundled recording is replayed fast (speed 20
or 0), so the whole file runs in a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import ccxt
import ccxt.pro as ccxtpro
import pytest

from fake_exchange import FakeExchange, ReplaySource, SyntheticSource, bundled_recording
from fake_exchange import binance_frames as bf

WAIT = 10.0


@contextlib.asynccontextmanager
async def fake(
    speed: float = 20.0, autoplay: bool = False, **kw: Any
) -> AsyncIterator[FakeExchange]:
    async with FakeExchange(
        ReplaySource(bundled_recording(), speed=speed, **kw), autoplay=autoplay
    ) as fx:
        yield fx


@contextlib.asynccontextmanager
async def binance(fx: FakeExchange, **options: Any) -> AsyncIterator[Any]:
    config = fx.ccxt_config()
    config["options"].update(options)
    ex = ccxtpro.binance(config)
    try:
        yield ex
    finally:
        await ex.close()


async def until(pred: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll a condition on ccxt's caches (ccxt offers no event to wait on)."""
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


async def test_load_markets_and_every_url_points_at_the_fake() -> None:
    async with fake() as fx, binance(fx) as ex:
        markets = await ex.load_markets()
        for sym in ("NKN/USDT", "BLZ/ETH", "LRC/BTC", "RUNE/EUR", "BTC/USDT"):
            assert sym in markets and markets[sym]["spot"]
        assert markets["NKN/USDT"]["precision"]["price"] == 0.0001
        assert "NKN/USDT" in fx.markets
        host = f"{fx.host}:{fx.port}"
        api_urls = _urls(ex.urls["api"])
        assert api_urls and all(host in u for u in api_urls), api_urls


async def test_watch_trades_and_tickers_receive_what_the_fake_sent() -> None:
    async with fake(speed=20) as fx, binance(fx) as ex:
        await ex.load_markets()
        trades: list[Any] = []
        tickers: list[Any] = []
        syms = ["NKN/USDT", "LRC/BTC"]
        async with (
            looping(lambda: ex.watch_trades_for_symbols(syms, params={"name": "aggTrade"}), trades),
            looping(lambda: ex.watch_tickers(syms, {"name": "ticker"}), tickers),
        ):
            await fx.wait_subscribed(
                ["nknusdt@aggTrade", "lrcbtc@aggTrade", "nknusdt@ticker", "lrcbtc@ticker"]
            )
            fx.play()
            await fx.wait_done(WAIT)
            sent_trades = [f.payload for f in fx.sent if f.stream.endswith("@aggTrade")]
            sent_tickers = [f.payload for f in fx.sent if f.stream.endswith("@ticker")]
            await until(
                lambda: (
                    len(ex.trades.get("LRC/BTC", [])) + len(ex.trades.get("NKN/USDT", []))
                    == len(sent_trades)
                )
            )
        assert len(sent_trades) == 2
        got = {t["id"]: t for batch in trades for t in batch}
        assert set(got) == {str(p["a"]) for p in sent_trades}
        for p in sent_trades:
            t = got[str(p["a"])]
            assert t["price"] == float(p["p"]) and t["amount"] == float(p["q"])
            assert t["timestamp"] == p["T"]
            assert t["side"] == ("sell" if p["m"] else "buy")
        # every ticker ccxt handed over is one the fake sent, in order; the last one is current
        assert sent_tickers and tickers
        infos = [t["info"] for batch in tickers for t in batch.values()]
        it = iter(sent_tickers)
        assert all(any(info == s for s in it) for info in infos)
        last_nkn = [p for p in sent_tickers if p["s"] == "NKNUSDT"][-1]
        tk = ex.tickers["NKN/USDT"]
        assert tk["info"] == last_nkn
        assert tk["bid"] == float(last_nkn["b"]) and tk["ask"] == float(last_nkn["a"])
        assert tk["last"] == float(last_nkn["c"]) and tk["baseVolume"] == float(last_nkn["v"])


async def test_watch_order_book_syncs_with_snapshot_and_depth() -> None:
    async with fake(speed=20) as fx, binance(fx) as ex:
        await ex.load_markets()
        first = asyncio.create_task(ex.watch_order_book("NKN/USDT"))
        await fx.wait_subscribed(["nknusdt@depth@100ms"])
        fx.play()
        book = await asyncio.wait_for(first, WAIT)
        books: list[Any] = []
        async with looping(lambda: ex.watch_order_book("NKN/USDT"), books):
            await fx.wait_done(WAIT)
            last_u = [f.payload["u"] for f in fx.sent if f.stream == "nknusdt@depth@100ms"][-1]
            await until(lambda: ex.orderbooks["NKN/USDT"]["nonce"] == last_u)
        book = ex.orderbooks["NKN/USDT"]
        async with aiohttp.ClientSession() as http:
            resp = await http.get(f"{fx.base_url}/api/v3/depth?symbol=NKNUSDT&limit=5")
            snap = await resp.json()
        assert snap["lastUpdateId"] == book["nonce"] == last_u
        assert [[float(p), float(q)] for p, q in snap["bids"]] == book["bids"][:5]
        assert [[float(p), float(q)] for p, q in snap["asks"]] == book["asks"][:5]


async def test_send_burst_continues_ids_and_is_received_and_backfillable() -> None:
    async with fake(speed=0) as fx, binance(fx, tradesLimit=50_000) as ex:
        await ex.load_markets()
        trades: list[Any] = []
        syms = ["NKN/USDT", "BLZ/ETH"]
        async with looping(
            lambda: ex.watch_trades_for_symbols(syms, params={"name": "aggTrade"}), trades
        ):
            await fx.wait_subscribed(["nknusdt@aggTrade", "blzeth@aggTrade"])
            fx.play()
            await fx.wait_done(WAIT)
            frames = await fx.send_burst(syms, 4000)
            await until(lambda: len(ex.trades.get("BLZ/ETH", [])) == 2000)
            await until(lambda: len(ex.trades.get("NKN/USDT", [])) == 2001)
        nkn_ids = [int(t["id"]) for t in ex.trades["NKN/USDT"]]
        assert nkn_ids == list(range(15683430, 15683430 + 2001))  # recorded one, then the burst
        blz_ids = [int(t["id"]) for t in ex.trades["BLZ/ETH"]]
        assert blz_ids == list(range(blz_ids[0], blz_ids[0] + 2000))
        burst_sent = [f.payload for f in fx.sent if f.stream.endswith("@aggTrade")][-4000:]
        assert burst_sent == frames
        async with aiohttp.ClientSession() as http:
            url = f"{fx.base_url}/api/v3/aggTrades?symbol=NKNUSDT&fromId=15683431&limit=1000"
            rows = await (await http.get(url)).json()
        assert [r["a"] for r in rows] == list(range(15683431, 15683431 + 1000))


@pytest.mark.parametrize("abrupt", [True, False])
async def test_close_all_fails_a_pending_watch(abrupt: bool) -> None:
    async with fake() as fx, binance(fx) as ex:
        await ex.load_markets()
        pending = asyncio.create_task(
            ex.watch_trades_for_symbols(["NKN/USDT"], params={"name": "aggTrade"})
        )
        await fx.wait_subscribed(["nknusdt@aggTrade"])
        assert fx.faults.close_all(abrupt=abrupt) == 1
        with pytest.raises(ccxt.NetworkError):
            await asyncio.wait_for(pending, WAIT)
        await until(lambda: not fx.subscribed_streams())


async def test_stall_keeps_the_socket_open_and_sends_nothing() -> None:
    source = SyntheticSource(["BTC/USDT"], rate=500, duration=5, channels=("ticker",))
    async with FakeExchange(source) as fx, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{fx.base_url}/stream?streams=btcusdt@ticker") as ws:
            await until(lambda: len(fx.sent) > 20)
            fx.faults.stall(0.6)
            await asyncio.sleep(0.05)
            before = len(fx.sent)
            await asyncio.sleep(0.4)
            assert len(fx.sent) == before
            assert not ws.closed
            await ws.ping()
            await until(lambda: len(fx.sent) > before + 20, timeout=3)
            assert not ws.closed


async def test_garbage_frames_arrive_in_order_on_the_wire() -> None:
    async with fake() as fx, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{fx.ws_url}/1") as ws:
            await ws.send_json({"method": "SUBSCRIBE", "params": ["nknusdt@aggTrade"], "id": 1})
            assert await ws.receive_json(timeout=WAIT) == {"result": None, "id": 1}
            fx.faults.send_garbage(1, "truncated")
            fx.faults.send_garbage(1, "malformed")
            fx.faults.send_garbage(1, "unknown_event")
            texts = [await ws.receive_str(timeout=WAIT) for _ in range(3)]
            for bad in texts[:2]:
                with pytest.raises(json.JSONDecodeError):
                    json.loads(bad)
            assert json.loads(texts[2])["e"] == "fakeExchangeUnknown"
            await fx.send_burst(["NKN/USDT"], 1)
            assert (await ws.receive_json(timeout=WAIT))["e"] == "aggTrade"


async def test_ccxt_ignores_an_unknown_event_and_keeps_streaming() -> None:
    async with fake() as fx, binance(fx) as ex:
        await ex.load_markets()
        pending = asyncio.create_task(
            ex.watch_trades_for_symbols(["NKN/USDT"], params={"name": "aggTrade"})
        )
        await fx.wait_subscribed(["nknusdt@aggTrade"])
        fx.faults.send_garbage(3, "unknown_event")
        [frame] = await fx.send_burst(["NKN/USDT"], 1)
        trades = await asyncio.wait_for(pending, WAIT)
        assert trades[-1]["id"] == str(frame["a"])


async def test_http_error_429_raises_ddos_protection_with_retry_after() -> None:
    async with fake() as fx, binance(fx) as ex:
        fx.faults.http_error(status=429, count=1, retry_after=7)
        with pytest.raises(ccxt.DDoSProtection):  # RateLimitExceeded's parent
            await ex.load_markets()
        await ex.load_markets()  # count=1: the next call is served
        fx.faults.http_error(status=418, count=1, retry_after=3)
        async with aiohttp.ClientSession() as http:
            resp = await http.get(f"{fx.base_url}/api/v3/ping")
            assert resp.status == 418 and resp.headers["Retry-After"] == "3"
            assert (await resp.json())["code"] == -1003
        fx.faults.http_error(status=500)
        with pytest.raises(ccxt.OperationFailed):  # binance maps code -1001 to it
            await ex.fetch_order_book("NKN/USDT")
        assert (await ex.fetch_order_book("NKN/USDT"))["bids"]


async def test_refuse_fails_connects_then_recovers() -> None:
    async with fake() as fx:
        fx.faults.refuse(0.5)
        async with binance(fx) as ex:
            with pytest.raises(ccxt.ExchangeNotAvailable):
                await ex.load_markets()
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await http.ws_connect(f"{fx.ws_url}/0")
            assert err.value.status == 503
        await asyncio.sleep(0.6)
        async with binance(fx) as ex:
            await ex.load_markets()
            pending = asyncio.create_task(
                ex.watch_trades_for_symbols(["NKN/USDT"], params={"name": "aggTrade"})
            )
            await fx.wait_subscribed(["nknusdt@aggTrade"])
            fx.faults.refuse(5)  # existing connections stay up
            [frame] = await fx.send_burst(["NKN/USDT"], 1)
            assert (await asyncio.wait_for(pending, WAIT))[-1]["id"] == str(frame["a"])
            fx.faults.clear()


async def test_refused_websocket_makes_ccxt_watch_raise_network_error() -> None:
    async with fake() as fx, binance(fx) as ex:
        await ex.load_markets()
        fx.faults.refuse(5)
        with pytest.raises(ccxt.NetworkError):
            await asyncio.wait_for(ex.watch_ticker("NKN/USDT", {"name": "ticker"}), WAIT)


async def test_combined_stream_with_a_plain_aiohttp_reader() -> None:
    streams = ["nknusdt@bookTicker", "nknusdt@ticker", "lrcbtc@depth@100ms"]
    async with fake(speed=0) as fx, aiohttp.ClientSession() as http:
        url = f"{fx.base_url}/stream?streams={'/'.join(streams)}"
        async with http.ws_connect(url) as ws:
            await fx.wait_subscribed(streams)
            fx.play()
            await fx.wait_done(WAIT)
            mine = [f for f in fx.sent if f.stream in streams]
            got = [await ws.receive_json(timeout=WAIT) for _ in mine]
        assert len({f.conn_id for f in mine}) == 1
        assert got == [{"stream": f.stream, "data": f.payload} for f in mine]
        assert {g["stream"] for g in got} == set(streams)


async def test_raw_protocol_unknown_symbol_list_and_unsubscribe() -> None:
    async with fake() as fx, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{fx.ws_url}/0") as ws:
            await ws.send_json({"method": "SUBSCRIBE", "params": ["zzzusdt@trade"], "id": 1})
            err = await ws.receive_json(timeout=WAIT)
            assert err["id"] == 1 and err["error"]["code"] == 2
            await ws.send_json(
                {"method": "SUBSCRIBE", "params": ["nknusdt@trade", "blzeth@aggTrade"], "id": 2}
            )
            assert await ws.receive_json(timeout=WAIT) == {"result": None, "id": 2}
            await ws.send_json({"method": "UNSUBSCRIBE", "params": ["nknusdt@trade"], "id": 3})
            assert await ws.receive_json(timeout=WAIT) == {"result": None, "id": 3}
            await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 4})
            assert await ws.receive_json(timeout=WAIT) == {"result": ["blzeth@aggTrade"], "id": 4}
            await fx.send_burst(["BLZ/ETH"], 1)
            assert (await ws.receive_json(timeout=WAIT))["s"] == "BLZETH"  # raw: no envelope
        resp = await http.get(f"{fx.base_url}/api/v3/nothing")
        assert resp.status == 404 and "code" in await resp.json()


async def test_ccxt_subscribe_error_is_raised() -> None:
    async with fake() as fx, binance(fx) as ex:
        await ex.load_markets()
        with pytest.raises(ccxt.BaseError):
            await asyncio.wait_for(
                ex.watch_trades_for_symbols(["NKN/USDT"], params={"name": "nope"}), WAIT
            )


async def test_synthetic_source_symbols_are_served_and_streamed() -> None:
    source = SyntheticSource(["BTC/USDT", "FOO/USDT"], rate=400, duration=2.0)
    async with FakeExchange(source, autoplay=False) as fx, binance(fx) as ex:
        markets = await ex.load_markets()
        assert "FOO/USDT" in markets and "FOO/USDT" in fx.markets
        pending = asyncio.create_task(ex.watch_tickers(["FOO/USDT"], {"name": "ticker"}))
        await fx.wait_subscribed(["foousdt@ticker"])
        fx.play()
        tickers = await asyncio.wait_for(pending, WAIT)
        sent = [f.payload for f in fx.sent if f.stream == "foousdt@ticker"]
        assert tickers["FOO/USDT"]["info"] == sent[0]


async def test_cli_prints_url_first_and_exits_cleanly_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fake_exchange",
        "--speed",
        "0",
        "--loop",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), WAIT)).decode().strip()
        assert line.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession() as http:
            assert (await (await http.get(f"{line}/api/v3/ping")).json()) == {}
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), WAIT) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_looping_replay_keeps_the_order_book_in_sync_across_passes() -> None:
    async with fake(speed=30, autoplay=True, loop=True, loop_gap=0.3) as fx, binance(fx) as ex:
        await ex.load_markets()
        books: list[Any] = []
        pass_end = 499870179  # last depth u of NKNUSDT in the recording
        async with looping(lambda: ex.watch_order_book("NKN/USDT"), books):
            await until(lambda: bool(books) and books[-1]["nonce"] > pass_end + 50, timeout=WAIT)
        nonces = [b["nonce"] for b in books]
        assert nonces == sorted(nonces)
        depth = [f.payload for f in fx.sent if f.stream == "nknusdt@depth@100ms"]
        assert depth[-1]["u"] > pass_end
        assert all(b["U"] == a["u"] + 1 for a, b in itertools.pairwise(depth))


# ----------------------------------------------------------------------------- klines, REST, switches

Q8 = Decimal("0.00000001")


def _ohlcv(k: dict[str, Any]) -> list[Any]:
    """What ccxt makes of a kline (ws `k` object)."""
    return [k["t"], float(k["o"]), float(k["h"]), float(k["l"]), float(k["c"]), float(k["v"])]


def _recomputed(trades: list[dict[str, Any]]) -> dict[str, Any]:
    """A kline's values from its trades with exact decimals (independent of the fake's code)."""
    ps = [Decimal(t["p"]) for t in trades]
    qs = [Decimal(t["q"]) for t in trades]
    return {
        "o": trades[0]["p"],
        "h": f"{max(ps):f}",
        "l": f"{min(ps):f}",
        "c": trades[-1]["p"],
        "v": f"{sum(qs, Decimal(0)).quantize(Q8):f}",
        "q": f"{sum((p * q for p, q in zip(ps, qs, strict=True)), Decimal(0)).quantize(Q8):f}",
        "n": len(trades),
        "f": trades[0]["f"],
        "L": trades[-1]["l"],
    }


def synthetic(symbols: list[str], websocket: bool = True, **kw: Any) -> FakeExchange:
    return FakeExchange(SyntheticSource(symbols, **kw), autoplay=False, websocket=websocket)


async def test_watch_ohlcv_gets_the_replayed_klines_and_fetch_ohlcv_agrees() -> None:
    async with fake(speed=20) as fx, binance(fx) as ex:
        await ex.load_markets()
        pending = asyncio.create_task(ex.watch_ohlcv("NKN/USDT", "1m"))
        await fx.wait_subscribed(["nknusdt@kline_1m"])
        fx.play()
        candles = await asyncio.wait_for(pending, WAIT)
        await fx.wait_done(WAIT)
        [sent] = [f.payload for f in fx.sent if f.stream == "nknusdt@kline_1m"]
        assert candles == [_ohlcv(sent["k"])]
        assert await ex.fetch_ohlcv("NKN/USDT", "1m") == candles
        assert await ex.fetch_ohlcv("NKN/USDT", "1m", since=sent["k"]["t"] + 1) == []


async def test_synthetic_klines_over_ccxt_agree_with_the_trades_sent() -> None:
    sym = "BTC/USDT"
    async with (
        synthetic([sym], rate=150, duration=3.4, channels=("aggTrade",), kline_update=0.2) as fx,
        binance(fx, streamLimits={"spot": 1}, tradesLimit=10_000) as ex,  # one socket: one order
    ):
        await ex.load_markets()
        seen: list[Any] = []
        async with (
            looping(lambda: ex.watch_trades(sym, params={"name": "aggTrade"}), seen),
            looping(lambda: ex.watch_ohlcv(sym, "1s"), seen),
            looping(lambda: ex.watch_ohlcv(sym, "1m"), seen),
        ):
            await fx.wait_subscribed(["btcusdt@aggTrade", "btcusdt@kline_1s", "btcusdt@kline_1m"])
            fx.play()
            await fx.wait_done(WAIT)
            frames = [(f.stream, f.payload) for f in fx.sent]
            last = {(p["k"]["i"], p["k"]["t"]): p["k"] for s, p in frames if "@kline_" in s}
            await until(
                lambda: all(
                    ex.ohlcvs[sym][i][-1] == _ohlcv(k)
                    for (i, t), k in last.items()
                    if t == max(tt for ii, tt in last if ii == i)
                )
            )
        trades: list[dict[str, Any]] = []
        finals: dict[str, int] = {}
        for stream, p in frames:
            if stream.endswith("@aggTrade"):
                trades.append(p)
            elif "@kline_" in stream:
                k = p["k"]
                mine = [t for t in trades if k["t"] <= t["T"] <= k["T"]]
                if mine:
                    assert {key: k[key] for key in _recomputed(mine)} == _recomputed(mine)
                else:  # pushed as its interval opened, before its first trade: empty, as
                    # Binance shows one (o=h=l=c=the last price, no volume, ids -1)
                    last_price = Decimal(trades[-1]["p"])
                    assert {Decimal(k[x]) for x in "ohlc"} == {last_price}, k
                    assert (k["n"], Decimal(k["v"]), k["f"], k["L"]) == (0, 0, -1, -1), k
                finals[k["i"]] = finals.get(k["i"], 0) + k["x"]
        # every second with trades is closed, except perhaps the one the play ended in; a
        # minute boundary may fall inside the 3.4 s too
        seconds = len({t["T"] // 1000 for t in trades})
        assert seconds - 1 <= finals.get("1s", 0) <= seconds, (finals, seconds)
        assert finals.get("1m", 0) <= 1
        for (interval, _), k in last.items():  # ccxt's cache holds the last frame of each
            assert _ohlcv(k) in ex.ohlcvs[sym][interval]
        closed = [_ohlcv(k) for (i, _), k in last.items() if i == "1s" and k["x"]]
        rest = await ex.fetch_ohlcv(sym, "1s", limit=100)
        assert rest[: len(closed)] == closed
        [minute] = [
            r for r in await ex.fetch_ohlcv(sym, "1m") if r[0] == rest[0][0] // 60_000 * 60_000
        ]
        in_minute = [r[5] for r in rest if minute[0] <= r[0] < minute[0] + 60_000]
        assert minute[5] == pytest.approx(sum(in_minute))


async def test_fetch_trades_tickers_and_ohlcv_over_rest_equal_the_websocket() -> None:
    syms = ["BTC/USDT", "ETH/USDT"]
    async with (
        synthetic(syms, rate=400, duration=1.5, channels=("aggTrade", "trade", "ticker")) as fx,
        binance(fx, tradesLimit=10_000) as ex,
        binance(fx, tradesLimit=10_000) as ex2,  # one client cannot watch trade and aggTrade
    ):
        await ex.load_markets()
        await ex2.load_markets()
        got: list[Any] = []
        async with (
            looping(lambda: ex.watch_trades_for_symbols(syms, params={"name": "aggTrade"}), got),
            looping(lambda: ex2.watch_trades_for_symbols(syms), got),  # @trade
            looping(lambda: ex.watch_tickers(syms, {"name": "ticker"}), got),
        ):
            await fx.wait_subscribed(["btcusdt@aggTrade", "btcusdt@trade", "btcusdt@ticker"])
            fx.play()
            await fx.wait_done(WAIT)
        sent = [f.payload for f in fx.sent if f.payload["s"] == "BTCUSDT"]
        aggs = [p for p in sent if p["e"] == "aggTrade"]
        raw = [p for p in sent if p["e"] == "trade"]
        tickers = [p for p in sent if p["e"] == "24hrTicker"]
        assert len(aggs) == len(raw) == 100

        def same(trade: dict[str, Any], p: dict[str, Any], id_key: str) -> bool:
            return (trade["id"], trade["price"], trade["amount"], trade["timestamp"]) == (
                str(p[id_key]),
                float(p["p"]),
                float(p["q"]),
                p["T"],
            ) and trade["side"] == ("sell" if p["m"] else "buy")

        # fetch_trades on spot: GET /api/v3/aggTrades (options.fetchTradesMethod unset)
        latest = await ex.fetch_trades("BTC/USDT", limit=30)
        assert len(latest) == 30 and all(map(same, latest, aggs[-30:], ["a"] * 30))
        since = aggs[40]["T"]  # startTime=since, endTime=since+1h
        page = await ex.fetch_trades("BTC/USDT", since=since, limit=20)
        want = [p for p in aggs if p["T"] >= since][:20]
        assert all(map(same, page, want, ["a"] * 20)) and len(page) == 20
        by_id = await ex.fetch_trades("BTC/USDT", limit=5, params={"fromId": aggs[10]["a"]})
        assert all(map(same, by_id, aggs[10:15], ["a"] * 5))
        recent = await ex.fetch_trades("BTC/USDT", limit=25, params={"method": "publicGetTrades"})
        assert all(map(same, recent, raw[-25:], ["t"] * 25)) and len(recent) == 25

        # fetch_tickers: GET /api/v3/ticker/24hr (symbols=["BTCUSDT","ETHUSDT"] when given)
        for fetched in (await ex.fetch_tickers(syms), await ex.fetch_tickers()):
            assert set(fetched) == set(syms)
            tk = fetched["BTC/USDT"]
            assert tk["info"] == bf.rest_ticker(tickers[-1])
            assert (tk["last"], tk["bid"], tk["baseVolume"]) == (
                float(tickers[-1]["c"]),
                float(tickers[-1]["b"]),
                float(tickers[-1]["v"]),
            )
        assert (await ex.fetch_ticker("BTC/USDT"))["info"] == bf.rest_ticker(tickers[-1])
        assert ex.tickers["BTC/USDT"]["last"] == float(tickers[-1]["c"])

        # fetch_ohlcv: GET /api/v3/klines, candles from the same trades
        rows = await ex.fetch_ohlcv("BTC/USDT", "1m")
        assert sum(r[5] for r in rows) == pytest.approx(sum(float(p["q"]) for p in aggs))
        assert rows[-1][4] == float(aggs[-1]["p"])


async def test_websocket_off_refuses_watches_while_rest_keeps_a_moving_market() -> None:
    source = SyntheticSource(["BTC/USDT"], rate=300, channels=("aggTrade", "ticker"))
    async with FakeExchange(source, websocket=False) as fx:
        async with binance(fx) as ex:
            await ex.load_markets()
            with pytest.raises(ccxt.NetworkError):
                await asyncio.wait_for(ex.watch_ticker("BTC/USDT", {"name": "ticker"}), WAIT)
            first = (await ex.fetch_tickers(["BTC/USDT"]))["BTC/USDT"]
            trades = await ex.fetch_trades("BTC/USDT", limit=1000)
            await asyncio.sleep(0.3)
            later = (await ex.fetch_tickers(["BTC/USDT"]))["BTC/USDT"]
            more = await ex.fetch_trades("BTC/USDT", limit=1000)
            assert later["baseVolume"] > first["baseVolume"]
            assert int(more[-1]["id"]) > int(trades[-1]["id"])
            assert later["info"]["lastId"] <= int(more[-1]["id"])  # one id per trade here
            assert (await ex.fetch_ohlcv("BTC/USDT", "1s"))[-1][0] > 0
            assert not fx.sent
        fx.websocket_enabled = True
        async with binance(fx) as ex:
            await ex.load_markets()
            pending = asyncio.create_task(ex.watch_ticker("BTC/USDT", {"name": "ticker"}))
            assert (await asyncio.wait_for(pending, WAIT))["symbol"] == "BTC/USDT"
            pending = asyncio.create_task(ex.watch_ticker("BTC/USDT", {"name": "ticker"}))
            await asyncio.sleep(0)
            fx.websocket_enabled = False  # also closes the open sockets
            with pytest.raises(ccxt.NetworkError):
                while True:  # a ticker may already be on its way
                    await asyncio.wait_for(pending, WAIT)
                    pending = asyncio.create_task(ex.watch_ticker("BTC/USDT", {"name": "ticker"}))


async def test_depth_gap_raises_checksum_error_and_the_next_watch_resyncs() -> None:
    sym = "BTC/USDT"
    async with (
        synthetic([sym], rate=200, duration=2.5, channels=("aggTrade",), depth_interval=0.05) as fx,
        binance(fx) as ex,
    ):
        await ex.load_markets()
        first = asyncio.create_task(ex.watch_order_book(sym))
        await fx.wait_subscribed(["btcusdt@depth@100ms"])
        fx.play()
        await asyncio.wait_for(first, WAIT)
        await asyncio.wait_for(ex.watch_order_book(sym), WAIT)  # a live diff applied
        fx.faults.depth_gap(1, sym)
        with pytest.raises(ccxt.ChecksumError):  # an InvalidNonce, a NetworkError
            for _ in range(100):
                await asyncio.wait_for(ex.watch_order_book(sym), WAIT)
        assert fx.faults.depth_dropped == {"btcusdt@depth@100ms": 1}
        books: list[Any] = []
        async with looping(lambda: ex.watch_order_book(sym), books):
            await until(lambda: bool(books))  # resubscribed, fresh snapshot, diffs again
            await fx.wait_done(WAIT)
            async with aiohttp.ClientSession() as http:
                url = f"{fx.base_url}/api/v3/depth?symbol=BTCUSDT&limit=100"
                snap = await (await http.get(url)).json()
            await until(lambda: ex.orderbooks[sym]["nonce"] == snap["lastUpdateId"])
        book = ex.orderbooks[sym]
        assert [[float(p), float(q)] for p, q in snap["bids"]] == book["bids"]
        assert [[float(p), float(q)] for p, q in snap["asks"]] == book["asks"]
        depth = [f.payload for f in fx.sent if f.stream == "btcusdt@depth@100ms"]
        gaps = [b for a, b in itertools.pairwise(depth) if b["U"] != a["u"] + 1]
        assert len(gaps) == 1


async def test_rest_depth_polling_keeps_the_synthetic_book_moving() -> None:
    async with synthetic(["BTC/USDT"], rate=200, channels=("aggTrade", "bookTicker")) as fx:
        fx.play()
        async with binance(fx) as ex:
            first = await ex.fetch_order_book("BTC/USDT")
            assert first["nonce"] == 0  # the start book: nothing generated for it yet
            await asyncio.sleep(0.35)
            later = await ex.fetch_order_book("BTC/USDT")
            assert later["nonce"] > 0 and later["bids"][0][0] < later["asks"][0][0]
            assert len(later["bids"]) == len(later["asks"]) == 10
            bid_now = (await ex.fetch_trades("BTC/USDT", limit=1))[0]["price"]
            assert later["bids"][0][0] == pytest.approx(bid_now, rel=0.01)


def test_only_loopback_hosts() -> None:
    with pytest.raises(ValueError, match="loopback"):
        FakeExchange(SyntheticSource(["BTC/USDT"], rate=10), host="0.0.0.0")
