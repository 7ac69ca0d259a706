"""Bybit end to end: fake Bybit v5 -> real ccxt.pro.bybit -> publisher -> Redis -> consumer,
spot and linear perpetuals side by side."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis

from consumers import Consumer
from fake_exchange import BybitReplaySource, BybitSyntheticSource, FakeBybit
from fake_exchange.levels import LevelBook
from marketbus import codec
from marketbus.keys import stream_key
from marketbus.models import BookTop, Channel, Ticker, Trade
from marketbus.settings import load_settings
from publisher.app import Publisher
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e

FAST = {"status_interval_s": 0.2, "heartbeat_s": 2, "backoff_min_s": 0.2, "backoff_max_s": 1}
SPOT, PERP = "AAA/USDT", "AAA/USDT:USDT"
MARKETS = {SPOT: ("spot", "AAAUSDT"), PERP: ("linear", "AAAUSDT")}
Levels = list[tuple[float, float]]


@asynccontextmanager
async def publisher(
    redis_server: RedisServer, fx: FakeBybit, symbols: list[str], channels: list[str], **sup: Any
) -> AsyncIterator[Publisher]:
    cfg = {"name": "bybit", "symbols": symbols, "url": fx.base_url, "channels": channels}
    supervisor = {**FAST, **sup}
    settings = load_settings(
        redis={"url": redis_server.url}, exchanges=[cfg], supervisor=supervisor
    )
    async with Publisher(settings) as pub:
        yield pub


async def fresh_redis(redis_server: RedisServer) -> aioredis.Redis:
    r = aioredis.Redis.from_url(redis_server.url)
    await r.flushdb()
    return r


async def stored(r: aioredis.Redis, symbol: str, channel: Channel) -> list[Any]:
    return [codec.decode_fields(f) for _, f in await r.xrange(stream_key("bybit", symbol, channel))]


async def until(cond: Any, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not await cond():
            await asyncio.sleep(0.05)


def frames(fx: FakeBybit, category: str, topic: str) -> list[Any]:
    """The frames of one topic written, in order, with the connection each went to."""
    return [f for f in fx.sent if (f.category, f.topic) == (category, topic)]


def book_states(sent: list[Any]) -> dict[int, tuple[Levels, Levels]]:
    """u -> (bids, asks) of the book the client was shown, along unbroken chains only, per
    connection (a snapshot starts a chain; a delta that does not follow ends it)."""
    out: dict[int, tuple[Levels, Levels]] = {}
    chains: dict[int, tuple[LevelBook, int | None]] = {}
    for f in sent:
        data = f.payload["data"]
        book, last = chains.get(f.conn_id, (LevelBook("x"), None))
        if f.payload["type"] == "snapshot":
            book.clear()
        elif last is None or data["u"] != last + 1:
            chains[f.conn_id] = (book, None)
            continue
        book.apply(data["a"], data["b"])
        chains[f.conn_id] = (book, data["u"])
        out[data["u"]] = (
            [(float(p), float(q)) for p, q in book.bids()],
            [(float(p), float(q)) for p, q in book.asks()],
        )
    return out


def assert_books_are_the_exchanges(books: list[BookTop], states: dict[int, Any]) -> None:
    assert books and all(isinstance(b, BookTop) for b in books)
    seqs = [b.seq for b in books]
    assert None not in seqs and seqs == sorted(set(seqs))  # type: ignore[type-var]
    for b in books:
        assert b.seq is not None
        bids, asks = states[b.seq]  # a state the exchange's feed really was in at that u
        assert (list(b.bids), list(b.asks)) == (bids[:20], asks[:20])


def merged_tickers(sent: list[Any]) -> list[dict[str, Any]]:
    out, state = [], {}
    for f in sent:
        snap = f.payload["type"] == "snapshot"
        state = dict(f.payload["data"]) if snap else {**state, **f.payload["data"]}
        out.append(state)
    return out


async def test_the_recorded_session_arrives_whole_per_market(redis_server: RedisServer) -> None:
    """BYBIT.jsonl (linear) replayed at 20x: every recorded trade once per market, every
    ticker, every published book equal to the feed's book at its u, the kline candles."""
    r = await fresh_redis(redis_server)
    ids = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"]
    perps = [f"{i.removesuffix('USDT')}/USDT:USDT" for i in ids]
    async with FakeBybit(BybitReplaySource(speed=20), autoplay=False) as fx:
        channels = ["trades", "ticker", "book", "candles"]
        # a finished replay goes quiet: a heartbeat longer than the checks keeps it connected
        async with publisher(redis_server, fx, perps, channels, heartbeat_s=30) as pub:
            topics = [("linear", f"{t}.{i}") for i in ids
                      for t in ("publicTrade", "tickers", "orderbook.50", "kline.1")]  # fmt: skip
            await fx.wait_subscribed(topics, timeout=20)
            fx.play()
            await fx.wait_done(timeout=30)
            sent = {
                p: frames(fx, "linear", f"publicTrade.{i}") for p, i in zip(perps, ids, strict=True)
            }
            rows = {p: [x for f in s for x in f.payload["data"]] for p, s in sent.items()}

            async def all_in() -> bool:
                for p in perps:
                    if await r.xlen(stream_key("bybit", p, Channel.TRADES)) < len(rows[p]):
                        return False
                return True

            await until(all_in)
            await asyncio.sleep(0.3)  # let anything extra (a duplicate) land too
            w = pub.workers["bybit"]
            for p, i in zip(perps, ids, strict=True):
                trades = await stored(r, p, Channel.TRADES)
                assert all(isinstance(t, Trade) for t in trades)
                assert [t.id for t in trades] == [x["i"] for x in rows[p]], p
                for t, x in zip(trades, rows[p], strict=True):
                    assert (t.price, t.amount, t.side, t.ts_ms) == (
                        float(x["p"]), float(x["v"]), x["S"].lower(), x["T"])  # fmt: skip
                tickers = await stored(r, p, Channel.TICKER)
                want = merged_tickers(frames(fx, "linear", f"tickers.{i}"))
                assert all(isinstance(t, Ticker) for t in tickers)
                assert [(t.last, t.bid, t.ask) for t in tickers] == [
                    (float(x["lastPrice"]), float(x["bid1Price"]), float(x["ask1Price"]))
                    for x in want
                ]
                books = await stored(r, p, Channel.BOOK)
                assert_books_are_the_exchanges(
                    books, book_states(frames(fx, "linear", f"orderbook.50.{i}"))
                )
                klines = [
                    k for f in frames(fx, "linear", f"kline.1.{i}") for k in f.payload["data"]
                ]
                last = {k["start"]: k for k in klines}  # the last update of each candle
                k = last[max(last)]
                final = ("1m", *(float(k[x]) for x in ("open", "high", "low", "close", "volume")))

                async def candles_in(s: str = p, start: int = max(last), want: Any = final) -> bool:
                    got = [c for c in await stored(r, s, Channel.CANDLES) if c.open_ms == start]
                    return bool(got) and (
                        got[-1].interval, got[-1].open, got[-1].high, got[-1].low,
                        got[-1].close, got[-1].volume,
                    ) == want  # fmt: skip

                await until(candles_in)
                # CCXT's cache may already hold two candles when the publisher first looks
                # (20x speed): it publishes from the newest it saw on, each a recorded candle
                assert {c.open_ms for c in await stored(r, p, Channel.CANDLES)} <= last.keys()
            assert sum(map(len, rows.values())) == 162  # every recorded trade
            st = w.status()
            assert st["invalid"] == st["book_resyncs"] == st["reconnects"] == 0
            assert st["trade_duplicates"] == 0
    await r.aclose()


