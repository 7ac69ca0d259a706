"""publisher.coinbase on the real ccxt.pro.coinbase class, no sockets: the sequence check,
the resync it triggers, the book's nonce, the taker's side, the ticker time."""

from __future__ import annotations

from typing import Any

import ccxt.pro
import pytest
from ccxt.base.errors import InvalidNonce

from fake_exchange.coinbase.recording import coinbase_recording, load_coinbase_recording
from publisher.ccxt_client import _client_class
from publisher.coinbase import STATE_KEY, Sequence, iso_ms, message_time, sequence_of

URL = "wss://advanced-trade-ws.coinbase.com"


def test_a_sequence_starts_anywhere_and_any_skip_or_repeat_is_a_gap() -> None:
    s = Sequence()
    assert [s.admit(n) for n in (5, 6, 7)] == [True, True, True]
    assert s.admit(9) is False and s.last == 9
    assert s.admit(8) is False and s.last == 9  # a late one never moves the chain back
    assert s.admit(10) is True and s.gaps == 2


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2026-08-09T21:05:48.228568804Z", 1786309548228),
        ("2026-08-09T21:05:38.50436Z", 1786309538504),
        ("2026-08-09T21:05:48Z", 1786309548000),
        ("yesterday", None),
    ],
)
def test_coinbase_times_to_ms(text: str, ms: int | None) -> None:
    assert iso_ms(text) == ms
    assert message_time((None, {"timestamp": text})) == ms


def _exchange() -> Any:
    ex = _client_class("coinbase", ccxt.pro.coinbase)({"enableRateLimit": False})
    products = load_coinbase_recording(coinbase_recording()).products
    ex.set_markets([ex.parse_spot_market(p, {}) for p in products if p["product_id"] == "BTC-USD"])
    return ex


def _l2(seq: int, kind: str, *levels: tuple[str, str, str]) -> dict[str, Any]:
    updates = [{"side": s, "event_time": "2026-08-09T21:05:48Z", "price_level": p,
                "new_quantity": q} for s, p, q in levels]  # fmt: skip
    return {"channel": "l2_data", "timestamp": "2026-08-09T21:05:48.5Z", "sequence_num": seq,
            "events": [{"type": kind, "product_id": "BTC-USD", "updates": updates}]}  # fmt: skip


async def test_a_gap_drops_the_book_rejects_its_watch_and_marks_it_for_a_new_snapshot() -> None:
    ex = _exchange()
    try:
        client = ex.client(URL)
        client.subscriptions["level2::BTC/USD"] = True
        future = client.future("level2::BTC/USD")
        ex.handle_message(client, _l2(0, "snapshot", ("bid", "100", "1"), ("offer", "101", "2")))
        book = ex.orderbooks["BTC/USD"]
        assert book["nonce"] == 0 and book["bids"][0] == [100.0, 1.0]
        assert future.done() and not future.exception()
        ex.handle_message(client, _l2(1, "update", ("bid", "100", "3")))
        assert ex.orderbooks["BTC/USD"]["nonce"] == 1
        pending = client.future("level2::BTC/USD")
        ex.handle_message(client, _l2(3, "update", ("bid", "99", "1")))  # 2 never came
        assert isinstance(pending.exception(), InvalidNonce)
        assert "BTC/USD" not in ex.orderbooks and "level2::BTC/USD" not in client.subscriptions
        state = client.__dict__[STATE_KEY]
        assert state.stale == {"BTC-USD"} and state.gaps == 1
        ex.handle_message(client, _l2(4, "update", ("bid", "98", "1")))
        assert "BTC/USD" not in ex.orderbooks  # updates wait for the new snapshot
        ex.handle_message(client, _l2(5, "snapshot", ("bid", "97", "1"), ("offer", "98", "1")))
        assert ex.orderbooks["BTC/USD"]["nonce"] == 5
        assert ex.orderbooks["BTC/USD"]["bids"] == [[97.0, 1.0]]
        assert sequence_of(client) is state
        if state.heartbeats is not None:  # asked once per connection (this one never opened)
            await state.heartbeats
    finally:
        await ex.close()


def test_public_trades_carry_the_takers_side_and_fills_keep_theirs() -> None:
    ex = _exchange()
    row = {"product_id": "BTC-USD", "trade_id": "7", "price": "65083.67", "size": "0.1",
           "time": "2026-08-09T21:05:48.167634Z", "side": "SELL"}  # fmt: skip
    trade = ex.parse_trade(row)
    assert (trade["side"], trade["id"], trade["timestamp"]) == ("buy", "7", 1786309548167)
    fill = {**row, "order_id": "abc", "side": "BUY"}
    assert ex.parse_trade(fill)["side"] == "buy"
