"""CCXT structures -> models, fed with recorded Binance frames through CCXT's own parser."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import ccxt
import ccxt.pro
import pytest

from marketbus import codec
from marketbus.errors import DecodeError
from marketbus.models import Channel, Ticker, Trade
from publisher.normalize import NormalizeError, ticker_from_ccxt, trade_from_ccxt

RECORDING = Path(__file__).resolve().parents[2] / "fake_exchange" / "data" / "BINANCE.jsonl"
RECV_NS = 1_633_998_600_000_000_123


def _recording() -> list[dict[str, Any]]:
    with RECORDING.open() as f:
        return [json.loads(line) for line in f]


def _exchange_info() -> dict[str, Any]:
    info: dict[str, Any] = next(json.loads(r["data"]) for r in _recording() if r.get("t") == "http")
    return info


def _ws_frames(stream_suffix: str) -> list[dict[str, Any]]:
    """The ``data`` of every recorded combined-stream message whose stream ends with the suffix."""
    out = []
    for r in _recording():
        if r.get("t") != "recv":
            continue
        msg = json.loads(r["data"])
        if isinstance(msg, dict) and str(msg.get("stream", "")).endswith(stream_suffix):
            out.append(msg["data"])
    return out


def _markets() -> list[dict[str, Any]]:
    ex = ccxt.binance({"options": {"fetchMarkets": {"types": ["spot"]}}})
    ex.options["crossMarginPairsData"] = []  # what fetch_markets sets before parsing
    ex.options["isolatedMarginPairsData"] = []
    parsed = (ex.parse_market(m) for m in _exchange_info()["symbols"])
    return [m for m in parsed if m is not None]


MARKETS = _markets()
AGG_TRADES = _ws_frames("@aggTrade")
BOOK_TICKERS = _ws_frames("@bookTicker")
SYMBOL_OF = {m["id"]: m["symbol"] for m in MARKETS}
# the recorded markets (set_markets over all 1,700 costs 0.3 s a test)
RECORDED_MARKETS = [m for m in MARKETS if m["id"] in {f["s"] for f in AGG_TRADES + BOOK_TICKERS}]


@pytest.fixture
async def ex() -> AsyncIterator[Any]:
    client = ccxt.pro.binance()
    client.timeout_on_exit = 0  # close() would otherwise sleep 0.25 s per test
    client.set_markets(RECORDED_MARKETS)
    yield client
    await client.close()


def _ticker_frame(book: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """A spot ``24hrTicker`` in Binance's documented layout, around a recorded bookTicker."""
    frame = {
        "e": "24hrTicker",
        "E": 1_633_998_513_378,
        "s": book["s"],
        "p": "0.00140000",
        "P": "0.399",
        "w": "0.35012345",
        "x": "0.35100000",
        "c": "0.35240000",
        "Q": "58.00000000",
        "b": book["b"],
        "B": book["B"],
        "a": book["a"],
        "A": book["A"],
        "o": "0.35100000",
        "h": "0.36500000",
        "l": "0.34000000",
        "v": "25877000.00000000",
        "q": "9060211.12340000",
        "O": 1_633_912_113_000,
        "C": 1_633_998_513_000,  # close time: not the event time
        "F": 19_800_000,
        "L": 19_862_790,
        "n": 62_791,
    }
    frame.update(kw)
    return frame


# -- trades from recorded frames ------------------------------------------------------------


def test_the_recording_has_frames_to_replay() -> None:
    assert AGG_TRADES and BOOK_TICKERS
    assert all(f["e"] == "aggTrade" for f in AGG_TRADES)


@pytest.mark.parametrize("frame", AGG_TRADES, ids=lambda f: f"{f['s']}-{f['a']}")
@pytest.mark.parametrize("maker", [None, True, False])
async def test_recorded_agg_trade(ex: Any, frame: dict[str, Any], maker: bool | None) -> None:
    if maker is not None:
        frame = {**frame, "m": maker}
    symbol = SYMBOL_OF[frame["s"]]
    parsed = ex.parse_ws_trade(frame, ex.market(symbol))
    t = trade_from_ccxt("binance", parsed, RECV_NS)
    assert isinstance(t, Trade)
    assert t.exchange == "binance"
    assert t.symbol == symbol
    assert t.price == float(frame["p"])
    assert t.amount == float(frame["q"])
    assert t.ts_ms == frame["T"]
    assert t.id == str(frame["a"])
    # m: the buyer is the maker, so the aggressor sold
    assert t.side == ("sell" if frame["m"] else "buy")
    assert t.recv_ns == RECV_NS
    assert t.channel is Channel.TRADES
    # and what normalize accepts, the codec carries
    assert codec.decode(codec.pack(t)) == t


