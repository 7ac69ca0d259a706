"""Bybit linear derivatives channels end to end: fake Bybit v5 -> real ccxt.pro.bybit ->
publisher -> Redis -> Consumer. Funding, mark/index price and open interest ride in Bybit's
linear `tickers` (deltas CCXT merges into the last snapshot); liquidations on
`allLiquidation.<symbol>` (what ccxt 4.5.90's `watch_liquidations` subscribes to). Every
expected value is read from the frames the fake wrote."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis

from consumers import Consumer
from fake_exchange import BybitReplaySource, BybitSyntheticSource, FakeBybit
from marketbus import codec
from marketbus.keys import stream_key
from marketbus.models import Channel, Funding, Liquidation, MarkPrice, OpenInterest
from marketbus.settings import load_settings
from publisher.app import Publisher
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e

FAST = {"status_interval_s": 0.2, "heartbeat_s": 30, "backoff_min_s": 0.2, "backoff_max_s": 1}
SPOT, PERP = "AAA/USDT", "AAA/USDT:USDT"
DERIVS = ["funding", "mark", "open_interest", "liquidations"]


@asynccontextmanager
async def publisher(
    redis_server: RedisServer, fx: FakeBybit, symbols: list[str], channels: list[str]
) -> AsyncIterator[Publisher]:
    cfg = {"name": "bybit", "symbols": symbols, "url": fx.base_url, "channels": channels}
    settings = load_settings(redis={"url": redis_server.url}, exchanges=[cfg], supervisor=FAST)
    async with Publisher(settings) as pub:
        yield pub


async def fresh_redis(redis_server: RedisServer) -> aioredis.Redis:
    r = aioredis.Redis.from_url(redis_server.url)
    await r.flushdb()
    return r


async def stored(r: aioredis.Redis, symbol: str, channel: Channel) -> list[Any]:
    return [codec.decode_fields(f) for _, f in await r.xrange(stream_key("bybit", symbol, channel))]


async def until(cond: Callable[[], Any], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not await cond():
            await asyncio.sleep(0.05)


def ticker_states(fx: FakeBybit, bybit_id: str) -> list[tuple[int, dict[str, Any]]]:
    """(ts, the merged ticker) after each linear `tickers` frame the fake wrote, in order."""
    out, state = [], {}
    for f in fx.sent:
        if (f.category, f.topic) != ("linear", f"tickers.{bybit_id}"):
            continue
        snap = f.payload["type"] == "snapshot"
        state = dict(f.payload["data"]) if snap else {**state, **f.payload["data"]}
        out.append((f.payload["ts"], state))
    return out


def changes(states: list[tuple[int, dict[str, Any]]], fields: tuple[str, ...]) -> list[Any]:
    """(ts, values of ``fields``) each time they differ from the previous state's: what the
    publisher's dedupe lets through."""
    out: list[Any] = []
    last = None
    for ts, s in states:
        now = tuple(s.get(k) for k in fields)
        if now != last:
            out.append((ts, now))
            last = now
    return out


def expected_funding(states: list[tuple[int, dict[str, Any]]]) -> list[tuple[Any, ...]]:
    got = changes(states, ("fundingRate", "nextFundingTime", "fundingIntervalHour"))
    return [(ts, float(r), int(n), int(h) * 3_600_000) for ts, (r, n, h) in got]


def expected_mark(states: list[tuple[int, dict[str, Any]]]) -> list[tuple[Any, ...]]:
    got = changes(states, ("markPrice", "indexPrice"))
    return [(ts, float(m), float(i)) for ts, (m, i) in got]


def expected_oi(states: list[tuple[int, dict[str, Any]]]) -> list[tuple[Any, ...]]:
    got = changes(states, ("openInterest", "openInterestValue"))
    return [(ts, float(c), float(v)) for ts, (c, v) in got]


def as_funding(rs: list[Funding]) -> list[tuple[Any, ...]]:
    assert all(isinstance(x, Funding) and x.predicted_rate is None for x in rs)
    return [(x.ts_ms, x.rate, x.next_funding_ms, x.interval_ms) for x in rs]


def as_mark(rs: list[MarkPrice]) -> list[tuple[Any, ...]]:
    assert all(isinstance(x, MarkPrice) for x in rs)
    return [(x.ts_ms, x.mark_price, x.index_price) for x in rs]


def as_oi(rs: list[OpenInterest]) -> list[tuple[Any, ...]]:
    assert all(isinstance(x, OpenInterest) for x in rs)
    return [(x.ts_ms, x.contracts, x.value) for x in rs]


