"""What the publisher knows about Binance USD-M futures, checked on the real
ccxt.pro.binanceusdm without sockets: markets parsed by CCXT from the recorded exchangeInfo,
symbols, urls, the taps (trades, tickers, mark price, funding, liquidations), where each
derivatives channel comes from, and CCXT's own `pu` book chain on the recorded depth frames."""

from __future__ import annotations

import asyncio
import itertools
from decimal import Decimal
from typing import Any

import ccxt
import pytest
from pydantic import ValidationError

from fake_exchange.binance_frames import USDM
from fake_exchange.market_state import LiveBook
from fake_exchange.recording import bundled_recording, load_recording
from marketbus.models import Channel
from marketbus.settings import ExchangeSettings
from marketbus.symbols import SymbolResolver
from publisher import binanceusdm
from publisher.ccxt_client import ccxt_config, make_client, streams_per_connection, watch_params
from publisher.deriv_feeds import Feed, Source, source
from publisher.exchanges import FAST_PATHS
from publisher.trade_ids import TradeIdTracker

PERP = "SUSHI/USDT:USDT"


def usdm_markets() -> list[dict[str, Any]]:
    """CCXT's unified markets from the recorded `/fapi/v1/exchangeInfo` answer."""
    info = load_recording(bundled_recording(USDM)).exchange_info
    ex = ccxt.binanceusdm()
    ex.fapiPublicGetExchangeInfo = lambda params={}: info
    return list(ex.load_markets().values())


@pytest.fixture(scope="module")
def markets() -> list[dict[str, Any]]:
    return usdm_markets()


class StubWs:
    """The part of a ccxt websocket client the handlers touch."""

    def __init__(self, path: str = "/market/ws/0") -> None:
        self.url = f"ws://127.0.0.1:9{path}"
        self.subscriptions: dict[str, Any] = {}
        self.rejected: list[tuple[Exception, str]] = []
        self.resolved: list[str] = []

    def resolve(self, result: Any, message_hash: str) -> Any:
        self.resolved.append(message_hash)
        return result

    def reject(self, error: Exception, message_hash: str) -> None:
        self.rejected.append((error, message_hash))


@pytest.fixture
def client(markets: list[dict[str, Any]]) -> Any:
    """A tapped ccxt.pro.binanceusdm with the recorded markets; parsed structures land in
    `seen`."""
    seen: list[tuple[Channel, dict[str, Any]]] = []
    cfg = ExchangeSettings(name="binanceusdm", url="http://127.0.0.1:9")
    ex = make_client(cfg, lambda ch, d: seen.append((ch, d)))
    ex.set_markets(markets)
    ex.seen = seen
    return ex


# --------------------------------------------------------------------------- markets, config


def test_only_contracts_are_loaded_and_a_loose_spelling_is_the_perpetual(
    markets: list[dict[str, Any]],
) -> None:
    kinds = {m["symbol"]: (m["type"], m["linear"], m["settle"]) for m in markets}
    assert kinds[PERP] == ("swap", True, "USDT")
    assert kinds["BTC/USDT:USDT-210924"] == ("future", True, "USDT")
    assert not any(m["spot"] for m in markets)
    r = SymbolResolver("binanceusdm", markets)
    # BTCUSDT names the perpetual and (by base + quote) the quarterly: the one of that id wins
    for raw in ("BTCUSDT", "btc-usdt", "BTC/USDT:USDT", "btcusdt"):
        assert r.resolve(raw) == "BTC/USDT:USDT", raw
    assert r.resolve("BTCUSDT_210924") == "BTC/USDT:USDT-210924"
    assert r.resolve("SUSHIUSDT") == PERP
    assert r.resolve("BTC/USDT:USDT-210924") == "BTC/USDT:USDT-210924"


def test_the_client_is_linear_swap_by_default_and_every_url_points_at_the_fake() -> None:
    cfg = ExchangeSettings(name="binanceusdm", url="http://127.0.0.1:9")
    options = ccxt_config(cfg)["options"]
    assert options["defaultType"] == "swap"
    assert options["fetchMarkets"] == {"types": ["linear"]}
    ex = make_client(cfg, None)
    assert streams_per_connection(ex, "swap") == streams_per_connection(ex, "linear") == 200

    def urls(node: Any) -> list[str]:
        if isinstance(node, str):
            return [node]
        return [u for v in node.values() for u in urls(v)] if isinstance(node, dict) else []

    assert all(u.split("://")[1].startswith("127.0.0.1:9/") for u in urls(ex.urls["api"]))
    # CCXT's linear url is rebased, then split by category as on fstream.binance.com
    assert ex.get_ws_url("linear", ex.get_future_ws_category("depth")) == (
        "ws://127.0.0.1:9/public/ws"
    )
    assert ex.get_ws_url("linear", ex.get_future_ws_category("aggTrade")) == (
        "ws://127.0.0.1:9/market/ws"
    )
    assert ccxt_config(ExchangeSettings(name="binance"))["options"]["defaultType"] == "spot"