async def test_raw_trade_stream_uses_the_trade_id(ex: Any) -> None:
    agg = AGG_TRADES[0]
    frame = {
        "e": "trade",
        "E": agg["E"],
        "s": agg["s"],
        "t": 19_862_790,
        "p": agg["p"],
        "q": agg["q"],
        "T": agg["T"],
        "m": True,
        "M": True,
    }
    t = trade_from_ccxt(
        "binance", ex.parse_ws_trade(frame, ex.market(SYMBOL_OF[agg["s"]])), RECV_NS
    )
    assert t.id == "19862790"
    assert t.side == "sell"
    assert t.symbol == SYMBOL_OF[agg["s"]]


# -- tickers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "book", BOOK_TICKERS[:5] + BOOK_TICKERS[-3:], ids=lambda b: f"{b['s']}-{b['u']}"
)
async def test_24hr_ticker(ex: Any, book: dict[str, Any]) -> None:
    frame = _ticker_frame(book)
    parsed = ex.parse_ws_ticker(frame, "spot")
    k = ticker_from_ccxt("binance", parsed, RECV_NS)
    assert isinstance(k, Ticker)
    assert k.symbol == SYMBOL_OF[book["s"]]
    assert k.bid == float(book["b"])
    assert k.ask == float(book["a"])
    assert k.bid_size == float(book["B"])
    assert k.ask_size == float(book["A"])
    assert k.last == k.close == float(frame["c"])
    assert k.open == float(frame["o"])
    assert k.high == float(frame["h"])
    assert k.low == float(frame["l"])
    assert k.base_volume == float(frame["v"])
    assert k.quote_volume == float(frame["q"])
    assert k.ts_ms == frame["E"]  # the event time, not CCXT's close-time timestamp
    assert k.recv_ns == RECV_NS
    assert codec.decode(codec.pack(k)) == k


async def test_mini_ticker_has_no_book(ex: Any) -> None:
    frame = {
        "e": "24hrMiniTicker",
        "E": 1_633_998_513_378,
        "s": "NKNUSDT",
        "c": "0.35240000",
        "o": "0.35100000",
        "h": "0.36500000",
        "l": "0.34000000",
        "v": "25877000.00000000",
        "q": "9060211.12340000",
    }
    k = ticker_from_ccxt("binance", ex.parse_ws_ticker(frame, "spot"), RECV_NS)
    assert k.bid is None and k.ask is None and k.bid_size is None and k.ask_size is None
    assert k.last == 0.3524
    assert k.ts_ms == frame["E"]


async def test_book_ticker_without_event_time_uses_receive_time(ex: Any) -> None:
    book = BOOK_TICKERS[0]
    parsed = ex.parse_ws_ticker(book, "spot")
    k = ticker_from_ccxt("binance", parsed, RECV_NS)
    assert k.bid == float(book["b"]) and k.ask == float(book["a"])
    assert k.last is None
    assert k.ts_ms == RECV_NS // 1_000_000


async def test_zero_bid_means_no_bid(ex: Any) -> None:
    frame = _ticker_frame(BOOK_TICKERS[0], b="0.00000000", B="0.00000000")
    k = ticker_from_ccxt("binance", ex.parse_ws_ticker(frame, "spot"), RECV_NS)
    assert k.bid is None
    assert k.bid_size == 0.0  # a size of zero is a real value
    assert k.ask == float(BOOK_TICKERS[0]["a"])


# -- CCXT-shaped dicts ----------------------------------------------------------------------


def _trade_dict(**kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "symbol": "BTC/USDT",
        "id": "42",
        "timestamp": 1_700_000_000_000,
        "price": 35_000.5,
        "amount": 0.25,
        "side": "buy",
    }
    d.update(kw)
    return d


