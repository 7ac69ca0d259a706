"""The native Bybit parser gives exactly the records CCXT's path gives, row for row.

CCXT's path here is the real tapped ``ccxt.pro.bybit`` (``make_client``) with the fake's spot
and linear markets as CCXT parses them from ``instruments-info``: its ``handle_message`` on
each frame, for a connection to the spot or the linear url (CCXT tells a trade's market by
it), then :mod:`publisher.normalize` on what the taps saw, keeping the markets followed (what
the worker's tap does). The last tests run the whole chain the worker runs: raw text into
CCXT's websocket clients of both urls, with and without the fast path in front of them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from itertools import islice
from types import SimpleNamespace
from typing import Any

import ccxt
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fake_exchange import BybitReplaySource, BybitSyntheticSource
from marketbus.models import Channel, Record, Ticker, Trade
from marketbus.settings import NATIVE_PARSERS, ExchangeSettings
from publisher.ccxt_client import make_client
from publisher.exchanges import FAST_PATHS
from publisher.native_bybit import BYBIT_TOPICS, BybitFastPath, bybit_ticker, bybit_trade
from publisher.normalize import NormalizeError, ticker_from_ccxt, trade_from_ccxt
from publisher.ws_hooks import guard_frames

RECV_NS = 1_700_000_000_000_000_123


def CLOCK() -> int:
    """A fixed exchange clock for the sources."""
    return 1_700_000_000_000


BOTH = frozenset({Channel.TRADES, Channel.TICKER})
URLS = {"spot": "ws://127.0.0.1:9/v5/public/spot", "linear": "ws://127.0.0.1:9/v5/public/linear"}
Frame = dict[str, Any]
Event = tuple[str, Frame]  # (the url's category, the frame)

SYNTHETIC = BybitSyntheticSource(
    30, rate=20_000, total=6_000, seed=3,
    channels=("publicTrade", "tickers", "orderbook", "allLiquidation"),
)  # fmt: skip
SYNTHETIC.prepare()


def load_markets(instruments: dict[str, list[Frame]]) -> list[dict[str, Any]]:
    """CCXT's unified markets from ``instruments-info`` entries (spot and linear), as the
    publisher loads them."""

    def answer(params: dict[str, Any]) -> Any:
        entries = [] if params.get("status") == "PreLaunch" else instruments[params["category"]]
        return {"retCode": 0, "result": {"category": params["category"], "list": entries}}

    ex = ccxt.bybit({"options": {"fetchMarkets": {"types": ["spot", "linear"]}}})
    ex.publicGetV5MarketInstrumentsInfo = answer
    return list(ex.load_markets().values())


MARKETS = load_markets(SYNTHETIC.instruments())  # the recording's (1,357) + the synthetic's
SYNTHETIC_IDS = {ev.frame["topic"].split(".")[-1] for ev in SYNTHETIC.initial()}
FOLLOWED = [m for m in MARKETS if m["id"] in SYNTHETIC_IDS and m["type"] in ("spot", "swap")]
"""The 30 spot pairs and their 30 perpetuals (the recording's 4 among them)."""
OURS = {m["symbol"] for m in FOLLOWED}
SEEN: list[Record | NormalizeError] = []


def on_parsed(channel: Channel, parsed: dict[str, Any]) -> None:
    """The worker's tap: the record made at once (CCXT stamps its ticker only afterwards)."""
    if parsed.get("symbol") not in OURS:
        return
    try:
        if channel is Channel.TRADES:
            SEEN.append(trade_from_ccxt("bybit", parsed, RECV_NS))
        elif channel is Channel.TICKER:
            SEEN.append(ticker_from_ccxt("bybit", parsed, RECV_NS))
    except NormalizeError as e:
        SEEN.append(e)


CLIENT = make_client(
    ExchangeSettings(name="bybit", symbols=("BTC/USDT",), parser="ccxt"), on_parsed
)
CLIENT.set_markets(MARKETS)
CONNECTIONS = {c: SimpleNamespace(url=u, resolve=lambda *_: None) for c, u in URLS.items()}
"""What CCXT's handlers use of a websocket client here: its url, and resolve (no watcher)."""


def via_ccxt(category: str, frame: Frame) -> tuple[list[Record], int]:
    """(records, rows refused) as CCXT's path makes them for one push frame."""
    SEEN.clear()
    CLIENT.handle_message(CONNECTIONS[category], frame)
    records = [r for r in SEEN if not isinstance(r, NormalizeError)]
    return records, len(SEEN) - len(records)


def fast_path(
    markets: list[dict[str, Any]] = FOLLOWED, channels: frozenset[Channel] = BOTH
) -> tuple[BybitFastPath, list[Record], list[Exception]]:
    got: list[Record] = []
    bad: list[Exception] = []
    fast = BybitFastPath("bybit", {}, channels, got.append, bad.append)
    fast.follow(markets)  # as the worker gives them
    return fast, got, bad


def via_native(category: str, frame: Frame) -> tuple[list[Record] | None, int]:
    """(records, rows refused) of the fast path; records None when it left the frame to CCXT."""
    fast, got, bad = fast_path()
    taken = fast.for_url(URLS[category])(orjson.dumps(frame).decode(), RECV_NS)
    assert all(isinstance(e, NormalizeError) for e in bad)
    assert fast.frames == int(taken)
    return (got if taken else None), len(bad)


def assert_same(category: str, frame: Frame) -> list[Record]:
    native, native_bad = via_native(category, frame)
    assert native is not None, frame
    assert (native, native_bad) == via_ccxt(category, frame), frame
    return native


def events(source: Any, n: int | None = None) -> list[Event]:
    """The source's starting snapshots, then its frames."""
    source.prepare()
    evs = [*source.initial(), *islice(source.events(CLOCK), n)]
    return [(ev.category, ev.frame) for ev in evs]


def kind(event: Event) -> tuple[str, str]:
    return event[0], event[1]["topic"].split(".")[0]


def taken(event: Event) -> bool:
    """What the fast path takes: trades on either url, spot tickers (snapshots)."""
    return kind(event) in {("spot", "publicTrade"), ("linear", "publicTrade"), ("spot", "tickers")}


# --------------------------------------------------------------------------- equivalence


def test_recorded_frames_give_identical_records() -> None:
    """The recorded session (4 perpetuals): every trade frame gives CCXT's records; the
    tickers (snapshots and deltas: they feed funding, mark and open interest), books and
    candles are left to CCXT."""
    recorded = events(BybitReplaySource())
    trades = [e for e in recorded if taken(e)]
    assert {kind(e) for e in trades} == {("linear", "publicTrade")} and len(trades) == 67
    records = [r for e in trades for r in assert_same(*e)]
    assert len(records) == 162 and {type(r) for r in records} == {Trade}
    assert {r.symbol for r in records} == {f"{b}/USDT:USDT" for b in ("BTC", "ETH", "SOL", "DOGE")}
    others = [e for e in recorded if not taken(e)]
    assert {kind(e)[1] for e in others} == {"tickers", "orderbook", "kline"}
    assert sum(kind(e)[1] == "tickers" for e in others) == 489
    assert all(via_native(*e)[0] is None for e in others)


def batched(evs: list[Event]) -> Iterator[Event]:
    """The same trade rows as frames of 1 to 4 rows of one market, as Bybit batches them."""
    by_market: dict[tuple[str, str], list[Frame]] = {}
    for category, f in evs:
        by_market.setdefault((category, f["topic"]), []).extend(f["data"])
    for (category, topic), rows in by_market.items():
        i = size = 0
        while i < len(rows):
            size = size % 4 + 1
            yield (
                category,
                {"topic": topic, "type": "snapshot", "ts": 1, "data": rows[i : i + size]},
            )
            i += size


def test_synthetic_frames_of_spot_and_linear_markets_give_identical_records() -> None:
    """30 ids, each a spot pair and a perpetual: spot and linear trades and spot tickers give
    CCXT's records, each filed under the market of its url; the rest goes to CCXT."""
    evs = events(SYNTHETIC)
    assert len(evs) == 6_000 + 120  # the starting book and ticker snapshots
    mine = [e for e in evs if taken(e)]
    counts = {k: sum(kind(e) == k for e in mine) for k in {kind(e) for e in mine}}
    assert counts == {("spot", "publicTrade"): 858, ("linear", "publicTrade"): 857,
                      ("spot", "tickers"): 887}  # fmt: skip
    records = [r for e in mine for r in assert_same(*e)]
    assert len({r.symbol for r in records}) == 60 and len(records) == len(mine)
    spot_trades = [r for r in records if isinstance(r, Trade) and ":" not in r.symbol]
    assert len(spot_trades) == 858 and all(r.id.isdigit() for r in spot_trades)
    assert all(via_native(*e)[0] is None for e in evs if not taken(e))
    multi = list(batched([e for e in mine if kind(e)[1] == "publicTrade"]))
    assert max(len(f["data"]) for _, f in multi) == 4
    assert sum(len(assert_same(*e)) for e in multi) == 1_715


# A real row of each kind, to vary
ROWS = {kind(e): e[1]["data"] for e in events(SYNTHETIC, 200) if taken(e)}
SPOT_TICKER: Frame = ROWS["spot", "tickers"]
SPOT_TRADE: Frame = ROWS["spot", "publicTrade"][0]
LINEAR_TRADE: Frame = ROWS["linear", "publicTrade"][0]


def ticker_frame(row: Frame, **top: Any) -> Frame:
    market = row.get("symbol", "BTCUSDT")
    frame = {"topic": f"tickers.{market}", "type": "snapshot", "ts": 1_700_000_000_000,
             "cs": 7, "data": row}  # fmt: skip
    return {k: v for k, v in {**frame, **top}.items() if v is not DROP}


def trade_frame(row: Frame) -> Frame:
    return {"topic": f"publicTrade.{row['s']}", "type": "snapshot", "ts": 1, "data": [row]}


DROP = object()
"""A key to leave out of a frame."""

# Row variants CCXT parses without raising: the records must be the same, field by field
# (zero and empty prices absent, zero sizes kept, numbers as JSON numbers, odd timestamps).
TICKER_EDGES: list[dict[str, Any]] = [
    {"bid1Price": "101", "bid1Size": "2", "ask1Price": "102", "ask1Size": "3"},  # as linear
    {"bid1Price": "", "bid1Size": "", "ask1Price": "0", "ask1Size": "0"},
    {"bidSize": "5", "bid1Size": "4", "askSize": "", "ask1Size": "6"},  # bidSize first
    {"bidSize": True, "bid1Size": "4", "askSize": 0, "ask1Size": "6"},
    {"lastPrice": "0", "price24hPcnt": None},  # nothing to derive it from
    {"prevPrice24h": "", "price24hPcnt": ""},
    {"highPrice24h": "0", "lowPrice24h": "-1"},
    {"volume24h": "0", "turnover24h": "0"},
    {"volume24h": "0", "turnover24h": "12.5"},  # CCXT's vwap divides by the base volume
    {"volume24h": "-3", "turnover24h": ""},
    {"lastPrice": 101.5, "prevPrice24h": 100, "volume24h": 7, "price24hPcnt": 0.015},
    {"highPrice24h": True, "lowPrice24h": None, "volume24h": [], "turnover24h": {}},
    {"usdIndexPrice": None},  # parse_ticker looks for openInterestValue, not this
    {"openInterestValue": ""},
    {"time": 1_700_000_000_001},
    {"time": "1700000000001.9"},
    {"time": 0},
    {"time": -5},
    {"time": True},
    {"time": "x"},
    {"time": "99999999999999999999999"},  # past int64: the model refuses it
    {"E": 1_700_000_000_002},  # Binance's event time: normalize takes it wherever it is
    {"E": 0},
    {"E": True},
    {"E": "5"},
    {"lastPrice": "1e-7", "prevPrice24h": "1E+3"},
    {"tickDirection": "x", "prevPrice1h": "x", "cs": None},  # fields no record reads
]
TICKER_FRAME_EDGES: list[dict[str, Any]] = [
    {"ts": DROP},
    {"ts": None},
    {"ts": "1700000000000"},  # the tap passes the message's ts as sent: not a number
    {"ts": 1.7e12},
    {"ts": 0},
    {"ts": -1},
    {"ts": 2**63},  # past int64
    {"cs": DROP},
]
TRADE_EDGES: list[dict[str, Any]] = [
    {"i": 123},
    {"i": 1.5},
    {"i": ""},  # the next key is the id: T
    {"i": None, "T": ""},  # then v
    {"i": True},  # not a value: no id at all
    {"i": [], "T": 5},
    {"S": "BUY"},
    {"S": ""},  # no side: "sell" unless m is true
    {"S": None, "m": True},
    {"S": None, "m": "true"},
    {"S": 1},
    {"S": "Sell", "m": True},
    {"p": 100.25, "v": 3},
    {"v": "0"},
    {"v": "-0"},
    {"q": "7", "v": "1"},  # q first
    {"q": "", "v": "1"},
    {"q": True, "v": "1"},
    {"p": "0"},
    {"p": "-1"},
    {"p": None},
    {"v": None},
    {"p": ""},
    {"p": True},
    {"t": 1_700_000_000_005},  # t first
    {"t": "x"},
    {"T": "x"},
    {"T": "1.7e12"},
    {"T": True},
    {"T": -1},
    {"T": "99999999999999999999999"},
    {"p": "1e-9", "v": "1E3"},
    {"L": None, "BT": True, "RPI": "x", "seq": None},  # fields no record reads
]


@pytest.mark.parametrize("edge", TICKER_EDGES)
def test_ticker_values_at_the_edges_give_identical_records(edge: dict[str, Any]) -> None:
    assert_same("spot", ticker_frame({**SPOT_TICKER, **edge}))


@pytest.mark.parametrize("edge", TICKER_FRAME_EDGES)
def test_ticker_frames_at_the_edges_give_identical_records(edge: dict[str, Any]) -> None:
    assert_same("spot", ticker_frame(SPOT_TICKER, **edge))


@pytest.mark.parametrize("edge", TRADE_EDGES)
@pytest.mark.parametrize("row", [SPOT_TRADE, LINEAR_TRADE], ids=["spot", "linear"])
def test_trade_values_at_the_edges_give_identical_records(row: Frame, edge: dict[str, Any]) -> None:
    assert_same("spot" if row is SPOT_TRADE else "linear", trade_frame({**row, **edge}))


def test_missing_fields_give_identical_records() -> None:
    """(Without lastPrice or prevPrice24h a ticker goes to CCXT, which derives it.)"""
    left = []
    for category, row, make in [("spot", SPOT_TICKER, ticker_frame), ("spot", SPOT_TRADE,
                                trade_frame), ("linear", LINEAR_TRADE, trade_frame)]:  # fmt: skip
        for key in row:
            if key in ("symbol", "s"):
                continue
            frame = make({k: v for k, v in row.items() if k != key})
            if key in ("lastPrice", "prevPrice24h"):
                left.append(key)
                assert via_native(category, frame)[0] is None
            else:
                assert_same(category, frame)
    assert sorted(left) == ["lastPrice", "prevPrice24h"]


@pytest.mark.parametrize(
    "edge",
    [
        {"lastPrice": "0"},  # CCXT derives last from the open and the 24 h change
        {"lastPrice": None},
        {"prevPrice24h": ""},  # or the open from last and the change
        {"prevPrice24h": "0.000"},
        {"openInterestValue": "5"},  # CCXT files it as a contract
    ],
)
def test_spot_tickers_ccxt_derives_or_files_elsewhere_are_left_to_it(edge: dict[str, Any]) -> None:
    row = {**SPOT_TICKER, "price24hPcnt": "0.05", **edge}
    assert via_native("spot", ticker_frame(row))[0] is None
    if "lastPrice" in edge:  # what CCXT makes of it: last = open x (1 + 5 %)
        (ticker,), _ = via_ccxt("spot", ticker_frame(row))
        assert ticker.last == pytest.approx(float(row["prevPrice24h"]) * 1.05)  # type: ignore[union-attr]
    assert_same("spot", ticker_frame({**row, "price24hPcnt": None, "openInterestValue": None}))


@pytest.mark.parametrize("kind", ["delta", "Snapshot", None, DROP])
def test_a_spot_ticker_that_is_not_a_snapshot_is_left_to_ccxt(kind: Any) -> None:
    """Bybit sends spot tickers as snapshots only; a delta would merge into CCXT's cache."""
    assert via_native("spot", ticker_frame(SPOT_TICKER, type=kind))[0] is None


_VALUES = st.one_of(
    st.decimals(min_value=-10, max_value=10**9, places=8, allow_nan=False).map(str),
    st.integers(-(2**62), 2**62),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "0", "-0", "0.0", "1e5", None, True, False, "nan", "inf", "-inf",
                     "Buy", "sell", "x"]),
)  # fmt: skip
_TICKER_KEYS = ("lastPrice", "prevPrice24h", "highPrice24h", "lowPrice24h", "volume24h",
                "turnover24h", "bid1Price", "bid1Size", "ask1Price", "ask1Size", "bidSize",
                "askSize", "price24hPcnt", "openInterestValue", "time", "E")  # fmt: skip
