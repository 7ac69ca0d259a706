"""The real `ccxt.pro.coinbase` (not mocked) against FakeCoinbase on 127.0.0.1, and the protocol
itself over a raw websocket.

Each test starts its own fake on a free port; the recording (12 s of BTC-USD and ETH-USD) is
replayed fast or a small synthetic source runs.
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

from fake_exchange.coinbase import CoinbaseReplaySource, CoinbaseSyntheticSource, FakeCoinbase
from fake_exchange.coinbase.recording import coinbase_recording, load_coinbase_recording
from fake_exchange.levels import LevelBook
from publisher.endpoints import rebase_urls

WAIT = 10.0
BTC = "BTC/USD"


@contextlib.asynccontextmanager
async def coinbase(fx: FakeCoinbase, **config: Any) -> AsyncIterator[Any]:
    ex = ccxtpro.coinbase({**fx.ccxt_config(), **config})
    try:
        yield ex
    finally:
        await ex.close()


def synthetic(*products: str, **kw: Any) -> CoinbaseSyntheticSource:
    kw.setdefault("rate", 200)
    kw.setdefault("duration", 60)
    return CoinbaseSyntheticSource(list(products), seed=kw.pop("seed", 1), **kw)


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


def sent(fx: FakeCoinbase, channel: str, pid: str) -> list[dict[str, Any]]:
    return [f.payload for f in fx.sent if (f.channel, f.product_id) == (channel, pid)]


def replay(payloads: list[dict[str, Any]], pid: str) -> LevelBook:
    """The book the `l2_data` messages build."""
    book = LevelBook(pid)
    for p in payloads:
        for e in p["events"]:
            if e["type"] == "snapshot":
                book.clear()
            sides: dict[str, list[list[str]]] = {"bid": [], "offer": []}
            for u in e["updates"]:
                sides[u["side"]].append([u["price_level"], u["new_quantity"]])
            book.apply(sides["offer"], sides["bid"])
    return book


def floats(levels: list[list[str]]) -> list[list[float]]:
    return [[float(p), float(q)] for p, q, *_ in levels]


class Socket:
    """A raw client: send a request, read messages (JSON)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, **msg: Any) -> None:
        await self.ws.send_str(orjson.dumps(msg).decode())

    async def recv(self) -> dict[str, Any]:
        return dict(orjson.loads((await self.ws.receive(WAIT)).data))

    async def until(self, channel: str) -> list[dict[str, Any]]:
        """Messages up to and including the next one of `channel`."""
        got = [await self.recv()]
        while got[-1].get("channel") != channel:
            got.append(await self.recv())
        return got


@contextlib.asynccontextmanager
async def raw(fx: FakeCoinbase) -> AsyncIterator[Socket]:
    async with aiohttp.ClientSession() as http, http.ws_connect(fx.ws_url) as ws:
        yield Socket(ws)


# ----------------------------------------------------------------------------- markets and urls


async def test_load_markets_calls_what_ccxt_calls_without_keys_and_every_url_is_the_fake() -> None:
    async with FakeCoinbase(CoinbaseReplaySource(), autoplay=False) as fx, coinbase(fx) as ex:
        called: list[str] = []
        fetch = ex.fetch

        async def spy(url: str, *a: Any, **k: Any) -> Any:
            called.append(url)
            return await fetch(url, *a, **k)

        ex.fetch = spy
        markets = await ex.load_markets()
        base = fx.base_url
        assert sorted(called) == sorted([
            f"{base}/v2/currencies", f"{base}/v2/currencies/crypto", f"{base}/v2/exchange-rates",
            f"{base}/api/v3/brokerage/market/products",
            f"{base}/api/v3/brokerage/market/products?product_type=FUTURE",
        ])  # fmt: skip
        assert len(markets) == 920 and {m["id"] for m in markets.values()} == fx.market.ids
        assert len(set(fx.markets) - set(markets)) == 2  # ccxt calls CGLD CELO
        btc = markets[BTC]
        assert (btc["id"], btc["spot"], btc["precision"]["price"]) == ("BTC-USD", True, 0.01)
        assert ex.currencies["BTC"]["name"] == "Bitcoin"
        rebased = rebase_urls(ccxtpro.coinbase().urls["api"], fx.base_url)
        assert rebased == fx.ccxt_config()["urls"]["api"] == {"rest": base, "ws": fx.ws_url}


