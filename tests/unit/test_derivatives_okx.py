"""OKX swaps in the publisher without sockets: spot and swap markets (CCXT's parser on the
recorded instruments) and their spellings, and the taps on the real ccxt.pro.okx handlers for
`funding-rate`, `mark-price` and `liquidation-orders` frames built by the fake."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from fake_exchange.okx import derivs as od
from fake_exchange.okx.frames import push, ticker_row
from fake_exchange.okx.recording import load_okx_recording, okx_recording
from marketbus.models import Channel
from marketbus.settings import ExchangeSettings
from marketbus.symbols import AmbiguousSymbolError, SymbolResolver
from publisher.ccxt_client import ccxt_config, make_client
from publisher.derivatives import derivative_from_ccxt

RECV = 1_800_000_000_000_000_000
INST = "BTC-USDT-SWAP"


class StubWs:
    """The part of a ccxt websocket client the handlers touch."""

    def __init__(self) -> None:
        self.resolved: list[str] = []

    def resolve(self, result: Any, message_hash: str) -> Any:
        self.resolved.append(message_hash)
        return result


@pytest.fixture(scope="module")
def client() -> Any:
    seen: list[tuple[Channel, dict[str, Any]]] = []
    ex = make_client(ExchangeSettings(name="okx", url="http://127.0.0.1:9"),
                     lambda ch, d: seen.append((ch, d)))  # fmt: skip
    inst = load_okx_recording(okx_recording()).instruments
    markets = [ex.parse_market(m) for t in ("SPOT", "SWAP") for m in inst[t]]
    ex.set_markets([m for m in markets if m is not None])
    ex.seen = seen
    return ex


def test_okx_loads_spot_swaps_and_futures(client: Any) -> None:
    assert ccxt_config(ExchangeSettings(name="okx"))["options"]["fetchMarkets"] == {
        "types": ["spot", "swap", "future"]
    }
    m = client.markets["BTC/USDT:USDT"]
    assert (m["id"], m["type"], m["contract"], m["contractSize"]) == (INST, "swap", True, 0.01)
    assert client.markets["BTC/USDT"]["spot"] is True


@pytest.mark.parametrize(
    ("raw", "symbol"),
    [
        ("BTC-USDT", "BTC/USDT"),
        ("BTCUSDT", "BTC/USDT"),  # a loose spelling: the spot market, though a swap matches
        ("btc_usdt", "BTC/USDT"),
        ("BTC-USDT-SWAP", "BTC/USDT:USDT"),  # the swap by its OKX id
        ("btc/usdt:usdt", "BTC/USDT:USDT"),
        ("BTC-USD-SWAP", "BTC/USD:BTC"),  # an inverse swap
    ],
)
def test_okx_spellings_resolve(client: Any, raw: str, symbol: str) -> None:
    assert SymbolResolver("okx", client.markets.values()).resolve(raw) == symbol


def test_a_loose_spelling_of_two_contracts_and_no_spot_is_refused_naming_both() -> None:
    linear = {"symbol": "XYZ/USDT:USDT", "id": "XYZ-USDT-SWAP", "base": "XYZ", "quote": "USDT",
              "spot": False}  # fmt: skip
    future = {"symbol": "XYZ/USDT:USDT-261225", "id": "XYZ-USDT-261225", "base": "XYZ",
              "quote": "USDT", "spot": False}  # fmt: skip
    r = SymbolResolver("okx", [linear, future])
    with pytest.raises(AmbiguousSymbolError, match="XYZ/USDT:USDT and XYZ/USDT:USDT-261225"):
        r.resolve("XYZUSDT")
    assert r.resolve("XYZ-USDT-SWAP") == "XYZ/USDT:USDT"


def test_mark_price_frames_feed_mark_and_tickers_frames_feed_ticker(client: Any) -> None:
    """OKX's handle_ticker parses both: each tap takes only its own channel's frames."""
    client.seen.clear()
    mark = push("mark-price", INST, [od.mark_row(INST, Decimal("65117.4"), 1_700_000_000_100)])
    client.handle_message(StubWs(), mark)
    row = ticker_row(INST, last="65117", last_sz="1", ask_px="65117.1", ask_sz="3",
                     bid_px="65117", bid_sz="2", open24h="65000", high24h="65200",
                     low24h="64900", vol_ccy24h="100", vol24h="10000", ts_ms=1_700_000_000_200,
                     inst_type="SWAP")  # fmt: skip
    client.handle_message(StubWs(), push("tickers", INST, [row]))
    assert [(ch, d["symbol"]) for ch, d in client.seen] == [
        (Channel.MARK, "BTC/USDT:USDT"), (Channel.TICKER, "BTC/USDT:USDT"),
    ]  # fmt: skip
    rec = derivative_from_ccxt("okx", Channel.MARK, client.seen[0][1], RECV)
    assert (rec.ts_ms, rec.mark_price, rec.index_price) == (1_700_000_000_100, 65117.4, None)  # type: ignore[union-attr]


def test_every_funding_row_and_liquidation_of_a_frame_is_tapped(client: Any) -> None:
    client.seen.clear()
    rows = [od.funding_row(INST, Decimal("0.0001"), Decimal("0.00012"), 1_700_006_400_000,
                           1_700_000_000_000),
            od.funding_row("ETH-USDT-SWAP", Decimal("-0.00002"), None, 1_700_006_400_000,
                           1_700_000_000_001)]  # fmt: skip
    client.handle_message(StubWs(), {"arg": {"channel": "funding-rate", "instId": INST},
                                     "data": rows})  # fmt: skip
    items = [od.liquidation_item(INST, "sell", Decimal(3), Decimal("64000.5"), 1_700_000_000_002),
             od.liquidation_item(INST, "buy", Decimal(7), Decimal("66000"), 1_700_000_000_003)]  # fmt: skip
    client.handle_message(StubWs(), od.liquidation_frame("SWAP", items))
    assert [ch for ch, _ in client.seen] == [Channel.FUNDING] * 2 + [Channel.LIQUIDATIONS] * 2
    recs = [derivative_from_ccxt("okx", ch, d, RECV) for ch, d in client.seen]
    f1, f2, l1, l2 = recs
    assert (f1.symbol, f1.ts_ms, f1.rate, f1.next_funding_ms, f1.predicted_rate,  # type: ignore[union-attr]
            f1.interval_ms) == ("BTC/USDT:USDT", 1_700_000_000_000, 0.0001,  # type: ignore[union-attr]
                                1_700_006_400_000, 0.00012, 28_800_000)  # fmt: skip
    assert (f2.symbol, f2.rate, f2.predicted_rate) == ("ETH/USDT:USDT", -0.00002, None)  # type: ignore[union-attr]
    assert [(x.ts_ms, x.side, x.price, x.amount) for x in (l1, l2)] == [  # type: ignore[union-attr]
        (1_700_000_000_002, "sell", 64000.5, 3.0), (1_700_000_000_003, "buy", 66000.0, 7.0),
    ]  # fmt: skip
    client.seen.clear()
    client.parse_funding_rate(rows[0])  # a REST answer's parse: the caller's, not tapped
    assert client.seen == []