async def test_spot_and_perp_of_one_id_arrive_whole_side_by_side(redis_server: RedisServer) -> None:
    r = await fresh_redis(redis_server)
    source = BybitSyntheticSource([SPOT, PERP, "BBB/USDT"], rate=600, total=1800, seed=4)
    async with FakeBybit(source, autoplay=False) as fx:
        symbols = ["AAAUSDT", "aaa/usdt:usdt", "BBB-USDT"]  # BTCUSDT-style = the spot one
        channels = ["trades", "ticker", "book"]
        async with publisher(redis_server, fx, symbols, channels, heartbeat_s=30) as pub:
            keys = [(c, f"{t}.{i}") for c, i in [*MARKETS.values(), ("spot", "BBBUSDT")]
                    for t in ("publicTrade", "tickers", "orderbook.50")]  # fmt: skip
            await fx.wait_subscribed(keys, timeout=20)
            assert sorted(pub.workers["bybit"].markets) == sorted([SPOT, PERP, "BBB/USDT"])
            fx.play()
            await fx.wait_done(timeout=30)
            rows = {s: [x for f in frames(fx, c, f"publicTrade.{i}") for x in f.payload["data"]]
                    for s, (c, i) in MARKETS.items()}  # fmt: skip

            async def all_in() -> bool:
                for s in MARKETS:
                    if await r.xlen(stream_key("bybit", s, Channel.TRADES)) < len(rows[s]):
                        return False
                return True

            await until(all_in)
            for symbol, (category, sid) in MARKETS.items():
                trades = await stored(r, symbol, Channel.TRADES)
                assert [t.id for t in trades] == [x["i"] for x in rows[symbol]], symbol
                assert [(t.price, t.amount) for t in trades] == [
                    (float(x["p"]), float(x["v"])) for x in rows[symbol]
                ]
                tickers = await stored(r, symbol, Channel.TICKER)
                want = merged_tickers(frames(fx, category, f"tickers.{sid}"))
                assert [t.last for t in tickers] == [float(x["lastPrice"]) for x in want]
                if category == "linear":
                    assert [t.bid for t in tickers] == [float(x["bid1Price"]) for x in want]
                else:
                    assert {t.bid for t in tickers} == {None}  # Bybit spot tickers: no bid/ask
                books = await stored(r, symbol, Channel.BOOK)
                assert_books_are_the_exchanges(
                    books, book_states(frames(fx, category, f"orderbook.50.{sid}"))
                )
            # spot ids: one counter for AAA and BBB, so AAA's jump: no gap counted for them
            spot_ids = [int(t.id) for t in await stored(r, SPOT, Channel.TRADES)]
            assert spot_ids == sorted(spot_ids) and spot_ids[-1] - spot_ids[0] > len(spot_ids)
            st = pub.workers["bybit"].status()
            assert st["trade_gaps"] == st["trade_duplicates"] == st["invalid"] == 0
            assert st["book_resyncs"] == st["reconnects"] == 0
            # the default parser is the native one: every trade frame (spot and perp of one
            # id, told apart by their url) and every spot ticker; perp tickers go to CCXT
            native = [f for f in fx.sent if f.topic.startswith("publicTrade.")
                      or (f.category, f.topic.split(".")[0]) == ("spot", "tickers")]  # fmt: skip
            assert st["parser"] == "native" and st["native_frames"] == len(native) > 0
        async with Consumer(redis_server.url, [f"bybit:{PERP}", f"bybit:{SPOT}"],
                            ["ticker", "trades", "book"], backfill=5000) as c:  # fmt: skip
            assert len(c.buffer("bybit", PERP, "trades")) == len(rows[PERP])
            best = c.best("bybit", "aaa/usdt:usdt")
            assert best is not None and best.bid is not None and best.ask is not None
            assert best.bid < best.ask
            spot_best = c.best("bybit", SPOT)  # from the book: spot tickers carry none
            assert spot_best is not None and spot_best.bid is not None
    await r.aclose()


