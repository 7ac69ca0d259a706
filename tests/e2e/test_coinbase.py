"""Coinbase end to end: fake Coinbase Advanced Trade -> real ccxt.pro.coinbase -> publisher ->
Redis -> consumer: trades, tickers, books checked against the exchange's book at every
`sequence_num`, polled candles, a lost `l2_data` message, a dropped connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis

from consumers import Consumer
from fake_exchange.coinbase import CoinbaseReplaySource, CoinbaseSyntheticSource, FakeCoinbase
from fake_exchange.coinbase.recording import coinbase_recording, load_coinbase_recording
from fake_exchange.coinbase.server import HEARTBEAT_KEY, CoinbaseSentFrame
from fake_exchange.levels import LevelBook
from marketbus import codec
from marketbus.keys import stream_key
from marketbus.models import BookTop, Channel, Ticker, Trade
from marketbus.settings import load_settings
from publisher.app import Publisher
from publisher.coinbase import iso_ms
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e

FAST = {"status_interval_s": 0.2, "heartbeat_s": 3, "backoff_min_s": 0.2, "backoff_max_s": 1}
RECORDED = {"BTC/USD": "BTC-USD", "ETH/USD": "ETH-USD"}
Levels = list[tuple[float, float]]
FLIP = {"BUY": "sell", "SELL": "buy"}
"""Coinbase names the maker's side; a record carries the taker's."""


@asynccontextmanager
async def publisher(
    redis_server: RedisServer, fx: FakeCoinbase, symbols: list[str], channels: list[str], **kw: Any
) -> AsyncIterator[Publisher]:
    sup = {**FAST, **kw.pop("supervisor", {})}
    cfg = {"name": "coinbase", "symbols": symbols, "url": fx.base_url, "channels": channels, **kw}
    settings = load_settings(redis={"url": redis_server.url}, exchanges=[cfg], supervisor=sup)
    async with Publisher(settings) as pub:
        yield pub


async def fresh_redis(redis_server: RedisServer) -> aioredis.Redis:
    r = aioredis.Redis.from_url(redis_server.url)
    await r.flushdb()
    return r


async def stored(r: aioredis.Redis, symbol: str, channel: Channel) -> list[Any]:
    key = stream_key("coinbase", symbol, channel)
    return [codec.decode_fields(f) for _, f in await r.xrange(key)]


async def until(cond: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not await cond():
            await asyncio.sleep(0.05)


async def _true(v: bool) -> bool:
    return v


def frames(fx: FakeCoinbase, channel: str, pid: str) -> list[CoinbaseSentFrame]:
    return [f for f in fx.sent if (f.channel, f.product_id) == (channel, pid)]


def trade_rows(sent: list[CoinbaseSentFrame]) -> list[dict[str, Any]]:
    """Every trade the frames showed, each id once, oldest first (frames list newest first)."""
    rows = {r["trade_id"]: r for f in sent for e in f.payload["events"] for r in e["trades"]}
    return sorted(rows.values(), key=lambda r: int(r["trade_id"]))


def book_states(fx: FakeCoinbase, pid: str) -> dict[tuple[int, int], tuple[Levels, Levels]]:
    """(conn, sequence_num) -> the product's book as the exchange showed it after that
    message, along unbroken chains only: a snapshot starts one, a connection's number that
    skips (a lost message, whatever its channel) ends every chain of that connection."""
    out: dict[tuple[int, int], tuple[Levels, Levels]] = {}
    last: dict[int, int] = {}
    books: dict[int, LevelBook | None] = {}
    for f in fx.sent:
        prev = last.get(f.conn_id)
        last[f.conn_id] = f.seq
        if prev is not None and f.seq != prev + 1:
            books[f.conn_id] = None
        if (f.channel, f.product_id) != ("l2_data", pid):
            continue
        for e in f.payload["events"]:
            if e["type"] == "snapshot":
                books[f.conn_id] = LevelBook(pid)
            book = books.get(f.conn_id)
            if book is None:
                continue
            sides: dict[str, list[list[str]]] = {"bid": [], "offer": []}
            for u in e["updates"]:
                sides[u["side"]].append([u["price_level"], u["new_quantity"]])
            book.apply(sides["offer"], sides["bid"])
            out[(f.conn_id, f.seq)] = (
                [(float(p), float(q)) for p, q, *_ in book.bids(20)],
                [(float(p), float(q)) for p, q, *_ in book.asks(20)],
            )
    return out


def assert_books_are_the_exchanges(
    books: list[BookTop], states: dict[tuple[int, int], Any], conn_id: int
) -> None:
    assert books and all(isinstance(b, BookTop) for b in books)
    seqs = [b.seq for b in books]
    assert None not in seqs and seqs == sorted(set(seqs))  # type: ignore[type-var]
    for b in books:
        assert b.seq is not None
        bids, asks = states[(conn_id, b.seq)]  # a state the exchange's book was in at that number
        assert (list(b.bids), list(b.asks)) == (bids, asks)


def ticker_values(row: dict[str, Any]) -> tuple[float, ...]:
    keys = ("price", "best_bid", "best_ask", "best_bid_quantity", "best_ask_quantity",
            "high_24_h", "low_24_h", "volume_24_h")  # fmt: skip
    return tuple(float(row[k]) for k in keys)


def recorded_trade_ids() -> dict[str, set[str]]:
    """Trade ids per product in the recording's `market_trades` messages (snapshots, whose
    trades happened before the subscription, and updates)."""
    out: dict[str, set[str]] = {}
    for e in load_coinbase_recording(coinbase_recording()).events:
        for row in e.event.get("trades", ()):
            out.setdefault(row["product_id"], set()).add(row["trade_id"])
    return out


async def test_the_recorded_session_arrives_whole_per_market(redis_server: RedisServer) -> None:
    """COINBASE.jsonl replayed at 20x: every recorded trade once per market (the trades of the
    subscribe snapshot included), every ticker, every published book equal to the
    exchange's book at its sequence number, the polled five-minute candle."""
    r = await fresh_redis(redis_server)
    async with FakeCoinbase(CoinbaseReplaySource(speed=20), autoplay=False) as fx:
        channels = ["trades", "ticker", "book", "candles"]
        symbols = list(RECORDED)
        async with publisher(
            redis_server, fx, symbols, channels, candle_intervals=["5m"],
            supervisor={"heartbeat_s": 30},
        ) as pub:  # fmt: skip
            keys = [
                (c, p) for p in RECORDED.values() for c in ("market_trades", "ticker", "level2")
            ]
            await fx.wait_subscribed([*keys, HEARTBEAT_KEY], timeout=30)
            fx.play()
            await fx.wait_done(timeout=30)
            want = {s: trade_rows(frames(fx, "market_trades", p)) for s, p in RECORDED.items()}

            async def all_in() -> bool:
                for s in RECORDED:
                    if await r.xlen(stream_key("coinbase", s, Channel.TRADES)) < len(want[s]):
                        return False
                return True

            await until(all_in)
            await asyncio.sleep(0.3)  # let anything extra (a duplicate) land too
            w = pub.workers["coinbase"]
            recorded = recorded_trade_ids()
            for symbol, pid in RECORDED.items():
                trades = await stored(r, symbol, Channel.TRADES)
                assert all(isinstance(t, Trade) for t in trades)
                assert [t.id for t in trades] == [x["trade_id"] for x in want[symbol]], symbol
                assert {t.id for t in trades} == recorded[pid]  # each recorded trade, once
                for t, x in zip(trades, want[symbol], strict=True):
                    assert (t.price, t.amount, t.side, t.ts_ms) == (
                        float(x["price"]), float(x["size"]), FLIP[x["side"]], iso_ms(x["time"]),
                    )  # fmt: skip
                sent = frames(fx, "ticker", pid)
                tickers = await stored(r, symbol, Channel.TICKER)
                assert all(isinstance(t, Ticker) for t in tickers)
                assert [(t.last, t.bid, t.ask, t.bid_size, t.ask_size, t.high, t.low,
                         t.base_volume) for t in tickers] == [
                    ticker_values(e["tickers"][0]) for f in sent for e in f.payload["events"]
                ]  # fmt: skip
                assert [t.ts_ms for t in tickers] == [iso_ms(f.payload["timestamp"]) for f in sent]
                conns = {f.conn_id for f in frames(fx, "l2_data", pid)}
                assert len(conns) == 1
                books = await stored(r, symbol, Channel.BOOK)
                assert_books_are_the_exchanges(books, book_states(fx, pid), conns.pop())
                last = fx.market.five_minute(pid, 0)[-1]
                final = tuple(float(last[k]) for k in ("open", "high", "low", "close", "volume"))

                async def candle_in(
                    s: str = symbol, start: int = int(last["start"]), final: Any = final
                ) -> bool:
                    got = [c for c in await stored(r, s, Channel.CANDLES)
                           if c.open_ms == start * 1000]  # fmt: skip
                    return bool(got) and (got[-1].interval, got[-1].open, got[-1].high,
                        got[-1].low, got[-1].close, got[-1].volume) == ("5m", *final)  # fmt: skip

                await until(candle_in)
            assert sum(len(v) for v in recorded.values()) == 253  # 132 BTC-USD, 121 ETH-USD
            st = w.status()
            assert st["invalid"] == st["book_resyncs"] == st["reconnects"] == 0
            assert st["trade_gaps"] == st["trade_duplicates"] == 0
            assert "candles" in st["polled"]  # ccxt has no watch_ohlcv for Coinbase
    await r.aclose()


