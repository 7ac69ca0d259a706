"""Pure builders of OKX v5 public payloads: push frames, REST bodies, errors, the checksum.

Everything the fake OKX writes goes through here, so the shapes `ccxt.pro.okx` parses are
defined in one place and testable without sockets. OKX sends every number as a decimal string
(timestamps too), except `checksum`, `seqId` and `prevSeqId`, which are JSON integers.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

Payload = dict[str, Any]
Level = list[str]
"""A book level as OKX sends it: [price, size, liquidated orders ("0"), number of orders]."""

CHECKSUM_DEPTH = 25
DAY_MS = 86_400_000
_HK_OFFSET_MS = 8 * 3_600_000

BAR_MS: dict[str, int] = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1H": 3_600_000,
    "2H": 7_200_000,
    "4H": 14_400_000,
    "6H": 21_600_000,
    "12H": 43_200_000,
    "1D": DAY_MS,
    "2D": 2 * DAY_MS,
    "3D": 3 * DAY_MS,
    "1W": 7 * DAY_MS,
}
"""Fixed-length OKX bars. Bars of 6H and more are aligned to Hong Kong time (UTC+8) unless
the name ends in 'utc' ('6Hutc', '1Dutc', ...); month bars are not served."""

PUBLIC_CHANNELS = frozenset({"tickers", "trades", "books", "books5", "bbo-tbt"})
"""Channels served on /ws/v5/public."""


def fmt(value: Decimal) -> str:
    """OKX number format: plain decimal, no exponent, no trailing zeros ('30236', '0.0002')."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def push(channel: str, inst_id: str, rows: list[Any], action: str | None = None) -> Payload:
    """A data frame: `{"arg": {"channel", "instId"}, ["action",] "data": rows}`."""
    frame: Payload = {"arg": {"channel": channel, "instId": inst_id}}
    if action is not None:
        frame["action"] = action
    frame["data"] = rows
    return frame


def frame_key(frame: Payload) -> tuple[str, str]:
    """(channel, instId) of a data frame."""
    arg = frame["arg"]
    return arg["channel"], arg["instId"]


# --------------------------------------------------------------------------- rows


def ticker_row(
    inst_id: str,
    *,
    last: str,
    last_sz: str,
    ask_px: str,
    ask_sz: str,
    bid_px: str,
    bid_sz: str,
    open24h: str,
    high24h: str,
    low24h: str,
    vol_ccy24h: str,
    vol24h: str,
    ts_ms: int,
    sod_utc0: str | None = None,
    sod_utc8: str | None = None,
    inst_type: str = "SPOT",
) -> Payload:
    """One `tickers` row, keys in the order OKX sends them (REST rows are the same)."""
    return {
        "instType": inst_type,
        "instId": inst_id,
        "last": last,
        "lastSz": last_sz,
        "askPx": ask_px,
        "askSz": ask_sz,
        "bidPx": bid_px,
        "bidSz": bid_sz,
        "open24h": open24h,
        "high24h": high24h,
        "low24h": low24h,
        "sodUtc0": sod_utc0 if sod_utc0 is not None else open24h,
        "sodUtc8": sod_utc8 if sod_utc8 is not None else open24h,
        "volCcy24h": vol_ccy24h,
        "vol24h": vol24h,
        "ts": str(ts_ms),
    }


def trade_row(inst_id: str, trade_id: int, px: str, sz: str, side: str, ts_ms: int) -> Payload:
    """One `trades` row (websocket and REST `market/trades` share it)."""
    return {
        "instId": inst_id,
        "tradeId": str(trade_id),
        "px": px,
        "sz": sz,
        "side": side,
        "ts": str(ts_ms),
    }


def book_row(
    asks: Sequence[Level],
    bids: Sequence[Level],
    ts_ms: int,
    *,
    checksum: int,
    seq_id: int,
    prev_seq_id: int,
) -> Payload:
    """A `books` snapshot/update row. A snapshot has prevSeqId -1."""
    return {
        "asks": [list(lv) for lv in asks],
        "bids": [list(lv) for lv in bids],
        "ts": str(ts_ms),
        "checksum": checksum,
        "prevSeqId": prev_seq_id,
        "seqId": seq_id,
    }