_TRADE_KEYS = ("i", "T", "t", "v", "q", "p", "S", "m")


def _left_to_ccxt(row: Frame) -> bool:
    """The documented cases a spot ticker snapshot goes to CCXT."""

    def absent_or_zero(v: Any) -> bool:
        if v is None or v == "" or type(v) not in (str, int, float):
            return True
        try:
            return float(v) == 0
        except ValueError:
            return False

    def has(key: str) -> bool:  # CCXT's safe_string finds a value
        v = row.get(key)
        return type(v) in (str, int, float) and v != ""

    return has("openInterestValue") or (
        has("price24hPcnt")
        and (absent_or_zero(row.get("lastPrice")) or absent_or_zero(row.get("prevPrice24h")))
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    what=st.sampled_from(["spot ticker", "spot trade", "linear trade"]),
    values=st.dictionaries(st.sampled_from(_TICKER_KEYS + _TRADE_KEYS), _VALUES, max_size=6),
    ts=_VALUES,
)
def test_any_values_give_ccxts_records_where_ccxt_parses_them(
    what: str, values: dict[str, Any], ts: Any
) -> None:
    """Random values in every field the records read: wherever CCXT's own parser gets through
    the frame, both paths agree, record for record (or both refuse it); a ticker goes to CCXT
    only in the documented cases."""
    if what == "spot ticker":
        row = {**SPOT_TICKER, **{k: v for k, v in values.items() if k in _TICKER_KEYS}}
        category, frame = "spot", ticker_frame(row, ts=ts)
    else:
        base = SPOT_TRADE if what == "spot trade" else LINEAR_TRADE
        row = {**base, **{k: v for k, v in values.items() if k in _TRADE_KEYS}}
        category, frame = what.split()[0], trade_frame(row)
    native = via_native(category, frame)
    if native[0] is None:
        assert what == "spot ticker" and _left_to_ccxt(row), frame
        return
    try:
        expected = via_ccxt(category, frame)
    except ValueError:  # CCXT's decimal arithmetic on "nan"/"x": its path drops the frame
        assume(False)
    assert native == expected, frame


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("field", "value"),
    [("p", "0"), ("p", "nan"), ("p", "-1"), ("p", "inf"), ("p", "x"), ("p", ""),
     ("p", None), ("v", "-0.5"), ("v", "nan"), ("v", None), ("T", str(2**63)),
     ("T", "-1"), ("i", True), ("i", "9" * 129)],
)  # fmt: skip
def test_a_bad_trade_row_is_refused_like_the_model_refuses_it(field: str, value: Any) -> None:
    row = {"T": 1_700_000_000_000, "s": "BTCUSDT", "S": "Sell", "v": "0.25", "p": "100.5",
           "i": "7", "BT": False}  # fmt: skip
    assert bybit_trade("bybit", row, "BTC/USDT", 5) == Trade(
        exchange="bybit", symbol="BTC/USDT", ts_ms=1_700_000_000_000, recv_ns=5, id="7",
        price=100.5, amount=0.25, side="sell",
    )  # fmt: skip
    bad = {**row, field: value}
    with pytest.raises(NormalizeError):
        bybit_trade("bybit", bad, "BTC/USDT", 5)
    # CCXT's path refuses it too: its normalizer, or its own parser raising on the row
    with pytest.raises((NormalizeError, ValueError)):
        trade_from_ccxt("bybit", CLIENT.parse_ws_trade(bad, CLIENT.market("BTC/USDT")), 5)


