"""publisher.kraken: Kraken's book checksum on real data, and what a mismatch does to ccxt's
book (the real ccxt.pro.kraken class with our overrides, driven message by message)."""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

import ccxt
import pytest
from ccxt.async_support.base.ws.cache import ArrayCacheByTimestamp

from fake_exchange.kraken.recording import kraken_recording, load_kraken_recording
from marketbus.settings import ExchangeSettings
from publisher import kraken
from publisher.ccxt_client import ccxt_config, make_client
from publisher.kraken import CheckedBook, book_limit, checksum, rfc3339_ms, ticker_time

MARKET = {
    "id": "XXBTZUSD", "symbol": "BTC/USD", "base": "BTC", "quote": "USD", "baseId": "XXBT",
    "quoteId": "ZUSD", "type": "spot", "spot": True, "active": True,
    "precision": {"price": 0.1, "amount": 1e-08}, "limits": {},
    "info": {"wsname": "XBT/USD", "pair_decimals": 1, "lot_decimals": 8},
}  # fmt: skip
HASH = "orderbook@BTC/USD"


def _rows(levels: list[list[str]]) -> list[dict[str, float]]:
    return [{"price": float(lv[0]), "qty": float(lv[1])} for lv in levels]


def test_the_checksum_is_krakens_on_every_recorded_update() -> None:
    """KRAKEN.jsonl (v1, 10 pairs, 2,067 book updates with Kraken's own checksums): a book
    kept the way the publisher keeps it (floats, as ccxt parses them; truncated to the
    subscription's 1,000 levels), written with the precision the strings carry, gives
    Kraken's checksum after every update."""
    books: dict[str, CheckedBook] = {}
    decimals: dict[str, tuple[int, int]] = {}
    checked = 0
    for f in load_kraken_recording(kraken_recording()).frames:
        if not f.channel.startswith("book"):
            continue
        merged: dict[str, Any] = {}
        for part in f.parts:
            for k, v in part.items():
                merged[k] = [*merged.get(k, []), *v] if isinstance(v, list) else v
        if "as" in merged:
            price, qty = merged["as"][0][0], merged["as"][0][1]
            decimals[f.pair] = (len(price.split(".")[1]), len(qty.split(".")[1]))
            books[f.pair] = CheckedBook(1000)
            books[f.pair].apply({"asks": _rows(merged["as"]), "bids": _rows(merged["bs"])})
            continue
        book = books[f.pair]
        book.apply({"asks": _rows(merged.get("a", [])), "bids": _rows(merged.get("b", []))})
        assert book.checksum(decimals[f.pair]) == int(merged["c"]), f.text[:200]
        checked += 1
    assert checked == 2067


def test_checksum_text_rules() -> None:
    # Kraken's documented example levels: "0.05005" -> "5005", "0.00000500" -> "500"
    asks = [("0.05005", "0.00000500"), ("0.05010", "0.00000500")]
    bids = [("0.05000", "0.00000500")]
    assert checksum(asks, bids) == zlib.crc32(b"50055005010500" + b"5000500")
    assert checksum([("1.0", "1.0")] * 12, []) == zlib.crc32(b"1010" * 10)  # top 10 only


def test_depth_and_ticker_time() -> None:
    assert [book_limit(d) for d in (1, 10, 11, 20, 25, 26, 800, 5000)] == [
        10, 10, 25, 25, 25, 100, 1000, 1000]  # fmt: skip
    options = ccxt_config(ExchangeSettings(name="kraken"))["options"]
    assert options["watchOrderBook"] == {kraken.OPTION: 25}  # records are 20 deep by default
    msg = {
        "channel": "ticker",
        "data": [{"symbol": "BTC/USD", "timestamp": "2023-09-25T07:49:37.708706Z"}],
    }
    assert ticker_time((None, msg)) == rfc3339_ms("2023-09-25T07:49:37.708Z") == 1695628177708
    assert ticker_time((None, {"data": [{}]})) is None and rfc3339_ms("garbage") is None


class _Sent:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.watched: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    async def watch_multiple(self, url: str, hashes: Any, request: Any, *args: Any) -> Any:
        self.watched.append(request)
        return self

    def limit(self) -> str:
        return "book"


