"""FakeKraken alone: its REST and websocket v2 grammar over raw HTTP and websockets, the real
`ccxt.pro.kraken` (not mocked) against it, v2 checksums, the recording (v1) replayed as v2
and unchanged on the v1 path, synthetic mode, faults.

Each test starts its own fake on a free port; the recording (18 s of 10 pairs) is replayed
fast or a small synthetic source runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import ccxt
import ccxt.pro as ccxtpro
import orjson
import pytest

from fake_exchange.kraken import FakeKraken, KrakenReplaySource, KrakenSyntheticSource
from fake_exchange.kraken.book import KrakenBook
from fake_exchange.kraken.frames import v2_symbol
from fake_exchange.kraken.recording import kraken_recording, load_kraken_recording
from publisher.kraken import CheckedBook

WAIT = 10.0
REC = load_kraken_recording(kraken_recording())


@contextlib.asynccontextmanager
async def kraken(fx: FakeKraken) -> AsyncIterator[Any]:
    ex = ccxtpro.kraken(fx.ccxt_config())
    try:
        yield ex
    finally:
        await ex.close()


@contextlib.asynccontextmanager
async def ws(fx: FakeKraken, path: str = "/v2") -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession() as s, s.ws_connect(fx.base_url + path) as sock:
        yield sock


async def read(sock: aiohttp.ClientWebSocketResponse, pred: Callable[[Any], bool]) -> Any:
    """The next message (parsed) that `pred` accepts, skipping heartbeats."""
    async with asyncio.timeout(WAIT):
        while True:
            msg = orjson.loads((await sock.receive()).data)
            if pred(msg):
                return msg


async def get(fx: FakeKraken, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.get(fx.base_url + path) as resp:
        return resp.status, await resp.json()


async def until(pred: Callable[[], bool], timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.02)


def sub(channel: str, symbols: list[str], req_id: int, **params: Any) -> str:
    return orjson.dumps({"method": "subscribe", "req_id": req_id,
                         "params": {"channel": channel, "symbol": symbols, **params}}).decode()  # fmt: skip


# ---------------------------------------------------------------------- REST


async def test_load_markets_and_the_rest_ccxt_calls() -> None:
    async with FakeKraken(KrakenReplaySource(speed=0), autoplay=False) as fx:
        async with kraken(fx) as ex:
            markets = await ex.load_markets()
            btc = markets["BTC/CHF"]
            assert btc["id"] == "XBTCHF" and btc["active"] and btc["precision"]["price"] == 0.1
            assert len(markets) == len({e["wsname"] for e in REC.pairs.values() if "wsname" in e})
            assert ex.currencies["BTC"]["id"] == "XXBT"  # Assets answered: X/Z ids renamed
            # v2 symbols are ccxt's, but where ccxt renames a currency (REP is its REPV1)
            assert set(fx.markets) ^ set(markets) == {"REPV2/BTC", "REPV2/ETH", "REPV2/EUR",
                                                      "REPV2/USD", "REPV1/BTC", "REPV1/ETH",
                                                      "REPV1/EUR", "REPV1/USD"}  # fmt: skip
            fx.play()
            await fx.wait_done(WAIT)
            trades = await ex.fetch_trades("XMR/USD", since=0)
            made = fx.market.trades["XMR/USD"]
            assert [t["id"] for t in trades] == [str(t.trade_id) for t in made]
            assert [(t["price"], t["side"]) for t in trades] == [
                (float(t.row[0]), "sell" if t.row[3] == "s" else "buy") for t in made
            ]
            later = await ex.fetch_trades("XMR/USD", since=trades[-1]["timestamp"] + 1000)
            assert later == []
            candles = await ex.fetch_ohlcv("XMR/USD", "1m")
            assert sum(c[5] for c in candles) == pytest.approx(sum(float(t.row[1]) for t in made))
            book = await ex.fetch_order_book("BTC/CHF", 5)
            mirror = fx.market.book("XBT/CHF")
            assert [b[:2] for b in book["bids"]] == [
                [float(p), float(q)] for p, q, _ in mirror.bids(5)
            ]
            assert (await ex.fetch_status())["status"] == "ok"
            assert abs(await ex.fetch_time() - time.time() * 1000) < 5_000
            with pytest.raises(ccxt.ExchangeError, match="EQuery:Unknown asset pair"):
                await ex.public_get_trades({"pair": "NOPE"})
        status, body = await get(fx, "/0/public/Trades?pair=XMRUSD&count=x")
        assert status == 200 and body == {"error": ["EGeneral:Invalid arguments:count"]}
        status, body = await get(fx, "/0/public/Nope")
        assert status == 404 and body["error"]


async def test_rest_faults_are_krakens_errors() -> None:
    async with FakeKraken(KrakenReplaySource(speed=0), autoplay=False) as fx:
        async with kraken(fx) as ex:
            await ex.load_markets()
            fx.faults.http_error(429)
            with pytest.raises(ccxt.DDoSProtection):
                await ex.fetch_trades("XMR/USD")
            fx.faults.http_error(503)
            with pytest.raises(ccxt.ExchangeNotAvailable):
                await ex.fetch_trades("XMR/USD")
            fx.faults.refuse(0.3)
            with pytest.raises(ccxt.ExchangeNotAvailable):
                await ex.fetch_trades("XMR/USD")


# ---------------------------------------------------------------------- websocket grammar


async def test_subscribe_ack_refusals_ping_and_unsubscribe() -> None:
    async with FakeKraken(
        KrakenSyntheticSource(["AAA/USD"], rate=50, seed=1), heartbeat_s=0.2
    ) as fx:
        async with ws(fx) as sock:
            await sock.send_str(sub("book", ["AAA/USD", "NOPE/USD"], 7, depth=10))
            status = await read(sock, lambda m: True)
            assert status["channel"] == "status" and status["data"][0]["system"] == "online"
            ack = await read(sock, lambda m: m.get("method") == "subscribe" and m["success"])
            assert ack["req_id"] == 7 and ack["result"] == {
                "channel": "book", "symbol": "AAA/USD", "depth": 10, "snapshot": True}  # fmt: skip
            snap = await read(sock, lambda m: m.get("channel") == "book")
            assert snap["type"] == "snapshot" and len(snap["data"][0]["bids"]) == 10
            err = await read(sock, lambda m: m.get("success") is False)
            assert err["error"] == "Currency pair not supported NOPE/USD" and err["req_id"] == 7
            await sock.send_str(sub("book", ["AAA/USD"], 8, depth=10))
            err = await read(sock, lambda m: m.get("success") is False)
            assert err["error"] == "Already subscribed" and err["symbol"] == "AAA/USD"
            for bad, text in ((sub("book", ["AAA/USD"], 9, depth=7), "Subscription depth not "
                              "supported"), (sub("ohlc", ["AAA/USD"], 9), "Subscription ohlc "
                              "interval not supported"), ("{", "Malformed request"),
                              (sub("level3", ["AAA/USD"], 9), "Channel level3 not supported")):  # fmt: skip
                await sock.send_str(bad)
                assert (await read(sock, lambda m: m.get("success") is False))["error"] == text
            await sock.send_str('{"method": "ping", "req_id": 11}')
            pong = await read(sock, lambda m: m.get("method") == "pong")
            assert pong["req_id"] == 11
            await read(sock, lambda m: m == {"channel": "heartbeat"})
            unsub = {"method": "unsubscribe", "req_id": 12,
                     "params": {"channel": "book", "symbol": ["AAA/USD"], "depth": 10}}  # fmt: skip
            await sock.send_str(orjson.dumps(unsub).decode())
            ack = await read(sock, lambda m: m.get("method") == "unsubscribe")
            assert ack["success"] and ack["req_id"] == 12
            assert ("book-10", "AAA/USD") not in fx.subscribed()
            await sock.send_str(orjson.dumps(unsub).decode())
            err = await read(sock, lambda m: m.get("success") is False)
            assert err["error"] == "Subscription Not Found"


async def test_a_book_subscriber_holds_the_exchanges_top_levels_and_every_checksum_agrees() -> None:
    """Depth 10 and 100 subscribers on the recorded books: applying each message and cutting
    to the depth gives the fake's own top levels, and every v2 checksum matches the client's
    book (computed by the publisher's code, formatted with the pair's precision)."""
    async with FakeKraken(KrakenReplaySource(speed=0), autoplay=False) as fx:
        async with ws(fx) as sock:
            for i, depth in enumerate((10, 100)):
                await sock.send_str(sub("book", ["BTC/CHF", "SC/EUR"], i, depth=depth))
            await fx.wait_subscribed([(f"book-{d}", s) for d in (10, 100)
                                      for s in ("BTC/CHF", "SC/EUR")])  # fmt: skip
            fx.play()
            await fx.wait_done(WAIT)
        checked = 0
        for symbol, ws_name in (("BTC/CHF", "XBT/CHF"), ("SC/EUR", "SC/EUR")):
            decimals = fx.market.decimals(ws_name)
            for depth in (10, 100):
                book = CheckedBook(depth)
                got = [f for f in fx.sent if (f.channel, f.symbol) == (f"book-{depth}", symbol)]
                assert got[0].kind == "snapshot" and len(got) > 50
                for f in got:
                    book.apply(f.row)
                    assert book.checksum(decimals) == f.row["checksum"]
                    checked += 1
                mirror = fx.market.book(ws_name)
                assert [-k for k in book.bids.keys] == [float(p) for p, *_ in mirror.bids(depth)]
                assert [book.asks.levels[k] for k in book.asks.keys] == [
                    float(q) for _, q, *_ in mirror.asks(depth)
                ]
        assert checked > 400


def test_the_mirror_reproduces_every_recorded_v1_checksum() -> None:
    """The fake's book handling is Kraken's: after every recorded update (truncated to the
    subscription's 1,000 levels) its v1 checksum is the one Kraken sent."""
    books: dict[str, KrakenBook] = {}
    n = 0
    for f in REC.frames:
        if not f.channel.startswith("book"):
            continue
        data: dict[str, Any] = {}
        for part in f.parts:
            for k, v in part.items():
                data[k] = [*data.get(k, []), *v] if isinstance(v, list) else v
        if "as" in data:
            books[f.pair] = KrakenBook(1000)
            books[f.pair].reset(data["as"], data["bs"], 1000)
            continue
        books[f.pair].apply(data.get("a", ()), data.get("b", ()))
        assert books[f.pair].checksum_v1() == int(data["c"]), f.text[:200]
        n += 1
    assert n == 2067


# ---------------------------------------------------------------------- replay


async def test_replay_sends_every_recorded_trade_and_ticker_through_ccxt() -> None:
    symbols = ["XMR/USD", "WAVES/EUR", "BTC/CHF"]
    async with FakeKraken(KrakenReplaySource(speed=10), autoplay=False) as fx:
        async with kraken(fx) as ex:
            got: list[Any] = []
            tickers: list[Any] = []

            async def trades() -> None:
                while True:
                    got.extend(await ex.watch_trades_for_symbols(symbols))

            async def ticks() -> None:
                while True:
                    tickers.append(await ex.watch_tickers(symbols))

            tasks = [asyncio.create_task(trades()), asyncio.create_task(ticks())]
            await fx.wait_subscribed([(c, s) for s in symbols for c in ("trade", "ticker")])
            t0 = time.monotonic()
            fx.play()
            await fx.wait_done(WAIT * 2)
            took = time.monotonic() - t0
            rec = [(v2_symbol(f.pair), row) for f in REC.frames if f.channel == "trade"
                   and v2_symbol(f.pair) in symbols for row in f.parts[0]]  # fmt: skip
            await until(lambda: len(got) >= len(rec))
            for t in tasks:
                t.cancel()
            assert sorted((t["symbol"], t["price"], t["amount"], t["side"]) for t in got) == sorted(
                (s, float(r[0]), float(r[1]), "sell" if r[3] == "s" else "buy") for s, r in rec
            )
            span = REC.frames[-1].ts - REC.frames[0].ts
            assert span / 10 * 0.8 < took < span / 10 + 2  # the recorded timing, 10x
            rec_tickers = [f.parts[0] for f in REC.frames
                           if f.channel == "ticker" and v2_symbol(f.pair) in symbols]  # fmt: skip
            sent = [f.row for f in fx.sent if f.channel == "ticker" and f.kind == "update"]
            assert [(x["last"], x["bid"], x["ask"], x["volume"]) for x in sent] == [
                (float(t["c"][0]), float(t["b"][0]), float(t["a"][0]), float(t["v"][1]))
                for t in rec_tickers
            ]


async def test_a_looped_replay_keeps_trade_ids_unbroken() -> None:
    async with FakeKraken(KrakenReplaySource(speed=0, loop=True, pairs=["XMR/USD"])) as fx:
        await until(lambda: len(fx.market.trades.get("XMR/USD", [])) > 20)
        ids = [t.trade_id for t in fx.market.trades["XMR/USD"]]
        assert ids == list(range(1, len(ids) + 1))


async def test_the_v1_path_replays_the_recorded_frames_unchanged() -> None:
    """A v1 client: the recorded channel id, a v1 snapshot from the mirror, then the
    recorded frames byte for byte, whose checksums hold on the client's book."""
    async with FakeKraken(KrakenReplaySource(speed=0), autoplay=False) as fx:
        async with ws(fx, "/") as sock:
            req = {"event": "subscribe", "pair": ["SC/EUR"],
                   "subscription": {"name": "book", "depth": 1000}}  # fmt: skip
            await sock.send_str(orjson.dumps(req).decode())
            assert (await read(sock, lambda m: True))["event"] == "systemStatus"
            st = await read(sock, lambda m: isinstance(m, dict) and "channelID" in m)
            assert st["channelID"] == REC.channel_ids[("book-1000", "SC/EUR")]
            snap = await read(sock, lambda m: isinstance(m, list))
            book = KrakenBook(1000)
            book.reset(snap[1]["as"], snap[1]["bs"], 1000)
            fx.play()
            await fx.wait_done(WAIT)
            want = [f.text for f in REC.frames if (f.channel, f.pair) == ("book-1000", "SC/EUR")]
            texts: list[str] = []
            async with asyncio.timeout(WAIT):
                while len(texts) < len(want) - 1:  # the first is the snapshot the fake made
                    msg = await sock.receive()
                    if msg.data.startswith("["):
                        texts.append(msg.data)
            assert texts == want[1:]
            for text in texts:
                frame = orjson.loads(text)
                parts = frame[1:-2]
                book.apply([lv for p in parts for lv in p.get("a", ())],
                           [lv for p in parts for lv in p.get("b", ())])  # fmt: skip
                assert book.checksum_v1() == int(parts[-1]["c"])
            req["subscription"] = {"name": "book", "depth": 10}  # not a recorded stream
            await sock.send_str(orjson.dumps(req).decode())
            st = await read(sock, lambda m: isinstance(m, dict) and m.get("status") == "error")
            assert st["errorMessage"] == "Not in the recording: book-10 SC/EUR"


# ---------------------------------------------------------------------- synthetic, faults


def test_synthetic_is_deterministic_and_paced() -> None:
    def run() -> list[Any]:
        src = KrakenSyntheticSource(["AAA/USD", "XBT/EUR"], rate=100, total=300, seed=5)
        src.prepare()
        return [(e.delay, e.channel, e.pair, e.data) for e in src.events(lambda: 1_000)]

    a = run()
    assert a == run() and len(a) == 300
    assert sum(d for d, *_ in a) == pytest.approx(2.99)  # 100 a second
    assert {p for _, _, p, _ in a} == {"AAA/USD", "XBT/EUR"}
    src = KrakenSyntheticSource(["AAA/USD"], seed=5)
    assert "AAAUSD" in src.pairs() and src.pairs()["AAAUSD"]["wsname"] == "AAA/USD"


async def test_socket_faults_reach_ccxt() -> None:
    """Garbage reaches the sockets; a stall holds frames; a dropped socket rejects ccxt's
    watch."""
    source = KrakenSyntheticSource(["AAA/USD"], rate=100, seed=2, channels=("trade",))
    async with FakeKraken(source, autoplay=False) as fx:
        async with kraken(fx) as ex:
            first = asyncio.create_task(ex.watch_trades("AAA/USD"))
            await fx.wait_subscribed([("trade", "AAA/USD")])
            fx.play()
            assert (await first)[0]["symbol"] == "AAA/USD"
            async with ws(fx) as sock:  # garbage goes to every socket, in order with data
                await sock.send_str(sub("trade", ["AAA/USD"], 1))
                await read(sock, lambda m: m.get("method") == "subscribe")
                assert fx.faults.send_garbage(1) == 2
                async with asyncio.timeout(WAIT):
                    while '"p":}' not in (await sock.receive()).data:  # Binance-ish garbage
                        pass
            fx.faults.stall(0.5)
            n = len(fx.sent)
            await asyncio.sleep(0.3)
            assert len(fx.sent) - n <= 1
            assert fx.faults.close_all() == 1
            with pytest.raises((ccxt.NetworkError, aiohttp.ClientError)):  # ccxt passes both
                async with asyncio.timeout(WAIT):
                    while True:
                        await ex.watch_trades("AAA/USD")


async def test_hold_until_subscribed_starts_the_replay_after_the_first_subscription() -> None:
    async with FakeKraken(KrakenReplaySource(speed=0), hold_until_subscribed=0.3) as fx:
        await asyncio.sleep(0.3)
        assert fx.market.trades == {}  # nothing played while nobody subscribed
        async with ws(fx) as sock:
            await sock.send_str(sub("trade", ["XMR/USD"], 1))
            t0 = time.monotonic()
            await read(sock, lambda m: m.get("channel") == "trade")
            assert time.monotonic() - t0 >= 0.25
