"""Binance USD-M futures end to end: the Binance fake's USD-M venue -> real
ccxt.pro.binanceusdm -> publisher -> Redis -> consumer. The recorded 2021 session (4
perpetuals: aggTrade, depth with `pu`, bookTicker, kline_1m) and a synthetic market with mark
price, funding, liquidations and open interest; a lost diff, a lost trade, a lost connection."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis

from consumers import Consumer
from fake_exchange import FakeExchange, ReplaySource, SyntheticSource, bundled_recording
from fake_exchange.binance_frames import USDM
from fake_exchange.market_state import LiveBook
from fake_exchange.recording import load_recording
from fake_exchange.sources import USDM_DEFAULT_CHANNELS
from marketbus import codec
from marketbus.keys import stream_key
from marketbus.models import (
    BookTop,
    Candle,
    Channel,
    Funding,
    Liquidation,
    MarkPrice,
    OpenInterest,
    Ticker,
    Trade,
)
from marketbus.settings import load_settings
from publisher.app import Publisher
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e

EX = "binanceusdm"
FAST = {"status_interval_s": 0.2, "heartbeat_s": 30, "backoff_min_s": 0.2, "backoff_max_s": 1}
IDS = ["SUSHIUSDT", "AKROUSDT", "KEEPUSDT", "CTKUSDT"]
PERPS = {f"{i.removesuffix('USDT')}/USDT:USDT": i for i in IDS}
Levels = list[tuple[float, float]]


@asynccontextmanager
async def publisher(
    redis_server: RedisServer, fx: FakeExchange, symbols: list[str], channels: list[str]
) -> AsyncIterator[Publisher]:
    cfg = {"name": EX, "symbols": symbols, "url": fx.base_url, "channels": channels,
           "poll_interval_s": 0.2}  # fmt: skip
    settings = load_settings(redis={"url": redis_server.url}, exchanges=[cfg], supervisor=FAST)
    async with Publisher(settings) as pub:
        yield pub


async def fresh_redis(redis_server: RedisServer) -> aioredis.Redis:
    r = aioredis.Redis.from_url(redis_server.url)
    await r.flushdb()
    return r


async def stored(r: aioredis.Redis, symbol: str, channel: Channel) -> list[Any]:
    return [codec.decode_fields(f) for _, f in await r.xrange(stream_key(EX, symbol, channel))]


async def until(cond: Callable[[], Any], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not await cond():
            await asyncio.sleep(0.05)


def sent(fx: FakeExchange, stream: str) -> list[dict[str, Any]]:
    return [f.payload for f in fx.sent if f.stream == stream]


def replay(speed: float) -> ReplaySource:
    return ReplaySource(bundled_recording(USDM), speed=speed)


def exchange_books(sym_id: str) -> dict[int, tuple[Levels, Levels]]:
    """u -> the exchange's top 20 after its diff u: the recorded snapshot, then every recorded
    diff of the symbol (those a fault kept from the client included)."""
    rec = load_recording(bundled_recording(USDM))
    book = LiveBook.from_snapshot(rec.snapshots[sym_id])

    def top() -> tuple[Levels, Levels]:
        bids = sorted(book.bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)[:20]
        asks = sorted(book.asks.items(), key=lambda kv: Decimal(kv[0]))[:20]
        return ([(float(p), float(q)) for p, q in bids], [(float(p), float(q)) for p, q in asks])

    states = {book.last_update_id: top()}
    for f in rec.frames:
        if f.stream == f"{sym_id.lower()}@depth@100ms" and f.data["u"] > book.last_update_id:
            book.apply(f.data)
            states[book.last_update_id] = top()
    return states


def assert_books_are_the_exchanges(books: list[Any], states: dict[int, Any]) -> None:
    assert books and all(isinstance(b, BookTop) for b in books)
    seqs = [b.seq for b in books]
    assert None not in seqs and seqs == sorted(set(seqs))
    for b in books:
        bids, asks = states[b.seq]  # a state the exchange's book really was in at that u
        assert (list(b.bids), list(b.asks)) == (bids, asks), b.seq


async def test_the_recorded_session_arrives_whole_per_market(redis_server: RedisServer) -> None:
    """BINANCE_FUTURES.jsonl replayed at 20x: every recorded aggTrade once per market, every
    ticker, every published book equal to the exchange's book at its u, the klines."""
    r = await fresh_redis(redis_server)
    rec = load_recording(bundled_recording(USDM))
    async with FakeExchange(replay(20), autoplay=False) as fx:
        channels = ["trades", "ticker", "book", "candles"]
        async with publisher(redis_server, fx, list(PERPS), channels) as pub:
            streams = [f"{i.lower()}@{c}" for i in IDS
                       for c in ("aggTrade", "ticker", "depth@100ms", "kline_1m")]  # fmt: skip
            await fx.wait_subscribed(streams, timeout=20)
            fx.play()
            await fx.wait_done(timeout=30)
            trades = {p: sent(fx, f"{i.lower()}@aggTrade") for p, i in PERPS.items()}
            recorded = {p: [f for f in rec.frames if f.stream == f"{i.lower()}@aggTrade"]
                        for p, i in PERPS.items()}  # fmt: skip
            assert {p: len(t) for p, t in trades.items()} == {
                p: len(t) for p, t in recorded.items()
            }
            assert sum(map(len, trades.values())) == 51  # every aggTrade of the recording

            async def all_in() -> bool:
                for p, t in trades.items():
                    if await r.xlen(stream_key(EX, p, Channel.TRADES)) < len(t):
                        return False
                return True

            await until(all_in)
            await asyncio.sleep(0.3)  # anything extra (a duplicate) would land too
            for p, i in PERPS.items():
                got = await stored(r, p, Channel.TRADES)
                assert all(isinstance(t, Trade) for t in got)
                assert [(t.id, t.price, t.amount, t.side, t.ts_ms) for t in got] == [
                    (str(x["a"]), float(x["p"]), float(x["q"]), "sell" if x["m"] else "buy",
                     x["T"]) for x in trades[p]
                ], p  # fmt: skip
                tickers = await stored(r, p, Channel.TICKER)
                want = sent(fx, f"{i.lower()}@ticker")
                assert all(isinstance(t, Ticker) and t.bid is None for t in tickers)
                assert [(t.ts_ms, t.last) for t in tickers] == [
                    (x["E"], float(x["c"])) for x in want
                ]

                async def last_book(sym: str = p, sym_id: str = i) -> bool:
                    books = await stored(r, sym, Channel.BOOK)
                    snap = fx.market.depth(sym_id, 1)
                    return bool(books) and books[-1].seq == snap["lastUpdateId"]

                await until(last_book)
                assert_books_are_the_exchanges(await stored(r, p, Channel.BOOK), exchange_books(i))
                klines = {k["k"]["t"]: k["k"] for k in sent(fx, f"{i.lower()}@kline_1m")}
                final = klines[max(klines)]

                async def candle_in(sym: str = p, k: Any = final) -> bool:
                    got = [c for c in await stored(r, sym, Channel.CANDLES) if c.open_ms == k["t"]]
                    return bool(got) and (got[-1].close, got[-1].volume) == (
                        float(k["c"]), float(k["v"]))  # fmt: skip

                await until(candle_in)
                candles = await stored(r, p, Channel.CANDLES)
                assert all(isinstance(c, Candle) for c in candles)
                assert {c.open_ms for c in candles} <= klines.keys()
            st = pub.workers[EX].status()
            assert st["invalid"] == st["book_resyncs"] == st["reconnects"] == 0
            assert st["trade_gaps"] == st["trade_duplicates"] == 0
            assert st["parser"] == "ccxt"
        async with Consumer(redis_server.url, [f"{EX}:{p}" for p in PERPS],
                            ["ticker", "trades", "book"], backfill=5000) as c:  # fmt: skip
            for p in PERPS:
                assert len(c.buffer(EX, p, "trades")) == len(trades[p])
            best = c.best(EX, "sushi/usdt:usdt")  # from the book: USD-M tickers carry none
            snap = fx.market.depth("SUSHIUSDT", 1)
            assert best is not None
            assert (best.bid, best.ask) == (float(snap["bids"][0][0]), float(snap["asks"][0][0]))
    await r.aclose()


