"""The publisher's derivatives parts without sockets: CCXT's real parsers (tapped ccxt.pro.bybit)
on recorded and Bybit-shaped frames -> records, the dedupe, where each channel comes from per
exchange, and a derivatives channel asked for a spot market."""

from __future__ import annotations

import math
from typing import Any

import ccxt.pro
import pytest
from structlog.testing import capture_logs

from fake_exchange.bybit.recording import bybit_recording, load_bybit_recording
from marketbus.models import DERIVATIVES, Channel, Funding, Liquidation, MarkPrice, OpenInterest
from marketbus.settings import ExchangeSettings
from marketbus.symbols import SymbolResolver
from publisher.ccxt_client import make_client, tapped_channels
from publisher.deriv_feeds import Feed, Source, is_contract, source
from publisher.derivatives import (
    DerivativesGate,
    derivative_from_ccxt,
    from_ticker_info,
    funding_from_ccxt,
    interval_ms,
    liquidation_from_ccxt,
    mark_from_ccxt,
    open_interest_from_ccxt,
)
from publisher.normalize import NormalizeError
from publisher.worker import ExchangeWorker
from tests.unit.test_bybit_publisher import StubWs, bybit_markets

RECV = 1_800_000_000_000_000_000
ALL = frozenset({Channel.FUNDING, Channel.MARK, Channel.OPEN_INTEREST})


@pytest.fixture(scope="module")
def client() -> Any:
    seen: list[tuple[Channel, dict[str, Any]]] = []
    ex = make_client(ExchangeSettings(name="bybit", url="http://127.0.0.1:9"),
                     lambda ch, d: seen.append((ch, d)))  # fmt: skip
    ex.set_markets(bybit_markets())
    ex.seen = seen
    return ex


def recorded_tickers(bybit_id: str) -> list[dict[str, Any]]:
    rec = load_bybit_recording(bybit_recording())
    return [f.frame for f in rec.frames if f.frame["topic"] == f"tickers.{bybit_id}"]


def test_recorded_linear_tickers_give_the_recorded_values_deduped(client: Any) -> None:
    """Every recorded BTCUSDT tickers frame through CCXT's handler (deltas merged by CCXT):
    each record says what the merged frame said, and only changes get through the gate."""
    client.seen.clear()
    frames = recorded_tickers("BTCUSDT")
    assert len(frames) > 100 and frames[0]["type"] == "snapshot"
    for f in frames:
        client.handle_ticker(StubWs("linear"), f)
    tickers = [d for ch, d in client.seen if ch is Channel.TICKER]
    assert len(tickers) == len(frames)
    gate = DerivativesGate()
    published: list[Any] = []
    state: dict[str, Any] = {}
    for f, t in zip(frames, tickers, strict=True):
        state = {**state, **f["data"]}
        records = from_ticker_info("bybit", t, RECV, ALL)
        by = {r.channel: r for r in records}
        assert set(by) == ALL
        fund, mark, oi = by[Channel.FUNDING], by[Channel.MARK], by[Channel.OPEN_INTEREST]
        assert isinstance(fund, Funding) and isinstance(mark, MarkPrice)
        assert isinstance(oi, OpenInterest)
        assert {r.ts_ms for r in records} == {f["ts"]}  # the message's time
        assert (fund.rate, fund.next_funding_ms, fund.interval_ms) == (
            float(state["fundingRate"]), int(state["nextFundingTime"]), 8 * 3_600_000,
        )  # fmt: skip
        assert (mark.mark_price, mark.index_price) == (
            float(state["markPrice"]), float(state["indexPrice"]),
        )  # fmt: skip
        assert (oi.contracts, oi.value) == (
            float(state["openInterest"]), float(state["openInterestValue"]),
        )  # fmt: skip
        published += [r for r in records if gate.offer(r)]
    kinds = [r.channel for r in published]
    marks = {(state["markPrice"], state["indexPrice"]) for state in _states(frames)}
    assert kinds.count(Channel.FUNDING) == 1  # the rate never changed in 26 s
    assert kinds.count(Channel.MARK) == len(marks) > 20
    assert gate.unchanged == 3 * len(frames) - len(published)