@pytest.mark.parametrize(
    "change",
    [
        {"price": -1.0},
        {"price": 0.0},
        {"price": math.nan},
        {"price": math.inf},
        {"price": None},
        {"price": "abc"},
        {"amount": -0.1},
        {"amount": math.nan},
        {"amount": None},
        {"id": None},
        {"id": ""},
        {"symbol": None},
        {"symbol": ""},
        {"timestamp": -5},
    ],
    ids=repr,
)
def test_bad_trade_is_a_normalize_error(change: dict[str, Any]) -> None:
    with pytest.raises(NormalizeError) as info:
        trade_from_ccxt("binance", _trade_dict(**change), RECV_NS)
    assert isinstance(info.value, DecodeError)
    assert "binance" in str(info.value)
    assert info.value.__cause__ is not None


def test_missing_keys_are_a_normalize_error() -> None:
    with pytest.raises(NormalizeError):
        trade_from_ccxt("binance", {}, RECV_NS)
    with pytest.raises(NormalizeError):
        ticker_from_ccxt("binance", {}, RECV_NS)


def test_trade_numbers_as_strings_and_ints() -> None:
    t = trade_from_ccxt("binance", _trade_dict(price="0.3528", amount=58, id=15683430), RECV_NS)
    assert t.price == 0.3528 and t.amount == 58.0 and t.id == "15683430"


@pytest.mark.parametrize("ts", [None, math.nan, math.inf, "1700000000000", True])
def test_trade_without_usable_timestamp_uses_receive_time(ts: Any) -> None:
    t = trade_from_ccxt("binance", _trade_dict(timestamp=ts), RECV_NS)
    assert t.ts_ms == RECV_NS // 1_000_000


@pytest.mark.parametrize("side", [None, "BUY", "unknown", 1])
def test_unknown_side_is_none(side: Any) -> None:
    assert trade_from_ccxt("binance", _trade_dict(side=side), RECV_NS).side is None


def test_float_timestamp_is_truncated_to_ms() -> None:
    assert trade_from_ccxt(
        "binance", _trade_dict(timestamp=1_700_000_000_000.9), RECV_NS
    ).ts_ms == (1_700_000_000_000)


@pytest.mark.parametrize("bad", [0, 0.0, -1.0, math.nan, math.inf, "x", True, [1]])
def test_unusable_ticker_prices_become_none(bad: Any) -> None:
    d = {"symbol": "BTC/USDT", "timestamp": 1_700_000_000_000, "last": bad, "bid": bad, "ask": 2.0}
    k = ticker_from_ccxt("binance", d, RECV_NS)
    assert k.last is None and k.bid is None
    assert k.ask == 2.0


@pytest.mark.parametrize("bad", [-1.0, math.nan, -math.inf, "x", False])
def test_unusable_ticker_sizes_become_none(bad: Any) -> None:
    d = {"symbol": "BTC/USDT", "bidVolume": bad, "askVolume": "3.5", "baseVolume": 0}
    k = ticker_from_ccxt("binance", d, RECV_NS)
    assert k.bid_size is None
    assert k.ask_size == 3.5
    assert k.base_volume == 0.0


@pytest.mark.parametrize(
    ("d", "ts_ms"),
    [
        ({"info": {"E": 1_700_000_000_123}, "timestamp": 1_600_000_000_000}, 1_700_000_000_123),
        ({"info": {"E": 0}, "timestamp": 1_600_000_000_000}, 1_600_000_000_000),
        ({"info": {"E": True}, "timestamp": 1_600_000_000_000}, 1_600_000_000_000),
        ({"info": {"E": "1700000000123"}, "timestamp": 1_600_000_000_000.5}, 1_600_000_000_000),
        ({"info": "not a dict", "timestamp": None}, RECV_NS // 1_000_000),
        ({"timestamp": math.nan}, RECV_NS // 1_000_000),
        ({"timestamp": -1}, RECV_NS // 1_000_000),
    ],
)
def test_ticker_event_time(d: dict[str, Any], ts_ms: int) -> None:
    k = ticker_from_ccxt("binance", {"symbol": "BTC/USDT", **d}, RECV_NS)
    assert k.ts_ms == ts_ms


def test_ticker_without_symbol_is_a_normalize_error() -> None:
    with pytest.raises(NormalizeError):
        ticker_from_ccxt("binance", {"symbol": None, "bid": 1.0}, RECV_NS)