# ----------------------------------------------------------------------------- websocket data


async def test_the_recording_reaches_ccxt_trades_tickers_and_book() -> None:
    source = CoinbaseReplaySource(speed=20, products=["BTC-USD"])
    async with FakeCoinbase(source, autoplay=False) as fx, coinbase(fx) as ex:
        await ex.load_markets()
        trades: list[Any] = []
        tickers: list[Any] = []
        books: list[Any] = []
        async with (
            looping(lambda: ex.watch_trades(BTC), trades),
            looping(lambda: ex.watch_ticker(BTC), tickers),
            looping(lambda: ex.watch_order_book(BTC), books),
        ):
            keys = [(c, "BTC-USD") for c in ("market_trades", "ticker", "level2")]
            await fx.wait_subscribed(keys)
            fx.play()
            await fx.wait_done(WAIT)
            rows = {r["trade_id"]: r for p in sent(fx, "market_trades", "BTC-USD")
                    for e in p["events"] for r in e["trades"]}  # fmt: skip
            l2 = sent(fx, "l2_data", "BTC-USD")
            await until(lambda: len({t["id"] for b in trades for t in b}) == len(rows))
            await until(lambda: ex.orderbooks[BTC]["datetime"] == l2[-1]["timestamp"])
        assert len(rows) == 132  # the snapshot's 100 and 32 after it
        got = {t["id"]: t for batch in trades for t in batch}
        for tid, r in rows.items():
            t = got[tid]
            assert (t["symbol"], t["price"], t["amount"]) == (BTC, float(r["price"]),
                                                               float(r["size"]))  # fmt: skip
            assert t["side"] == r["side"].lower()  # ccxt passes on the maker's side
        last = sent(fx, "ticker", "BTC-USD")[-1]["events"][0]["tickers"][0]
        assert (ex.tickers[BTC]["last"], ex.tickers[BTC]["bid"]) == (
            float(last["price"]), float(last["best_bid"]))  # fmt: skip
        truth = replay(l2, "BTC-USD")
        ob = ex.orderbooks[BTC]
        assert ob["bids"] == floats(truth.bids()) and ob["asks"] == floats(truth.asks())
        assert len(ob["bids"]) > 18_000  # Coinbase's level2 is the whole book
        assert [lv[:2] for lv in fx.market.book("BTC-USD").bids()] == truth.bids()
        assert ob["nonce"] is None  # ccxt keeps no sequence of Coinbase's books


async def test_ccxt_applies_a_lost_l2_message_without_noticing() -> None:
    """Why the publisher checks `sequence_num` itself: ccxt 4.5.90 raises nothing and keeps
    a book that is not the exchange's."""
    source = synthetic("AAA-USD", channels=("level2",), total=40, rate=100)
    async with FakeCoinbase(source, autoplay=False) as fx, coinbase(fx) as ex:
        first = asyncio.create_task(ex.watch_order_book("AAA/USD"))
        await fx.wait_subscribed([("level2", "AAA-USD")])
        await asyncio.wait_for(first, WAIT)
        fx.book_gap(1, "AAA-USD")
        books: list[Any] = []
        async with looping(lambda: ex.watch_order_book("AAA/USD"), books):
            fx.play()
            await fx.wait_done(WAIT)
            l2 = sent(fx, "l2_data", "AAA-USD")
            await until(lambda: ex.orderbooks["AAA/USD"]["datetime"] == l2[-1]["timestamp"])
        [(_, pid, lost)] = fx.dropped_book_updates
        seqs = [p["sequence_num"] for p in l2]
        assert pid == "AAA-USD" and lost["sequence_num"] == seqs[1] - 1  # the number skipped
        truth = replay(sorted([*l2, lost], key=lambda p: p["sequence_num"]), "AAA-USD")
        assert [lv[:2] for lv in fx.market.book("AAA-USD").bids()] == truth.bids()
        got = ex.orderbooks["AAA/USD"]
        assert (got["bids"], got["asks"]) != (floats(truth.bids()), floats(truth.asks()))