async def test_a_book_gap_resyncs_and_no_broken_book_is_published(
    redis_server: RedisServer,
) -> None:
    r = await fresh_redis(redis_server)
    source = BybitSyntheticSource([PERP], rate=200, seed=8, channels=("orderbook",))
    async with FakeBybit(source, autoplay=False) as fx:
        async with publisher(redis_server, fx, [PERP], ["book"]) as pub:
            topic = "orderbook.50.AAAUSDT"
            await fx.wait_subscribed([("linear", topic)], timeout=20)
            fx.play()
            w = pub.workers["bybit"]

            async def has_books() -> bool:
                return await r.xlen(stream_key("bybit", PERP, Channel.BOOK)) > 10

            await until(has_books)
            fx.book_gap(1, "AAAUSDT", "linear")

            async def resynced() -> bool:
                return w.stats.book_resyncs >= 1

            await until(resynced)
            before = await r.xlen(stream_key("bybit", PERP, Channel.BOOK))

            async def grows() -> bool:
                return await r.xlen(stream_key("bybit", PERP, Channel.BOOK)) > before + 10

            await until(grows)  # unsubscribed, subscribed, a fresh snapshot, publishing again
            assert w.stats.book_resyncs == 1 and w.stats.reconnects == 0
            assert w.state.value == "CONNECTED"
            sent = frames(fx, "linear", topic)
            [(_, _, dropped)] = fx.dropped_book_updates
            lost = dropped["data"]["u"]
            snaps = [f for f in sent if f.payload["type"] == "snapshot"]
            assert len(snaps) == 2 and len({f.conn_id for f in snaps}) == 1  # same socket
            fresh = snaps[1].payload["data"]["u"]
            assert fresh > lost
            books = await stored(r, PERP, Channel.BOOK)
            # nothing from the broken chain: no book between the lost update and the snapshot
            assert [b.seq for b in books if lost <= b.seq < fresh] == []
            assert any(b.seq < lost for b in books) and any(b.seq >= fresh for b in books)
            assert_books_are_the_exchanges(books, book_states(sent))
    await r.aclose()