def _states(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out, state = [], {}
    for f in frames:
        state = {**state, **f["data"]}
        out.append(state)
    return out


def test_a_spot_ticker_carries_no_derivatives(client: Any) -> None:
    client.seen.clear()
    spot = {"symbol": "BTCUSDT", "lastPrice": "99", "usdIndexPrice": "99.1", "volume24h": "1"}
    client.handle_ticker(StubWs("spot"), {"topic": "tickers.BTCUSDT", "type": "snapshot",
                                          "ts": 1_700_000_000_999, "data": spot})  # fmt: skip
    [(_, t)] = client.seen
    assert t["symbol"] == "BTC/USDT" and from_ticker_info("bybit", t, RECV, ALL) == []


def test_every_liquidation_of_a_frame_is_tapped_with_the_orders_side(client: Any) -> None:
    client.seen.clear()
    rows = [{"T": 1_739_502_302_929, "s": "BTCUSDT", "S": "Sell", "v": "0.02", "p": "65000.5"},
            {"T": 1_739_502_302_931, "s": "BTCUSDT", "S": "Buy", "v": "1.5", "p": "64990"}]  # fmt: skip
    frame = {"topic": "allLiquidation.BTCUSDT", "type": "snapshot", "ts": 1_739_502_303_204,
             "data": rows}  # fmt: skip
    client.handle_message(StubWs("linear"), frame)
    assert [ch for ch, _ in client.seen] == [Channel.LIQUIDATIONS] * 2  # both, not the first
    got = [liquidation_from_ccxt("bybit", d, RECV) for _, d in client.seen]
    assert [(x.symbol, x.ts_ms, x.side, x.price, x.amount) for x in got] == [
        ("BTC/USDT:USDT", 1_739_502_302_929, "buy", 65000.5, 0.02),  # a short liquidated
        ("BTC/USDT:USDT", 1_739_502_302_931, "sell", 64990.0, 1.5),  # a long liquidated
    ]
    assert Channel.LIQUIDATIONS in tapped_channels("bybit")


def test_funding_structure_fields() -> None:
    fr = {"symbol": "BTC/USDT:USDT", "timestamp": None, "fundingRate": -0.000125,
          "fundingTimestamp": 1_700_726_400_000, "nextFundingRate": 0.00026,
          "interval": "8h", "info": {"ts": "1700724675402"}}  # fmt: skip
    f = funding_from_ccxt("okx", fr, RECV)
    assert (f.ts_ms, f.rate, f.next_funding_ms, f.predicted_rate, f.interval_ms) == (
        1_700_724_675_402, -0.000125, 1_700_726_400_000, 0.00026, 28_800_000,
    )  # fmt: skip
    bare = funding_from_ccxt("x", {"symbol": "A/B:B", "fundingRate": "0"}, RECV)
    assert bare.ts_ms == RECV // 1_000_000 and bare.rate == 0.0
    assert (bare.next_funding_ms, bare.predicted_rate, bare.interval_ms) == (None, None, None)
    with pytest.raises(NormalizeError, match="without a rate"):
        funding_from_ccxt("x", {"symbol": "A/B:B", "fundingRate": None}, RECV)
    with pytest.raises(NormalizeError, match="without a rate"):
        funding_from_ccxt("x", {"symbol": "A/B:B", "fundingRate": math.nan}, RECV)
    assert [interval_ms(v) for v in ("1h", "30m", "1d", 3_600_000, "x", None, "0h")] == [
        3_600_000, 1_800_000, 86_400_000, 3_600_000, None, None, None,
    ]  # fmt: skip


def test_mark_open_interest_and_liquidation_refuse_what_cannot_be_a_record() -> None:
    m = mark_from_ccxt("okx", {"symbol": "A/B:B", "timestamp": 5, "markPrice": "1.5"}, RECV)
    assert (m.ts_ms, m.mark_price, m.index_price) == (5, 1.5, None)
    for bad in ({"markPrice": None}, {"markPrice": 0}, {"markPrice": "x"}):
        with pytest.raises(NormalizeError):
            mark_from_ccxt("okx", {"symbol": "A/B:B", **bad}, RECV)
    oi = open_interest_from_ccxt(
        "okx", {"symbol": "A/B:B", "openInterestAmount": 0, "openInterestValue": None}, RECV
    )
    assert (oi.contracts, oi.value) == (0.0, None)
    with pytest.raises(NormalizeError):
        open_interest_from_ccxt("okx", {"symbol": "A/B:B", "openInterestAmount": -1}, RECV)
    okx = liquidation_from_ccxt(
        "okx", {"symbol": "A/B:B", "side": "buy", "price": 2, "contracts": 3}, RECV
    )
    assert isinstance(okx, Liquidation) and okx.side == "buy"  # OKX: already the order's side
    for bad in ({"side": None}, {"price": 0}, {"contracts": None}):
        liq = {"symbol": "A/B:B", "side": "sell", "price": 2, "contracts": 3, **bad}
        with pytest.raises(NormalizeError):
            liquidation_from_ccxt("okx", liq, RECV)
    with pytest.raises(NormalizeError, match="not a derivatives channel"):
        derivative_from_ccxt("okx", Channel.TRADES, {}, RECV)


def test_the_gate_drops_repeats_never_liquidations_and_forgets_on_unsubscribe() -> None:
    def mark(ts: int, price: float, index: float | None = 1.0) -> MarkPrice:
        return MarkPrice(exchange="x", symbol="A/B:B", ts_ms=ts, recv_ns=ts, mark_price=price,
                         index_price=index)  # fmt: skip

    g = DerivativesGate()
    assert [g.offer(m) for m in (mark(1, 2.0), mark(2, 2.0), mark(3, 2.0, 1.5), mark(4, 2.0, 1.5))
            ] == [True, False, True, False]  # fmt: skip
    liq = Liquidation(exchange="x", symbol="A/B:B", ts_ms=1, recv_ns=1, side="buy", price=1,
                      amount=1)  # fmt: skip
    assert g.offer(liq) and g.offer(liq)
    g.forget("A/B:B", Channel.MARK)
    assert g.offer(mark(5, 2.0, 1.5)) and g.unchanged == 2


def test_each_channel_comes_from_what_ccxt_offers_on_each_exchange() -> None:
    bybit, okx = ccxt.pro.bybit().has, ccxt.pro.okx().has
    assert {c: source("bybit", c, bybit) for c in DERIVATIVES} == {
        Channel.FUNDING: Source(Feed.TICKER), Channel.MARK: Source(Feed.TICKER),
        Channel.OPEN_INTEREST: Source(Feed.TICKER),
        Channel.LIQUIDATIONS: Source(Feed.WATCH, "watch_liquidations", many=False),
    }  # fmt: skip
    assert {c: source("okx", c, okx) for c in DERIVATIVES} == {
        Channel.FUNDING: Source(Feed.WATCH, "watch_funding_rates", many=True),
        Channel.MARK: Source(Feed.WATCH, "watch_mark_prices", many=True),
        Channel.OPEN_INTEREST: Source(Feed.POLL, "fetch_open_interests", many=True),
        Channel.LIQUIDATIONS: Source(Feed.WATCH, "watch_liquidations_for_symbols", many=True),
    }
    polled = {c: source("bybit", c, bybit, "poll").feed for c in DERIVATIVES}
    assert polled == {Channel.FUNDING: Feed.POLL, Channel.MARK: Feed.POLL,
                      Channel.OPEN_INTEREST: Feed.POLL, Channel.LIQUIDATIONS: Feed.NONE}  # fmt: skip
    with pytest.raises(ValueError, match="not a derivatives channel"):
        source("bybit", Channel.TICKER, bybit)
    assert not is_contract({"type": "spot", "contract": False}) and not is_contract(None)
    assert is_contract({"type": "swap", "contract": True})


class Sink:
    def __init__(self) -> None:
        self.records: list[Any] = []

    def put(self, record: Any) -> None:
        self.records.append(record)


class StubClient:
    has = ccxt.pro.bybit().has
    markets = {
        "AAA/USDT": {"type": "spot", "contract": False},
        "AAA/USDT:USDT": {"type": "swap", "contract": True},
    }


def test_a_derivatives_channel_on_a_spot_market_is_skipped_with_one_log_line() -> None:
    w = ExchangeWorker(ExchangeSettings(name="bybit", symbols=("AAA/USDT",)), Sink())
    w._client = StubClient()
    with capture_logs() as logs:
        assert w._contracts_only(Channel.FUNDING, ["AAA/USDT", "AAA/USDT:USDT"]) == [
            "AAA/USDT:USDT"
        ]
        assert w._contracts_only(Channel.FUNDING, ["AAA/USDT"]) == []  # again: no new line
        assert w._contracts_only(Channel.TRADES, ["AAA/USDT"]) == ["AAA/USDT"]
    events = [e for e in logs if e["event"] == "derivatives_channel_skipped"]
    assert len(events) == 1 and events[0]["symbol"] == "AAA/USDT"
    assert "contracts only" in events[0]["why"] and events[0]["log_level"] == "warning"
    assert w.status()["skipped"] == {"funding|AAA/USDT": events[0]["why"]}
    # through the worker's resolution: asked again, not logged again; no longer asked, gone
    w._resolver = SymbolResolver("bybit", [
        {"symbol": "AAA/USDT", "id": "AAAUSDT", "base": "AAA", "quote": "USDT", "spot": True},
        {"symbol": "AAA/USDT:USDT", "id": "AAAUSDT", "base": "AAA", "quote": "USDT",
         "spot": False},
    ])  # fmt: skip
    w.wanted = {Channel.FUNDING: ("AAAUSDT", "AAA/USDT:USDT"), Channel.TRADES: ("AAAUSDT",)}
    with capture_logs() as again:
        assert w._resolve_wanted() == {
            Channel.FUNDING: ["AAA/USDT:USDT"], Channel.TRADES: ["AAA/USDT"]
        }  # fmt: skip
    assert again == [] and list(w.skipped) == ["funding|AAA/USDT"]
    w.wanted = {Channel.TRADES: ("AAAUSDT",)}
    w._resolve_wanted()
    assert w.skipped == {} and w.dropped == {}


def test_tapped_records_reach_the_sink_once_per_change() -> None:
    """The worker's path: a tapped ticker feeds the derivatives channels subscribed for its
    market (and no others), through the gate."""
    sink = Sink()
    w = ExchangeWorker(ExchangeSettings(name="bybit", symbols=("AAA/USDT:USDT",)), sink)
    w._allowed = frozenset(
        {(Channel.MARK, "AAA/USDT:USDT"), (Channel.LIQUIDATIONS, "AAA/USDT:USDT")}
    )
    info = {"markPrice": "10.5", "indexPrice": "10.4", "fundingRate": "0.0001",
            "nextFundingTime": "1800000000000", "openInterest": "5"}  # fmt: skip
    ticker = {"symbol": "AAA/USDT:USDT", "timestamp": 1_700_000_000_000, "info": info}
    w._on_parsed(Channel.TICKER, ticker)
    w._on_parsed(Channel.TICKER, {**ticker, "timestamp": 1_700_000_000_001})  # same values
    w._on_parsed(Channel.TICKER, {**ticker, "info": {**info, "markPrice": "10.6"}})
    liq = {"symbol": "AAA/USDT:USDT", "side": "buy", "price": 10, "contracts": 1,
           "timestamp": 1_700_000_000_002}  # fmt: skip
    w._on_parsed(Channel.LIQUIDATIONS, liq)
    w._on_parsed(Channel.LIQUIDATIONS, {**liq, "symbol": "BBB/USDT:USDT"})  # not subscribed
    assert [(type(r).__name__, getattr(r, "mark_price", None)) for r in sink.records] == [
        ("MarkPrice", 10.5), ("MarkPrice", 10.6), ("Liquidation", None),
    ]  # fmt: skip
    assert w.stats.invalid == 0 and w.status()["derivatives_unchanged"] == 1


def test_a_poll_costs_one_call_where_ccxt_fetches_many_markets_at_once() -> None:
    from publisher.poller import requests_per_cycle

    many = {"fetchOpenInterests": True, "fetchOpenInterest": True}
    assert requests_per_cycle(Channel.OPEN_INTEREST, 5, 1, many) == 1
    assert requests_per_cycle(Channel.OPEN_INTEREST, 5, 1, {"fetchOpenInterest": True}) == 5
    assert requests_per_cycle(Channel.MARK, 5, 1, {"fetchTickers": True}) == 1
    assert (
        requests_per_cycle(Channel.MARK, 5, 1, {"fetchMarkPrice": True, "fetchTickers": True}) == 5
    )