# ----------------------------------------------------------------------------- raw protocol


async def test_subscribe_snapshots_acks_sequence_numbers_and_refusals() -> None:
    source = synthetic("AAA-USD", "BBB-USD", channels=("level2", "market_trades"), total=20)
    async with FakeCoinbase(source, autoplay=False) as fx, raw(fx) as ws:
        await ws.send(type="subscribe", product_ids=["AAA-USD", "BBB-USD"], channel="level2")
        got = await ws.until("subscriptions")
        assert [(m["channel"], m["events"][0].get("product_id")) for m in got] == [
            ("l2_data", "AAA-USD"), ("l2_data", "BBB-USD"), ("subscriptions", None)]  # fmt: skip
        assert got[0]["events"][0]["type"] == "snapshot"
        assert {u["side"] for u in got[0]["events"][0]["updates"]} == {"bid", "offer"}
        assert got[2]["events"] == [{"subscriptions": {"level2": ["AAA-USD", "BBB-USD"]}}]
        # no trade yet: no market_trades snapshot (ccxt cannot take an empty one)
        await ws.send(type="subscribe", product_ids=["AAA-USD"], channel="market_trades")
        [ack] = await ws.until("subscriptions")
        assert ack["events"][0]["subscriptions"]["market_trades"] == ["AAA-USD"]
        for bad, reason in (
            ({"channel": "level2", "product_ids": ["NOPE-USD"]}, "NOPE-USD is not a valid product"),
            ({"channel": "user", "product_ids": ["AAA-USD"]}, "channel 'user' is not supported"),
            ({"channel": "ticker", "product_ids": []}, "channel ticker needs product_ids"),
        ):
            await ws.send(type="subscribe", **bad)
            assert await ws.recv() == {"type": "error", "message": "Failed to subscribe",
                                       "reason": reason}  # fmt: skip
        await ws.ws.send_str("{not json")
        assert (await ws.recv())["type"] == "error"
        await ws.send(type="unsubscribe", product_ids=["BBB-USD"], channel="level2")
        [ack] = await ws.until("subscriptions")
        assert ack["events"][0]["subscriptions"] == {
            "level2": ["AAA-USD"], "market_trades": ["AAA-USD"]}  # fmt: skip
        await ws.send(type="subscribe", product_ids=["AAA-USD"], channel="level2")
        again = await ws.until("subscriptions")  # subscribed again: a fresh snapshot
        assert again[0]["events"][0]["type"] == "snapshot"
        fx.play()
        await fx.wait_done(WAIT)
        while not fx.sent or fx.sent[-1].channel != "market_trades":
            await ws.recv()
        numbers = [f.seq for f in fx.sent]
        assert numbers == list(range(len(numbers)))  # per connection, from 0, every message
        assert ack["sequence_num"] == 4  # snapshots and acks take numbers, errors none


async def test_heartbeats_come_every_interval_and_count() -> None:
    source = synthetic("AAA-USD", channels=("market_trades",))
    async with FakeCoinbase(source, autoplay=False, heartbeat_s=0.1) as fx, raw(fx) as ws:
        await ws.send(type="subscribe", channel="heartbeats")
        [ack] = await ws.until("subscriptions")
        assert ack["events"][0]["subscriptions"] == {"heartbeats": ["heartbeats"]}
        beats = [(await ws.until("heartbeats"))[-1] for _ in range(3)]
        counters = [b["events"][0]["heartbeat_counter"] for b in beats]
        assert counters == sorted(counters) and len(set(counters)) == 3
        assert " +0000 UTC m=+" in beats[0]["events"][0]["current_time"]
        assert [b["sequence_num"] for b in beats] == [1, 2, 3]
        await ws.send(type="unsubscribe", channel="heartbeats")
        [ack] = await ws.until("subscriptions")
        assert ack["events"] == [{"subscriptions": {}}]
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.4):
                await ws.recv()


