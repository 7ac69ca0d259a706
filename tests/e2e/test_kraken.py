"""Kraken end to end: fake Kraken (websocket v2) -> real ccxt.pro.kraken -> publisher -> Redis ->
consumer: the recorded session (trades, tickers, books checked against the exchange's own
checksums, websocket candles), synthetic pairs, a corrupted checksum and a lost book update
(resync on the same socket, no wrong book published), a dropped connection with backfill."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis

from consumers import Consumer
from fake_exchange.kraken import FakeKraken, KrakenReplaySource, KrakenSyntheticSource
from fake_exchange.kraken.frames import v2_symbol
from fake_exchange.kraken.recording import kraken_recording, load_kraken_recording
from fake_exchange.kraken.server import KrakenSentFrame
from marketbus import codec
from marketbus.keys import stream_key
from marketbus.models import BookTop, Candle, Channel, Ticker, Trade
from marketbus.settings import load_settings
from publisher.app import Publisher
from publisher.kraken import CheckedBook, rfc3339_ms
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e

FAST = {"status_interval_s": 0.2, "heartbeat_s": 3, "backoff_min_s": 0.2, "backoff_max_s": 1}
DEPTH = 25
"""The depth the publisher subscribes for its default 20-level records."""
Levels = list[tuple[float, float]]
State = tuple[Levels, Levels]


@asynccontextmanager
async def publisher(
    redis_server: RedisServer, fx: FakeKraken, symbols: list[str], channels: list[str], **kw: Any
) -> AsyncIterator[Publisher]:
    sup = {**FAST, **kw.pop("supervisor", {})}
    cfg = {"name": "kraken", "symbols": symbols, "url": fx.base_url, "channels": channels, **kw}
    settings = load_settings(redis={"url": redis_server.url}, exchanges=[cfg], supervisor=sup)
    async with Publisher(settings) as pub:
        yield pub


async def fresh_redis(redis_server: RedisServer) -> aioredis.Redis:
    r = aioredis.Redis.from_url(redis_server.url)
    await r.flushdb()
    return r


async def stored(r: aioredis.Redis, symbol: str, channel: Channel) -> list[Any]:
    rows: Any = await r.xrange(stream_key("kraken", symbol, channel))
    return [codec.decode_fields(f) for _, f in rows]


async def until(cond: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not await cond():
            await asyncio.sleep(0.05)


async def _true(v: bool) -> bool:
    return v


def frames(fx: FakeKraken, channel: str, symbol: str) -> list[KrakenSentFrame]:
    return [f for f in fx.sent if (f.channel, f.symbol) == (channel, symbol)]


def trade_rows(fx: FakeKraken, symbol: str) -> list[dict[str, Any]]:
    """Every trade the frames showed, each id once, oldest first."""
    rows = {r["trade_id"]: r for f in frames(fx, "trade", symbol) for r in f.payload["data"]}
    return sorted(rows.values(), key=lambda r: int(r["trade_id"]))


def book_states(fx: FakeKraken, symbol: str) -> dict[int, list[tuple[State, bool]]]:
    """Per connection, the book a client builds from the frames it got (top 20 a side after
    each message) and whether it agrees with the exchange's checksum in that message: a
    lost message makes the client's book wrong until the next snapshot."""
    decimals = fx.market.decimals(fx.market.by_v2[symbol])
    out: dict[int, list[tuple[State, bool]]] = {}
    books: dict[int, CheckedBook] = {}
    for f in frames(fx, f"book-{DEPTH}", symbol):
        row = f.row
        if f.kind == "snapshot":
            books[f.conn_id] = CheckedBook(DEPTH)
        book = books[f.conn_id]
        book.apply(row)
        bids = [(-k, book.bids.levels[k]) for k in book.bids.keys[:20]]
        asks = [(k, book.asks.levels[k]) for k in book.asks.keys[:20]]
        ok = book.checksum(decimals) == row["checksum"]
        out.setdefault(f.conn_id, []).append(((bids, asks), ok))
    return out


def assert_books_are_the_exchanges(books: list[BookTop], states: list[tuple[State, bool]]) -> int:
    """Each published book is a state the exchange's book was in (its checksum agrees), in
    the order the states came; returns how many states were wrong (a lost message)."""
    assert books and all(isinstance(b, BookTop) for b in books)
    i = 0
    for b in books:
        got = (list(b.bids), list(b.asks))
        while i < len(states) and not (states[i][0] == got and states[i][1]):
            i += 1
        assert i < len(states), f"published book {got} is none of the exchange's, in order"
    return sum(not ok for _, ok in states)


