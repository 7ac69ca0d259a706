"""The native OKX parser gives exactly the records CCXT's path gives, row for row.

CCXT's path here is the real ``ccxt.pro.okx`` with the fake's SPOT instruments as its
markets: ``parse_trade``/``parse_ticker`` on each row of a frame (what ``handle_trades`` and
``handle_ticker`` call), then :mod:`publisher.normalize`, keeping the symbols followed (what
the worker's tap does). The last tests run the whole chain the worker runs: raw text into a
CCXT websocket client, with and without the fast path in front of it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from itertools import islice
from typing import Any

import ccxt.pro
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fake_exchange import OkxReplaySource, OkxSyntheticSource
from marketbus.models import Channel, Record, Ticker, Trade
from marketbus.settings import NATIVE_PARSERS, ExchangeSettings
from publisher.ccxt_client import make_client
from publisher.exchanges import FAST_PATHS
from publisher.native_okx import OKX_CHANNELS, OkxFastPath, okx_ticker, okx_trade
from publisher.normalize import NormalizeError, ticker_from_ccxt, trade_from_ccxt
from publisher.ws_hooks import guard_frames

RECV_NS = 1_700_000_000_000_000_123
CLOCK = lambda: 1_700_000_000_000  # noqa: E731 - a fixed exchange clock for the sources
BOTH = frozenset({Channel.TRADES, Channel.TICKER})
Frame = dict[str, Any]

SYNTHETIC = OkxSyntheticSource(60, rate=20_000, total=6_000, seed=3, channels=("trades", "tickers"))
SYNTHETIC.prepare()


def okx_client(instruments: dict[str, list[Frame]]) -> Any:
    """``ccxt.pro.okx`` (its parsers are pure: no session, nothing to close) with the SPOT
    instruments as markets, as the publisher loads them."""
    client = ccxt.pro.okx({"options": {"defaultType": "spot", "fetchMarkets": {"types": ["spot"]}}})
    markets = [client.parse_market(m) for m in instruments["SPOT"]]
    client.set_markets([m for m in markets if m is not None])
    return client


CLIENT = okx_client(SYNTHETIC.instruments())  # the recording's instruments + SYM<i>-USDT


@pytest.fixture
def ex() -> Any:
    return CLIENT


def followed(client: Any) -> dict[str, str]:
    """instId -> symbol of every SPOT market (what the worker's subscription map holds)."""
    return {m["id"]: m["symbol"] for m in client.markets.values()}


def via_ccxt(client: Any, frame: Frame) -> tuple[list[Record], int]:
    """(records, rows refused) as CCXT's path makes them for one push frame."""
    channel = OKX_CHANNELS[frame["arg"]["channel"]]
    records: list[Record] = []
    refused = 0
    ours = set(followed(client).values())
    for row in frame["data"]:
        if channel is Channel.TRADES:
            parsed = client.parse_trade(row)
        else:
            parsed = client.parse_ticker(row)
        if parsed.get("symbol") not in ours:
            continue
        try:
            if channel is Channel.TRADES:
                records.append(trade_from_ccxt("okx", parsed, RECV_NS))
            else:
                records.append(ticker_from_ccxt("okx", parsed, RECV_NS))
        except NormalizeError:
            refused += 1
    return records, refused


def via_native(client: Any, frame: Frame) -> tuple[list[Record] | None, int]:
    """(records, rows refused) of the fast path; records None when it left the frame to CCXT."""
    got: list[Record] = []
    bad: list[Exception] = []
    fast = OkxFastPath("okx", followed(client), BOTH, got.append, bad.append)
    taken = fast(orjson.dumps(frame).decode(), RECV_NS)
    assert all(isinstance(e, NormalizeError) for e in bad)
    return (got if taken else None), len(bad)


def events(source: Any, n: int | None = None) -> Iterator[Frame]:
    source.prepare()
    for ev in islice(source.events(CLOCK), n):
        if ev.channel in OKX_CHANNELS:
            yield ev.frame


def assert_same(client: Any, frame: Frame) -> list[Record]:
    native, native_bad = via_native(client, frame)
    assert native is not None, frame
    assert (native, native_bad) == via_ccxt(client, frame), frame
    return native


# --------------------------------------------------------------------------- equivalence


def test_recorded_frames_give_identical_records(ex: Any) -> None:
    """The recorded session (BTC-USDT, a SWAP and a FUTURES instrument): every SPOT frame
    gives CCXT's records; the derivatives' frames are left to CCXT."""
    recorded = list(events(OkxReplaySource(instruments=None)))
    spot = [f for f in recorded if f["arg"]["instId"] == "BTC-USDT"]
    kinds = {f["arg"]["channel"] for f in spot}
    assert kinds == {"trades", "tickers"} and len(spot) == 94  # one row each (see batched)
    records = [r for f in spot for r in assert_same(ex, f)]
    assert len(records) == 94
    assert {type(r) for r in records} == {Trade, Ticker}
    derivatives = [f for f in recorded if f["arg"]["instId"] != "BTC-USDT"]
    assert {f["data"][0].get("instType", "") for f in derivatives} >= {"SWAP", "FUTURES"}
    assert all(via_native(ex, f)[0] is None for f in derivatives)


def batched(frames: list[Frame]) -> Iterator[Frame]:
    """The same rows as frames of 1 to 4 rows of one instrument, as OKX batches trades."""
    by_inst: dict[str, list[Frame]] = {}
    for f in frames:
        by_inst.setdefault(f["arg"]["instId"], []).extend(f["data"])
    for inst, rows in by_inst.items():
        i = size = 0
        while i < len(rows):
            size = size % 4 + 1
            yield {"arg": {"channel": "trades", "instId": inst}, "data": rows[i : i + size]}
            i += size


def test_synthetic_frames_of_many_instruments_give_identical_records(ex: Any) -> None:
    frames = list(events(SYNTHETIC))
    assert len(frames) == 6_000
    trades = [f for f in frames if f["arg"]["channel"] == "trades"]
    assert len({f["arg"]["instId"] for f in frames}) == 60 and len(trades) == 3_000
    for f in frames:
        assert_same(ex, f)
    multi = list(batched(trades))
    assert max(len(f["data"]) for f in multi) == 4
    assert sum(len(assert_same(ex, f)) for f in multi) == 3_000


# Row variants that CCXT parses without raising: the records must be the same, field by field
# (zero and empty prices absent, zero sizes kept, numbers as JSON numbers, odd timestamps).
TICKER_EDGES: list[dict[str, Any]] = [
    {"bidPx": "", "bidSz": "", "askPx": "", "askSz": ""},  # an empty book side
    {"bidPx": "0", "bidSz": "0", "askPx": "0", "askSz": "0"},
    {"last": "0", "lastSz": "0"},
    {"open24h": "0", "high24h": "0", "low24h": "0"},
    {"vol24h": "0", "volCcy24h": "0"},
    {"vol24h": "0", "volCcy24h": "12.5"},  # CCXT's vwap divides by the base volume
    {"volCcy24h": ""},
    {"bidSz": "-1", "vol24h": "-3"},
    {"bidPx": "-2", "open24h": "-1"},
    {"last": 101.5, "bidPx": 100, "askSz": 0.25, "vol24h": 7},  # JSON numbers
    {"bidPx": True, "askSz": False, "high24h": None, "low24h": [], "vol24h": {}},
    {"ts": ""},
    {"ts": "0"},
    {"ts": "-5"},
    {"ts": "1.7e12"},
    {"ts": 1_700_000_000_001},
    {"ts": "1700000000001.9"},
    {"ts": "99999999999999999999999"},  # past int64: the model refuses it
    {"ts": None},
    {"instType": "SWAP"},
    {"last": "1e-7", "bidPx": "1E+3"},
    {"sodUtc0": "x", "lastSz": "x", "instType": None},  # fields no record reads
]
TRADE_EDGES: list[dict[str, Any]] = [
    {"tradeId": 123},
    {"tradeId": 1.5},
    {"tradeId": ""},
    {"tradeId": None},
    {"tradeId": True},
    {"side": "BUY"},
    {"side": ""},
    {"side": None},
    {"px": 100.25, "sz": 3},
    {"sz": "0"},
    {"sz": "-0"},
    {"px": "0"},
    {"px": "-1"},
    {"px": None},
    {"sz": None},
    {"px": ""},
    {"px": True},
    {"ts": ""},
    {"ts": "x"},
    {"ts": "-1"},
    {"ts": "1.7e12"},
    {"ts": True},
    {"ts": "99999999999999999999999"},
    {"px": "1e-9", "sz": "1E3"},
]


def _one(channel: str, row: Frame) -> Frame:
    return {"arg": {"channel": channel, "instId": row.get("instId", "BTC-USDT")}, "data": [row]}


ROWS = {f["arg"]["channel"]: f["data"][0] for f in islice(events(SYNTHETIC), 2)}
"""A real row of each channel, to vary."""


@pytest.mark.parametrize("edge", TICKER_EDGES)
def test_ticker_values_at_the_edges_give_identical_records(ex: Any, edge: dict[str, Any]) -> None:
    assert_same(ex, _one("tickers", {**ROWS["tickers"], **edge}))


@pytest.mark.parametrize("edge", TRADE_EDGES)
def test_trade_values_at_the_edges_give_identical_records(ex: Any, edge: dict[str, Any]) -> None:
    assert_same(ex, _one("trades", {**ROWS["trades"], **edge}))


def test_missing_fields_give_identical_records(ex: Any) -> None:
    assert set(ROWS) == {"trades", "tickers"}
    for channel, row in ROWS.items():
        for key in row:
            if key != "instId":
                assert_same(ex, _one(channel, {k: v for k, v in row.items() if k != key}))


_VALUES = st.one_of(
    st.decimals(min_value=-10, max_value=10**9, places=8, allow_nan=False).map(str),
    st.integers(-(2**62), 2**62),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "0", "-0", "0.0", "1e5", None, True, False, "nan", "inf", "-inf"]),
)
_TICKER_KEYS = ("last", "bidPx", "bidSz", "askPx", "askSz", "open24h", "high24h", "low24h",
                "vol24h", "volCcy24h", "ts")  # fmt: skip
