"""The real `ccxt.pro.okx` (not mocked) against FakeOkx on 127.0.0.1.

Each test starts its own fake on a free port; the recording (10.8 s of BTC-USDT frames) is
replayed fast or a small synthetic source runs, so each test takes well under a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import ccxt
import ccxt.pro as ccxtpro
import pytest

from fake_exchange import FakeOkx, OkxReplaySource, OkxSyntheticSource
from fake_exchange.okx import frames as of
from fake_exchange.okx.book import OkxBook
from publisher.endpoints import rebase_urls

WAIT = 10.0
BTC = "BTC-USDT"


@contextlib.asynccontextmanager
async def replay(speed: float = 20.0, autoplay: bool = False, **kw: Any) -> AsyncIterator[FakeOkx]:
    async with FakeOkx(OkxReplaySource(speed=speed), autoplay=autoplay, **kw) as fx:
        yield fx


def books_source(rate: float = 200.0) -> OkxSyntheticSource:
    return OkxSyntheticSource([BTC], rate=rate, duration=60, channels=("books", "trades"))


@contextlib.asynccontextmanager
async def okx(fx: FakeOkx, **config: Any) -> AsyncIterator[Any]:
    ex = ccxtpro.okx({**fx.ccxt_config(), **config})
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


def sent_rows(fx: FakeOkx, channel: str, inst: str = BTC) -> list[Any]:
    return [
        r for f in fx.sent if (f.channel, f.inst_id) == (channel, inst) for r in f.payload["data"]
    ]


# ----------------------------------------------------------------------------- markets


async def test_load_markets_makes_one_call_and_every_url_points_at_the_fake() -> None:
    async with replay() as fx, okx(fx) as ex:
        called: list[str] = []
        fetch = ex.fetch

        async def spy(url: str, *a: Any, **k: Any) -> Any:
            called.append(url)
            return await fetch(url, *a, **k)

        ex.fetch = spy
        markets = await ex.load_markets()
        assert called == [f"{fx.base_url}/api/v5/public/instruments?instType=SPOT"]
        btc = markets["BTC/USDT"]
        assert btc["id"] == BTC and btc["spot"] and btc["precision"]["price"] == 0.1
        assert len(markets) == 513 and "BTC/USDT" in fx.markets
        host = f"{fx.host}:{fx.port}"
        assert all(host in u for u in _urls(ex.urls["api"]))


async def test_the_publishers_url_rewrite_reaches_the_same_paths() -> None:
    async with replay(autoplay=True, speed=20) as fx:
        ex = ccxtpro.okx(
            {
                "enableRateLimit": False,
                "options": {"defaultType": "spot", "fetchMarkets": {"types": ["spot"]}},
            }
        )
        try:
            ex.urls = {**ex.urls, "api": rebase_urls(ex.urls["api"], fx.base_url)}
            assert ex.urls["api"] == {"rest": fx.base_url, "ws": fx.ws_url}
            ticker = await asyncio.wait_for(ex.watch_ticker("BTC/USDT"), WAIT)
            assert ticker["symbol"] == "BTC/USDT"
            candles = await asyncio.wait_for(ex.watch_ohlcv("BTC/USDT", "1m"), WAIT)
            assert candles
            # candles live on /ws/v5/business, everything else on /ws/v5/public
            assert set(ex.clients) == {f"{fx.ws_url}/public", f"{fx.ws_url}/business"}
        finally:
            await ex.close()


# ----------------------------------------------------------------------------- websocket data


async def test_watch_ticker_trades_and_ohlcv_receive_what_the_fake_sent() -> None:
    async with replay(speed=20) as fx, okx(fx) as ex:
        await ex.load_markets()
        tickers: list[Any] = []
        trades: list[Any] = []
        candles: list[Any] = []
        async with (
            looping(lambda: ex.watch_ticker("BTC/USDT"), tickers),
            looping(lambda: ex.watch_trades("BTC/USDT"), trades),
            looping(lambda: ex.watch_ohlcv("BTC/USDT", "1m"), candles),
        ):
            await fx.wait_subscribed([("tickers", BTC), ("trades", BTC), ("candle1m", BTC)])
            fx.play()
            await fx.wait_done(WAIT)
            sent_trades = sent_rows(fx, "trades")
            await until(lambda: len(ex.trades.get("BTC/USDT", [])) == len(sent_trades))
        assert len(sent_trades) == 69
        got = {t["id"]: t for batch in trades for t in batch}
        assert list(got) == [t["tradeId"] for t in sent_trades]
        for row in sent_trades:
            t = got[row["tradeId"]]
            assert t["info"] == row and t["price"] == float(row["px"])
            assert t["amount"] == float(row["sz"]) and t["side"] == row["side"]
            assert t["timestamp"] == int(row["ts"])
        sent_tickers = sent_rows(fx, "tickers")
        assert len(sent_tickers) == 25 and tickers
        assert all(t["info"] in sent_tickers for t in tickers)
        last = ex.tickers["BTC/USDT"]
        assert last["info"] == sent_tickers[-1] and last["last"] == float(sent_tickers[-1]["last"])
        assert last["bid"] == float(sent_tickers[-1]["bidPx"])
        sent_candles = {r[0]: r for r in sent_rows(fx, "candle1m")}
        stored = ex.ohlcvs["BTC/USDT"]["1m"]
        assert [c[0] for c in stored] == [int(ts) for ts in sent_candles]
        for c in stored:
            row = sent_candles[str(c[0])]
            assert c[1:] == [float(x) for x in row[1:6]]
        # and the candles are those of the trades sent
        assert [r[:8] for r in sent_candles.values()] == [
            r[:8] for r in reversed(of.candles_from_trades(sent_trades, "1m", 0))
        ]


async def test_watch_order_book_matches_the_frames_sent() -> None:
    async with replay(speed=20) as fx, okx(fx) as ex:
        await ex.load_markets()
        first = asyncio.create_task(ex.watch_order_book("BTC/USDT"))
        await fx.wait_subscribed([("books", BTC)])
        fx.play()
        await asyncio.wait_for(first, WAIT)
        books: list[Any] = []
        async with looping(lambda: ex.watch_order_book("BTC/USDT"), books):
            await fx.wait_done(WAIT)
            frames = [f.payload for f in fx.sent if f.channel == "books"]
            await until(
                lambda: ex.orderbooks["BTC/USDT"]["nonce"] == frames[-1]["data"][0]["seqId"]
            )
        assert frames[0]["action"] == "snapshot" and len(frames) == 98
        mine = OkxBook(BTC)
        for frame in frames:
            row = frame["data"][0]
            if frame["action"] == "snapshot":
                mine.reset(row)
            else:
                assert row["prevSeqId"] == mine.seq_id
                mine.update(row)
            assert mine.verify(row)
        book = ex.orderbooks["BTC/USDT"]
        assert book["bids"] == [[float(p), float(q)] for p, q, *_ in mine.bids()]
        assert book["asks"] == [[float(p), float(q)] for p, q, *_ in mine.asks()]
        assert book["timestamp"] == mine.ts_ms
        rest = await ex.fetch_order_book("BTC/USDT", 5)
        assert [lv[:2] for lv in rest["bids"]] == book["bids"][:5]
        assert [lv[:2] for lv in rest["asks"]] == book["asks"][:5]


async def test_book_gap_raises_invalid_nonce_and_the_next_watch_resyncs() -> None:
    async with FakeOkx(books_source()) as fx, okx(fx) as ex:
        book = await asyncio.wait_for(ex.watch_order_book("BTC/USDT"), WAIT)
        before = book["nonce"]
        fx.book_gap()
        with pytest.raises(ccxt.InvalidNonce):
            for _ in range(100):
                await asyncio.wait_for(ex.watch_order_book("BTC/USDT"), WAIT)
        assert fx.book_gaps_sent == 1
        rows = [f.payload["data"][0] for f in fx.sent if f.channel == "books"]
        breaks = [(a, b) for a, b in itertools.pairwise(rows) if b["prevSeqId"] != a["seqId"]]
        assert len(breaks) == 1
        last_good, gap = breaks[0]
        assert gap["prevSeqId"] == last_good["seqId"] + 1 and gap["seqId"] > before
        # ccxt unsubscribes, subscribes again and gets a fresh snapshot that chains on
        book = await asyncio.wait_for(ex.watch_order_book("BTC/USDT"), WAIT)
        snapshots = [f.payload["data"][0] for f in fx.sent if f.payload.get("action") == "snapshot"]
        assert len(snapshots) == 2 and snapshots[1]["seqId"] >= gap["seqId"]
        assert book["nonce"] >= snapshots[1]["seqId"]
        for _ in range(3):
            book = await asyncio.wait_for(ex.watch_order_book("BTC/USDT"), WAIT)
        assert book["nonce"] > snapshots[1]["seqId"] and book["bids"] and book["asks"]


async def test_bad_checksum_is_sent_and_detectable_but_ccxt_okx_does_not_check_it() -> None:
    async with FakeOkx(books_source()) as fx, okx(fx) as ex:
        await asyncio.wait_for(ex.watch_order_book("BTC/USDT"), WAIT)
        fx.bad_checksum()
        for _ in range(5):  # ccxt 4.5.90's okx keeps going: it never verifies `checksum`
            await asyncio.wait_for(ex.watch_order_book("BTC/USDT"), WAIT)
        assert fx.bad_checksums_sent == 1
        mine = OkxBook(BTC)
        bad = []
        for f in fx.sent:
            if f.channel != "books":
                continue
            row = f.payload["data"][0]
            if f.payload["action"] == "snapshot":
                mine.reset(row)
            else:
                mine.update(row)
            if not mine.verify(row):
                bad.append((row["checksum"], mine.checksum()))
        assert len(bad) == 1 and bad[0][0] == bad[0][1] ^ 1


async def test_ping_pong_keeps_an_idle_connection_alive() -> None:
    async with replay() as fx, okx(fx, streaming={"keepAlive": 150}) as ex:
        await ex.load_markets()
        pending = asyncio.create_task(ex.watch_ticker("BTC/USDT"))
        await fx.wait_subscribed([("tickers", BTC)])
        await asyncio.sleep(1.0)  # no data at all: only pings and pongs
        assert not pending.done() and fx.pings >= 4
        fx.play()
        assert (await asyncio.wait_for(pending, WAIT))["symbol"] == "BTC/USDT"


async def test_without_pongs_ccxt_times_out() -> None:
    async with replay(answer_pings=False) as fx, okx(fx, streaming={"keepAlive": 150}) as ex:
        await ex.load_markets()
        with pytest.raises(ccxt.RequestTimeout):
            await asyncio.wait_for(ex.watch_ticker("BTC/USDT"), WAIT)
        assert fx.pings >= 1


# ----------------------------------------------------------------------------- REST


async def test_rest_polling_calls_answer_from_what_was_published() -> None:
    async with replay(speed=0, autoplay=True) as fx, okx(fx) as ex:
        await fx.wait_done(WAIT)
        sent_trades = list(fx.market.trades[BTC])  # no websocket client: REST sees all
        tickers = await ex.fetch_tickers(["BTC/USDT"])
        assert list(tickers) == ["BTC/USDT"]
        assert tickers["BTC/USDT"]["info"] == fx.market.tickers[BTC]
        ticker = await ex.fetch_ticker("BTC/USDT")
        assert ticker["last"] == float(fx.market.tickers[BTC]["last"])
        trades = await ex.fetch_trades("BTC/USDT", limit=10)
        assert [t["id"] for t in trades] == [t["tradeId"] for t in sent_trades[-10:]]
        book = await ex.fetch_order_book("BTC/USDT", 5)
        live = fx.market.book(BTC)
        assert [lv[:2] for lv in book["bids"]] == [
            [float(p), float(q)] for p, q, *_ in live.bids(5)
        ]
        ohlcv = await ex.fetch_ohlcv("BTC/USDT", "1m")
        expected = of.candles_from_trades(sent_trades, "1m", 0)[::-1]
        assert ohlcv == [[int(r[0]), *(float(x) for x in r[1:6])] for r in expected]
        assert abs(await ex.fetch_time() - ex.milliseconds()) < 5_000
        with pytest.raises(ccxt.BadSymbol):
            await ex.publicGetMarketTicker({"instId": "NOPE-USDT"})
        async with aiohttp.ClientSession() as http:
            base = f"{fx.base_url}/api/v5/market"
            resp = await http.get(f"{base}/ticker?instId=NOPE-USDT")
            assert resp.status == 200
            assert await resp.json() == {
                "code": "51001",
                "msg": "Instrument ID does not exist",
                "data": [],
            }
            raw = await (await http.get(f"{base}/trades?instId={BTC}&limit=3")).json()
            ids = [int(t["tradeId"]) for t in raw["data"]]
            assert ids == sorted(ids, reverse=True) and ids[0] == int(sent_trades[-1]["tradeId"])
            older = await (
                await http.get(f"{base}/history-trades?instId={BTC}&after={ids[-1]}&limit=2")
            ).json()
            assert [int(t["tradeId"]) for t in older["data"]] == [ids[-1] - 1, ids[-1] - 2]
            resp = await http.get(f"{fx.base_url}/api/v5/nothing/here")
            assert resp.status == 404 and (await resp.json())["code"] == "50005"


async def test_websocket_disabled_refuses_and_rest_still_works() -> None:
    async with replay(speed=0, autoplay=True, websocket=False) as fx, okx(fx) as ex:
        await fx.wait_done(WAIT)
        with pytest.raises(ccxt.NetworkError):
            await asyncio.wait_for(ex.watch_ticker("BTC/USDT"), WAIT)
        assert (await ex.fetch_ticker("BTC/USDT"))["symbol"] == "BTC/USDT"
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                await http.ws_connect(f"{fx.ws_url}/public")
            assert e.value.status == 503


async def test_disabling_the_websocket_closes_open_sockets() -> None:
    async with replay() as fx, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{fx.ws_url}/public") as ws:
            fx.websocket_enabled = False
            msg = await asyncio.wait_for(ws.receive(), WAIT)
            assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1013
        fx.websocket_enabled = True
        async with http.ws_connect(f"{fx.ws_url}/public") as ws:
            await ws.send_str("ping")
            assert (await asyncio.wait_for(ws.receive_str(), WAIT)) == "pong"


# ----------------------------------------------------------------------------- faults


@pytest.mark.parametrize("abrupt", [True, False])
async def test_close_all_fails_a_pending_watch_and_the_next_one_reconnects(abrupt: bool) -> None:
    async with replay() as fx, okx(fx) as ex:
        await ex.load_markets()
        pending = asyncio.create_task(ex.watch_trades("BTC/USDT"))
        await fx.wait_subscribed([("trades", BTC)])
        assert fx.faults.close_all(abrupt=abrupt) == 1
        with pytest.raises(ccxt.NetworkError):
            await asyncio.wait_for(pending, WAIT)
        await until(lambda: not fx.subscribed())
        again = asyncio.create_task(ex.watch_trades("BTC/USDT"))
        await fx.wait_subscribed([("trades", BTC)])
        fx.play()
        assert (await asyncio.wait_for(again, WAIT))[0]["symbol"] == "BTC/USDT"


async def test_http_errors_have_okx_bodies_and_map_to_ccxt_errors() -> None:
    async with replay() as fx, okx(fx) as ex:
        await ex.load_markets()
        fx.faults.http_error(429, count=1, retry_after=2)
        with pytest.raises(ccxt.RateLimitExceeded):
            await ex.fetch_ticker("BTC/USDT")
        fx.faults.http_error(500)
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await ex.fetch_ticker("BTC/USDT")
        fx.faults.http_error(503)
        with pytest.raises(ccxt.OnMaintenance):
            await ex.fetch_order_book("BTC/USDT")
        assert (await ex.fetch_ticker("BTC/USDT"))["symbol"] == "BTC/USDT"
        fx.faults.refuse(0.5)
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await ex.fetch_trades("BTC/USDT")
        fx.faults.clear()
        fx.faults.http_error(429, retry_after=7)
        async with aiohttp.ClientSession() as http:
            resp = await http.get(f"{fx.base_url}/api/v5/public/time")
            assert resp.status == 429 and resp.headers["Retry-After"] == "7"
            assert (await resp.json())["code"] == "50011"


async def test_stall_and_garbage_faults_reach_okx_clients() -> None:
    source = OkxSyntheticSource([BTC], rate=200, duration=30, channels=("trades",))
    async with (
        FakeOkx(source) as fx,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{fx.ws_url}/public") as ws,
    ):
        await ws.send_json({"op": "subscribe", "args": [{"channel": "trades", "instId": BTC}]})
        assert (await ws.receive_json())["event"] == "subscribe"
        before = await ws.receive_json()
        fx.faults.stall(0.5)
        ids = [int(before["data"][0]["tradeId"])]
        started = asyncio.get_running_loop().time()
        while len(ids) < 3:
            ids.append(int((await asyncio.wait_for(ws.receive_json(), WAIT))["data"][0]["tradeId"]))
        # frames were late, not lost
        assert asyncio.get_running_loop().time() - started > 0.35
        assert ids == list(range(ids[0], ids[0] + 3))
        assert fx.faults.send_garbage(1, "malformed") == 1
        texts = [await asyncio.wait_for(ws.receive_str(), WAIT) for _ in range(3)]
        assert any(t.endswith('"p":}') for t in texts)


# ----------------------------------------------------------------------------- raw protocol


async def test_websocket_protocol_acks_errors_and_pong() -> None:
    async with replay() as fx, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{fx.ws_url}/public") as ws:
            await ws.send_str("ping")
            assert await ws.receive_str() == "pong"
            ok = {"channel": "tickers", "instId": BTC}
            bad = {"channel": "tickers", "instId": "NOPE-USDT"}
            candle = {"channel": "candle1m", "instId": BTC}
            await ws.send_json({"op": "subscribe", "args": [ok, bad, candle]})
            ack = await ws.receive_json()
            assert ack["event"] == "subscribe" and ack["arg"] == ok and ack["connId"]
            err = await ws.receive_json()
            assert err["event"] == "error" and err["code"] == "60018" and "NOPE-USDT" in err["msg"]
            err = await ws.receive_json()  # candles are on /business only
            assert err["code"] == "60018" and "candle1m" in err["msg"]
            assert fx.subscribed() == {("tickers", BTC)}
            await ws.send_str("{nope")
            assert (await ws.receive_json())["code"] == "60012"
            await ws.send_json({"op": "unsubscribe", "args": [ok]})
            assert (await ws.receive_json())["event"] == "unsubscribe"
            await until(lambda: not fx.subscribed())
            await ws.send_json({"op": "subscribe", "args": [{"channel": "books", "instId": BTC}]})
            assert (await ws.receive_json())["event"] == "subscribe"
            snap = await ws.receive_json()
            assert snap["action"] == "snapshot" and snap["data"][0]["prevSeqId"] == -1
            assert len(snap["data"][0]["bids"]) == 400
            assert fx.sent[-1].payload == snap and fx.sent[-1].stream == f"books:{BTC}"
        async with http.ws_connect(f"{fx.ws_url}/business") as ws:
            await ws.send_json({"op": "subscribe", "args": [candle]})
            assert (await ws.receive_json())["event"] == "subscribe"


async def test_a_slow_reader_slows_the_player_and_loses_nothing() -> None:
    total = 20_000  # ~10 MB: more than the loopback socket buffers take (~6 MB here)
    source = OkxSyntheticSource(
        ["AAA-USDT"], rate=1_000_000, total=total, channels=("books5", "tickers"), seed=1
    )
    async with (
        FakeOkx(source, autoplay=False, queue_size=20) as fx,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{fx.ws_url}/public", max_msg_size=0) as ws,
    ):
        args = [{"channel": c, "instId": "AAA-USDT"} for c in ("books5", "tickers")]
        await ws.send_json({"op": "subscribe", "args": args})
        await fx.wait_subscribed([("books5", "AAA-USDT"), ("tickers", "AAA-USDT")])
        fx.play()
        await asyncio.sleep(0.8)  # nobody reads: socket buffers fill, then the queue
        assert fx._player is not None and not fx._player.done()
        assert len(fx.sent) < total
        received = []
        while len(received) < total + 3:  # 2 acks, the books5 top sent on subscribe, data
            received.append(await asyncio.wait_for(ws.receive_json(), WAIT))
        await fx.wait_done(WAIT)
    data = [m for m in received if "data" in m]
    assert len(data) == total + 1 == len(fx.sent)
    assert data == [f.payload for f in fx.sent]
    seqs = [m["data"][0]["seqId"] for m in data if m["arg"]["channel"] == "books5"]
    assert len(seqs) == total // 2 + 1


async def test_cli_speaks_okx_and_exits_cleanly_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fake_exchange",
        "--exchange",
        "okx",
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
            body = await (await http.get(f"{line}/api/v5/public/time")).json()
            assert body["code"] == "0" and int(body["data"][0]["ts"]) > 0
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), WAIT) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_only_loopback_hosts() -> None:
    with pytest.raises(ValueError):
        FakeOkx(OkxReplaySource(), host="0.0.0.0")