def recorded_trades() -> dict[str, int]:
    """Trades per v2 symbol in the recording's `trade` frames."""
    out: dict[str, int] = {}
    for f in load_kraken_recording(kraken_recording()).frames:
        if f.channel == "trade":
            sym = v2_symbol(f.pair)
            out[sym] = out.get(sym, 0) + len(f.parts[0])
    return out


async def test_the_recorded_session_arrives_whole_per_market(redis_server: RedisServer) -> None:
    """KRAKEN.jsonl (v1, 10 pairs) replayed at 20x as v2: every recorded trade once per
    market, every ticker, every published book one the exchange's checksum vouches for (no
    resync in 2,000 updates: the publisher's checksum agrees with Kraken's on real books),
    websocket candles equal to the fake's."""
    r = await fresh_redis(redis_server)
    async with FakeKraken(KrakenReplaySource(speed=20), autoplay=False) as fx:
        symbols = sorted(v2_symbol(ws) for ws in {f.pair for f in
                         load_kraken_recording(kraken_recording()).frames})  # fmt: skip
        assert len(symbols) == 10
        channels = ["trades", "ticker", "book", "candles"]
        async with publisher(redis_server, fx, symbols, channels, candle_intervals=["1m"],
                             supervisor={"heartbeat_s": 30}) as pub:  # fmt: skip
            keys = [(c, s) for s in symbols for c in ("trade", "ticker", f"book-{DEPTH}", "ohlc-1")]
            await fx.wait_subscribed(keys, timeout=30)
            fx.play()
            await fx.wait_done(timeout=30)
            want = {s: trade_rows(fx, s) for s in symbols}
            assert {s: len(v) for s, v in want.items() if v} == recorded_trades()

            async def all_in() -> bool:
                for s in symbols:
                    if await r.xlen(stream_key("kraken", s, Channel.TRADES)) < len(want[s]):
                        return False
                return True

            await until(all_in)
            await asyncio.sleep(0.3)  # let anything extra (a duplicate) land too
            w = pub.workers["kraken"]
            for symbol in symbols:
                trades = await stored(r, symbol, Channel.TRADES)
                assert all(isinstance(t, Trade) for t in trades)
                assert [t.id for t in trades] == [str(x["trade_id"]) for x in want[symbol]]
                for t, x in zip(trades, want[symbol], strict=True):
                    assert (t.price, t.amount, t.side, t.ts_ms) == (
                        x["price"], x["qty"], x["side"], rfc3339_ms(x["timestamp"]))  # fmt: skip
                sent = frames(fx, "ticker", symbol)
                tickers = await stored(r, symbol, Channel.TICKER)
                assert all(isinstance(t, Ticker) for t in tickers)
                assert [(t.last, t.bid, t.ask, t.bid_size, t.ask_size, t.high, t.low,
                         t.base_volume, t.ts_ms) for t in tickers] == [
                    (x["last"], x["bid"], x["ask"], x["bid_qty"], x["ask_qty"], x["high"],
                     x["low"], x["volume"], rfc3339_ms(x["timestamp"]))
                    for x in (f.row for f in sent)
                ]  # fmt: skip
                states = book_states(fx, symbol)
                assert len(states) == 1
                books = await stored(r, symbol, Channel.BOOK)
                assert assert_books_are_the_exchanges(books, states.popitem()[1]) == 0
            # candles from the websocket `ohlc` channel, built by the fake from the trades
            for symbol in [s for s in symbols if want[s]]:
                last = fx.market.candle_rows(fx.market.by_v2[symbol], 1)[-1]
                final = (*[float(x) for x in last[1:5]], float(last[6]))

                async def candle_in(s: str = symbol, start: int = last[0], v: Any = final) -> bool:
                    got = [c for c in await stored(r, s, Channel.CANDLES)
                           if c.open_ms == start * 1000]  # fmt: skip
                    return bool(got) and (got[-1].interval, got[-1].open, got[-1].high,
                        got[-1].low, got[-1].close, got[-1].volume) == ("1m", *v)  # fmt: skip

                await until(candle_in)
            assert all(isinstance(c, Candle) for c in await stored(r, "XMR/USD", Channel.CANDLES))
            st = w.status()
            assert st["invalid"] == st["book_resyncs"] == st["reconnects"] == 0
            assert st["trade_gaps"] == st["trade_duplicates"] == 0
            assert "candles" not in st["polled"]  # ccxt watches Kraken's ohlc channel
    await r.aclose()