_TRADE_KEYS = ("tradeId", "px", "sz", "side", "ts")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    channel=st.sampled_from(["trades", "tickers"]),
    values=st.dictionaries(st.sampled_from(_TICKER_KEYS + _TRADE_KEYS), _VALUES, max_size=6),
)
def test_any_values_give_ccxts_records_where_ccxt_parses_them(
    channel: str, values: dict[str, Any]
) -> None:
    """Random values in every field the records read: wherever CCXT's own parser gets through
    the row, both paths agree, record for record (or both refuse it)."""
    keys = _TRADE_KEYS if channel == "trades" else _TICKER_KEYS
    frame = _one(channel, {**ROWS[channel], **{k: v for k, v in values.items() if k in keys}})
    try:
        expected = via_ccxt(CLIENT, frame)
    except ValueError:  # CCXT's decimal arithmetic on "nan"/"inf": its path drops the frame
        assume(False)
    assert via_native(CLIENT, frame) == expected, frame


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("field", "value"),
    [("px", "0"), ("px", "nan"), ("px", "-1"), ("px", "inf"), ("px", "x"), ("px", ""),
     ("px", None), ("sz", "-0.5"), ("sz", "nan"), ("sz", None), ("ts", str(2**63)),
     ("ts", "-1"), ("tradeId", ""), ("tradeId", None), ("tradeId", "9" * 129)],
)  # fmt: skip
def test_a_bad_trade_row_is_refused_like_the_model_refuses_it(
    ex: Any, field: str, value: Any
) -> None:
    row = {"instId": "BTC-USDT", "tradeId": "7", "px": "100.5", "sz": "0.25", "side": "sell",
           "ts": "1700000000000"}  # fmt: skip
    assert okx_trade("okx", row, "BTC/USDT", 5) == Trade(
        exchange="okx", symbol="BTC/USDT", ts_ms=1_700_000_000_000, recv_ns=5, id="7",
        price=100.5, amount=0.25, side="sell",
    )  # fmt: skip
    bad = {**row, field: value}
    with pytest.raises(NormalizeError):
        okx_trade("okx", bad, "BTC/USDT", 5)
    # CCXT's path refuses it too: its normalizer, or its own parser raising on the row
    with pytest.raises((NormalizeError, ValueError)):
        trade_from_ccxt("okx", ex.parse_trade(bad), 5)