def test_a_ticker_past_int64_is_refused() -> None:
    data = {"symbol": "BTCUSDT", "lastPrice": "1", "time": str(2**63)}
    with pytest.raises(NormalizeError):
        bybit_ticker("bybit", {"ts": 1}, data, "BTC/USDT", 5)
    with pytest.raises(NormalizeError):
        parsed = CLIENT.parse_ticker(data)
        ticker_from_ccxt("bybit", parsed, 5)


def test_a_bad_row_is_counted_and_skipped_and_the_others_published() -> None:
    fast, got, bad = fast_path()
    row = {"T": 1, "s": "BTCUSDT", "S": "Buy", "v": "2", "p": "1.5"}
    rows = [{**row, "i": "1"}, {**row, "i": "2", "p": "-1"}, {**row, "i": "3"}]
    frame = {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 1, "data": rows}
    assert fast.for_url(URLS["linear"])(orjson.dumps(frame).decode(), RECV_NS) is True
    assert [(r.symbol, r.id) for r in got] == [("BTC/USDT:USDT", "1"), ("BTC/USDT:USDT", "3")]  # type: ignore[union-attr]
    assert len(bad) == 1 and isinstance(bad[0], NormalizeError) and fast.frames == 1
    ticker = ticker_frame({**SPOT_TICKER, "time": str(2**63)})
    assert fast.for_url(URLS["spot"])(orjson.dumps(ticker).decode(), RECV_NS) is True
    assert len(bad) == 2 and len(got) == 2 and fast.frames == 2