async def test_synthetic_markets_arrive_whole_whatever_their_spelling(
    redis_server: RedisServer,
) -> None:
    r = await fresh_redis(redis_server)
    source = CoinbaseSyntheticSource(["AAA-USD", "BBB-USD", "CCC-USD"], rate=600, total=1800,
                                     seed=4)  # fmt: skip
    pids = {"AAA/USD": "AAA-USD", "BBB/USD": "BBB-USD", "CCC/USD": "CCC-USD"}
    async with FakeCoinbase(source, autoplay=False) as fx:
        spelled = ["AAA-USD", "bbb/usd", "CCCUSD"]
        channels = ["trades", "ticker", "book"]
        async with publisher(redis_server, fx, spelled, channels) as pub:
            keys = [(c, p) for p in pids.values() for c in ("market_trades", "ticker", "level2")]
            await fx.wait_subscribed(keys, timeout=30)
            w = pub.workers["coinbase"]
            assert sorted(w.markets) == sorted(pids)
            fx.play()
            await fx.wait_done(timeout=30)
            made = {s: [x["trade_id"] for x in fx.market.trades[p]] for s, p in pids.items()}

            async def all_in() -> bool:
                for s in pids:
                    if await r.xlen(stream_key("coinbase", s, Channel.TRADES)) < len(made[s]):
                        return False
                return True

            await until(all_in)
            for symbol, pid in pids.items():
                trades = await stored(r, symbol, Channel.TRADES)
                assert [t.id for t in trades] == made[symbol] and len(made[symbol]) == 200
                assert [t.side for t in trades] == [FLIP[x["side"]] for x in fx.market.trades[pid]]
                sent = frames(fx, "ticker", pid)
                tickers = await stored(r, symbol, Channel.TICKER)
                assert [(t.last, t.bid, t.ask, t.base_volume) for t in tickers] == [
                    ticker_values(e["tickers"][0])[:3] + ticker_values(e["tickers"][0])[-1:]
                    for f in sent
                    for e in f.payload["events"]
                ]
                conn = {f.conn_id for f in frames(fx, "l2_data", pid)}.pop()
                books = await stored(r, symbol, Channel.BOOK)
                assert_books_are_the_exchanges(books, book_states(fx, pid), conn)
            st = w.status()
            assert st["trade_gaps"] == st["trade_duplicates"] == st["invalid"] == 0
            assert st["book_resyncs"] == st["reconnects"] == 0
        async with Consumer(redis_server.url, ["coinbase:AAA/USD"], ["ticker", "trades", "book"],
                            backfill=5000) as c:  # fmt: skip
            assert len(c.buffer("coinbase", "AAA/USD", "trades")) == 200
            best = c.best("coinbase", "aaa-usd")
            assert best is not None and best.bid is not None and best.ask is not None
            assert best.bid < best.ask
    await r.aclose()


