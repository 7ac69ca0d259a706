"""What the publisher knows about Bybit, checked on the real ccxt.pro.bybit without sockets:
markets (spot and linear, parsed by CCXT from the recorded instruments), symbols, keys, urls,
the taps, the book sequence checks and resync, trade ids."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import ccxt
import pytest
from redis.crc import key_slot

from fake_exchange.bybit.recording import bybit_recording
from marketbus.errors import UnknownSymbolError
from marketbus.keys import parse_stream_key, stream_key
from marketbus.models import Channel
from marketbus.settings import ExchangeSettings
from marketbus.symbols import AmbiguousSymbolError, SymbolResolver
from publisher.bybit import BookChains, checked_order_book, resubscribing_watch_topics
from publisher.ccxt_client import ccxt_config, make_client, subscribe_limit
from publisher.trade_ids import TradeIdTracker
from publisher.worker_parts import chunks


def bybit_markets() -> list[dict[str, Any]]:
    """CCXT's unified markets from the recorded instruments-info answers (spot and linear)."""
    bodies = {}
    with bybit_recording().open() as f:
        for row in map(json.loads, f):
            if row.get("t") == "http":
                bodies["linear" if "category=linear" in row["url"] else "spot"] = row["data"]

    def instruments(params: dict[str, Any]) -> Any:
        if params.get("status") == "PreLaunch":
            return {"retCode": 0, "result": {"category": params["category"], "list": []}}
        return json.loads(bodies[params["category"]])

    ex = ccxt.bybit({"options": {"fetchMarkets": {"types": ["spot", "linear"]}}})
    ex.publicGetV5MarketInstrumentsInfo = instruments
    return list(ex.load_markets().values())


@pytest.fixture(scope="module")
def markets() -> list[dict[str, Any]]:
    return bybit_markets()


@pytest.fixture(scope="module")
def client(markets: list[dict[str, Any]]) -> Any:
    """A tapped ccxt.pro.bybit with the recorded markets; parsed structures land in `seen`."""
    seen: list[tuple[Channel, dict[str, Any]]] = []
    ex = make_client(ExchangeSettings(name="bybit", url="http://127.0.0.1:9"),
                     lambda ch, d: seen.append((ch, d)))  # fmt: skip
    ex.set_markets(markets)
    ex.seen = seen
    return ex


# --------------------------------------------------------------------------- symbols and keys


@pytest.mark.parametrize(
    ("raw", "symbol"),
    [
        ("BTCUSDT", "BTC/USDT"),  # the spot market, though the perpetual has the same id
        ("btc-usdt", "BTC/USDT"),
        ("BTC/USDT", "BTC/USDT"),
        ("BTC/USDT:USDT", "BTC/USDT:USDT"),
        ("btc/usdt:usdt", "BTC/USDT:USDT"),
        ("ETHUSDTUSDT", "ETH/USDT:USDT"),
        ("BTCUSDT-14AUG26", "BTC/USDT:USDT-260814"),  # a dated future by its Bybit id
        ("BTCPERP", "BTC/USDC:USDC"),  # the USDC perpetual by its Bybit id
        ("1000PEPEUSDT", "1000PEPE/USDT:USDT"),  # a perpetual without a spot market
    ],
)
def test_bybit_spellings_resolve(markets: list[dict[str, Any]], raw: str, symbol: str) -> None:
    assert SymbolResolver("bybit", markets).resolve(raw) == symbol


def test_spot_and_linear_are_both_loaded_and_every_market_resolves_unambiguously(
    markets: list[dict[str, Any]],
) -> None:
    kinds = {(m["type"], m["settle"]) for m in markets}
    assert kinds == {("spot", None), ("swap", "USDT"), ("swap", "USDC"), ("future", "USDT")}
    r = SymbolResolver("bybit", markets)
    by_id: dict[str, list[dict[str, Any]]] = {}
    for m in markets:
        by_id.setdefault(m["id"], []).append(m)
        assert r.resolve(m["symbol"]) == m["symbol"]
    shared = {i: ms for i, ms in by_id.items() if len(ms) > 1}
    assert len(shared) == 293  # BTCUSDT and 292 more: one id, a spot pair and a perpetual
    for mid, ms in shared.items():
        assert r.resolve(mid) == next(m["symbol"] for m in ms if m["spot"])