async def test_a_pu_break_resyncs_the_book_and_every_book_is_the_exchanges(
    redis_server: RedisServer,
) -> None:
    """A recorded diff lost on the way: CCXT sees `pu` not follow, the worker counts one
    resync, a fresh REST snapshot restarts the chain, and every book published before and
    after equals the exchange's at its u (nothing from the broken chain)."""
    r = await fresh_redis(redis_server)
    perp, sym_id = "SUSHI/USDT:USDT", "SUSHIUSDT"
    stream = "sushiusdt@depth@100ms"
    async with FakeExchange(replay(4), autoplay=False) as fx:
        async with publisher(redis_server, fx, [perp], ["book"]) as pub:
            await fx.wait_subscribed([stream], timeout=20)
            fx.play()
            w = pub.workers[EX]

            async def some_books() -> bool:
                return await r.xlen(stream_key(EX, perp, Channel.BOOK)) >= 3

            await until(some_books)
            fx.faults.depth_gap(1, stream)
            await until(lambda: _true(w.stats.book_resyncs >= 1))
            await fx.wait_done(timeout=30)
            assert fx.faults.depth_dropped == {stream: 1}
            final = fx.market.depth(sym_id, 1)["lastUpdateId"]

            async def caught_up() -> bool:
                books = await stored(r, perp, Channel.BOOK)
                return bool(books) and books[-1].seq == final

            await until(caught_up)
            assert w.stats.book_resyncs == 1 and w.stats.reconnects == 0
            books = await stored(r, perp, Channel.BOOK)
            assert_books_are_the_exchanges(books, exchange_books(sym_id))
            recorded = load_recording(bundled_recording(USDM)).frames
            [lost] = {f.data["u"] for f in recorded if f.stream == stream} - {
                d["u"] for d in sent(fx, stream)
            }
            assert any(b.seq < lost for b in books) and any(b.seq > lost for b in books)
    await r.aclose()