# --------------------------------------------------------------------------- what it takes


def test_fast_path_takes_only_what_it_publishes() -> None:
    btc = [m for m in FOLLOWED if m["id"] in ("BTCUSDT", "ETHUSDT")]
    fast, got, bad = fast_path(btc, frozenset({Channel.TRADES}))
    assert fast.symbols == {"BTCUSDT": "BTC/USDT:USDT", "ETHUSDT": "ETH/USDT:USDT"}  # ids only
    spot, linear = fast.for_url(URLS["spot"]), fast.for_url(URLS["linear"])
    row = {"T": 1, "s": "BTCUSDT", "S": "Sell", "v": "2", "p": "1.5", "i": "7"}
    trade = trade_frame(row)

    def text(frame: Any) -> str:
        return orjson.dumps(frame).decode()

    assert spot(text(trade), RECV_NS) is True and linear(text(trade), RECV_NS) is True
    assert [r.symbol for r in got] == ["BTC/USDT", "BTC/USDT:USDT"]  # by the url
    assert fast(text(trade), RECV_NS) is False  # without a url: CCXT knows the connection
    not_ours = [
        {**trade, "topic": "publicTrade.SOLUSDT", "data": [{**row, "s": "SOLUSDT"}]},
        {**trade, "topic": "tickers.BTCUSDT"},  # channel not published
        {**trade, "topic": "orderbook.50.BTCUSDT"},
        {**trade, "topic": "publicTrade.BTCUSDT.x"},
        {**trade, "topic": "publicTrade"},
        {**trade, "topic": ["publicTrade.BTCUSDT"]},
        {**trade, "data": {"0": row}},  # data not a list
        {**trade, "data": [row, {**row, "s": "ETHUSDT"}]},  # a row of another market
        {**trade, "data": [{k: v for k, v in row.items() if k != "s"}]},
        {**trade, "data": [row, "x"]},
        {**trade, "success": False, "ret_msg": "error:x"},  # CCXT looks for errors first
        {**trade, "retCode": 0},
        {**trade, "op": "subscribe"},
        {**trade, "event": "sub"},
        {**trade, "pong": 1},
        {"success": True, "ret_msg": "subscribe", "op": "subscribe", "conn_id": "c"},
        {"op": "pong", "args": ["1"], "conn_id": "c"},
        [trade],
    ]
    for frame in not_ours:
        for take in (spot, linear):
            assert take(text(frame), RECV_NS) is False, frame
    assert spot("", RECV_NS) is False
    assert spot('{"topic":"publicTrade.BTCUSDT", broken', RECV_NS) is False  # CCXT + guard
    assert spot(text(trade).encode(), RECV_NS) is False  # Bybit writes text frames
    spaced = '{"type": "snapshot", "ts": 1,  ' + " " * 40 + '"topic": "publicTrade.BTCUSDT"}'
    assert spot(spaced, RECV_NS) is False  # not in Bybit's layout: CCXT parses it
    assert len(got) == 2 and bad == [] and fast.frames == 2
    fast.follow([m for m in btc if m["spot"]])  # a subscription change
    assert linear(text(trade), RECV_NS) is False and spot(text(trade), RECV_NS) is True