def test_a_ticker_past_int64_is_refused(ex: Any) -> None:
    row = {"instType": "SPOT", "instId": "BTC-USDT", "last": "1", "ts": str(2**63)}
    with pytest.raises(NormalizeError):
        okx_ticker("okx", row, "BTC/USDT", 5)
    with pytest.raises(NormalizeError):
        ticker_from_ccxt("okx", ex.parse_ticker(row), 5)


def test_a_bad_row_is_counted_and_skipped_and_the_others_published() -> None:
    got: list[Record] = []
    bad: list[Exception] = []
    fast = OkxFastPath("okx", {"BTC-USDT": "BTC/USDT"}, BOTH, got.append, bad.append)
    row = {"instId": "BTC-USDT", "px": "1.5", "sz": "2", "side": "buy", "ts": "1"}
    rows = [{**row, "tradeId": "1"}, {**row, "tradeId": "2", "px": "-1"}, {**row, "tradeId": "3"}]
    frame = {"arg": {"channel": "trades", "instId": "BTC-USDT"}, "data": rows}
    assert fast(orjson.dumps(frame).decode(), RECV_NS) is True
    assert [r.id for r in got] == ["1", "3"]  # type: ignore[union-attr]
    assert len(bad) == 1 and isinstance(bad[0], NormalizeError) and fast.frames == 1