def table_rows(c: Consumer, symbol: str, channel: str, cols: tuple[str, ...]) -> list[Any]:
    t = c.buffer("bybit", symbol, channel).table()
    return list(zip(*(t.column(n).to_pylist() for n in cols), strict=True))


async def test_each_derivatives_channel_arrives_as_the_exchange_sent_it(
    redis_server: RedisServer,
) -> None:
    """Synthetic linear market: funding, mark/index, open interest on every change of the
    fake's tickers (and only then), every liquidation once with the order's side, into
    Redis and a Consumer's ring buffers; the spot twin of the id is untouched."""
    r = await fresh_redis(redis_server)
    source = BybitSyntheticSource(
        [SPOT, PERP], rate=400, total=1200, seed=21, channels=("tickers", "allLiquidation")
    )
    async with FakeBybit(source, autoplay=False) as fx:
        async with publisher(redis_server, fx, [PERP], ["ticker", *DERIVS]) as pub:
            topics = [("linear", "tickers.AAAUSDT"), ("linear", "allLiquidation.AAAUSDT")]
            await fx.wait_subscribed(topics, timeout=20)
            assert fx.subscribed() == set(topics)  # one tickers subscription feeds four channels
            async with Consumer(redis_server.url, [f"bybit:{PERP}"], ["ticker", *DERIVS],
                                backfill=10_000, block_ms=50) as c:  # fmt: skip
                fx.play()
                await fx.wait_done(timeout=30)
                states = ticker_states(fx, "AAAUSDT")
                liqs = [x for f in fx.sent if f.topic == "allLiquidation.AAAUSDT"
                        for x in f.payload["data"]]  # fmt: skip
                want_f, want_m, want_o = (
                    expected_funding(states), expected_mark(states), expected_oi(states)
                )  # fmt: skip
                assert len(states) > 100 and len(liqs) > 100
                assert 3 < len(want_f) < len(states)  # the rate moves now and then

                async def all_in() -> bool:
                    return (
                        len(c.buffer("bybit", PERP, "liquidations")) >= len(liqs)
                        and len(c.buffer("bybit", PERP, "mark")) >= len(want_m)
                        and len(c.buffer("bybit", PERP, "funding")) >= len(want_f)
                        and len(c.buffer("bybit", PERP, "open_interest")) >= len(want_o)
                    )

                await until(all_in)
                await asyncio.sleep(0.3)  # anything extra would land now
                assert as_funding(await stored(r, PERP, Channel.FUNDING)) == want_f
                assert as_mark(await stored(r, PERP, Channel.MARK)) == want_m
                assert as_oi(await stored(r, PERP, Channel.OPEN_INTEREST)) == want_o
                got_l = await stored(r, PERP, Channel.LIQUIDATIONS)
                assert all(isinstance(x, Liquidation) for x in got_l)
                flip = {"Buy": "sell", "Sell": "buy"}  # Bybit's S: the liquidated position
                assert [(x.ts_ms, x.side, x.price, x.amount) for x in got_l] == [
                    (x["T"], flip[x["S"]], float(x["p"]), float(x["v"])) for x in liqs
                ]
                # the consumer's ring buffers hold the same
                f_cols = ("ts_ms", "rate", "next_funding_ms", "interval_ms")
                assert table_rows(c, PERP, "funding", f_cols) == want_f
                assert all(math.isnan(v) for v in
                           c.buffer("bybit", PERP, "funding").table()
                           .column("predicted_rate").to_pylist())  # fmt: skip
                assert table_rows(c, PERP, "mark", ("ts_ms", "mark_price", "index_price")) == (
                    want_m
                )
                assert table_rows(c, "aaa/usdt:usdt", "open_interest",
                                  ("ts_ms", "contracts", "value")) == want_o  # fmt: skip
                assert table_rows(c, PERP, "liquidations", ("side", "price", "amount")) == [
                    (flip[x["S"]], float(x["p"]), float(x["v"])) for x in liqs
                ]
                # what the README shows a bot doing
                f = c.buffer("bybit", PERP, "funding")
                m = c.buffer("bybit", PERP, "mark").latest(1).to_pylist()
                assert (f.latest(1).to_pylist()[0]["rate"], m[0]["mark_price"]) == (
                    want_f[-1][1], want_m[-1][1]
                )  # fmt: skip
                best = c.best("bybit", PERP)  # a perp's best bid/ask: from its ticker
                last = states[-1][1]
                assert best is not None and (best.bid, best.ask) == (
                    float(last["bid1Price"]), float(last["ask1Price"])
                )  # fmt: skip
            st = pub.workers["bybit"].status()
            assert st["invalid"] == st["reconnects"] == 0 and st["skipped"] == {}
            assert st["derivatives_unchanged"] > 0  # repeats held back, not published
            assert await r.xlen(stream_key("bybit", SPOT, Channel.FUNDING)) == 0
    await r.aclose()


