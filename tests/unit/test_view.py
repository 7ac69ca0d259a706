"""The live view as a pure function: buffers + a rate meter + a clock -> a table."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table

from consumers import RingBuffer
from consumers.columns import COLUMNS, row
from marketbus import codec
from marketbus.keys import StreamKey
from marketbus.models import Channel, Record, Ticker, Trade
from marketbus_cli.view import RateMeter, record_json, render

NOW_MS = 1_700_000_010_000
NOW = NOW_MS / 1000


def ticker(symbol: str, ts_ms: int, bid: float, ask: float, last: float) -> Ticker:
    return Ticker(
        exchange="binance", symbol=symbol, ts_ms=ts_ms, recv_ns=ts_ms * 1_000_000 + 5,
        bid=bid, ask=ask, last=last,
    )  # fmt: skip


def trade(symbol: str, ts_ms: int, price: float, tid: str = "1") -> Trade:
    return Trade(
        exchange="binance", symbol=symbol, ts_ms=ts_ms, recv_ns=ts_ms * 1_000_000 + 5,
        id=tid, price=price, amount=0.5, side="buy",
    )  # fmt: skip


def buffers(*records: Record) -> dict[StreamKey, RingBuffer]:
    """Ring buffers filled the way the consumer fills them: encode, decode, row."""
    out: dict[StreamKey, RingBuffer] = {}
    for i, r in enumerate(records):
        channel, values = codec.unpack(codec.pack(r))
        key = StreamKey(r.exchange, r.symbol, channel)
        buf = out.setdefault(key, RingBuffer(COLUMNS[channel], capacity=16, time_column="ts_ms"))
        buf.append(row(channel, values, f"{r.ts_ms}-{i}"))
    return out


def text(table: Table) -> str:
    con = Console(file=io.StringIO(), width=160, record=True, color_system=None)
    con.print(table)
    return con.export_text()


def rows(table: Table) -> dict[str, dict[str, str]]:
    """market -> the row's cells, by column header."""
    cols = [list(c.cells) for c in table.columns]
    headers = [str(c.header) for c in table.columns]
    return {
        str(cols[0][i]): {h: str(col[i]) for h, col in zip(headers, cols, strict=True)}
        for i in range(len(cols[0]))
    }


def test_empty_shows_waiting() -> None:
    t = render({}, RateMeter(), "marketbus", now=NOW)
    assert "(waiting for data)" in text(t)
    assert "marketbus" in text(t)


def test_row_per_market_with_prices_spread_and_age() -> None:
    b = buffers(
        ticker("BTC/USDT", NOW_MS - 2500, bid=100.0, ask=100.1, last=100.05),
        ticker("ETH/USDT", NOW_MS - 500, bid=2000.0, ask=2000.4, last=2000.2),
    )
    t = render(b, RateMeter(), "live", now=NOW)
    r = rows(t)
    assert list(r) == ["binance:BTC/USDT", "binance:ETH/USDT"]
    btc = r["binance:BTC/USDT"]
    assert (btc["last"], btc["bid"], btc["ask"]) == ("100.05", "100", "100.1")
    assert btc["spread bps"] == "10.0"  # 0.1 / 100.05 * 1e4
    assert btc["age"] == "2.5s"
    assert r["binance:ETH/USDT"]["spread bps"] == "2.0"
    assert r["binance:ETH/USDT"]["age"] == "0.5s"
    assert "binance:BTC/USDT" in text(t)  # never cut short


def test_newer_trade_sets_last_and_counts_trades() -> None:
    b = buffers(
        ticker("BTC/USDT", NOW_MS - 3000, bid=100.0, ask=100.1, last=100.05),
        trade("BTC/USDT", NOW_MS - 1000, price=101.25, tid="7"),
        trade("BTC/USDT", NOW_MS - 900, price=101.5, tid="8"),
    )
    btc = rows(render(b, RateMeter(), "t", now=NOW))["binance:BTC/USDT"]
    assert btc["last"] == "101.5"
    assert btc["trades"] == "2"
    assert btc["age"] == "0.9s"  # the newest record of the market