async def test_synthetic_pairs_arrive_whole_whatever_their_spelling(
    redis_server: RedisServer,
) -> None:
    r = await fresh_redis(redis_server)
    source = KrakenSyntheticSource(["AAA/USD", "BBB/USD", "XBT/USD"], rate=600, total=1800, seed=4)
    symbols = ["AAA/USD", "BBB/USD", "BTC/USD"]
    async with FakeKraken(source, autoplay=False) as fx:
        spelled = ["AAA/USD", "bbb-usd", "XXBTZUSD"]
        async with publisher(redis_server, fx, spelled, ["trades", "ticker", "book"]) as pub:
            keys = [(c, s) for s in symbols for c in ("trade", "ticker", f"book-{DEPTH}")]
            await fx.wait_subscribed(keys, timeout=30)
            w = pub.workers["kraken"]
            assert sorted(w.markets) == sorted(symbols)
            fx.play()
            await fx.wait_done(timeout=30)
            made = {s: [str(t.trade_id) for t in fx.market.trades[fx.market.by_v2[s]]]
                    for s in symbols}  # fmt: skip

            async def all_in() -> bool:
                for s in symbols:
                    if await r.xlen(stream_key("kraken", s, Channel.TRADES)) < len(made[s]):
                        return False
                return True

            await until(all_in)
            for symbol in symbols:
                trades = await stored(r, symbol, Channel.TRADES)
                assert [t.id for t in trades] == made[symbol] and len(made[symbol]) == 200
                tickers = await stored(r, symbol, Channel.TICKER)
                assert [(t.last, t.bid, t.ask) for t in tickers] == [
                    (f.row["last"], f.row["bid"], f.row["ask"])
                    for f in frames(fx, "ticker", symbol)
                ]
                books = await stored(r, symbol, Channel.BOOK)
                [states] = book_states(fx, symbol).values()
                assert assert_books_are_the_exchanges(books, states) == 0
            st = w.status()
            assert st["trade_gaps"] == st["trade_duplicates"] == st["invalid"] == 0
            assert st["book_resyncs"] == st["reconnects"] == 0
        async with Consumer(redis_server.url, ["kraken:AAA/USD"], ["ticker", "trades", "book"],
                            backfill=5000) as c:  # fmt: skip
            assert len(c.buffer("kraken", "AAA/USD", "trades")) == 200
            best = c.best("kraken", "aaa-usd")
            assert best is not None and best.bid is not None and best.ask is not None
            assert best.bid < best.ask
    await r.aclose()


@pytest.mark.parametrize("fault", ["corrupt_checksum", "book_gap"])
async def test_a_bad_checksum_resyncs_on_the_same_socket_and_no_wrong_book_is_published(
    redis_server: RedisServer, fault: str
) -> None:
    """A checksum that does not match (a corrupted one, or the right one after a lost
    update): ccxt 4.5.90 would apply on; the publisher drops the book, unsubscribes and
    subscribes the pair again on the same socket, and publishes from the new snapshot on."""
    r = await fresh_redis(redis_server)
    source = KrakenSyntheticSource(["AAA/USD"], rate=200, seed=8, channels=("book",))
    async with FakeKraken(source, autoplay=False) as fx:
        async with publisher(redis_server, fx, ["AAA/USD"], ["book"]) as pub:
            await fx.wait_subscribed([(f"book-{DEPTH}", "AAA/USD")], timeout=30)
            fx.play()
            w = pub.workers["kraken"]
            key = stream_key("kraken", "AAA/USD", Channel.BOOK)

            async def has_books() -> bool:
                return await r.xlen(key) > 10

            await until(has_books)
            getattr(fx, fault)(1, "AAA/USD")
            await until(lambda: _true(w.stats.book_resyncs >= 1))
            before = await r.xlen(key)

            async def grows() -> bool:
                return await r.xlen(key) > before + 10

            await until(grows)
            assert w.stats.book_resyncs == 1 and w.stats.reconnects == 0
            assert w.state.value == "CONNECTED"
            sent = frames(fx, f"book-{DEPTH}", "AAA/USD")
            snaps = [f for f in sent if f.kind == "snapshot"]
            assert len(snaps) == 2 and len({f.conn_id for f in snaps}) == 1  # same socket
            [states] = book_states(fx, "AAA/USD").values()
            books = await stored(r, "AAA/USD", Channel.BOOK)
            wrong = assert_books_are_the_exchanges(books, states)
            if fault == "book_gap":
                assert len(fx.dropped_book_updates) == 1
                assert wrong >= 1  # the client's book went wrong: none of it was published
            else:
                [(_, bad)] = fx.corrupted
                assert [f for f in sent if f.payload == bad]  # it went out, with a bad sum
    await r.aclose()