async def test_a_lost_l2_message_resyncs_and_no_broken_book_is_published(
    redis_server: RedisServer,
) -> None:
    """A `sequence_num` that skips one: ccxt would apply on; the publisher drops the book,
    unsubscribes and subscribes the product again on the same socket, and publishes from the
    new snapshot on."""
    r = await fresh_redis(redis_server)
    source = CoinbaseSyntheticSource(["AAA-USD"], rate=200, seed=8, channels=("level2",))
    async with FakeCoinbase(source, autoplay=False) as fx:
        async with publisher(redis_server, fx, ["AAA/USD"], ["book"]) as pub:
            await fx.wait_subscribed([("level2", "AAA-USD")], timeout=30)
            fx.play()
            w = pub.workers["coinbase"]
            key = stream_key("coinbase", "AAA/USD", Channel.BOOK)

            async def has_books() -> bool:
                return await r.xlen(key) > 10

            await until(has_books)
            fx.book_gap(1, "AAA-USD")
            await until(lambda: _true(w.stats.book_resyncs >= 1))
            before = await r.xlen(key)

            async def grows() -> bool:
                return await r.xlen(key) > before + 10

            await until(grows)
            assert w.stats.book_resyncs == 1 and w.stats.reconnects == 0
            assert w.state.value == "CONNECTED"
            [(conn, _, dropped)] = fx.dropped_book_updates
            lost = dropped["sequence_num"]
            sent = frames(fx, "l2_data", "AAA-USD")
            snaps = [f for f in sent if f.payload["events"][0]["type"] == "snapshot"]
            assert len(snaps) == 2 and {f.conn_id for f in snaps} == {conn}  # same socket
            fresh = snaps[1].seq
            assert fresh > lost
            held = [f.payload["events"][0]["subscriptions"] for f in fx.sent
                    if f.channel == "subscriptions" and lost < f.seq < fresh]  # fmt: skip
            assert held and "level2" not in held[0]  # unsubscribed before subscribing again
            books = await stored(r, "AAA/USD", Channel.BOOK)
            # nothing from the broken chain: no book between the lost message and the snapshot
            assert [b.seq for b in books if lost <= b.seq < fresh] == []
            assert any(b.seq < lost for b in books) and any(b.seq >= fresh for b in books)
            assert_books_are_the_exchanges(books, book_states(fx, "AAA-USD"), conn)
    await r.aclose()


