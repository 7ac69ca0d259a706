"""OKX swap derivatives channels end to end: fake OKX v5 -> real ccxt.pro.okx -> publisher ->
Redis -> Consumer. What ccxt 4.5.90 offers for OKX: `watch_funding_rates` (`funding-rate`),
`watch_mark_prices` (`mark-price`), `watch_liquidations_for_symbols` (`liquidation-orders`
of instType SWAP) and, for open interest, only REST (`fetch_open_interests`:
`public/open-interest`), polled. Every expected value comes from what the fake sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis

from consumers import Consumer
from fake_exchange import FakeOkx, OkxSyntheticSource
from marketbus import codec
from marketbus.keys import stream_key
from marketbus.models import Channel, Funding, Liquidation, MarkPrice, OpenInterest, Ticker
from marketbus.settings import load_settings
from publisher.app import Publisher
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e

FAST = {"status_interval_s": 0.2, "heartbeat_s": 30, "backoff_min_s": 0.2, "backoff_max_s": 1}
SPOT, PERP, OTHER = "AAA/USDT", "AAA/USDT:USDT", "BBB/USDT:USDT"
INST, OTHER_INST = "AAA-USDT-SWAP", "BBB-USDT-SWAP"
DERIVS = ["funding", "mark", "open_interest", "liquidations"]
FAKE_CHANNELS = ("tickers", "funding-rate", "mark-price", "open-interest", "liquidation-orders")


@asynccontextmanager
async def publisher(
    redis_server: RedisServer, fx: FakeOkx, symbols: list[str], channels: list[str]
) -> AsyncIterator[Publisher]:
    cfg = {"name": "okx", "symbols": symbols, "url": fx.base_url, "channels": channels,
           "poll_interval_s": 0.2}  # fmt: skip
    settings = load_settings(redis={"url": redis_server.url}, exchanges=[cfg], supervisor=FAST)
    async with Publisher(settings) as pub:
        yield pub


async def fresh_redis(redis_server: RedisServer) -> aioredis.Redis:
    r = aioredis.Redis.from_url(redis_server.url)
    await r.flushdb()
    return r


async def stored(r: aioredis.Redis, symbol: str, channel: Channel) -> list[Any]:
    return [codec.decode_fields(f) for _, f in await r.xrange(stream_key("okx", symbol, channel))]


async def until(cond: Callable[[], Any], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not await cond():
            await asyncio.sleep(0.05)


def rows(fx: FakeOkx, channel: str, inst: str) -> list[dict[str, Any]]:
    return [x for f in fx.sent if (f.channel, f.inst_id) == (channel, inst)
            for x in f.payload["data"]]  # fmt: skip


def deduped(items: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Items whose values (all but the first, the time) differ from the previous one's."""
    out: list[tuple[Any, ...]] = []
    for it in items:
        if not out or out[-1][1:] != it[1:]:
            out.append(it)
    return out