def test_tickers_on_a_linear_connection_are_left_to_ccxt() -> None:
    """Linear tickers feed funding, mark and open interest, and their deltas merge into
    CCXT's cached ticker: CCXT keeps them, snapshots included."""
    fast, got, _ = fast_path()
    linear = fast.for_url(URLS["linear"])
    recorded = [f for c, f in events(BybitReplaySource()) if f["topic"].startswith("tickers.")]
    assert {f["type"] for f in recorded} == {"snapshot", "delta"}
    assert not any(linear(orjson.dumps(f).decode(), RECV_NS) for f in recorded)
    spot_snapshot = orjson.dumps(ticker_frame(SPOT_TICKER)).decode()
    assert linear(spot_snapshot, RECV_NS) is False and got == [] and fast.frames == 0


def test_an_id_shared_by_a_spot_pair_and_a_perpetual_is_followed_as_both_or_either() -> None:
    """The worker gives markets: BTCUSDT is BTC/USDT on the spot url, BTC/USDT:USDT on the
    linear one. Given ids alone (``symbols``), a ``:`` marks the contracts."""
    row = {"T": 1, "s": "BTCUSDT", "S": "Sell", "v": "2", "p": "1.5", "i": "7"}
    text = orjson.dumps(trade_frame(row)).decode()
    for ids, want in [({"BTCUSDT": "BTC/USDT"}, ["BTC/USDT"]),
                      ({"BTCUSDT": "BTC/USDT:USDT"}, ["BTC/USDT:USDT"])]:  # fmt: skip
        got: list[Record] = []
        fast = BybitFastPath("bybit", ids, BOTH, got.append, got.append)  # type: ignore[arg-type]
        taken = [fast.for_url(URLS[c])(text, RECV_NS) for c in ("spot", "linear")]
        assert taken == [want == ["BTC/USDT"], want != ["BTC/USDT"]]
        assert [r.symbol for r in got] == want
    fast, got, _ = fast_path([m for m in FOLLOWED if m["id"] == "BTCUSDT"])
    assert [fast.for_url(URLS[c])(text, RECV_NS) for c in ("spot", "linear")] == [True, True]
    assert [r.symbol for r in got] == ["BTC/USDT", "BTC/USDT:USDT"]