async def test_a_slow_reader_still_sees_every_number_in_order() -> None:
    """Numbers are taken when a message joins its queue: backpressure never reorders them."""
    source = synthetic("AAA-USD", channels=("market_trades", "level2", "ticker"), rate=5000,
                       duration=None, total=600)  # fmt: skip
    async with FakeCoinbase(source, autoplay=False, queue_size=4, heartbeat_s=0.01) as fx:
        async with raw(fx) as ws:
            for channel in ("level2", "market_trades", "ticker", "heartbeats"):
                await ws.send(type="subscribe", product_ids=["AAA-USD"], channel=channel)
            await fx.wait_subscribed([("ticker", "AAA-USD"), ("heartbeats", "heartbeats")])
            fx.play()
            seqs = []
            while len(seqs) < 650:
                seqs.append((await ws.recv())["sequence_num"])
                if len(seqs) % 50 == 0:
                    await asyncio.sleep(0.02)  # a slow reader: the outbox fills
            assert seqs == list(range(len(seqs)))


# ----------------------------------------------------------------------------- REST and faults


async def test_rest_answers_from_what_was_published() -> None:
    source = synthetic("AAA-USD", total=900, rate=3000)
    async with FakeCoinbase(source) as fx, coinbase(fx) as ex:
        await fx.wait_done(WAIT)
        made = list(fx.market.trades["AAA-USD"])
        assert len(made) == 300
        got = await ex.fetch_trades("AAA/USD", limit=1000)
        assert [t["id"] for t in got] == [r["trade_id"] for r in made]  # oldest first
        since = ex.parse8601(made[-10]["time"])
        until_ms = ex.milliseconds() + 1000
        window = await ex.fetch_trades("AAA/USD", since, None, {"until": until_ms})
        assert {r["trade_id"] for r in made[-10:]} <= {t["id"] for t in window}
        book = await ex.fetch_order_book("AAA/USD", 5)
        mirror = fx.market.book("AAA-USD")
        assert book["bids"] == floats(mirror.bids(5)) and book["asks"] == floats(mirror.asks(5))
        candles = await ex.fetch_ohlcv("AAA/USD", "1m", None, 5)
        assert candles and candles[-1][4] == float(made[-1]["price"])  # close: the last trade
        assert sum(c[5] for c in candles) == pytest.approx(sum(float(r["size"]) for r in made))
        five = await ex.fetch_ohlcv("AAA/USD", "5m", None, 3)
        assert five[-1][0] % 300_000 == 0 and five[-1][4] == candles[-1][4]
        assert abs(ex.milliseconds() - await ex.fetch_time()) < 5_000
        async with aiohttp.ClientSession() as http:
            for path, status, error in (
                ("/api/v3/brokerage/market/products/NOPE-USD/ticker?limit=1", 404, "NOT_FOUND"),
                ("/api/v3/brokerage/market/products/AAA-USD/candles?granularity=X", 400,
                 "INVALID_ARGUMENT"),
                ("/api/v3/brokerage/market/products/AAA-USD/candles?granularity=ONE_MINUTE"
                 "&start=0&end=100000", 400, "INVALID_ARGUMENT"),
                ("/api/v3/nothing", 404, "NOT_FOUND"),
            ):  # fmt: skip
                async with http.get(fx.base_url + path) as resp:
                    body = await resp.json()
                assert (resp.status, body["error"]) == (status, error), path
            async with http.get(f"{fx.base_url}/api/v3/brokerage/time") as resp:
                body = await resp.json()
            assert int(body["epochMillis"]) // 1000 == int(body["epochSeconds"])


@pytest.mark.parametrize(
    ("status", "error"),
    [(429, ccxt.RateLimitExceeded), (500, ccxt.ExchangeError), (403, ccxt.AuthenticationError)],
)
async def test_http_errors_have_coinbase_bodies_and_map_to_ccxt_errors(
    status: int, error: type[Exception]
) -> None:
    async with FakeCoinbase(CoinbaseReplaySource(), autoplay=False) as fx, coinbase(fx) as ex:
        fx.faults.http_error(status)
        with pytest.raises(error):
            await ex.load_markets()
        fx.faults.refuse(5)
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await ex.fetch_time()
        fx.faults.clear()
        assert await ex.fetch_time() > 0