def _book_message(kind: str, bids: list[tuple[float, float]], asks: list[tuple[float, float]],
                  crc: int) -> dict[str, Any]:  # fmt: skip
    row = {"symbol": "BTC/USD", "checksum": crc,
           "bids": [{"price": p, "qty": q} for p, q in bids],
           "asks": [{"price": p, "qty": q} for p, q in asks]}  # fmt: skip
    if kind == "update":
        row["timestamp"] = "2023-10-06T17:35:55.440295Z"
    return {"channel": "book", "type": kind, "data": [row]}


def _crc(bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> int:
    return checksum([(f"{p:.1f}", f"{q:.8f}") for p, q in sorted(asks)],
                    [(f"{p:.1f}", f"{q:.8f}") for p, q in sorted(bids, reverse=True)])  # fmt: skip


async def test_a_mismatch_drops_the_book_and_the_next_watch_resubscribes() -> None:
    ex = make_client(ExchangeSettings(name="kraken"), None)
    try:
        ex.set_markets([MARKET])
        client = ex.client(ex.urls["api"]["ws"]["publicV2"])
        client.subscriptions[HASH] = {"limit": 10}
        bids, asks = [(100.0, 1.0), (99.9, 2.0)], [(100.1, 1.5), (100.2, 3.0)]
        fut = client.future(HASH)
        ex.handle_message(client, _book_message("snapshot", bids, asks, _crc(bids, asks)))
        book = await asyncio.wait_for(fut, 1)
        assert book["bids"][0][:2] == [100.0, 1.0]
        bids2 = [(100.0, 0.5), (99.9, 2.0)]
        fut = client.future(HASH)
        ex.handle_message(client, _book_message("update", [(100.0, 0.5)], [], _crc(bids2, asks)))
        assert (await asyncio.wait_for(fut, 1))["bids"][0][:2] == [100.0, 0.5]
        # a level lost on the way: the update's checksum is the exchange's, not this book's
        truth = [(100.0, 0.5), (99.9, 2.0), (99.8, 7.0)]
        fut = client.future(HASH)
        ex.handle_message(client, _book_message("update", [], [(100.3, 1.0)],
                                                _crc(truth, [*asks, (100.3, 1.0)])))  # fmt: skip
        with pytest.raises(ccxt.ChecksumError):
            await asyncio.wait_for(fut, 1)
        assert "BTC/USD" not in ex.orderbooks and HASH not in client.subscriptions
        # updates until the next snapshot are dropped, not applied to a missing book
        ex.handle_message(client, _book_message("update", [(99.7, 1.0)], [], 0))
        assert "BTC/USD" not in ex.orderbooks
        # the next watch unsubscribes the pair, then subscribes it again (one request each)
        probe = _Sent()
        client.send = probe.send
        ex.watch_multiple = probe.watch_multiple
        assert await ex.watch_order_book("BTC/USD") == "book"
        assert [m["method"] for m in probe.sent] == ["unsubscribe"]
        assert probe.sent[0]["params"] == {"channel": "book", "symbol": ["BTC/USD"], "depth": 25}
        assert probe.watched[0]["params"] == {"channel": "book", "symbol": ["BTC/USD"], "depth": 25}
        assert await ex.watch_order_book("BTC/USD") == "book"
        assert len(probe.sent) == 1  # not stale any more: no second unsubscribe
        # the fresh snapshot starts a checked book again
        client.subscriptions[HASH] = {"limit": 25}
        fut = client.future(HASH)
        ex.handle_message(client, _book_message("snapshot", truth, asks, _crc(truth, asks)))
        assert len((await asyncio.wait_for(fut, 1))["bids"]) == 3
    finally:
        await ex.close()


async def test_a_second_candle_interval_of_a_symbol_is_subscribed_too() -> None:
    ex = make_client(ExchangeSettings(name="kraken"), None)
    try:
        ex.set_markets([MARKET])
        requests: list[tuple[Any, str]] = []

        async def watch(url: str, message_hash: str, request: Any, sub_hash: str) -> Any:
            requests.append((request["params"], sub_hash))
            return ArrayCacheByTimestamp(10)

        ex.watch = watch
        await ex.watch_ohlcv("BTC/USD", "1m")
        await ex.watch_ohlcv("BTC/USD", "5m")
        assert requests == [
            ({"channel": "ohlc", "symbol": ["BTC/USD"], "interval": 1}, "ohlcv@BTC/USD#1m"),
            ({"channel": "ohlc", "symbol": ["BTC/USD"], "interval": 5}, "ohlcv@BTC/USD#5m"),
        ]
    finally:
        await ex.close()