def test_the_table_of_native_parsers_is_the_settings_list() -> None:
    assert set(FAST_PATHS) == NATIVE_PARSERS and FAST_PATHS["bybit"] is BybitFastPath
    assert set(BYBIT_TOPICS.values()) == BOTH
    assert ExchangeSettings(name="bybit", symbols=("BTC/USDT",)).native is True
    assert ExchangeSettings(name="bybit", symbols=("BTC/USDT",), parser="ccxt").native is False


# --------------------------------------------------------------------------- the whole chain


class Chain:
    """A tapped Bybit client as the worker builds it, fed raw frames through CCXT's websocket
    clients of both urls; ``native`` puts the fast path in front (``guard_frames``)."""

    def __init__(self, native: bool, followed: list[dict[str, Any]]) -> None:
        self.ours = {m["symbol"] for m in followed}
        cfg = ExchangeSettings(name="bybit", symbols=tuple(sorted(self.ours)),
                               parser="auto" if native else "ccxt")  # fmt: skip
        self.records: list[Record] = []
        self.invalid: list[Exception] = []
        self.malformed: list[Exception] = []
        self.client = make_client(cfg, self._on_parsed)
        self.client.set_markets(MARKETS)
        self.fast: BybitFastPath | None = None
        if cfg.native:  # the markets as the worker's subscription code gives them
            self.fast = BybitFastPath("bybit", {}, BOTH, self.records.append, self.invalid.append)
            self.fast.follow(self.client.market(s) for s in sorted(self.ours))
        guard_frames(self.client, lambda e, _d: self.malformed.append(e), self.fast)
        self.ws = {c: self.client.client(u) for c, u in URLS.items()}

    def _on_parsed(self, channel: Channel, data: dict[str, Any]) -> None:
        if data.get("symbol") not in self.ours:
            return
        recv_ns = time.time_ns()
        try:
            if channel is Channel.TRADES:
                self.records.append(trade_from_ccxt("bybit", data, recv_ns))
            elif channel is Channel.TICKER:
                self.records.append(ticker_from_ccxt("bybit", data, recv_ns))
        except NormalizeError as e:
            self.invalid.append(e)

    def feed(self, category: str, text: str) -> None:
        self.ws[category].handle_text_or_binary_message(text)

    def received(self) -> list[Record]:
        return [r.model_copy(update={"recv_ns": 0}) for r in self.records]

    async def close(self) -> None:
        self.client.timeout_on_exit = 0
        await self.client.close()


