"""Order books and live subscription changes, through the real ccxt.pro.binance adapter."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from fake_exchange import FakeExchange, ReplaySource, SyntheticSource, bundled_recording
from marketbus import codec
from marketbus.keys import stream_key
from marketbus.models import BookTop, Channel
from marketbus.settings import load_settings
from marketbus_cli.subs import change_and_wait, reset
from publisher.app import Publisher
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e

RECORDED = ["NKN/USDT", "BLZ/ETH", "LRC/BTC", "RUNE/EUR"]


@asynccontextmanager
async def publisher(
    redis_server: RedisServer, fx: FakeExchange, symbols: list[str], channels: list[Channel],
    **exchange: Any,
) -> AsyncIterator[Publisher]:  # fmt: skip
    settings = load_settings(
        redis={"url": redis_server.url},
        exchanges=[{"name": "binance", "symbols": symbols, "url": fx.base_url,
                    "channels": channels, **exchange}],
        supervisor={"status_interval_s": 0.1},
    )  # fmt: skip
    async with Publisher(settings) as pub:
        yield pub


async def records(r: aioredis.Redis, symbol: str, channel: Channel) -> list[Any]:
    entries = await r.xrange(stream_key("binance", symbol, channel))
    return [codec.decode_fields(f) for _, f in entries]


async def last_book_seq_is(r: aioredis.Redis, symbol: str, seq: int) -> bool:
    books = await records(r, symbol, Channel.BOOK)
    return bool(books) and books[-1].seq == seq


async def wait_for(cond: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await cond():
            await asyncio.sleep(0.05)


async def test_books_follow_the_recorded_depth_and_end_equal_to_the_exchange(
    redis_server: RedisServer,
) -> None:
    """Real depth diffs with real update ids: every published book is ordered and uncrossed,
    sequence ids only grow, and the last one equals the exchange's own book (top 20)."""
    source = ReplaySource(bundled_recording(), speed=8.0, loop=False)
    r = aioredis.Redis.from_url(redis_server.url)
    await r.flushdb()
    async with FakeExchange(source, autoplay=False) as fx:
        async with publisher(redis_server, fx, RECORDED, [Channel.BOOK], book_depth=20) as pub:
            await fx.wait_subscribed([s.replace("/", "").lower() + "@depth@100ms"
                                      for s in RECORDED], timeout=20)  # fmt: skip
            fx.play()
            await fx.wait_done(timeout=30)
            async with aiohttp.ClientSession() as http:
                for symbol in RECORDED:
                    sym_id = symbol.replace("/", "")
                    url = f"{fx.base_url}/api/v3/depth?symbol={sym_id}&limit=20"
                    async with http.get(url) as resp:
                        snap = await resp.json()

                    want = snap["lastUpdateId"]  # the last diffs through ccxt, sink and Redis
                    await wait_for(lambda s=symbol, w=want: last_book_seq_is(r, s, w), 15)
                    books = await records(r, symbol, Channel.BOOK)
                    assert books, symbol
                    assert all(isinstance(b, BookTop) for b in books)
                    seqs = [b.seq for b in books]
                    assert seqs == sorted(seqs) and None not in seqs, symbol
                    for b in books:  # the codec would refuse a crossed book: check anyway
                        assert b.bids[0][0] < b.asks[0][0]
                        assert len(b.bids) <= 20 and len(b.asks) <= 20
                    last = books[-1]
                    assert last.seq == snap["lastUpdateId"], symbol
                    assert list(last.bids) == [(float(p), float(q)) for p, q in snap["bids"]]
                    assert list(last.asks) == [(float(p), float(q)) for p, q in snap["asks"]]
            st = pub.workers["binance"].status()
            assert st["book_resyncs"] == 0 and st["invalid"] == 0
    await r.aclose()


async def test_book_throttle_publishes_at_most_one_record_per_interval_and_the_last_state(
    redis_server: RedisServer,
) -> None:
    source = ReplaySource(bundled_recording(), speed=20.0, loop=False)
    r = aioredis.Redis.from_url(redis_server.url)
    await r.flushdb()
    async with FakeExchange(source, autoplay=False) as fx:
        async with publisher(
            redis_server, fx, ["NKN/USDT"], [Channel.BOOK], book_interval_ms=500
        ) as pub:
            await fx.wait_subscribed(["nknusdt@depth@100ms"], timeout=20)
            gate = pub.workers["binance"].books
            decided: list[int] = []  # the gate's own clock at each record it let out
            offer, due = gate.offer, gate.due

            def spy_offer(record: Any, now_ms: int) -> Any:
                out = offer(record, now_ms)
                if out is not None:
                    decided.append(now_ms)
                return out

            def spy_due(now_ms: int) -> Any:
                out = due(now_ms)
                decided.extend(now_ms for _ in out)
                return out

            gate.offer, gate.due = spy_offer, spy_due  # type: ignore[method-assign]
            started = time.time()
            fx.play()
            await fx.wait_done(timeout=30)
            async with aiohttp.ClientSession() as http:
                url = f"{fx.base_url}/api/v3/depth?symbol=NKNUSDT&limit=20"
                async with http.get(url) as resp:
                    snap = await resp.json()
            # the last state always goes out: the trailing record, due within one interval
            await wait_for(lambda: last_book_seq_is(r, "NKN/USDT", snap["lastUpdateId"]), 15)
            books = await records(r, "NKN/USDT", Channel.BOOK)
            elapsed = time.time() - started
            assert 1 <= len(books) <= elapsed / 0.5 + 2
            # at most one record per 500 ms, by the clock the throttle decides on (no margin)
            assert len(decided) == len(books)
            gaps = [b - a for a, b in itertools.pairwise(decided)]
            assert all(g >= 500 for g in gaps), gaps
            assert pub.workers["binance"].books.stats.throttled > 0
    await r.aclose()