def synthetic(total: int = 3_000, seed: int = 21) -> SyntheticSource:
    return SyntheticSource(["AAA/USDT:USDT", "BBB/USDT:USDT"], rate=500, total=total, seed=seed,
                           venue=USDM, channels=USDM_DEFAULT_CHANNELS)  # fmt: skip


def deduped(items: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Items whose values (all but the first, the time) differ from the previous one's."""
    out: list[tuple[Any, ...]] = []
    for it in items:
        if not out or out[-1][1:] != it[1:]:
            out.append(it)
    return out


async def test_funding_mark_liquidations_and_open_interest_are_what_the_fake_sent(
    redis_server: RedisServer,
) -> None:
    r = await fresh_redis(redis_server)
    perp, other = "AAA/USDT:USDT", "BBB/USDT:USDT"
    derivs = ["funding", "mark", "open_interest", "liquidations"]
    async with FakeExchange(synthetic(), autoplay=False) as fx:
        async with publisher(redis_server, fx, ["AAAUSDT", other], ["ticker", *derivs]) as pub:
            await fx.wait_subscribed(["aaausdt@ticker", "aaausdt@markPrice@1s",
                                      "aaausdt@forceOrder"], timeout=20)  # fmt: skip
            w = pub.workers[EX]
            assert sorted(w.markets) == [perp, other]  # AAAUSDT: the perpetual
            async with Consumer(redis_server.url, [f"{EX}:{perp}"], ["ticker", *derivs],
                                backfill=10_000, block_ms=50) as c:  # fmt: skip
                fx.play()
                await fx.wait_done(timeout=40)
                marks = sent(fx, "aaausdt@markPrice@1s")
                want_f = deduped([(m["E"], float(m["r"]), m["T"]) for m in marks])
                want_m = deduped([(m["E"], float(m["p"]), float(m["i"])) for m in marks])
                liqs = [(x["o"]["T"], x["o"]["S"].lower(), float(x["o"]["ap"]),
                         float(x["o"]["q"])) for x in sent(fx, "aaausdt@forceOrder")]  # fmt: skip
                oi_states = fx.market.open_interest["AAAUSDT"]
                assert len(want_f) > 5 and len(want_m) > 50 and len(liqs) > 50

                async def all_in() -> bool:
                    oi = c.buffer(EX, perp, "open_interest").latest(1).to_pylist()
                    return (
                        len(c.buffer(EX, perp, "funding")) >= len(want_f)
                        and len(c.buffer(EX, perp, "mark")) >= len(want_m)
                        and len(c.buffer(EX, perp, "liquidations")) >= len(liqs)
                        and bool(oi)
                        and oi[0]["contracts"] == float(oi_states[-1]["openInterest"])
                    )

                await until(all_in)
                await asyncio.sleep(0.3)
                funding = await stored(r, perp, Channel.FUNDING)
                assert all(isinstance(x, Funding) for x in funding)
                assert [(x.ts_ms, x.rate, x.next_funding_ms) for x in funding] == want_f
                assert {(x.predicted_rate, x.interval_ms) for x in funding} == {(None, None)}
                got_m = await stored(r, perp, Channel.MARK)
                assert all(isinstance(x, MarkPrice) for x in got_m)
                assert [(x.ts_ms, x.mark_price, x.index_price) for x in got_m] == want_m
                got_l = await stored(r, perp, Channel.LIQUIDATIONS)
                assert all(isinstance(x, Liquidation) for x in got_l)
                assert [(x.ts_ms, x.side, x.price, x.amount) for x in got_l] == liqs
                # open interest: polled over REST; each record a state the exchange was in,
                # in order, never the same twice in a row, the last one the exchange's last
                ois = await stored(r, perp, Channel.OPEN_INTEREST)
                assert all(isinstance(x, OpenInterest) and x.value is None for x in ois)
                states = [(x["time"], float(x["openInterest"])) for x in oi_states]
                got_oi = [(x.ts_ms, x.contracts) for x in ois]
                assert got_oi and set(got_oi) <= set(states)
                assert got_oi == sorted(got_oi) and got_oi == deduped(got_oi)
                assert len(c.buffer(EX, perp, "funding")) == len(want_f)
                st = w.status()
                assert st["invalid"] == 0 and st["derivatives_unchanged"] > 0
    await r.aclose()


async def test_a_lost_aggtrade_mid_stream_is_one_gap_of_one(redis_server: RedisServer) -> None:
    r = await fresh_redis(redis_server)
    perp = "AAA/USDT:USDT"
    async with FakeExchange(synthetic(total=None), autoplay=False) as fx:
        async with publisher(redis_server, fx, [perp], ["trades"]) as pub:
            await fx.wait_subscribed(["aaausdt@aggTrade"], timeout=20)
            fx.play()
            w = pub.workers[EX]

            async def some() -> bool:
                return await r.xlen(stream_key(EX, perp, Channel.TRADES)) >= 10

            await until(some)
            fx.drop("aaausdt@aggTrade", 1)
            await until(lambda: _true(fx.dropped == {"aaausdt@aggTrade": 1}))
            n = len(sent(fx, "aaausdt@aggTrade"))

            async def past_it() -> bool:
                return await r.xlen(stream_key(EX, perp, Channel.TRADES)) >= n + 5

            await until(past_it)
            assert (w.trade_ids.gaps, w.trade_ids.missing, w.trade_ids.duplicates) == (1, 1, 0)
            assert w.status()["trade_gaps"] == 1
            ids = [int(t.id) for t in await stored(r, perp, Channel.TRADES)]
            holes = [b for a, b in itertools.pairwise(ids) if b != a + 1]
            assert len(holes) == 1  # exactly the dropped one is missing
    await r.aclose()


async def test_a_dropped_connection_reconnects_and_backfills_every_trade(
    redis_server: RedisServer,
) -> None:
    """The fake keeps trading while the publisher is away: after the reconnect, REST
    `aggTrades` (by time) fills the gap, so every trade the exchange made arrives once."""
    r = await fresh_redis(redis_server)
    perp = "AAA/USDT:USDT"
    source = SyntheticSource([perp], rate=100, total=800, seed=3, venue=USDM,
                             channels=("aggTrade",))  # fmt: skip
    async with FakeExchange(source, autoplay=False) as fx:
        async with publisher(redis_server, fx, [perp], ["trades", "book"]) as pub:
            await fx.wait_subscribed(["aaausdt@aggTrade", "aaausdt@depth@100ms"], timeout=20)
            fx.play()
            w = pub.workers[EX]

            async def some() -> bool:
                return await r.xlen(stream_key(EX, perp, Channel.TRADES)) > 20

            await until(some)
            assert fx.faults.close_all() == 2  # the market and the public socket
            await until(lambda: _true(w.stats.reconnects >= 1))
            await w.wait_connected(timeout=20)
            await fx.wait_done(timeout=30)
            made = [str(a["a"]) for a in fx.market.agg_trades["AAAUSDT"]]

            async def caught_up() -> bool:
                return await r.xlen(stream_key(EX, perp, Channel.TRADES)) >= len(made)

            await until(caught_up)
            await asyncio.sleep(0.3)
            trades = await stored(r, perp, Channel.TRADES)
            assert sorted(t.id for t in trades) == sorted(made)  # each once, all of them
            assert w.stats.backfills >= 1 and w.stats.backfilled > 0
            assert w.trade_ids.gaps == 0
    await r.aclose()


async def _true(v: bool) -> bool:
    return v


async def test_a_market_removed_at_run_time_unsubscribes_its_mark_price_stream(
    redis_server: RedisServer,
) -> None:
    """``markPrice`` feeds both ``mark`` and ``funding``: it goes when neither wants it."""
    perp, other = "AAA/USDT:USDT", "BBB/USDT:USDT"
    aaa, bbb = "aaausdt@markPrice@1s", "bbbusdt@markPrice@1s"
    async with FakeExchange(synthetic(), autoplay=False) as fx:
        async with publisher(redis_server, fx, [perp, other], ["funding", "mark"]) as pub:
            await fx.wait_subscribed([aaa, bbb], timeout=20)
            w = pub.workers[EX]
            w.set_wanted({"funding": [perp, other], "mark": [other]})
            await asyncio.sleep(1.0)  # an unsubscribe would be out by now
            assert {aaa, bbb} <= fx.subscribed_streams()  # funding still reads AAA's
            w.set_wanted({"funding": [other], "mark": [other]})

            async def gone() -> bool:
                return aaa not in fx.subscribed_streams()

            await until(gone, timeout=10)
            assert bbb in fx.subscribed_streams()
            assert w.active == {Channel.FUNDING: [other], Channel.MARK: [other]}