def top_row(
    inst_id: str, asks: Sequence[Level], bids: Sequence[Level], ts_ms: int, seq_id: int
) -> Payload:
    """A `books5` row (5 levels a side, full state each time, no action)."""
    return {
        "asks": [list(lv) for lv in asks],
        "bids": [list(lv) for lv in bids],
        "instId": inst_id,
        "ts": str(ts_ms),
        "seqId": seq_id,
    }


def bbo_row(asks: Sequence[Level], bids: Sequence[Level], ts_ms: int, seq_id: int) -> Payload:
    """A `bbo-tbt` row: the best level of each side."""
    return {
        "asks": [list(lv) for lv in asks[:1]],
        "bids": [list(lv) for lv in bids[:1]],
        "ts": str(ts_ms),
        "seqId": seq_id,
    }


def candle_row(
    ts_ms: int,
    o: str,
    h: str,
    low: str,
    c: str,
    vol: str,
    vol_ccy: str,
    confirm: bool,
) -> list[str]:
    """[ts, o, h, l, c, vol, volCcy, volCcyQuote, confirm]; spot: vol in base, volCcy in quote."""
    return [str(ts_ms), o, h, low, c, vol, vol_ccy, vol_ccy, "1" if confirm else "0"]


def instrument_spot(
    inst_id: str, base: str, quote: str, tick_sz: str, lot_sz: str, min_sz: str, list_ms: int
) -> Payload:
    """A SPOT entry of `public/instruments`, shaped like the recorded ones."""
    return {
        "alias": "",
        "baseCcy": base,
        "category": "1",
        "ctMult": "",
        "ctType": "",
        "ctVal": "",
        "ctValCcy": "",
        "expTime": "",
        "instId": inst_id,
        "instType": "SPOT",
        "lever": "",
        "listTime": str(list_ms),
        "lotSz": lot_sz,
        "maxIcebergSz": "9999999999",
        "maxLmtSz": "9999999999",
        "maxMktSz": "1000000",
        "maxStopSz": "1000000",
        "maxTriggerSz": "9999999999",
        "maxTwapSz": "9999999999",
        "minSz": min_sz,
        "optType": "",
        "quoteCcy": quote,
        "settleCcy": "",
        "state": "live",
        "stk": "",
        "tickSz": tick_sz,
        "uly": "",
    }


# --------------------------------------------------------------------------- checksum


def checksum_string(
    bids: Sequence[Sequence[str]], asks: Sequence[Sequence[str]], depth: int = CHECKSUM_DEPTH
) -> str:
    """'bid1px:bid1sz:ask1px:ask1sz:bid2px:...' over the best `depth` levels of each side.

    Sides must be sorted best first. When one side is shorter, its missing levels are simply
    left out (OKX: 'bid1:ask1:bid2:ask2:ask3'). Prices and sizes are the strings as sent.
    """
    parts: list[str] = []
    for i in range(depth):
        if i < len(bids):
            parts += (bids[i][0], bids[i][1])
        if i < len(asks):
            parts += (asks[i][0], asks[i][1])
    return ":".join(parts)


def crc32_signed(text: str) -> int:
    """CRC32 of the text, as the signed 32-bit integer OKX puts in `checksum`."""
    value = zlib.crc32(text.encode())
    return value - (1 << 32) if value >= (1 << 31) else value


def checksum(bids: Sequence[Sequence[str]], asks: Sequence[Sequence[str]]) -> int:
    """OKX's book checksum over the top 25 levels (sides sorted best first)."""
    return crc32_signed(checksum_string(bids, asks))


# --------------------------------------------------------------------------- candles