def test_a_spelling_naming_several_markets_is_refused_with_each_named() -> None:
    perp = {"symbol": "ETH/USDC:USDC", "id": "ETHPERP", "base": "ETH", "quote": "USDC",
            "spot": False}  # fmt: skip
    future = {"symbol": "ETH/USDC:USDC-260925", "id": "ETH-25SEP26", "base": "ETH",
              "quote": "USDC", "spot": False}  # fmt: skip
    r = SymbolResolver("bybit", [perp, future])
    with pytest.raises(AmbiguousSymbolError) as info:
        r.resolve("ETH-USDC")
    err = info.value
    assert isinstance(err, UnknownSymbolError)  # dropped like an unknown one, never retried
    assert err.candidates == ("ETH/USDC:USDC", "ETH/USDC:USDC-260925")
    assert "ETH/USDC:USDC and ETH/USDC:USDC-260925" in str(err) and "bybit" in str(err)
    assert r.resolve("ETHPERP") == "ETH/USDC:USDC"  # their own ids are not ambiguous
    assert r.resolve("eth/usdc:usdc") == "ETH/USDC:USDC"
    good, bad = r.resolve_all(["ETHUSDC", "ETH-25SEP26"])
    assert good == ["ETH/USDC:USDC-260925"] and isinstance(bad[0], AmbiguousSymbolError)
    spot = {"symbol": "ETH/USDC", "id": "ETHUSDC", "base": "ETH", "quote": "USDC", "spot": True}
    assert SymbolResolver("bybit", [perp, future, spot]).resolve("ETH-USDC") == "ETH/USDC"


def test_perpetual_stream_keys_keep_one_hash_slot_per_market() -> None:
    key = stream_key("bybit", "BTC/USDT:USDT", Channel.TRADES)
    assert key == "md:{bybit:BTC/USDT:USDT}:trades"
    assert parse_stream_key(key) == ("bybit", "BTC/USDT:USDT", Channel.TRADES)
    slots = {key_slot(stream_key("bybit", "BTC/USDT:USDT", c).encode()) for c in Channel}
    assert slots == {key_slot(b"bybit:BTC/USDT:USDT")}
    assert key_slot(stream_key("bybit", "BTC/USDT", "trades").encode()) == key_slot(
        b"bybit:BTC/USDT"
    )


# --------------------------------------------------------------------------- client and urls


