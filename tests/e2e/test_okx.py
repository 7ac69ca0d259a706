"""OKX end to end: fake OKX v5 -> real ccxt.pro.okx -> publisher -> Redis -> consumer, and
two exchanges in one publisher that never stall each other."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from consumers import Consumer
from fake_exchange import FakeExchange, FakeOkx, OkxSyntheticSource, SyntheticSource
from fake_exchange.okx.book import OkxBook
from marketbus import codec
from marketbus.keys import stream_key
from marketbus.models import BookTop, Channel, Ticker, Trade
from marketbus.settings import ExchangeSettings, load_settings
from publisher.app import Publisher
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e

SYMBOLS = ["AAA/USDT", "BBB/USDT"]
FAST = {"status_interval_s": 0.2, "heartbeat_s": 2, "backoff_min_s": 0.2, "backoff_max_s": 1}


@asynccontextmanager
async def publisher(
    redis_server: RedisServer, exchanges: list[dict[str, Any]]
) -> AsyncIterator[Publisher]:
    settings = load_settings(redis={"url": redis_server.url}, exchanges=exchanges,
                             supervisor=FAST)  # fmt: skip
    async with Publisher(settings) as pub:
        yield pub


async def fresh_redis(redis_server: RedisServer) -> aioredis.Redis:
    r = aioredis.Redis.from_url(redis_server.url)
    await r.flushdb()
    return r


async def stored(r: aioredis.Redis, exchange: str, symbol: str, channel: Channel) -> list[Any]:
    return [
        codec.decode_fields(f) for _, f in await r.xrange(stream_key(exchange, symbol, channel))
    ]


async def until(cond: Any, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not await cond():
            await asyncio.sleep(0.05)


def okx_sent(fx: FakeOkx, channel: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in fx.sent:
        if f.channel == channel:
            out[f.inst_id.replace("-", "/")].extend(f.payload["data"])
    return out


@pytest.mark.parametrize("parser", ["auto", "ccxt"])  # auto: the native OKX parser
async def test_okx_trades_tickers_and_books_arrive_whole_through_ccxt(
    redis_server: RedisServer, parser: str
) -> None:
    r = await fresh_redis(redis_server)
    source = OkxSyntheticSource(SYMBOLS, rate=600, total=2400, seed=4,
                                channels=("trades", "tickers", "books"))  # fmt: skip
    async with FakeOkx(source, autoplay=False) as fx:
        cfg = {"name": "okx", "symbols": ["aaa-usdt", "BBBUSDT"], "url": fx.base_url,
               "channels": ["trades", "ticker", "book"], "parser": parser}  # fmt: skip
        async with publisher(redis_server, [cfg]) as pub:
            keys = [(c, s.replace("/", "-")) for s in SYMBOLS for c in ("trades", "tickers")]
            await fx.wait_subscribed(keys, timeout=20)
            fx.play()
            await fx.wait_done(timeout=30)
            sent_trades = okx_sent(fx, "trades")
            sent_tickers = okx_sent(fx, "tickers")
            want = sum(map(len, sent_trades.values())) + sum(map(len, sent_tickers.values()))

            async def all_in() -> bool:
                n = 0
                for s in SYMBOLS:
                    n += await r.xlen(stream_key("okx", s, Channel.TRADES))
                    n += await r.xlen(stream_key("okx", s, Channel.TICKER))
                return n >= want

            await until(all_in)
            for symbol in SYMBOLS:  # OKX's BTC-USDT spelling, unified as on Binance
                trades = await stored(r, "okx", symbol, Channel.TRADES)
                assert all(isinstance(t, Trade) for t in trades)
                rows = sent_trades[symbol]
                assert [t.id for t in trades] == [x["tradeId"] for x in rows], symbol
                for t, x in zip(trades, rows, strict=True):
                    assert (t.price, t.amount, t.side, t.ts_ms) == (
                        float(x["px"]), float(x["sz"]), x["side"], int(x["ts"]),
                    )  # fmt: skip
                tickers = await stored(r, "okx", symbol, Channel.TICKER)
                assert all(isinstance(t, Ticker) for t in tickers)
                assert [t.last for t in tickers] == [float(x["last"]) for x in sent_tickers[symbol]]
                assert [t.bid for t in tickers] == [float(x["bidPx"]) for x in sent_tickers[symbol]]
                books = await stored(r, "okx", symbol, Channel.BOOK)
                assert books and all(isinstance(b, BookTop) for b in books)
                assert [b.seq for b in books] == sorted(b.seq for b in books)
                await assert_book_equals_exchange(fx, books[-1])
            st = pub.workers["okx"].status()
            assert st["trade_gaps"] == 0 and st["invalid"] == 0 and st["book_resyncs"] == 0
            frames = sum(f.channel in ("trades", "tickers") for f in fx.sent)
            assert st["parser"] == ("native" if parser == "auto" else "ccxt")
            assert st["native_frames"] == (frames if parser == "auto" else 0)
    await r.aclose()


async def assert_book_equals_exchange(fx: FakeOkx, book: BookTop) -> None:
    inst = book.symbol.replace("/", "-")
    async with aiohttp.ClientSession() as http:
        url = f"{fx.base_url}/api/v5/market/books?instId={inst}&sz={len(book.bids)}"
        async with http.get(url) as resp:
            snap = (await resp.json())["data"][0]
    assert list(book.bids) == [(float(p), float(q)) for p, q, *_ in snap["bids"]]
    assert list(book.asks) == [(float(p), float(q)) for p, q, *_ in snap["asks"][: len(book.asks)]]


@pytest.mark.parametrize("fault", ["bad_checksum", "book_gap"])
async def test_okx_bad_checksum_or_gap_resyncs_the_book_and_never_publishes_it(
    redis_server: RedisServer, fault: str
) -> None:
    """ccxt 4.5.90 checks OKX's seqId chain but not its checksum: the publisher checks
    the checksum itself; either fault drops the book and starts over from a snapshot."""
    r = await fresh_redis(redis_server)
    source = OkxSyntheticSource(["AAA/USDT"], rate=200, seed=8, channels=("books",))
    async with FakeOkx(source, autoplay=False) as fx:
        cfg = {"name": "okx", "symbols": ["AAA/USDT"], "url": fx.base_url, "channels": ["book"]}
        async with publisher(redis_server, [cfg]) as pub:
            await fx.wait_subscribed([("books", "AAA-USDT")], timeout=20)
            fx.play()
            w = pub.workers["okx"]
            await until(lambda: _has(r, "okx", "AAA/USDT", Channel.BOOK))
            getattr(fx, fault)(1, "AAA-USDT")
            await until(lambda: _true(w.stats.book_resyncs >= 1))
            before = await r.xlen(stream_key("okx", "AAA/USDT", Channel.BOOK))

            async def grows() -> bool:
                return await r.xlen(stream_key("okx", "AAA/USDT", Channel.BOOK)) > before + 5

            await until(grows)  # resubscribed, fresh snapshot, publishing again
            assert w.stats.book_resyncs == 1
            assert w.state.value == "CONNECTED" and w.stats.reconnects == 0
            # whatever was published, before and after, was a whole, true book
            books = await stored(r, "okx", "AAA/USDT", Channel.BOOK)
            seqs = [b.seq for b in books]
            assert None not in seqs
            assert seqs == sorted(set(seqs))
            # No book from the broken chain: from the faulted frame (after the gap, or with the
            # bad checksum) until the fresh snapshot, nothing was published. A book at or past
            # the faulted seqId was received after that snapshot was sent (same clock).
            [(inst, bad_seq)] = fx.faulted_book_seqs
            sent = [f for f in fx.sent if f.channel == "books" and f.inst_id == inst]
            t_bad = next(f.sent_ns for f in sent if f.payload["data"][0]["seqId"] == bad_seq)
            t_snap = min(
                f.sent_ns for f in sent if f.payload["action"] == "snapshot" and f.sent_ns > t_bad
            )
            late = [(b.seq, b.recv_ns) for b in books if b.seq >= bad_seq and b.recv_ns < t_snap]
            assert late == []
            assert any(b.recv_ns > t_snap for b in books)  # and it published again after
        assert fx.bad_checksums_sent + fx.book_gaps_sent == 1
    await r.aclose()


async def _has(r: aioredis.Redis, exchange: str, symbol: str, channel: Channel) -> bool:
    return bool(await r.xlen(stream_key(exchange, symbol, channel)))


async def _true(v: bool) -> bool:
    return v


async def test_two_exchanges_in_one_publisher_a_fault_on_one_never_stalls_the_other(
    redis_server: RedisServer,
) -> None:
    r = await fresh_redis(redis_server)
    async with (
        FakeExchange(SyntheticSource(SYMBOLS, rate=300, seed=1)) as bx,
        FakeOkx(OkxSyntheticSource(SYMBOLS, rate=300, seed=2)) as ox,
    ):
        exchanges = [
            {"name": "binance", "symbols": SYMBOLS, "url": bx.base_url},
            {"name": "okx", "symbols": SYMBOLS, "url": ox.base_url},
        ]
        async with publisher(redis_server, exchanges) as pub:
            b, o = pub.workers["binance"], pub.workers["okx"]
            await b.wait_connected(timeout=20)
            await o.wait_connected(timeout=20)
            await until(lambda: _has(r, "binance", "AAA/USDT", Channel.TRADES))
            # binance goes away for 3 s: refused, sockets dropped
            bx.faults.refuse(3)
            bx.faults.close_all()
            await until(lambda: _true(b.state.value == "RECONNECTING"), timeout=10)
            okx_key = stream_key("okx", "AAA/USDT", Channel.TRADES)
            n0 = await r.xlen(okx_key)
            okx_grew_while_binance_down: list[bool] = []

            async def okx_grew() -> bool:
                if await r.xlen(okx_key) - n0 <= 20:
                    return False
                okx_grew_while_binance_down.append(b.state.value != "CONNECTED")
                return True

            await until(okx_grew, timeout=30)
            assert okx_grew_while_binance_down == [True], "okx stalled while binance was down"
            assert o.state.value == "CONNECTED" and o.stats.reconnects == 0
            await b.wait_connected(timeout=30)
            assert b.trade_ids.gaps == 0  # binance's gap was fetched over REST
        # the consumer follows the same market on both, side by side
        markets = [f"{ex}:AAA/USDT" for ex in ("binance", "okx")]
        async with Consumer(redis_server.url, markets, ["ticker", "trades"], backfill=100) as c:
            for ex in ("binance", "okx"):
                assert len(c.buffer(ex, "AAA/USDT", "trades")) > 0
                best = c.best(ex, "aaa-usdt")
                assert best is not None and best.bid is not None and best.ask is not None
    await r.aclose()


async def test_exchanges_are_added_and_removed_at_run_time(redis_server: RedisServer) -> None:
    r = await fresh_redis(redis_server)
    async with (
        FakeExchange(SyntheticSource(SYMBOLS, rate=200, seed=1)) as bx,
        FakeOkx(OkxSyntheticSource(SYMBOLS, rate=200, seed=2)) as ox,
    ):
        exchanges = [{"name": "binance", "symbols": SYMBOLS, "url": bx.base_url}]
        async with publisher(redis_server, exchanges) as pub:
            await pub.workers["binance"].wait_connected(timeout=20)
            okx = await pub.add_exchange(
                ExchangeSettings(name="okx", symbols=("AAA/USDT",), url=ox.base_url)
            )
            await okx.wait_connected(timeout=20)
            await until(lambda: _has(r, "okx", "AAA/USDT", Channel.TRADES))
            await pub.remove_exchange("binance")
            assert "binance" not in pub.workers
            status = await r.hget("mb:status:binance", "state")
            assert status == b"STOPPED"
            key = stream_key("binance", "AAA/USDT", Channel.TRADES)
            n = await r.xlen(key)
            okx_n = await r.xlen(stream_key("okx", "AAA/USDT", Channel.TRADES))

            async def okx_grew() -> bool:
                return await r.xlen(stream_key("okx", "AAA/USDT", Channel.TRADES)) > okx_n + 50

            await until(okx_grew)  # okx goes on...
            assert await r.xlen(key) == n  # ...binance stopped
            assert okx.state.value == "CONNECTED"
    await r.aclose()


Levels = list[tuple[float, float]]


async def _okx_candles(fx: FakeOkx) -> list[list[str]]:
    async with aiohttp.ClientSession() as http:
        url = f"{fx.base_url}/api/v5/market/candles?instId=BTC-USDT&bar=1m&limit=5"
        async with http.get(url) as resp:
            rows: list[list[str]] = (await resp.json())["data"]
    return rows


def _book_states(book: OkxBook, frames: list[Any]) -> dict[int, tuple[Levels, Levels]]:
    """Every state `book` (as it was on subscribe) goes through under the `books` frames sent:
    seqId -> (bids, asks), best first."""

    def state() -> tuple[Levels, Levels]:
        return (
            [(float(p), float(q)) for p, q, *_ in book.bids()],
            [(float(p), float(q)) for p, q, *_ in book.asks()],
        )

    out = {book.seq_id: state()}
    for f in frames:
        for row in f.payload["data"]:
            if f.payload.get("action") == "snapshot":
                book.reset(row)
            else:
                book.update(row)
            out[book.seq_id] = state()
    return out


async def test_recorded_okx_books_pass_the_checksum_and_candles_follow_the_trades(
    redis_server: RedisServer,
) -> None:
    """The recorded BTC-USDT session (real levels, real checksums): every book passes our
    checksum (no resync), the last equals the exchange's; the 1m candle equals OKX's own."""
    from fake_exchange import OkxReplaySource

    r = await fresh_redis(redis_server)
    async with FakeOkx(OkxReplaySource(speed=20.0, loop=False), autoplay=False) as fx:
        cfg = {"name": "okx", "symbols": ["BTC-USDT"], "url": fx.base_url,
               "channels": ["trades", "book", "candles"], "candle_intervals": ["1m"]}  # fmt: skip
        async with publisher(redis_server, [cfg]) as pub:
            keys = [("books", "BTC-USDT"), ("trades", "BTC-USDT"), ("candle1m", "BTC-USDT")]
            await fx.wait_subscribed(keys, timeout=20)
            on_subscribe = fx.market.book("BTC-USDT").copy()
            fx.play()
            await fx.wait_done(timeout=60)
            final_seq = fx.market.book("BTC-USDT").seq_id
            rows = await _okx_candles(fx)  # newest first

            async def caught_up() -> bool:  # the last frames through ccxt, the sink and Redis
                books = await stored(r, "okx", "BTC/USDT", Channel.BOOK)
                candles = await stored(r, "okx", "BTC/USDT", Channel.CANDLES)
                return (
                    bool(books and candles)
                    and (books[-1].seq, candles[-1].open_ms) == (final_seq, int(rows[0][0]))
                    and candles[-1].close == float(rows[0][4])
                )

            await until(caught_up)
            w = pub.workers["okx"]
            assert w.stats.book_resyncs == 0 and w.stats.invalid == 0
            books = await stored(r, "okx", "BTC/USDT", Channel.BOOK)
            # How many states one record covers depends on the machine's load (CCXT hands
            # over the latest book); which states they are does not.
            states = _book_states(on_subscribe, [f for f in fx.sent if f.channel == "books"])
            assert len(states) > 50 and books
            seqs = [b.seq for b in books]
            assert seqs == sorted(set(seqs))
            for b in books:
                bids, asks = states[b.seq]
                assert (list(b.bids), list(b.asks)) == (bids[: len(b.bids)], asks[: len(b.asks)])
                assert len(b.bids) == min(20, len(bids)) and len(b.asks) == min(20, len(asks))
            assert books[-1].seq == max(states)
            await assert_book_equals_exchange(fx, books[-1])
            candles = await stored(r, "okx", "BTC/USDT", Channel.CANDLES)
            theirs = {int(x[0]): x for x in rows}
            last = candles[-1]
            row = theirs[last.open_ms]
            assert (last.open, last.high, last.low, last.close) == tuple(map(float, row[1:5]))
            assert last.volume == pytest.approx(float(row[5]))


async def test_okx_poll_mode_with_the_websocket_off(redis_server: RedisServer) -> None:
    r = await fresh_redis(redis_server)
    source = OkxSyntheticSource(SYMBOLS, rate=300, seed=6, channels=("trades", "tickers"))
    async with FakeOkx(source, websocket=False) as fx:
        cfg = {"name": "okx", "symbols": SYMBOLS, "url": fx.base_url, "mode": "poll",
               "poll_interval_s": 0.25, "channels": ["trades", "ticker"]}  # fmt: skip
        async with publisher(redis_server, [cfg]) as pub:
            w = pub.workers["okx"]
            await w.wait_connected(timeout=20)
            await asyncio.sleep(3)
            assert w.status()["polled"] == ["ticker", "trades"]
        sent = {s: [] for s in SYMBOLS}  # what the exchange made: its REST history
        async with aiohttp.ClientSession() as http:
            for s in SYMBOLS:
                url = f"{fx.base_url}/api/v5/market/trades?instId={s.replace('/', '-')}&limit=500"
                async with http.get(url) as resp:
                    sent[s] = list(reversed((await resp.json())["data"]))
        for symbol in SYMBOLS:
            trades = await stored(r, "okx", symbol, Channel.TRADES)
            assert len(trades) > 50, symbol
            ids = [int(t.id) for t in trades]
            assert ids == sorted(set(ids)), "duplicate or out of order"
            by_id = {int(x["tradeId"]): x for x in sent[symbol]}
            first, last = ids[0], ids[-1]
            expected = [i for i in sorted(by_id) if first <= i <= last]
            assert ids == expected, "a trade between two polls was skipped"
            for t in trades:
                x = by_id[int(t.id)]
                assert (t.price, t.amount, t.side) == (float(x["px"]), float(x["sz"]), x["side"])
        assert w.trade_ids.gaps == 0 and w.trade_ids.duplicates == 0
    await r.aclose()


async def test_okx_garbage_frames_are_counted_and_skipped_without_a_reconnect(
    redis_server: RedisServer,
) -> None:
    """Malformed, truncated and foreign frames on OKX's sockets: the frame guard counts and
    skips each; the session goes on and every real trade still arrives."""
    r = await fresh_redis(redis_server)
    source = OkxSyntheticSource(["AAA/USDT"], rate=200, total=600, seed=11,
                                channels=("trades", "tickers"))  # fmt: skip
    async with FakeOkx(source, autoplay=False) as fx:
        cfg = {"name": "okx", "symbols": ["AAA/USDT"], "url": fx.base_url,
               "channels": ["trades", "ticker"]}  # fmt: skip
        async with publisher(redis_server, [cfg]) as pub:
            await fx.wait_subscribed([("trades", "AAA-USDT"), ("tickers", "AAA-USDT")], 20)
            fx.play()
            for kind in ("malformed", "truncated", "unknown_event"):
                assert fx.faults.send_garbage(2, kind) >= 1  # type: ignore[arg-type]
                await asyncio.sleep(0.2)
            await fx.wait_done(timeout=30)
            sent = okx_sent(fx, "trades")["AAA/USDT"]

            async def all_trades() -> bool:
                return await r.xlen(stream_key("okx", "AAA/USDT", Channel.TRADES)) >= len(sent)

            await until(all_trades)
            w = pub.workers["okx"]
            trades = await stored(r, "okx", "AAA/USDT", Channel.TRADES)
            assert [t.id for t in trades] == [x["tradeId"] for x in sent]
            assert w.stats.malformed >= 4  # malformed and truncated, per socket that got them
            assert w.stats.reconnects == 0 and w.state.value == "CONNECTED"
    await r.aclose()