async def test_live_subscribe_unsubscribe_and_restart(redis_server: RedisServer) -> None:
    """Add and remove markets on a running publisher through Redis; the change is applied
    within a second, shows in status, and survives a restart of the publisher."""
    source = SyntheticSource(["AAA/USDT", "BBB/USDT", "CCC/USDT"], rate=300, seed=3)
    r = aioredis.Redis.from_url(redis_server.url)
    await r.flushdb()
    trades = Channel.TRADES
    async with FakeExchange(source) as fx:
        async with publisher(redis_server, fx, ["AAA/USDT"], [trades]) as pub:
            w = pub.workers["binance"]
            await w.wait_connected(timeout=20)
            assert await r.xlen(stream_key("binance", "BBB/USDT", trades)) == 0

            started = time.monotonic()
            out = await change_and_wait(r, "binance", ["bbbusdt"], [trades], "+", wait_s=5)
            applied_s = time.monotonic() - started
            assert out.applied == {"bbbusdt": "active"}
            assert applied_s < 2.0  # usually ~0.1 s: XREAD BLOCK wakes on the notice
            await wait_for(lambda: _xlen(r, "BBB/USDT", trades), timeout=5)

            out = await change_and_wait(r, "binance", ["AAA/USDT"], [trades], "-", wait_s=5)
            assert out.applied == {"AAA/USDT": "removed"}
            await wait_for(lambda: _gone(fx, "aaausdt@aggTrade"), timeout=5)
            n = await r.xlen(stream_key("binance", "AAA/USDT", trades))
            await asyncio.sleep(0.5)
            assert await r.xlen(stream_key("binance", "AAA/USDT", trades)) == n

            bad = await change_and_wait(r, "binance", ["NOPE/USDT"], [trades], "+", wait_s=5)
            assert bad.applied["NOPE/USDT"].startswith("unknown")
            assert w.state.value == "CONNECTED"  # an unknown symbol never stops the others
            assert w.trade_ids.gaps == 0

        # a restarted publisher comes back with the run-time changes, not just its config
        async with publisher(redis_server, fx, ["AAA/USDT"], [trades]) as pub2:
            w2 = pub2.workers["binance"]
            await w2.wait_connected(timeout=20)
            await wait_for(lambda: _active(w2, ["BBB/USDT"]), timeout=5)
            assert "AAA/USDT" not in w2.active.get(trades, [])

            await reset(r, "binance")  # back to the configuration
            await wait_for(lambda: _active(w2, ["AAA/USDT"]), timeout=5)
            assert "BBB/USDT" not in w2.active.get(trades, [])
    await r.aclose()


async def test_a_market_leaving_a_batch_is_unsubscribed_on_the_batchs_connection(
    redis_server: RedisServer,
) -> None:
    """CCXT's Binance adapter picks a connection by the symbol list of a call: the unsubscribe
    of a removed market and the restart of the markets its batch keeps must stay on the
    batch's connection, or the stream goes on (and the kept ones arrive twice)."""
    source = SyntheticSource(["AAA/USDT", "BBB/USDT", "CCC/USDT"], rate=300, seed=3)
    channels = [Channel.TRADES, Channel.TICKER, Channel.BOOK]
    r = aioredis.Redis.from_url(redis_server.url)
    await r.flushdb()
    async with FakeExchange(source) as fx:
        async with publisher(redis_server, fx, ["AAA/USDT", "BBB/USDT"], channels) as pub:
            w = pub.workers["binance"]
            await w.wait_connected(timeout=20)
            await wait_for(lambda: _xlen(r, "BBB/USDT", Channel.BOOK), timeout=10)
            held = fx.subscribed_streams()
            assert {s.split("@")[0] for s in held} == {"aaausdt", "bbbusdt"}
            conns = fx.open_connections  # CCXT: one per channel's batch here
            w.set_wanted({c.value: ["BBB/USDT"] for c in channels})

            async def aaa_gone() -> bool:
                return not any(s.startswith("aaausdt@") for s in fx.subscribed_streams())

            await wait_for(aaa_gone, timeout=10)
            assert fx.subscribed_streams() == {s for s in held if s.startswith("bbbusdt@")}
            before = await r.xlen(stream_key("binance", "BBB/USDT", Channel.TRADES))
            await wait_for(lambda: _grew(r, "BBB/USDT", before + 50), timeout=10)
            assert fx.open_connections == conns  # none more carrying BBB again
            assert w.trade_ids.duplicates == 0 and w.trade_ids.gaps == 0
            assert w.stats.book_resyncs == 0
            ids = [t.id for t in await records(r, "BBB/USDT", Channel.TRADES)]
            assert len(ids) == len(set(ids))
    await r.aclose()


