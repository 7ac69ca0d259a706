"""Run-time subscription changes (pure): overlay on the config, latest change wins."""

from __future__ import annotations

from marketbus.keys import control_stream, subscriptions_key
from marketbus.models import Channel
from marketbus.subscriptions import (
    Change,
    effective,
    field_name,
    field_value,
    loose_symbol,
    parse_changes,
)
from marketbus_cli.subs import outcome
from publisher.poller import poll_interval, polled, requests_per_cycle

T, K, B = Channel.TRADES, Channel.TICKER, Channel.BOOK


def test_keys_share_one_cluster_slot_per_exchange() -> None:
    assert control_stream("binance") == "mb:ctl:{binance}"
    assert subscriptions_key("binance") == "mb:subs:{binance}"


def test_changes_round_trip_through_the_hash_layout() -> None:
    raw = {
        field_name(T, "eth-usdt").encode(): field_value("+", 2).encode(),
        field_name(B, "BTC/USDT"): field_value("-", 1),
        b"garbage": b"x",
        b"trades|X/Y": b"5:?",
    }
    changes, bad = parse_changes(raw)
    assert bad == 2
    assert changes == [Change(B, "BTC/USDT", "-", 1), Change(T, "ETH/USDT", "+", 2)]


def test_effective_is_config_plus_adds_minus_removes() -> None:
    config = {T: ("BTC/USDT", "ETH/USDT"), K: ("BTC/USDT",)}
    changes = [Change(T, "SOL/USDT", "+", 1), Change(T, "ETH/USDT", "-", 2),
               Change(B, "BTC/USDT", "+", 3)]  # fmt: skip
    assert effective(config, changes) == {
        T: ("BTC/USDT", "SOL/USDT"),
        K: ("BTC/USDT",),
        B: ("BTC/USDT",),
    }


def test_the_latest_change_of_a_market_wins_whatever_its_spelling() -> None:
    canon = {"ETHUSDT": "ETH/USDT", "ETH/USDT": "ETH/USDT"}.get
    changes = [Change(T, "ETH/USDT", "-", 1), Change(T, "ETHUSDT", "+", 2)]
    got = effective({T: ()}, changes, lambda s: canon(s, s))
    assert got == {T: ("ETHUSDT",)}
    changes = [Change(T, "ETHUSDT", "+", 1), Change(T, "ETH/USDT", "-", 2)]
    assert effective({T: ("ETH/USDT",)}, changes, lambda s: canon(s, s)) == {}


def test_loose_symbol() -> None:
    assert loose_symbol(" btc-usdt ") == "BTC/USDT"
    assert loose_symbol("eth_btc") == "ETH/BTC"


def test_outcome_reads_the_worker_status() -> None:
    status = {"subscriptions": {"trades": ["ETH/USDT"], "ticker": ["ETH/USDT"]},
              "dropped": {"NOPE/USDT": "unknown symbol 'NOPE/USDT' on binance"}}  # fmt: skip
    got = outcome(status, ["ethusdt", "NOPE/USDT", "SOL/USDT"], [T, K], "+")
    assert got.applied["ethusdt"] == "active"
    assert got.applied["NOPE/USDT"].startswith("unknown")
    assert got.pending == ["SOL/USDT"]
    assert outcome(status, ["SOL/USDT"], [T], "-").applied == {"SOL/USDT": "removed"}
    assert outcome(None, ["SOL/USDT"], [T], "+").publisher_seen is False


def test_poll_is_chosen_per_channel_and_paced_by_the_rate_limit() -> None:
    has = {"watchTrades": True, "fetchTrades": True, "fetchTickers": True}
    assert not polled(T, has, "ws")
    assert polled(K, has, "ws")  # no websocket ticker here
    assert polled(T, has, "poll")
    assert requests_per_cycle(K, 50, 1, has) == 1
    assert requests_per_cycle(T, 50, 1, has) == 50
    assert requests_per_cycle(Channel.CANDLES, 5, 3, has) == 15
    assert poll_interval(None, 1, 50) == 1.0
    assert poll_interval(0.1, 50, 50) == 50 * 0.05 * 1.5  # never faster than the limit
    assert poll_interval(5.0, 2, 100) == 5.0