def bar_ms(bar: str) -> int:
    """Length of a bar ('1m', '1H', '1Dutc'); ValueError for unknown or month bars."""
    ms = BAR_MS.get(bar.removesuffix("utc"))
    if ms is None or (bar.endswith("utc") and ms < BAR_MS["6H"]):
        raise ValueError(f"unsupported bar {bar!r}")
    return ms


def bar_start(ts_ms: int, bar: str) -> int:
    """Open time of the bar holding `ts_ms` (HK-aligned for >= 6H bars without 'utc')."""
    length = bar_ms(bar)
    offset = _HK_OFFSET_MS if length >= BAR_MS["6H"] and not bar.endswith("utc") else 0
    if length == BAR_MS["1W"]:
        offset += 3 * DAY_MS  # weeks start on Monday; 1970-01-01 was a Thursday
    return (ts_ms + offset) // length * length - offset


def candle_channel_bar(channel: str) -> str | None:
    """'candle1m' -> '1m'; None when the channel is not a candle channel this fake serves."""
    if not channel.startswith("candle"):
        return None
    bar = channel.removeprefix("candle")
    try:
        bar_ms(bar)
    except ValueError:
        return None
    return bar


def candles_from_trades(trades: Iterable[Payload], bar: str, now_ms: int) -> list[list[str]]:
    """Candle rows of `bar` built from trade rows (any order), newest first like REST.

    A candle is confirmed ('1') once `now_ms` is past its end.
    """
    length = bar_ms(bar)
    buckets: dict[int, list[Decimal]] = {}
    for t in sorted(trades, key=lambda t: (int(t["ts"]), int(t["tradeId"]))):
        start = bar_start(int(t["ts"]), bar)
        px, sz = Decimal(t["px"]), Decimal(t["sz"])
        b = buckets.get(start)
        if b is None:
            buckets[start] = [px, px, px, px, sz, px * sz]
        else:
            b[1] = max(b[1], px)
            b[2] = min(b[2], px)
            b[3] = px
            b[4] += sz
            b[5] += px * sz
    return [
        candle_row(
            start,
            fmt(b[0]),
            fmt(b[1]),
            fmt(b[2]),
            fmt(b[3]),
            fmt(b[4]),
            fmt(b[5]),
            now_ms >= start + length,
        )
        for start, b in sorted(buckets.items(), reverse=True)
    ]


# --------------------------------------------------------------------------- control, errors


def ws_event(event: str, arg: Payload, conn_id: str) -> Payload:
    """Acknowledgement of a subscribe/unsubscribe arg."""
    return {"event": event, "arg": arg, "connId": conn_id}


def ws_error(code: str, msg: str, conn_id: str) -> Payload:
    """`{"event":"error","code":...,"msg":...}`: CCXT maps `code` through its error table."""
    return {"event": "error", "code": code, "msg": msg, "connId": conn_id}


def no_such_channel(arg: Payload) -> str:
    """OKX's 60018 text for a channel/instId that does not exist on this url."""
    return (
        f"Wrong URL or channel:{arg.get('channel')},instId:{arg.get('instId')} doesn't exist. "
        "Please use the correct URL, channel and parameters referring to API document."
    )


def rest_ok(data: list[Any]) -> Payload:
    """A successful REST body."""
    return {"code": "0", "msg": "", "data": data}


def error_body(code: str, msg: str) -> Payload:
    """A failed REST body: `{"code":"51001","msg":"Instrument ID does not exist","data":[]}`."""
    return {"code": code, "msg": msg, "data": []}


__all__ = [
    "BAR_MS",
    "CHECKSUM_DEPTH",
    "PUBLIC_CHANNELS",
    "Level",
    "Payload",
    "bar_ms",
    "bar_start",
    "bbo_row",
    "book_row",
    "candle_channel_bar",
    "candle_row",
    "candles_from_trades",
    "checksum",
    "checksum_string",
    "crc32_signed",
    "error_body",
    "fmt",
    "frame_key",
    "instrument_spot",
    "no_such_channel",
    "push",
    "rest_ok",
    "ticker_row",
    "top_row",
    "trade_row",
    "ws_error",
    "ws_event",
]