async def test_a_dropped_connection_reconnects_resubscribes_and_backfills(
    redis_server: RedisServer,
) -> None:
    """The fake keeps trading while the publisher is away: after the reconnect, REST trades
    (`products/{id}/ticker`, the window from the last trade on) fill the gap, and the trades
    the new subscription's snapshot repeats are not published twice."""
    r = await fresh_redis(redis_server)
    source = CoinbaseSyntheticSource(["AAA-USD", "BBB-USD"], rate=90, total=540, seed=12)
    pids = {"AAA/USD": "AAA-USD", "BBB/USD": "BBB-USD"}
    async with FakeCoinbase(source, autoplay=False) as fx:
        channels = ["trades", "ticker", "book"]
        async with publisher(redis_server, fx, list(pids), channels,
                             supervisor={"heartbeat_s": 30}) as pub:  # fmt: skip
            keys = [(c, p) for p in pids.values() for c in ("market_trades", "ticker", "level2")]
            await fx.wait_subscribed(keys, timeout=30)
            fx.play()
            w = pub.workers["coinbase"]

            async def some() -> bool:
                return all([await r.xlen(stream_key("coinbase", s, Channel.TRADES)) > 5
                            for s in pids])  # fmt: skip

            await until(some)
            assert fx.faults.close_all() == 1  # one socket for everything
            await until(lambda: _true(w.stats.reconnects >= 1))
            await w.wait_connected(timeout=30)
            await fx.wait_done(timeout=30)
            for symbol, pid in pids.items():
                made = [x["trade_id"] for x in fx.market.trades[pid]]

                async def caught_up(s: str = symbol, n: int = len(made)) -> bool:
                    return await r.xlen(stream_key("coinbase", s, Channel.TRADES)) >= n

                await until(caught_up)
                await asyncio.sleep(0.2)
                trades = await stored(r, symbol, Channel.TRADES)
                assert [t.id for t in trades] == made, symbol  # each once, all, in order
            assert w.stats.backfills >= 1 and w.trade_ids.gaps == 0
            assert w.trade_ids.duplicates > 0  # the new snapshot's repeats, dropped
            snaps = [f for f in fx.sent if f.channel == "l2_data"
                     and f.payload["events"][0]["type"] == "snapshot"]  # fmt: skip
            assert len({f.conn_id for f in snaps}) == 2  # a new socket, new snapshots
            for symbol, pid in pids.items():
                for conn in {f.conn_id for f in snaps}:
                    mine = [b for b in await stored(r, symbol, Channel.BOOK)
                            if (conn, b.seq) in book_states(fx, pid)]  # fmt: skip
                    assert mine
                books = await stored(r, symbol, Channel.BOOK)
                states = book_states(fx, pid)
                for b in books:  # every book is one the exchange showed on one of the sockets
                    assert any(
                        (list(b.bids), list(b.asks)) == states[k] for k in states if k[1] == b.seq
                    )
            assert w.state.value == "CONNECTED"
    await r.aclose()