# --------------------------------------------------------------------------- what it takes


def test_fast_path_takes_only_what_it_publishes() -> None:
    got: list[Record] = []
    bad: list[Exception] = []
    ids = {"BTC-USDT": "BTC/USDT", "ETH-USDT": "ETH/USDT", "BTC-USDT-SWAP": "BTC/USDT:USDT"}
    fast = OkxFastPath("okx", ids, frozenset({Channel.TRADES}), got.append, bad.append)
    assert fast.symbols == {"BTC-USDT": "BTC/USDT", "ETH-USDT": "ETH/USDT"}  # SPOT only
    row = {"instId": "BTC-USDT", "tradeId": "7", "px": "1.5", "sz": "2", "side": "sell",
           "ts": "1"}  # fmt: skip
    trade = {"arg": {"channel": "trades", "instId": "BTC-USDT"}, "data": [row]}

    def text(frame: Any) -> str:
        return orjson.dumps(frame).decode()

    assert fast(text(trade), RECV_NS) is True
    assert got == [Trade(exchange="okx", symbol="BTC/USDT", ts_ms=1, recv_ns=RECV_NS, id="7",
                         price=1.5, amount=2.0, side="sell")]  # fmt: skip
    swap_row = {**row, "instId": "BTC-USDT-SWAP"}
    not_ours = [
        {**trade, "arg": {"channel": "trades", "instId": "SOL-USDT"}},  # not followed
        {"arg": {"channel": "trades", "instId": "BTC-USDT-SWAP"}, "data": [swap_row]},
        {**trade, "arg": {"channel": "tickers", "instId": "BTC-USDT"}},  # channel not published
        {**trade, "arg": {"channel": "trades-all", "instId": "BTC-USDT"}},
        {**trade, "arg": {"channel": "books", "instId": "BTC-USDT"}},
        {**trade, "arg": {"channel": "candle1m", "instId": "BTC-USDT"}},
        {"event": "subscribe", "arg": {"channel": "trades", "instId": "BTC-USDT"}, "connId": "a"},
        {"event": "error", "code": "60018", "msg": "no", "arg": trade["arg"]},
        {**trade, "code": "60012"},  # CCXT looks for an error in every frame
        {**trade, "op": "subscribe"},
        {**trade, "data": {"0": row}},  # data not a list
        {**trade, "arg": ["trades", "BTC-USDT"]},
        {**trade, "data": [row, {**row, "instId": "SOL-USDT"}]},  # a row of another market
        {**trade, "data": [row, "x"]},
        {**trade, "data": [{k: v for k, v in row.items() if k != "instId"}]},
        {**trade, "arg": {"channel": ["trades"], "instId": "BTC-USDT"}},
        {**trade, "arg": {"channel": "trades", "instId": ["BTC-USDT"]}},
        [trade],
    ]
    for frame in not_ours:
        assert fast(text(frame), RECV_NS) is False, frame
    assert fast("pong", RECV_NS) is False  # OKX's text keepalive, CCXT's to handle
    assert fast("ping", RECV_NS) is False
    assert fast("", RECV_NS) is False
    assert fast('{"arg":{"channel":"trades", broken', RECV_NS) is False  # CCXT + frame guard
    assert fast(text(trade).encode(), RECV_NS) is False  # OKX writes text frames
    spaced = '{"arg": {"instId": "BTC-USDT",  ' + " " * 64 + '"channel": "trades"}, "data": []}'
    assert fast(spaced, RECV_NS) is False  # not in OKX's layout: CCXT parses it
    assert len(got) == 1 and bad == [] and fast.frames == 1
    fast.symbols = {"ETH-USDT": "ETH/USDT"}  # a subscription change
    assert fast(text(trade), RECV_NS) is False
    assert fast(text({**trade, "data": []}), RECV_NS) is False