async def test_a_dropped_connection_reconnects_resubscribes_and_backfills(
    redis_server: RedisServer,
) -> None:
    """The fake keeps trading while the publisher is away: after the reconnect, REST `Trades`
    (since the last trade) fill the gap; each trade arrives once, ids unbroken."""
    r = await fresh_redis(redis_server)
    source = KrakenSyntheticSource(["AAA/USD", "BBB/USD"], rate=90, total=540, seed=12)
    symbols = ["AAA/USD", "BBB/USD"]
    async with FakeKraken(source, autoplay=False) as fx:
        async with publisher(redis_server, fx, symbols, ["trades", "ticker", "book"],
                             supervisor={"heartbeat_s": 30}) as pub:  # fmt: skip
            keys = [(c, s) for s in symbols for c in ("trade", "ticker", f"book-{DEPTH}")]
            await fx.wait_subscribed(keys, timeout=30)
            fx.play()
            w = pub.workers["kraken"]

            async def some() -> bool:
                return all([await r.xlen(stream_key("kraken", s, Channel.TRADES)) > 5
                            for s in symbols])  # fmt: skip

            await until(some)
            assert fx.faults.close_all() == 1  # one v2 socket for everything
            await until(lambda: _true(w.stats.reconnects >= 1))
            await w.wait_connected(timeout=30)
            await fx.wait_done(timeout=30)
            for symbol in symbols:
                made = [str(t.trade_id) for t in fx.market.trades[fx.market.by_v2[symbol]]]

                async def caught_up(s: str = symbol, n: int = len(made)) -> bool:
                    return await r.xlen(stream_key("kraken", s, Channel.TRADES)) >= n

                await until(caught_up)
                await asyncio.sleep(0.2)
                trades = await stored(r, symbol, Channel.TRADES)
                assert [t.id for t in trades] == made, symbol  # each once, all, in order
            assert w.stats.backfills >= 1 and w.trade_ids.gaps == 0
            snaps = [f for f in fx.sent if f.channel == f"book-{DEPTH}" and f.kind == "snapshot"]
            assert len({f.conn_id for f in snaps}) == 2  # a new socket, new snapshots
            for symbol in symbols:
                states = book_states(fx, symbol)
                for b in await stored(r, symbol, Channel.BOOK):  # each one the exchange showed
                    got = (list(b.bids), list(b.asks))
                    assert any(s == got and ok for v in states.values() for s, ok in v)
            assert w.state.value == "CONNECTED"
    await r.aclose()


async def test_a_lost_trade_message_is_a_counted_gap(redis_server: RedisServer) -> None:
    """v2 `trade_id`s count per pair: a trade message lost on the way is one gap of its
    trades, seen in the ids; everything else arrives once."""
    r = await fresh_redis(redis_server)
    source = KrakenSyntheticSource(["AAA/USD"], rate=100, total=120, seed=5, channels=("trade",))
    async with FakeKraken(source, autoplay=False) as fx:
        async with publisher(redis_server, fx, ["AAA/USD"], ["trades"]) as pub:
            await fx.wait_subscribed([("trade", "AAA/USD")], timeout=30)
            fx.play()
            w = pub.workers["kraken"]
            await until(lambda: _true(len(fx.market.trades.get("AAA/USD", [])) > 30))
            fx.trade_gap(1, "AAA/USD")
            await fx.wait_done(timeout=30)
            [(_, lost)] = fx.dropped_trades
            lost_ids = {str(x["trade_id"]) for x in lost["data"]}
            made = [str(t.trade_id) for t in fx.market.trades["AAA/USD"]]

            async def all_in() -> bool:
                key = stream_key("kraken", "AAA/USD", Channel.TRADES)
                return await r.xlen(key) >= len(made) - len(lost_ids)

            await until(all_in)
            await asyncio.sleep(0.2)
            trades = await stored(r, "AAA/USD", Channel.TRADES)
            assert [t.id for t in trades] == [i for i in made if i not in lost_ids]
            assert len(made) == 120 and len(lost_ids) == 1
            assert (w.trade_ids.gaps, w.trade_ids.missing) == (1, 1)
            assert w.trade_ids.duplicates == 0 and w.stats.reconnects == 0
    await r.aclose()