async def test_unsubscribing_live_tells_coinbase(redis_server: RedisServer) -> None:
    """ccxt's unwatch waits for a `subscriptions` reply listing nothing at all; the publisher
    ends it once the products left the channel, so later unwatches work too."""
    r = await fresh_redis(redis_server)
    source = CoinbaseSyntheticSource(["AAA-USD", "BBB-USD"], rate=100, seed=3,
                                     channels=("market_trades", "ticker"))  # fmt: skip
    async with FakeCoinbase(source) as fx:
        async with publisher(redis_server, fx, ["AAA/USD", "BBB/USD"], ["trades", "ticker"]) as pub:
            keys = {(c, p) for p in ("AAA-USD", "BBB-USD") for c in ("market_trades", "ticker")}
            await fx.wait_subscribed(keys, timeout=30)
            w = pub.workers["coinbase"]
            w.set_wanted({Channel.TRADES: ["AAA/USD", "BBB/USD"], Channel.TICKER: ["AAA/USD"]})
            await until(lambda: _true(("ticker", "BBB-USD") not in fx.subscribed()), 10)
            w.set_wanted({Channel.TRADES: ["AAA/USD"], Channel.TICKER: ["AAA/USD"]})
            await until(lambda: _true(("market_trades", "BBB-USD") not in fx.subscribed()), 10)
            assert fx.subscribed() == {*keys - {("ticker", "BBB-USD"), ("market_trades",
                                       "BBB-USD")}, HEARTBEAT_KEY}  # fmt: skip
            before = await r.xlen(stream_key("coinbase", "AAA/USD", Channel.TRADES))

            async def aaa_goes_on() -> bool:
                return await r.xlen(stream_key("coinbase", "AAA/USD", Channel.TRADES)) > before

            await until(aaa_goes_on)
            assert w.stats.reconnects == 0
    await r.aclose()
