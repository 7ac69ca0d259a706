"""Stream key naming: format, parsing, and the Redis Cluster hash tag."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from marketbus.errors import DecodeError
from marketbus.keys import (
    StreamKey,
    parse_stream_key,
    status_key,
    stream_key,
    stream_pattern,
)
from marketbus.models import Channel


def test_stream_key_format() -> None:
    assert stream_key("binance", "BTC/USDT", Channel.TRADES) == "md:{binance:BTC/USDT}:trades"
    assert stream_key("binance", "BTC/USDT", Channel.TICKER) == "md:{binance:BTC/USDT}:ticker"


def test_channel_may_be_given_as_text() -> None:
    assert stream_key("binance", "ETH/BTC", "trades") == stream_key(
        "binance", "ETH/BTC", Channel.TRADES
    )
    with pytest.raises(ValueError):
        stream_key("binance", "ETH/BTC", "orders")


def test_custom_prefix() -> None:
    key = stream_key("binance", "BTC/USDT", Channel.TRADES, prefix="test")
    assert key == "test:{binance:BTC/USDT}:trades"
    assert parse_stream_key(key, prefix="test") == StreamKey("binance", "BTC/USDT", Channel.TRADES)
    with pytest.raises(DecodeError):
        parse_stream_key(key)  # not under the default prefix


@pytest.mark.parametrize(
    ("exchange", "symbol"),
    [
        ("binance", "BTC/USDT"),
        ("binance", "BTC/USDT:USDT"),  # a swap: the symbol itself holds a colon
        ("binance", "ETH/BTC-250328"),
        ("kraken", "XBT/EUR"),
        ("okx", "BTC/USD:BTC-240628-60000-C"),
        ("binance", "狗狗币/USDT"),
        ("binance", "A"),
    ],
)
@pytest.mark.parametrize("channel", list(Channel))
def test_parse_round_trip(exchange: str, symbol: str, channel: Channel) -> None:
    key = stream_key(exchange, symbol, channel)
    parsed = parse_stream_key(key)
    assert parsed == StreamKey(exchange, symbol, channel)
    assert parsed.channel is channel
    assert parse_stream_key(key.encode()) == parsed  # redis-py returns bytes


@pytest.mark.parametrize(
    "key",
    [
        "",
        "trades",
        "md",
        "md:{}:trades",
        "md:binance:BTC/USDT:trades",  # no hash tag
        "md:{binance:BTC/USDT}trades",  # no separator before the channel
        "md:{binance:BTC/USDT}:",  # no channel
        "md:{binance:BTC/USDT}:orders",  # unknown channel
        "md:{binance:BTC/USDT}:TRADES",
        "md:{binanceBTCUSDT}:trades",  # no exchange:symbol colon
        "md:{:BTC/USDT}:trades",  # empty exchange
        "md:{binance:}:trades",  # empty symbol
        "mb:status:binance",
        "xx:{binance:BTC/USDT}:trades",
        "{binance:BTC/USDT}:trades",
        b"queue:jobs",
    ],
)
def test_foreign_keys_are_decode_errors(key: str | bytes) -> None:
    with pytest.raises(DecodeError):
        parse_stream_key(key)


@pytest.mark.parametrize(
    ("exchange", "symbol"),
    [("", "BTC/USDT"), ("binance", ""), ("bin{ance", "BTC/USDT"), ("binance", "BTC}/USDT"),
     ("binance", "{BTC/USDT}")],
)  # fmt: skip
def test_bad_parts_are_rejected(exchange: str, symbol: str) -> None:
    with pytest.raises(ValueError):
        stream_key(exchange, symbol, Channel.TRADES)


def _hash_tag(key: str) -> str:
    start = key.index("{")
    return key[start + 1 : key.index("}", start + 1)]


def test_hash_tag_is_exchange_and_symbol() -> None:
    assert _hash_tag(stream_key("binance", "BTC/USDT:USDT", Channel.TICKER)) == (
        "binance:BTC/USDT:USDT"
    )


@pytest.mark.parametrize("symbol", ["BTC/USDT", "ETH/BTC", "BTC/USDT:USDT", "NKN/USDT"])
def test_every_channel_of_a_market_shares_one_cluster_slot(symbol: str) -> None:
    slots = {key_slot(stream_key("binance", symbol, ch).encode()) for ch in Channel}
    assert len(slots) == 1
    # the slot is the one of the hash tag alone, as Redis Cluster computes it
    assert slots == {key_slot(f"binance:{symbol}".encode())}


def test_different_markets_spread_over_slots() -> None:
    symbols = [f"C{i}/USDT" for i in range(200)]
    slots = {key_slot(stream_key("binance", s, Channel.TRADES).encode()) for s in symbols}
    # CRC16 over 16384 slots: 200 markets must not all land together
    assert len(slots) > 150
    assert key_slot(stream_key("binance", "BTC/USDT", Channel.TRADES).encode()) != key_slot(
        stream_key("binance", "ETH/USDT", Channel.TRADES).encode()
    )


def test_stream_pattern_matches_every_stream_key() -> None:
    from fnmatch import fnmatchcase

    pattern = stream_pattern()
    for ch in Channel:
        assert fnmatchcase(stream_key("binance", "BTC/USDT:USDT", ch), pattern)
    assert not fnmatchcase(status_key("binance"), pattern)
    assert stream_pattern("test").startswith("test:{")


def test_status_key() -> None:
    assert status_key("binance") == "mb:status:binance"
    assert status_key("binance") != status_key("kraken")


def test_namespace_prefix_keeps_replayed_streams_apart_from_live_ones() -> None:
    from marketbus.keys import namespace_prefix

    assert namespace_prefix(None) == "md"
    prefix = namespace_prefix("bt1")
    key = stream_key("binance", "BTC/USDT", "trades", prefix=prefix)
    assert key == "md.bt1:{binance:BTC/USDT}:trades"
    assert parse_stream_key(key, prefix=prefix) == ("binance", "BTC/USDT", Channel.TRADES)
    with pytest.raises(DecodeError):
        parse_stream_key(key)  # not a live stream
    for bad in ("", "a:b", "a{b}", "x" * 65, "a b"):
        with pytest.raises(ValueError):
            namespace_prefix(bad)