@pytest.fixture
async def chains() -> AsyncIterator[tuple[Chain, Chain]]:
    """Both chains follow 20 of the 30 ids as both markets, 5 as spot, 5 as perpetuals."""
    ids = sorted(SYNTHETIC_IDS)
    followed = [m for m in FOLLOWED if m["id"] in ids[:20]
                or (m["id"] in ids[20:25] and m["spot"])
                or (m["id"] in ids[25:] and not m["spot"])]  # fmt: skip
    pair = Chain(False, followed), Chain(True, followed)
    yield pair
    for c in pair:
        await c.close()


async def test_the_worker_chain_gives_the_same_records_with_and_without_the_fast_path(
    chains: tuple[Chain, Chain],
) -> None:
    """Recorded frames of every kind, synthetic frames of 60 markets (50 followed) with
    several trades a frame, acks, pongs, an error and a broken frame, as text into CCXT's
    websocket clients: the same records either way (linear tickers merged by CCXT in both),
    the same frames refused, and the fast path took every followed trade and spot ticker."""
    evs = events(BybitReplaySource()) + events(SYNTHETIC, 3_000)
    # the starting snapshots' ts 0 would make both take their own receive time (the fake
    # stamps them when it sends them)
    evs = [(c, {**f, "ts": f["ts"] or CLOCK()}) for c, f in evs]
    evs += list(batched([e for e in evs if kind(e)[1] == "publicTrade"]))
    texts = [(c, orjson.dumps(f).decode()) for c, f in evs]
    ack = {"success": True, "ret_msg": "", "op": "subscribe", "conn_id": "c", "req_id": "1"}
    refused = {"success": False, "ret_msg": "error:handler not found,topic:x", "op": "subscribe",
               "conn_id": "c", "req_id": "2"}  # fmt: skip
    texts[5:5] = [("spot", orjson.dumps(ack).decode()), ("linear", orjson.dumps(ack).decode()),
                  ("spot", orjson.dumps({"op": "pong", "args": ["1"], "conn_id": "c"}).decode()),
                  ("linear", orjson.dumps(refused).decode()),
                  ("spot", '{"topic":"publicTrade.BTCUSDT",')]  # fmt: skip
    plain, native = chains
    for category, text in texts:
        plain.feed(category, text)
        native.feed(category, text)
    followed = {("spot" if plain.client.market(s)["spot"] else "linear",
                 plain.client.market(s)["id"]) for s in plain.ours}  # fmt: skip
    mine = [(c, f) for c, f in evs if taken((c, f)) and (c, f["topic"].split(".")[1]) in followed]
    trades = sum(len(f["data"]) for c, f in mine if kind((c, f))[1] == "publicTrade")
    tickers = [(c, f) for c, f in evs if kind((c, f))[1] == "tickers"
               and (c, f["topic"].split(".")[1]) in followed]  # fmt: skip
    assert len(plain.records) == trades + len(tickers) > 3_000
    assert native.received() == plain.received()
    assert plain.invalid == native.invalid == []
    # what CCXT refuses (the error reply, the broken frame) it refuses alike
    assert list(map(repr, native.malformed)) == list(map(repr, plain.malformed))
    assert sum(isinstance(e, orjson.JSONDecodeError) for e in native.malformed) == 1
    assert native.fast is not None and native.fast.frames == len(mine)
    assert {type(r) for r in native.records} == {Trade, Ticker}