async def test_stall_garbage_and_close_faults() -> None:
    source = synthetic("AAA-USD", channels=("market_trades",), rate=100)
    async with FakeCoinbase(source, autoplay=False, heartbeat_s=0.05) as fx:
        async with raw(fx) as ws:
            await ws.send(type="subscribe", product_ids=["AAA-USD"], channel="market_trades")
            await ws.send(type="subscribe", channel="heartbeats")
            await ws.until("subscriptions")
            await ws.until("subscriptions")
            fx.play()
            await ws.until("market_trades")
            fx.faults.stall(0.5)
            await asyncio.sleep(0.05)
            with pytest.raises(TimeoutError):  # nothing at all while stalled, not even beats
                async with asyncio.timeout(0.3):
                    while True:
                        await ws.recv()
            await ws.until("heartbeats")  # it comes back, numbers unbroken
            assert fx.faults.send_garbage(2) == 1
            seqs = []
            garbage = 0
            while len(seqs) < 20:
                msg = await ws.ws.receive(WAIT)
                try:
                    seqs.append(orjson.loads(msg.data)["sequence_num"])
                except (orjson.JSONDecodeError, KeyError):
                    garbage += 1
            assert garbage == 2 and seqs == list(range(seqs[0], seqs[0] + 20))
            assert [f.seq for f in fx.sent] == list(range(len(fx.sent)))
        async with coinbase(fx) as ex:
            await asyncio.wait_for(ex.watch_trades("AAA/USD"), WAIT)
            pending = asyncio.create_task(ex.watch_trades("AAA/USD"))
            await asyncio.sleep(0.05)
            fx.faults.close_all()
            with pytest.raises(ccxt.NetworkError):
                for _ in range(50):
                    await asyncio.wait_for(pending, WAIT)
                    pending = asyncio.create_task(ex.watch_trades("AAA/USD"))
            trades = await asyncio.wait_for(ex.watch_trades("AAA/USD"), WAIT)
            assert trades  # a new connection: subscribed again, its numbers from 0
            assert len({f.conn_id for f in fx.sent if f.seq == 0}) == 3


# ----------------------------------------------------------------------------- replay, cli


def test_a_looped_replay_keeps_ids_unique_and_candles_aligned() -> None:
    source = CoinbaseReplaySource(speed=0, loop=True, loop_gap=1.0)
    clock = iter(range(1_800_000_000_000, 1_900_000_000_000, 7))
    events = source.events(lambda: next(clock))
    per_pass = len(load_coinbase_recording(coinbase_recording()).events) - 8  # 8 snapshots
    got = [next(events) for _ in range(per_pass * 2 + 6)]
    ids = [int(r["trade_id"]) for e in got for r in reversed(e.event.get("trades", ()))
           if r["product_id"] == "BTC-USD"]  # fmt: skip
    assert len(ids) == 32 * 2 + 100  # updates, then the next pass: its snapshot, its updates
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # one unbroken sequence of ids
    starts = {int(c["start"]) for e in got for c in e.event.get("candles", ())}
    assert starts and all(s % 300 == 0 for s in starts)


async def test_cli_speaks_coinbase_and_exits_cleanly_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fake_exchange", "--exchange", "coinbase", "--synthetic", "2",
        "--rate", "50",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        assert line.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession() as http:
            body = await (await http.get(f"{line}/api/v3/brokerage/market/products")).json()
            assert body["num_products"] == 920
            async with http.ws_connect(line.replace("http", "ws")) as ws:
                msg = {"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "ticker"}
                await ws.send_str(orjson.dumps(msg).decode())
                first = orjson.loads((await ws.receive(WAIT)).data)
                assert (first["channel"], first["sequence_num"]) == ("ticker", 0)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), WAIT) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_only_loopback_hosts() -> None:
    with pytest.raises(ValueError):
        FakeCoinbase(CoinbaseReplaySource(), host="0.0.0.0")