def test_the_table_of_native_parsers_is_the_settings_list() -> None:
    assert set(FAST_PATHS) == NATIVE_PARSERS and FAST_PATHS["okx"] is OkxFastPath
    assert ExchangeSettings(name="okx", symbols=("BTC/USDT",)).native is True
    assert ExchangeSettings(name="okx", symbols=("BTC/USDT",), parser="ccxt").native is False


# --------------------------------------------------------------------------- the whole chain


class Chain:
    """A tapped OKX client as the worker builds it, fed raw frames through a CCXT websocket
    client's own handler; ``native`` puts the fast path in front (``guard_frames``)."""

    def __init__(self, native: bool, ours: set[str]) -> None:
        cfg = ExchangeSettings(name="okx", symbols=tuple(ours), parser="auto" if native else "ccxt")
        self.ours = ours
        self.records: list[Record] = []
        self.invalid: list[Exception] = []
        self.malformed: list[Exception] = []
        self.client = make_client(cfg, self._on_parsed)
        self.client.set_markets(list(okx_client(SYNTHETIC.instruments()).markets.values()))
        self.fast: OkxFastPath | None = None
        if cfg.native:  # the map as the worker's subscription code builds it
            ids = {self.client.market(s)["id"]: s for s in ours}
            self.fast = OkxFastPath("okx", ids, BOTH, self.records.append, self.invalid.append)
        guard_frames(self.client, lambda e, _d: self.malformed.append(e), self.fast)
        self.ws = self.client.client("ws://127.0.0.1:9/ws/v5/public")

    def _on_parsed(self, channel: Channel, data: dict[str, Any]) -> None:
        if data.get("symbol") not in self.ours:
            return
        recv_ns = time.time_ns()
        try:
            if channel is Channel.TRADES:
                self.records.append(trade_from_ccxt("okx", data, recv_ns))
            else:
                self.records.append(ticker_from_ccxt("okx", data, recv_ns))
        except NormalizeError as e:
            self.invalid.append(e)

    def feed(self, text: str) -> None:
        self.ws.handle_text_or_binary_message(text)

    def received(self) -> list[Record]:
        return [r.model_copy(update={"recv_ns": 0}) for r in self.records]

    async def close(self) -> None:
        self.client.timeout_on_exit = 0
        await self.client.close()


@pytest.fixture
async def chains() -> AsyncIterator[tuple[Chain, Chain]]:
    by_id = okx_client(SYNTHETIC.instruments()).markets_by_id
    ours = {by_id[i][0]["symbol"] for i in SYNTHETIC.inst_ids()[:30]}
    pair = Chain(False, ours), Chain(True, ours)
    yield pair
    for c in pair:
        await c.close()


async def test_the_worker_chain_gives_the_same_records_with_and_without_the_fast_path(
    chains: tuple[Chain, Chain],
) -> None:
    """Recorded frames of every kind (books and derivatives included), synthetic frames of 60
    instruments (30 followed) with several trades a frame, a subscribe ack, the keepalive and a
    broken frame, as text into CCXT's websocket client: the same records either way, the same
    frames refused, and the fast path took every followed SPOT trades/tickers frame."""
    recorded = OkxReplaySource(instruments=None)
    recorded.prepare()
    frames = [ev.frame for ev in recorded.events(CLOCK)]
    synthetic = list(events(SYNTHETIC, 2_000))
    frames += synthetic + list(batched([f for f in synthetic if f["arg"]["channel"] == "trades"]))
    texts = [orjson.dumps(f).decode() for f in frames]
    ack = {"event": "subscribe", "arg": {"channel": "trades", "instId": "BTC-USDT"}, "connId": "1"}
    texts[5:5] = [orjson.dumps(ack).decode(), "pong", '{"arg":{"channel":"trades",']
    plain, native = chains
    for text in texts:
        plain.feed(text)
        native.feed(text)
    ids = {plain.client.market(s)["id"] for s in plain.ours}
    ours = [f for f in frames if f["arg"]["channel"] in OKX_CHANNELS and f["arg"]["instId"] in ids]
    assert len(plain.records) == sum(len(f["data"]) for f in ours) > 1_500
    assert native.received() == plain.received()
    assert plain.invalid == native.invalid == []
    # what CCXT refuses (books without a subscription here, the broken frame) it refuses alike
    assert list(map(repr, native.malformed)) == list(map(repr, plain.malformed))
    assert sum(isinstance(e, orjson.JSONDecodeError) for e in native.malformed) == 1
    assert native.fast is not None and native.fast.frames == len(ours)
    assert native.ws.lastPong is not None and plain.ws.lastPong is not None  # pong: CCXT's