async def test_the_recorded_tickers_give_funding_mark_and_open_interest(
    redis_server: RedisServer,
) -> None:
    """BYBIT.jsonl (real Bybit frames, 2026): the recorded values of each perpetual, deduped."""
    r = await fresh_redis(redis_server)
    ids = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"]
    perps = [f"{i.removesuffix('USDT')}/USDT:USDT" for i in ids]
    async with FakeBybit(BybitReplaySource(speed=20), autoplay=False) as fx:
        async with publisher(redis_server, fx, perps, ["funding", "mark", "open_interest"]):
            await fx.wait_subscribed([("linear", f"tickers.{i}") for i in ids], timeout=20)
            fx.play()
            await fx.wait_done(timeout=30)
            total = 0
            for p, i in zip(perps, ids, strict=True):
                states = ticker_states(fx, i)
                want_m = expected_mark(states)

                async def marks_in(p: str = p, n: int = len(want_m)) -> bool:
                    return await r.xlen(stream_key("bybit", p, Channel.MARK)) >= n

                await until(marks_in)
                await asyncio.sleep(0.2)
                assert len(want_m) >= 2, i  # the mark moved during the recording
                total += len(want_m)
                assert as_mark(await stored(r, p, Channel.MARK)) == want_m, i
                assert as_funding(await stored(r, p, Channel.FUNDING)) == expected_funding(states)
                assert as_oi(await stored(r, p, Channel.OPEN_INTEREST)) == expected_oi(states)
            assert total > 50
    await r.aclose()


async def test_a_derivatives_channel_on_a_spot_market_is_skipped_not_fatal(
    redis_server: RedisServer,
) -> None:
    r = await fresh_redis(redis_server)
    source = BybitSyntheticSource([SPOT, PERP], rate=200, seed=3,
                                  channels=("publicTrade", "tickers"))  # fmt: skip
    async with FakeBybit(source) as fx:
        # BTCUSDT-style spelling: the spot market; funding is asked for both
        async with publisher(redis_server, fx, ["AAAUSDT", PERP], ["trades", "funding"]) as pub:
            w = pub.workers["bybit"]
            await fx.wait_subscribed(
                [("spot", "publicTrade.AAAUSDT"), ("linear", "tickers.AAAUSDT")], timeout=20
            )

            async def flowing() -> bool:
                return (
                    await r.xlen(stream_key("bybit", SPOT, Channel.TRADES)) > 3
                    and await r.xlen(stream_key("bybit", PERP, Channel.FUNDING)) > 0
                )

            await until(flowing)
            st = w.status()
            assert st["state"] == "CONNECTED" and st["dropped"] == {}
            assert list(st["skipped"]) == [f"funding|{SPOT}"]
            assert "spot market" in st["skipped"][f"funding|{SPOT}"]
            assert st["subscriptions"]["funding"] == [PERP]
            assert ("spot", "tickers.AAAUSDT") not in fx.subscribed()
            assert await r.xlen(stream_key("bybit", SPOT, Channel.FUNDING)) == 0
    await r.aclose()


async def test_dropping_the_ticker_channel_keeps_the_tickers_that_feed_funding(
    redis_server: RedisServer,
) -> None:
    """One `tickers` subscription feeds ticker and funding: it stays while either wants it,
    and is unsubscribed when neither does (live changes, no reconnect)."""
    r = await fresh_redis(redis_server)
    source = BybitSyntheticSource([PERP], rate=200, seed=5, channels=("tickers",))
    async with FakeBybit(source) as fx:
        async with publisher(redis_server, fx, [PERP], ["ticker", "funding"]) as pub:
            w = pub.workers["bybit"]
            topic = ("linear", "tickers.AAAUSDT")
            await fx.wait_subscribed([topic], timeout=20)
            w.set_wanted({Channel.FUNDING: [PERP]})
            before = await r.xlen(stream_key("bybit", PERP, Channel.FUNDING))

            async def funding_goes_on() -> bool:
                return await r.xlen(stream_key("bybit", PERP, Channel.FUNDING)) > before + 3

            await until(funding_goes_on)
            assert topic in fx.subscribed() and w.active == {Channel.FUNDING: [PERP]}
            w.set_wanted({Channel.MARK: [PERP]})  # mark: from the same tickers, still held
            await asyncio.sleep(0.5)
            assert topic in fx.subscribed()
            w.set_wanted({Channel.TRADES: [PERP]})

            async def unsubscribed() -> bool:
                return topic not in fx.subscribed()

            await until(unsubscribed)
            assert w.stats.reconnects == 0
    await r.aclose()