async def _grew(r: aioredis.Redis, symbol: str, n: int) -> bool:
    return await r.xlen(stream_key("binance", symbol, Channel.TRADES)) >= n


async def _xlen(r: aioredis.Redis, symbol: str, channel: Channel) -> bool:
    return bool(await r.xlen(stream_key("binance", symbol, channel)))


async def _gone(fx: FakeExchange, stream: str) -> bool:
    return stream not in fx.subscribed_streams()  # ccxt sent UNSUBSCRIBE


async def _active(w: Any, symbols: list[str]) -> bool:
    return sorted(w.active.get(Channel.TRADES, [])) == sorted(symbols)


async def test_a_binance_depth_gap_resyncs_the_book_without_reconnecting(
    redis_server: RedisServer,
) -> None:
    """A dropped diff: ccxt raises ChecksumError; the worker counts one resync, the next watch
    refetches the snapshot, and the books published after it equal the exchange's own."""
    r = aioredis.Redis.from_url(redis_server.url)
    await r.flushdb()
    source = SyntheticSource(["AAA/USDT"], rate=100, seed=2, channels=("aggTrade",))
    async with FakeExchange(source, autoplay=False) as fx:
        async with publisher(redis_server, fx, ["AAA/USDT"], [Channel.BOOK]) as pub:
            await fx.wait_subscribed(["aaausdt@depth@100ms"], timeout=20)
            fx.play()
            w = pub.workers["binance"]
            await wait_for(lambda: _xlen(r, "AAA/USDT", Channel.BOOK))
            fx.faults.depth_gap(1, "AAA/USDT")

            async def resynced() -> bool:
                return w.stats.book_resyncs >= 1

            await wait_for(resynced)
            n = await r.xlen(stream_key("binance", "AAA/USDT", Channel.BOOK))

            async def publishing_again() -> bool:
                return await r.xlen(stream_key("binance", "AAA/USDT", Channel.BOOK)) > n + 5

            await wait_for(publishing_again)
            assert w.stats.book_resyncs == 1 and w.stats.reconnects == 0
            assert fx.faults.depth_dropped == {"aaausdt@depth@100ms": 1}
            books = await records(r, "AAA/USDT", Channel.BOOK)
            seqs = [b.seq for b in books]
            assert seqs == sorted(seqs)  # never a book from before the gap after one from after
    await r.aclose()


async def test_two_publisher_instances_split_one_exchange_without_clashing(
    redis_server: RedisServer,
) -> None:
    """`instance` names keep two publishers of one exchange apart: each its own status key,
    and a subscription change addressed to one (`binance@b`) never reaches the other."""
    r = aioredis.Redis.from_url(redis_server.url)
    await r.flushdb()
    source = SyntheticSource(["AAA/USDT", "BBB/USDT", "CCC/USDT"], rate=300, seed=4)

    def cfg(fx: FakeExchange, symbols: list[str], instance: str) -> Any:
        return load_settings(
            redis={"url": redis_server.url}, instance=instance,
            exchanges=[{"name": "binance", "symbols": symbols, "url": fx.base_url,
                        "channels": ["trades"]}],
            supervisor={"status_interval_s": 0.1},
        )  # fmt: skip

    async with FakeExchange(source) as fx:
        async with (
            Publisher(cfg(fx, ["AAA/USDT"], "a")) as pa,
            Publisher(cfg(fx, ["BBB/USDT"], "b")) as pb,
        ):
            wa, wb = pa.workers["binance"], pb.workers["binance"]
            await wa.wait_connected(timeout=20)
            await wb.wait_connected(timeout=20)

            async def both_reported() -> bool:
                return bool(await r.exists("mb:status:binance@a", "mb:status:binance@b") == 2)

            await wait_for(both_reported)
            assert not await r.exists("mb:status:binance")
            out = await change_and_wait(r, "binance@b", ["CCC/USDT"], [Channel.TRADES], "+", 5)
            assert out.applied == {"CCC/USDT": "active"}
            assert sorted(wb.active[Channel.TRADES]) == ["BBB/USDT", "CCC/USDT"]
            await asyncio.sleep(0.3)
            assert wa.active[Channel.TRADES] == ["AAA/USDT"]  # a never saw b's change
    await r.aclose()
