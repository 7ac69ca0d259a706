"""What a bot asks to follow, and decoded values as ring-buffer rows."""

from __future__ import annotations

import math

import pytest

from consumers.columns import COLUMNS, entry_ms, row
from consumers.markets import plan, split_market
from marketbus import codec
from marketbus.errors import ConfigError
from marketbus.keys import StreamKey, parse_stream_key, stream_key
from marketbus.models import Channel, Ticker, Trade


@pytest.mark.parametrize(
    ("market", "parts"),
    [
        ("binance:BTC/USDT", ("binance", "BTC/USDT")),
        ("Binance:btc/usdt", ("binance", "BTC/USDT")),
        ("binance:btc-usdt", ("binance", "BTC/USDT")),
        ("binance:BTC_USDT", ("binance", "BTC/USDT")),
        ("binance:btcusdt", ("binance", "BTCUSDT")),
        ("  binance:ETH/BTC  ", ("binance", "ETH/BTC")),
        ("binance:BTC/USDT:USDT", ("binance", "BTC/USDT:USDT")),  # a swap keeps its settle part
    ],
)
def test_split_market(market: str, parts: tuple[str, str]) -> None:
    assert split_market(market) == parts


@pytest.mark.parametrize(
    "market", ["", "BTC/USDT", "binance", ":BTC/USDT", "binance:", "  :  ", ":"]
)
def test_bad_market_is_a_config_error_naming_it(market: str) -> None:
    with pytest.raises(ConfigError) as info:
        split_market(market)
    assert repr(market) in str(info.value)
    assert "binance:BTC/USDT" in str(info.value)  # says what a good one looks like


def test_plan_every_market_times_every_channel() -> None:
    out = plan(["binance:BTC/USDT", "binance:eth-btc"], [Channel.TRADES, "ticker"])
    assert out == {
        stream_key("binance", "BTC/USDT", Channel.TRADES): StreamKey(
            "binance", "BTC/USDT", Channel.TRADES
        ),
        stream_key("binance", "BTC/USDT", Channel.TICKER): StreamKey(
            "binance", "BTC/USDT", Channel.TICKER
        ),
        stream_key("binance", "ETH/BTC", Channel.TRADES): StreamKey(
            "binance", "ETH/BTC", Channel.TRADES
        ),
        stream_key("binance", "ETH/BTC", Channel.TICKER): StreamKey(
            "binance", "ETH/BTC", Channel.TICKER
        ),
    }
    for key, sk in out.items():
        assert parse_stream_key(key) == sk


def test_plan_resolves_a_slashless_symbol_against_known_streams() -> None:
    known = [
        StreamKey("binance", "BTC/USDT", Channel.TRADES),
        StreamKey("binance", "BTC/USDT", Channel.TICKER),
        StreamKey("binance", "NKN/USDT", Channel.TRADES),
        StreamKey("kraken", "ETH/EUR", Channel.TRADES),
    ]
    out = plan(["binance:btcusdt", "BINANCE:NKNUSDT"], ["trades"], known)
    assert set(out.values()) == {
        StreamKey("binance", "BTC/USDT", Channel.TRADES),
        StreamKey("binance", "NKN/USDT", Channel.TRADES),
    }
    # the loose match is per exchange: kraken's ETH/EUR does not answer for binance
    out = plan(["binance:etheur"], ["trades"], known)
    assert list(out.values()) == [StreamKey("binance", "ETHEUR", Channel.TRADES)]


def test_plan_without_known_streams_keeps_the_symbol() -> None:
    out = plan(["binance:btcusdt"], ["trades"])
    assert list(out.values()) == [StreamKey("binance", "BTCUSDT", Channel.TRADES)]


def test_plan_deduplicates_spellings_of_one_market() -> None:
    out = plan(["binance:BTC/USDT", "binance:btc-usdt", "binance:BTC_USDT"], ["trades"])
    assert len(out) == 1


def test_plan_needs_channels_and_markets() -> None:
    with pytest.raises(ConfigError, match="channels"):
        plan(["binance:BTC/USDT"], [])
    with pytest.raises(ConfigError, match="markets"):
        plan([], ["trades"])


def test_plan_rejects_a_bad_market() -> None:
    with pytest.raises(ConfigError, match="nocolon"):
        plan(["binance:BTC/USDT", "nocolon"], ["trades"])


# -- columns --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry_id", "ms"),
    [("1700000000000-3", 1_700_000_000_000), (b"1700000000001-0", 1_700_000_000_001), ("5", 5)],
)
def test_entry_ms(entry_id: str | bytes, ms: int) -> None:
    assert entry_ms(entry_id) == ms


def test_trade_row_matches_the_trade_columns() -> None:
    t = Trade(
        exchange="binance",
        symbol="BTC/USDT",
        ts_ms=1_700_000_000_000,
        recv_ns=1_700_000_000_005_000_000,
        id="42",
        price=35_000.5,
        amount=0.25,
        side="sell",
    )
    channel, values = codec.unpack(codec.pack(t))
    r = row(channel, values, b"1700000000007-0")
    names = [c.name for c in COLUMNS[Channel.TRADES]]
    assert dict(zip(names, r, strict=True)) == {
        "ts_ms": t.ts_ms,
        "recv_ns": t.recv_ns,
        "entry_ms": 1_700_000_000_007,
        "price": 35_000.5,
        "amount": 0.25,
        "side": "sell",
        "id": "42",
    }


def test_ticker_row_has_nan_for_missing_values() -> None:
    k = Ticker(exchange="binance", symbol="BTC/USDT", ts_ms=1, recv_ns=2, bid=10.0, ask_size=0.0)
    channel, values = codec.unpack(codec.pack(k))
    r = row(channel, values, "3-0")
    names = [c.name for c in COLUMNS[Channel.TICKER]]
    assert len(r) == len(names)
    d = dict(zip(names, r, strict=True))
    assert (d["ts_ms"], d["recv_ns"], d["entry_ms"]) == (1, 2, 3)
    assert d["bid"] == 10.0
    assert d["ask_size"] == 0.0
    assert math.isnan(d["ask"]) and math.isnan(d["last"]) and math.isnan(d["quote_volume"])