def test_streams_and_parser_default_to_aggtrade_ticker_and_ccxt() -> None:
    cfg = ExchangeSettings(name="binanceusdm")
    assert watch_params("binanceusdm", Channel.TRADES, cfg) == {"name": "aggTrade"}
    assert watch_params("binanceusdm", Channel.TICKER, cfg) == {"name": "ticker"}
    # Binance's native parser is not proven on USD-M frames: CCXT's path, and no opting in
    assert "binanceusdm" not in FAST_PATHS and cfg.native is False
    with pytest.raises(ValidationError, match="native"):
        ExchangeSettings(name="binanceusdm", parser="native")


def test_where_each_derivatives_channel_comes_from(client: Any) -> None:
    has = client.has
    mark = Source(Feed.WATCH, "watch_mark_prices", True)
    assert source("binanceusdm", Channel.MARK, has) == mark
    assert source("binanceusdm", Channel.FUNDING, has) == mark  # r and T of the same frames
    assert source("binanceusdm", Channel.LIQUIDATIONS, has) == Source(
        Feed.WATCH, "watch_liquidations_for_symbols", True
    )
    assert source("binanceusdm", Channel.OPEN_INTEREST, has) == Source(
        Feed.POLL, "fetch_open_interest", False
    )
    assert source("binanceusdm", Channel.FUNDING, has, "poll") == Source(
        Feed.POLL, "fetch_funding_rates", True
    )
    assert source("binanceusdm", Channel.MARK, has, "poll") == Source(
        Feed.POLL, "fetch_mark_prices", True
    )
    # the row is Binance USD-M's own: nobody else's funding comes from mark prices
    assert source("binance", Channel.FUNDING, has).method != "watch_mark_prices"


# --------------------------------------------------------------------------- taps


def test_each_frame_is_tapped_as_ccxt_parses_it(client: Any) -> None:
    ws = StubWs()
    agg = {"e": "aggTrade", "E": 1_700_000_000_200, "a": 87353230, "s": "SUSHIUSDT",
           "p": "7.6120", "q": "297", "f": 126902924, "l": 126902927,
           "T": 1_700_000_000_100, "m": False}  # fmt: skip
    ticker = {"e": "24hrTicker", "E": 1_700_000_000_300, "s": "SUSHIUSDT", "p": "0.1",
              "P": "1.3", "w": "7.6", "c": "7.612", "Q": "3", "o": "7.5", "h": "7.7",
              "l": "7.4", "v": "100", "q": "760", "O": 1, "C": 1_700_000_000_299, "F": 1,
              "L": 9, "n": 9}  # fmt: skip
    mark = {"e": "markPriceUpdate", "E": 1_700_000_000_400, "s": "SUSHIUSDT", "p": "7.61",
            "P": "7.60", "i": "7.605", "r": "0.00012", "T": 1_700_006_400_000}  # fmt: skip
    quarterly = {**mark, "s": "BTCUSDT_210924", "p": "40000", "i": "39990", "r": "", "T": 0}
    liq = {"e": "forceOrder", "E": 1_700_000_000_500,
           "o": {"s": "SUSHIUSDT", "S": "SELL", "o": "LIMIT", "f": "IOC", "q": "12",
                 "p": "7.50", "ap": "7.55", "X": "FILLED", "l": "12", "z": "12",
                 "T": 1_700_000_000_499}}  # fmt: skip
    book_ticker = {"e": "bookTicker", "u": 5, "s": "SUSHIUSDT", "b": "7.61", "B": "1",
                   "a": "7.62", "A": "2", "T": 1, "E": 2}  # fmt: skip
    for frame in (agg, ticker, mark, quarterly, liq, book_ticker):
        client.handle_message(ws, frame)
    got = {(ch, d["symbol"]): d for ch, d in client.seen}
    assert [(ch.value, s) for ch, s in got] == [
        ("trades", PERP),
        ("ticker", PERP),
        ("mark", PERP),
        ("funding", PERP),
        ("mark", "BTC/USDT:USDT-210924"),  # a quarterly's mark frame has no funding rate
        ("liquidations", PERP),
    ]
    trade = got[(Channel.TRADES, PERP)]
    assert (trade["id"], trade["price"], trade["side"], trade["timestamp"]) == (
        "87353230", 7.612, "buy", 1_700_000_000_100)  # fmt: skip
    assert got[(Channel.TICKER, PERP)]["bid"] is None  # USD-M's 24hrTicker has no bid/ask
    m = got[(Channel.MARK, PERP)]
    assert (m["markPrice"], m["indexPrice"], m["timestamp"]) == (7.61, 7.605, 1_700_000_000_400)
    f = got[(Channel.FUNDING, PERP)]
    assert (f["fundingRate"], f["fundingTimestamp"], f["timestamp"]) == (
        "0.00012", 1_700_006_400_000, 1_700_000_000_400)  # fmt: skip
    liquidation = got[(Channel.LIQUIDATIONS, PERP)]
    assert (liquidation["side"], liquidation["price"], liquidation["contracts"]) == (
        "sell", 7.55, 12.0)  # fmt: skip