def _urls(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [u for v in node.values() for u in _urls(v)]
    return []


def test_every_bybit_url_points_at_the_exchange_url_and_spot_and_linear_are_loaded(
    client: Any,
) -> None:
    urls = _urls(client.urls["api"])
    assert len(urls) == 14
    assert all(u.startswith(("http://127.0.0.1:9", "ws://127.0.0.1:9")) for u in urls), urls
    assert client.urls["api"]["ws"]["public"]["linear"] == "ws://127.0.0.1:9/v5/public/linear"
    assert client.options["fetchMarkets"]["types"] == ["spot", "linear"]
    assert client.options["defaultType"] == "spot" and client.enableRateLimit is False
    binance = ccxt_config(ExchangeSettings(name="binance"))
    assert binance["options"]["fetchMarkets"] == {"types": ["spot"]}  # unchanged elsewhere


def test_a_watch_loop_holds_one_market_type_and_at_most_the_exchanges_limit() -> None:
    kinds = {"A/USDT": "spot", "A/USDT:USDT": "swap", "B/USDT": "spot", "B/USDT:USDT": "swap"}
    syms = list(kinds) + [f"S{i}/USDT" for i in range(15)]
    got = chunks(syms, subscribe_limit("bybit", 200), lambda s: kinds.get(s, "spot"))
    assert [len(c) for c in got] == [10, 7, 2]
    assert all(len({kinds.get(s, "spot") for s in c}) == 1 for c in got)
    assert chunks(syms, subscribe_limit("okx", 200)) == [syms]


# --------------------------------------------------------------------------- taps


class StubWs:
    """The part of a ccxt websocket client the handlers touch."""

    def __init__(self, category: str) -> None:
        self.url = f"ws://127.0.0.1:9/v5/public/{category}"
        self.subscriptions: dict[str, Any] = {}
        self.rejected: list[tuple[Exception, str]] = []
        self.resolved: list[str] = []
        self.sent: list[dict[str, Any]] = []

    def resolve(self, result: Any, message_hash: str) -> Any:
        self.resolved.append(message_hash)
        return result

    def reject(self, error: Exception, message_hash: str) -> None:
        self.rejected.append((error, message_hash))

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


def test_trades_and_tickers_are_tapped_per_url_with_the_messages_time(client: Any) -> None:
    client.seen.clear()
    row = {"T": 1_700_000_000_123, "s": "BTCUSDT", "S": "Buy", "v": "0.5", "p": "100.5",
           "i": "a9188a0a-82bc-50de-be60-03eedbe3cdd7", "BT": False}  # fmt: skip
    for category in ("spot", "linear"):
        trade = {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 1, "data": [row]}
        client.handle_trades(StubWs(category), trade)
    linear = {"symbol": "BTCUSDT", "lastPrice": "100.5", "bid1Price": "100.4", "bid1Size": "1",
              "ask1Price": "100.6", "ask1Size": "2", "openInterestValue": "9", "volume24h": "3"}  # fmt: skip
    client.handle_ticker(StubWs("linear"), {"topic": "tickers.BTCUSDT", "type": "snapshot",
                                            "ts": 1_700_000_000_456, "data": linear})  # fmt: skip
    delta = {"topic": "tickers.BTCUSDT", "type": "delta", "ts": 1_700_000_000_789,
             "data": {"symbol": "BTCUSDT", "bid1Price": "100.45"}}  # fmt: skip
    client.handle_ticker(StubWs("linear"), delta)
    spot = {"symbol": "BTCUSDT", "lastPrice": "99", "usdIndexPrice": "99.1", "volume24h": "1"}
    client.handle_ticker(StubWs("spot"), {"topic": "tickers.BTCUSDT", "type": "snapshot",
                                          "ts": 1_700_000_000_999, "data": spot})  # fmt: skip
    got = [
        (ch.value, d["symbol"], d["timestamp"], d.get("id") or d.get("bid"))
        for ch, d in client.seen
    ]
    assert got == [
        ("trades", "BTC/USDT", 1_700_000_000_123, row["i"]),
        ("trades", "BTC/USDT:USDT", 1_700_000_000_123, row["i"]),
        ("ticker", "BTC/USDT:USDT", 1_700_000_000_456, 100.4),
        ("ticker", "BTC/USDT:USDT", 1_700_000_000_789, 100.45),  # a delta merged, its time
        ("ticker", "BTC/USDT", 1_700_000_000_999, None),  # spot: no best bid on Bybit
    ]
    client.seen.clear()
    client.parse_trade({"execId": "x", "symbol": "BTCUSDT", "price": "1", "size": "1",
                        "side": "Buy", "time": "1"})  # fmt: skip
    client.parse_ticker(linear)
    assert client.seen == []  # REST parsing is the caller's, not tapped


def book(kind: str, u: int, bids: list[list[str]], asks: list[list[str]]) -> dict[str, Any]:
    return {"topic": "orderbook.50.BTCUSDT", "type": kind, "ts": 1_700_000_000_000 + u,
            "data": {"s": "BTCUSDT", "b": bids, "a": asks, "u": u, "seq": 10 * u}}  # fmt: skip


def test_book_chains_admit_consecutive_updates_and_drop_a_gap() -> None:
    c = BookChains()
    assert c.admit("t", "delta", 5) is False  # nothing before a snapshot
    assert c.admit("t", "snapshot", 5) is True
    assert [c.admit("t", "delta", u) for u in (6, 7)] == [True, True]
    assert c.admit("t", "delta", 9) is None and c.stale == {"t"} and c.resyncs == 1
    assert c.admit("t", "delta", 10) is False  # ignored until a new snapshot
    assert c.admit("t", "snapshot", 20) is True and c.admit("t", "delta", 21) is True


def test_a_gap_drops_the_book_rejects_the_watch_and_the_next_subscribe_unsubscribes_first(
    client: Any,
) -> None:
    ws = StubWs("linear")
    ws.subscriptions["orderbook:BTC/USDT:USDT"] = {"id": 1}
    client.handle_order_book(ws, book("snapshot", 100, [["10", "1"], ["9", "1"]], [["11", "1"]]))
    ob = client.orderbooks["BTC/USDT:USDT"]
    assert ob["nonce"] == 100 and ob["bids"][0] == [10.0, 1.0]
    client.handle_order_book(ws, book("delta", 101, [["10", "0"]], [["10.5", "2"]]))
    assert ob["nonce"] == 101 and ob["bids"][0] == [9.0, 1.0] and ob["asks"][0] == [10.5, 2.0]
    client.handle_order_book(ws, book("delta", 103, [["9.5", "3"]], []))  # 102 was lost
    [(error, message_hash)] = ws.rejected
    assert isinstance(error, ccxt.InvalidNonce) and message_hash == "orderbook:BTC/USDT:USDT"
    assert "BTC/USDT:USDT" not in client.orderbooks and ws.subscriptions == {}
    client.handle_order_book(ws, book("delta", 104, [["9.4", "3"]], []))
    assert "BTC/USDT:USDT" not in client.orderbooks  # nothing applied before a new snapshot

    calls: list[list[str]] = []

    async def original(
        self: Any, url: str, hashes: list[str], topics: list[str], params: Any
    ) -> str:
        calls.append(topics)
        return "watched"

    class Self:
        def client(self, url: str) -> StubWs:
            return ws

        def request_id(self) -> int:
            return 7

    watch = resubscribing_watch_topics(original)
    topics = ["orderbook.50.BTCUSDT", "orderbook.50.ETHUSDT"]
    assert asyncio.run(watch(Self(), ws.url, [], topics)) == "watched"
    assert ws.sent == [{"op": "unsubscribe", "req_id": "7", "args": ["orderbook.50.BTCUSDT"]}]
    asyncio.run(watch(Self(), ws.url, [], topics))
    assert len(ws.sent) == 1 and calls == [topics, topics]  # once only
    client.handle_order_book(ws, book("snapshot", 300, [["8", "1"]], [["12", "1"]]))
    assert client.orderbooks["BTC/USDT:USDT"]["nonce"] == 300


def test_the_check_is_per_connection_and_per_topic(client: Any) -> None:
    spot, linear = StubWs("spot"), StubWs("linear")
    client.handle_order_book(spot, book("snapshot", 5, [["1", "1"]], [["2", "1"]]))
    client.handle_order_book(linear, book("snapshot", 900, [["3", "1"]], [["4", "1"]]))
    client.handle_order_book(spot, book("delta", 6, [["1.5", "1"]], []))
    client.handle_order_book(linear, book("delta", 901, [["3.5", "1"]], []))
    assert spot.rejected == linear.rejected == []
    assert client.orderbooks["BTC/USDT"]["nonce"] == 6
    assert client.orderbooks["BTC/USDT:USDT"]["nonce"] == 901


def test_checked_order_book_passes_what_it_cannot_read_to_ccxt() -> None:
    seen: list[Any] = []
    handler = checked_order_book(lambda self, ws, message: seen.append(message))
    for message in ({"topic": "orderbook.1.X"}, {"topic": 5, "data": {}},
                    {"topic": "orderbook.1.X", "data": {"u": "7"}}):  # fmt: skip
        handler(None, StubWs("spot"), message)
    assert len(seen) == 3


# --------------------------------------------------------------------------- trade ids


def test_bybit_trade_ids_are_only_deduplicated() -> None:
    spot_ids = ["2290000000000000001", "2290000000000000007", "2290000000000000030"]
    t = TradeIdTracker.for_exchange("bybit")
    assert [t.admit("A/USDT", i) for i in [*spot_ids, spot_ids[1]]] == [True, True, True, False]
    uid = "a9188a0a-82bc-50de-be60-03eedbe3cdd7"
    assert t.admit("A/USDT:USDT", uid) and not t.admit("A/USDT:USDT", uid)
    assert (t.gaps, t.missing, t.duplicates, t.out_of_range) == (0, 0, 2, 0)
    b = TradeIdTracker.for_exchange("binance")
    assert [b.admit("A/USDT", i) for i in spot_ids] == [True, True, True] and b.gaps == 2