def expected_funding(sent: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return deduped([
        (int(x["ts"]), float(x["fundingRate"]), int(x["fundingTime"]),
         float(x["nextFundingRate"]) if x["nextFundingRate"] else None,
         int(x["nextFundingTime"]) - int(x["fundingTime"]))
        for x in sent
    ])  # fmt: skip


async def test_each_swap_derivatives_channel_arrives_as_the_exchange_sent_it(
    redis_server: RedisServer,
) -> None:
    r = await fresh_redis(redis_server)
    source = OkxSyntheticSource([SPOT, PERP, OTHER], rate=500, total=2500, seed=11,
                                channels=FAKE_CHANNELS)  # fmt: skip
    async with FakeOkx(source, autoplay=False) as fx:
        async with publisher(redis_server, fx, [PERP], ["ticker", *DERIVS]) as pub:
            keys = [("tickers", INST), ("funding-rate", INST), ("mark-price", INST),
                    ("liquidation-orders", "SWAP")]  # fmt: skip
            await fx.wait_subscribed(keys, timeout=20)
            assert ("open-interest", INST) not in fx.subscribed()  # CCXT polls it over REST
            async with Consumer(redis_server.url, [f"okx:{PERP}"], ["ticker", *DERIVS],
                                backfill=10_000, block_ms=50) as c:  # fmt: skip
                fx.play()
                await fx.wait_done(timeout=40)
                want_f = expected_funding(rows(fx, "funding-rate", INST))
                want_m = deduped([(int(x["ts"]), float(x["markPx"]))
                                  for x in rows(fx, "mark-price", INST)])  # fmt: skip
                liqs = [(int(d["ts"]), d["side"], float(d["bkPx"]), float(d["sz"]))
                        for x in rows(fx, "liquidation-orders", "SWAP") if x["instId"] == INST
                        for d in x["details"][:1]]  # fmt: skip
                oi_states = fx.market.open_interest_history[INST]
                last_oi = oi_states[-1]
                assert len(want_f) > 5 and len(want_m) > 50 and len(liqs) > 50

                async def all_in() -> bool:
                    oi = c.buffer("okx", PERP, "open_interest").latest(1).to_pylist()
                    return (
                        len(c.buffer("okx", PERP, "funding")) >= len(want_f)
                        and len(c.buffer("okx", PERP, "mark")) >= len(want_m)
                        and len(c.buffer("okx", PERP, "liquidations")) >= len(liqs)
                        and bool(oi)
                        and oi[0]["contracts"] == float(last_oi["oi"])
                    )

                await until(all_in)
                await asyncio.sleep(0.3)
                funding = await stored(r, PERP, Channel.FUNDING)
                assert all(isinstance(x, Funding) for x in funding)
                assert [(x.ts_ms, x.rate, x.next_funding_ms, x.predicted_rate, x.interval_ms)
                        for x in funding] == want_f  # fmt: skip
                marks = await stored(r, PERP, Channel.MARK)
                assert all(isinstance(x, MarkPrice) and x.index_price is None for x in marks)
                assert [(x.ts_ms, x.mark_price) for x in marks] == want_m
                got_l = await stored(r, PERP, Channel.LIQUIDATIONS)
                assert all(isinstance(x, Liquidation) for x in got_l)
                assert [(x.ts_ms, x.side, x.price, x.amount) for x in got_l] == liqs
                # open interest: polled; each record a state the exchange was in, in order,
                # never the same twice in a row, and the last one the exchange's last
                ois = await stored(r, PERP, Channel.OPEN_INTEREST)
                assert all(isinstance(x, OpenInterest) for x in ois)
                states = [(int(x["ts"]), float(x["oi"]), float(x["oiUsd"])) for x in oi_states]
                got_oi = [(x.ts_ms, x.contracts, x.value) for x in ois]
                assert got_oi and set(got_oi) <= set(states)
                assert got_oi == sorted(got_oi) and got_oi == deduped(got_oi)
                assert got_oi[-1] == states[-1]
                # the consumer holds the same
                t = c.buffer("okx", PERP, "funding").table()
                assert t.column("rate").to_pylist() == [x[1] for x in want_f]
                assert c.buffer("okx", PERP, "mark").table().column("mark_price").to_pylist() == [
                    x[1] for x in want_m
                ]
                sides = c.buffer("okx", PERP, "liquidations").table().column("side").to_pylist()
                assert sides == [x[1] for x in liqs]
                tickers = await stored(r, PERP, Channel.TICKER)
                assert tickers and all(isinstance(x, Ticker) for x in tickers)
                last = rows(fx, "tickers", INST)[-1]
                best = c.best("okx", PERP)  # a swap's best bid/ask, from its ticker
                assert best is not None and (best.bid, best.ask) == (
                    float(last["bidPx"]), float(last["askPx"])
                )  # fmt: skip
            st = pub.workers["okx"].status()
            assert st["invalid"] == st["reconnects"] == 0
            assert st["polled"] == ["open_interest"] and st["skipped"] == {}
            # the other swap's liquidations came on the same subscription: not published
            assert await r.xlen(stream_key("okx", OTHER, Channel.LIQUIDATIONS)) == 0
            assert any(x["instId"] == OTHER_INST for x in rows(fx, "liquidation-orders", "SWAP"))
    await r.aclose()


async def test_swaps_resolve_by_okx_id_and_unified_symbol_and_spot_keeps_its_spelling(
    redis_server: RedisServer,
) -> None:
    r = await fresh_redis(redis_server)
    source = OkxSyntheticSource([SPOT, PERP], rate=200, seed=2,
                                channels=("tickers", "mark-price"))  # fmt: skip
    async with FakeOkx(source) as fx:
        symbols = ["AAA-USDT-SWAP", "aaausdt"]  # the swap by its OKX id; a loose spot name
        async with publisher(redis_server, fx, symbols, ["ticker", "mark"]) as pub:
            w = pub.workers["okx"]
            await fx.wait_subscribed(
                [("tickers", "AAA-USDT"), ("tickers", INST), ("mark-price", INST)], timeout=20
            )

            async def marks() -> bool:
                return await r.xlen(stream_key("okx", PERP, Channel.MARK)) > 3

            await until(marks)
            assert sorted(w.markets) == [SPOT, PERP]
            st = w.status()
            assert st["skipped"] == {f"mark|{SPOT}": st["skipped"][f"mark|{SPOT}"]}
            assert ("mark-price", "AAA-USDT") not in fx.subscribed()
            assert await r.xlen(stream_key("okx", SPOT, Channel.MARK)) == 0
    await r.aclose()


async def test_okx_marks_carry_the_index_price_of_index_tickers(
    redis_server: RedisServer,
) -> None:
    """OKX's mark-price frames have no index price; the publisher subscribes the contract's
    index on `index-tickers` and every mark record carries the latest index price the
    connection had received before that mark (None before the first)."""
    r = await fresh_redis(redis_server)
    source = OkxSyntheticSource([SPOT, PERP], rate=400, total=1600, seed=5,
                                channels=("mark-price", "index-tickers"))  # fmt: skip
    async with FakeOkx(source, autoplay=False) as fx:
        async with publisher(redis_server, fx, [PERP], ["mark"]):
            await fx.wait_subscribed([("mark-price", INST), ("index-tickers", "AAA-USDT")], 20)
            fx.play()
            await fx.wait_done(timeout=40)
            want: list[tuple[Any, ...]] = []
            index: float | None = None
            for f in fx.sent:  # one connection: the order the publisher read them in
                for x in f.payload["data"]:
                    if f.channel == "index-tickers" and f.inst_id == "AAA-USDT":
                        index = float(x["idxPx"])
                    elif f.channel == "mark-price" and f.inst_id == INST:
                        want.append((int(x["ts"]), float(x["markPx"]), index))
            want = deduped(want)
            assert len(want) > 50 and sum(1 for w in want if w[2] is not None) > 40

            async def all_in() -> bool:
                n = await r.xlen(stream_key("okx", PERP, Channel.MARK))
                return bool(n >= len(want))

            await until(all_in)
            marks = await stored(r, PERP, Channel.MARK)
            assert [(x.ts_ms, x.mark_price, x.index_price) for x in marks] == want
            # the index frames were not published as the spot pair's ticker
            assert await r.xlen(stream_key("okx", SPOT, Channel.TICKER)) == 0
    await r.aclose()