async def test_a_dropped_connection_reconnects_resubscribes_and_backfills(
    redis_server: RedisServer,
) -> None:
    """The fake keeps trading while the publisher is away: after the reconnect, REST
    `recent-trade` fills the gap, so every trade the exchange made arrives exactly once."""
    r = await fresh_redis(redis_server)
    source = BybitSyntheticSource([SPOT, PERP], rate=90, total=540, seed=12)
    async with FakeBybit(source, autoplay=False) as fx:
        channels = ["trades", "ticker", "book"]  # the drop is seen at once, not by heartbeat
        async with publisher(redis_server, fx, [SPOT, PERP], channels, heartbeat_s=30) as pub:
            keys = [(c, f"{t}.{i}") for c, i in MARKETS.values()
                    for t in ("publicTrade", "tickers", "orderbook.50")]  # fmt: skip
            await fx.wait_subscribed(keys, timeout=20)
            fx.play()
            w = pub.workers["bybit"]

            async def some() -> bool:
                return all([await r.xlen(stream_key("bybit", s, Channel.TRADES)) > 5
                            for s in MARKETS])  # fmt: skip

            await until(some)
            assert fx.faults.close_all() == 2  # the spot and the linear socket
            await until(lambda: _true(w.stats.reconnects >= 1))
            await w.wait_connected(timeout=20)
            await fx.wait_done(timeout=30)  # the exchange made all it will make
            for symbol, key in MARKETS.items():
                made = [x["i"] for x in fx.market.trades[key]]

                async def caught_up(s: str = symbol, n: int = len(made)) -> bool:
                    return await r.xlen(stream_key("bybit", s, Channel.TRADES)) >= n

                await until(caught_up)
                await asyncio.sleep(0.2)
                trades = await stored(r, symbol, Channel.TRADES)
                assert sorted(t.id for t in trades) == sorted(made), symbol  # each once, all
            assert w.stats.backfills >= 1 and w.stats.backfilled > 0
            snaps = [f for f in fx.sent if f.payload["type"] == "snapshot"]
            assert len({f.conn_id for f in snaps}) == 4  # 2 sockets, then 2 new ones
            assert w.trade_ids.gaps == 0 and w.state.value == "CONNECTED"
            for symbol, (category, sid) in MARKETS.items():  # books: from the new snapshots
                sent = frames(fx, category, f"orderbook.50.{sid}")
                assert_books_are_the_exchanges(
                    await stored(r, symbol, Channel.BOOK), book_states(sent)
                )
    await r.aclose()


async def _true(v: bool) -> bool:
    return v


@pytest.mark.parametrize("raw", ["AAA-USDT", "AAAUSDT"])
async def test_a_loose_spelling_means_the_spot_market(redis_server: RedisServer, raw: str) -> None:
    source = BybitSyntheticSource([SPOT, PERP], rate=100, seed=2, channels=("publicTrade",))
    async with FakeBybit(source) as fx:
        async with publisher(redis_server, fx, [raw], ["trades"]) as pub:
            w = pub.workers["bybit"]
            await w.wait_connected(timeout=20)
            assert w.markets == [SPOT]
            assert fx.subscribed() == {("spot", "publicTrade.AAAUSDT")}