def test_market_without_data_is_waiting_and_small_prices_have_no_exponent() -> None:
    b = buffers(ticker("SHIB/USDT", NOW_MS, bid=0.00006547, ask=0.00006551, last=0.0000655))
    b[StreamKey("binance", "BTC/USDT", Channel.TICKER)] = RingBuffer(
        COLUMNS[Channel.TICKER], capacity=4, time_column="ts_ms"
    )
    r = rows(render(b, RateMeter(), "t", now=NOW))
    assert r["binance:BTC/USDT"]["last"] == "-"
    assert r["binance:BTC/USDT"]["age"] == "waiting"
    shib = r["binance:SHIB/USDT"]
    assert (shib["bid"], shib["ask"], shib["last"]) == ("0.00006547", "0.00006551", "0.0000655")


def test_rate_meter_over_a_fake_clock() -> None:
    m = RateMeter(window_s=5.0)
    assert m.rate("binance", "BTC/USDT", 0.0) == 0.0
    for t in range(10):  # one record a second, t = 0 .. 9
        m.hit("binance", "BTC/USDT", float(t))
    assert m.rate("binance", "BTC/USDT", 9.5) == 1.0  # 5 .. 9 in the last 5 s
    assert m.rate("binance", "BTC/USDT", 12.0) == 0.4  # 8, 9: the window is (7, 12]
    assert m.rate("binance", "BTC/USDT", 100.0) == 0.0
    assert m.rate("binance", "ETH/USDT", 9.5) == 0.0


def test_rate_meter_stays_bounded_without_readers() -> None:
    m = RateMeter(window_s=1.0)
    for i in range(10_000):
        m.hit("binance", "BTC/USDT", i / 100)  # 100/s for 100 s, never read
    assert len(m._times[("binance", "BTC/USDT")]) <= 101


def test_rate_shows_in_the_table() -> None:
    m = RateMeter(window_s=2.0)
    for i in range(8):
        m.hit("binance", "BTC/USDT", NOW - 1.5 + i * 0.1)
    b = buffers(ticker("BTC/USDT", NOW_MS, bid=1.0, ask=1.0, last=1.0))
    assert rows(render(b, m, "t", now=NOW))["binance:BTC/USDT"]["rec/s"] == "4.0"


def test_record_json_is_one_line_with_the_fields() -> None:
    import orjson

    line = record_json(trade("BTC/USDT", NOW_MS, price=101.5))
    assert b"\n" not in line
    d = orjson.loads(line)
    assert (d["exchange"], d["symbol"], d["price"], d["channel"]) == (
        "binance", "BTC/USDT", 101.5, "trades",
    )  # fmt: skip


def test_demo_shows_only_recorded_markets_with_ticker_or_trade_data() -> None:
    from fake_exchange import bundled_recording
    from marketbus_cli.demo import recorded_symbols

    # RUNE/EUR is in the recording's header but has only depth frames: it would sit empty
    assert recorded_symbols(bundled_recording()) == ["BLZ/ETH", "LRC/BTC", "NKN/USDT"]


def test_the_book_top_gives_bid_and_ask_when_it_is_fresher_than_the_ticker() -> None:
    from marketbus.models import BookTop

    book = BookTop(exchange="okx", symbol="BTC/USDT", ts_ms=NOW_MS - 500, recv_ns=1, seq=3,
                   bids=((100.0, 1.0),), asks=((100.5, 2.0),))  # fmt: skip
    old = Ticker(exchange="okx", symbol="BTC/USDT", ts_ms=NOW_MS - 900, recv_ns=1,
                 bid=99.0, ask=101.0, last=100.0)  # fmt: skip
    got = rows(render(buffers(old, book), RateMeter(), "t", now=NOW))["okx:BTC/USDT"]
    assert (got["bid"], got["ask"], got["last"]) == ("100", "100.5", "100")
    assert got["age"] == "0.5s"
    only_book = rows(render(buffers(book), RateMeter(), "t", now=NOW))["okx:BTC/USDT"]
    assert (only_book["bid"], only_book["ask"], only_book["last"]) == ("100", "100.5", "-")
