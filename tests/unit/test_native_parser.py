"""The native Binance parser gives exactly the records CCXT's path gives, frame for frame."""

from __future__ import annotations

from collections.abc import AsyncIterator
from itertools import islice
from typing import Any

import ccxt.pro
import orjson
import pytest

from fake_exchange import ReplaySource, SyntheticSource, bundled_recording
from marketbus.models import Channel, Record, Trade
from publisher.native import BinanceFastPath, binance_record
from publisher.normalize import NormalizeError, ticker_from_ccxt, trade_from_ccxt

RECV_NS = 1_700_000_000_000_000_123
CLOCK = lambda: 1_700_000_000_000  # noqa: E731 - a fixed exchange clock for the sources


def frames(source: Any, n: int) -> list[dict[str, Any]]:
    source.prepare()
    return [ev.payload for ev in islice(source.events(CLOCK), n)]


@pytest.fixture
async def ex() -> AsyncIterator[Any]:
    source = ReplaySource(bundled_recording())
    source.prepare()
    info = source.exchange_info()
    client = ccxt.pro.binance({"options": {"fetchMarkets": {"types": ["spot"]}}})
    client.options["crossMarginPairsData"] = []
    client.options["isolatedMarginPairsData"] = []
    syms = {"NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR", "BTCUSDT", "ETHUSDT", "BNBUSDT"}
    markets = [client.parse_market(m) for m in info["symbols"] if m["symbol"] in syms]
    client.set_markets([m for m in markets if m is not None])
    yield client
    client.timeout_on_exit = 0
    await client.close()


def via_ccxt(client: Any, frame: dict[str, Any]) -> Record:
    market = client.markets_by_id[frame["s"]][0]
    if frame["e"] in ("aggTrade", "trade"):
        return trade_from_ccxt("binance", client.parse_ws_trade(frame, market), RECV_NS)
    return ticker_from_ccxt("binance", client.parse_ws_ticker(frame, "spot"), RECV_NS)


def via_native(client: Any, frame: dict[str, Any]) -> Record:
    return binance_record("binance", frame, client.markets_by_id[frame["s"]][0]["symbol"], RECV_NS)


def ours(frame: dict[str, Any]) -> bool:
    return frame.get("e") in ("aggTrade", "trade", "24hrTicker", "24hrMiniTicker")


async def test_recorded_frames_give_identical_records(ex: Any) -> None:
    replayed = [f for f in frames(ReplaySource(bundled_recording()), 2000) if ours(f)]
    kinds = {f["e"] for f in replayed}
    assert {"aggTrade", "trade", "24hrTicker", "24hrMiniTicker"} <= kinds
    for f in replayed:
        assert via_native(ex, f) == via_ccxt(ex, f), f


async def test_synthetic_frames_give_identical_records(ex: Any) -> None:
    source = SyntheticSource(["BTC/USDT", "ETH/USDT", "BNB/USDT"], rate=10_000, total=3000,
                             channels=("aggTrade", "trade", "ticker", "miniTicker"))  # fmt: skip
    synthetic = frames(source, 3000)
    assert len(synthetic) == 3000
    for f in synthetic:
        assert via_native(ex, f) == via_ccxt(ex, f), f


def test_fast_path_takes_only_what_it_publishes() -> None:
    got: list[Record] = []
    bad: list[Exception] = []
    fast = BinanceFastPath("binance", {"BTCUSDT": "BTC/USDT"}, frozenset({Channel.TRADES}),
                           got.append, bad.append)  # fmt: skip
    trade = {
        "e": "aggTrade",
        "E": 2,
        "s": "BTCUSDT",
        "a": 7,
        "p": "1.5",
        "q": "2",
        "T": 1,
        "m": True,
    }
    assert fast(orjson.dumps(trade).decode(), RECV_NS) is True
    assert got[0].id == "7" and got[0].side == "sell" and got[0].price == 1.5  # type: ignore[union-attr]
    assert fast(orjson.dumps({**trade, "s": "ETHUSDT"}).decode(), RECV_NS) is False  # not ours
    assert fast(orjson.dumps({"e": "24hrTicker", "s": "BTCUSDT"}).decode(), RECV_NS) is False
    assert fast('{"result":null,"id":1}', RECV_NS) is False  # acks go to ccxt
    assert fast('{"e":"aggTrade", broken', RECV_NS) is False  # ccxt path + frame guard
    assert fast(orjson.dumps({**trade, "p": "-1"}).decode(), RECV_NS) is True  # counted, skipped
    assert len(got) == 1 and isinstance(bad[0], NormalizeError)


@pytest.mark.parametrize(
    ("field", "value"),
    [("p", "0"), ("p", "nan"), ("p", "-1"), ("p", "inf"), ("q", "-0.5"), ("q", "nan"),
     ("T", 2**63), ("T", -1), ("T", None), ("a", ""), ("p", "x")],
)  # fmt: skip
def test_a_bad_trade_frame_is_refused_like_the_model_refuses_it(field: str, value: Any) -> None:
    frame = {"e": "aggTrade", "E": 1, "s": "BTCUSDT", "a": 7, "p": "100.5", "q": "0.25",
             "T": 1_700_000_000_000, "m": True}  # fmt: skip
    good = binance_record("binance", frame, "BTC/USDT", 5)
    assert good == Trade(exchange="binance", symbol="BTC/USDT", ts_ms=1_700_000_000_000,
                         recv_ns=5, id="7", price=100.5, amount=0.25, side="sell")  # fmt: skip
    with pytest.raises(NormalizeError):
        binance_record("binance", {**frame, field: value}, "BTC/USDT", 5)