def test_funding_from_mark_price_reads_the_frame_kept_in_info() -> None:
    assert binanceusdm.funding_from_mark_price(None) is None
    assert binanceusdm.funding_from_mark_price({"symbol": "X", "info": "?"}) is None
    frame = {"e": "markPriceUpdate", "r": "-0.0003", "T": 1_700_006_400_000}
    got = binanceusdm.funding_from_mark_price({"symbol": "X", "timestamp": 5, "info": frame})
    assert got is not None
    assert (got["symbol"], got["fundingRate"], got["fundingTimestamp"], got["timestamp"]) == (
        "X", "-0.0003", 1_700_006_400_000, 5)  # fmt: skip


def test_aggtrade_ids_are_consecutive_per_market_so_a_gap_is_counted() -> None:
    ids = TradeIdTracker.for_exchange("binanceusdm")
    assert [ids.admit(PERP, str(i)) for i in (10, 11, 13, 13)] == [True, True, True, False]
    assert (ids.gaps, ids.missing, ids.duplicates) == (1, 1, 1)


# --------------------------------------------------------------------------- books


def recorded_depth(symbol_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rec = load_recording(bundled_recording(USDM))
    frames = [f.data for f in rec.frames if f.stream == f"{symbol_id.lower()}@depth@100ms"]
    return rec.snapshots[symbol_id], frames


def top(side: dict[str, str], reverse: bool, n: int = 20) -> list[list[float]]:
    best = sorted(side.items(), key=lambda kv: Decimal(kv[0]), reverse=reverse)[:n]
    return [[float(p), float(q)] for p, q in best]


def test_ccxt_chains_usdm_diffs_by_pu_and_matches_the_exchanges_book(client: Any) -> None:
    """The recorded diffs, buffered before the snapshot and live after it, through CCXT's own
    USD-M path: its book equals the exchange's (snapshot + every diff from the sync one on),
    although the ids are not consecutive (spot's U = u + 1 rule would see a gap in each)."""
    snap, frames = recorded_depth("SUSHIUSDT")
    assert all(b["pu"] == a["u"] for a, b in itertools.pairwise(frames))
    assert any(b["U"] != a["u"] + 1 for a, b in itertools.pairwise(frames))
    last_id = snap["lastUpdateId"]
    sync = next(i for i, f in enumerate(frames) if f["U"] <= last_id <= f["u"])
    ws = StubWs("/public/ws/1")
    ob = client.orderbooks[PERP] = client.order_book({}, 1000)
    ob["nonce"], ob.cache = None, []
    for f in frames[: sync + 2]:  # buffered while the snapshot is on its way
        client.handle_order_book(ws, f)

    async def rest_snapshot(symbol: str, limit: int, params: Any) -> dict[str, Any]:
        return client.parse_order_book(snap, symbol, snap["T"]) | {"nonce": last_id}

    client.fetch_rest_order_book_safe = rest_snapshot
    sub = {"symbol": PERP, "type": "linear", "limit": 1000, "params": {}}
    asyncio.run(client.fetch_order_book_snapshot(ws, None, sub))
    for f in frames[sync + 2 :]:
        client.handle_order_book(ws, f)
    assert ws.rejected == []
    want = LiveBook.from_snapshot(snap)
    for f in frames[sync:]:
        want.apply(f)
    book = client.orderbooks[PERP]
    assert book["nonce"] == frames[-1]["u"] == want.last_update_id
    assert book["bids"][:20] == top(want.bids, True) and book["asks"][:20] == top(want.asks, False)


def test_a_lost_usdm_diff_drops_the_book_with_a_checksum_error(client: Any) -> None:
    snap, frames = recorded_depth("CTKUSDT")
    sync = next(i for i, f in enumerate(frames) if f["U"] <= snap["lastUpdateId"] <= f["u"])
    ws = StubWs("/public/ws/1")
    symbol = "CTK/USDT:USDT"
    ws.subscriptions[f"orderbook::{symbol}"] = {"id": "1"}
    ob = client.orderbooks[symbol] = client.order_book({}, 1000)
    ob.reset(client.parse_order_book(snap, symbol, snap["T"]) | {"nonce": snap["lastUpdateId"]})
    client.handle_order_book(ws, frames[sync])
    client.handle_order_book(ws, frames[sync + 1])
    assert ws.rejected == [] and client.orderbooks[symbol]["nonce"] == frames[sync + 1]["u"]
    assert frames[sync + 3]["pu"] != frames[sync + 1]["u"]
    client.handle_order_book(ws, frames[sync + 3])  # sync + 2 was lost: pu != last u
    [(error, message_hash)] = ws.rejected
    assert isinstance(error, ccxt.ChecksumError) and message_hash == f"orderbook::{symbol}"
    assert symbol not in client.orderbooks and f"orderbook::{symbol}" not in ws.subscriptions
