"""OKX v5 websocket requests (ping, subscribe, unsubscribe) and the replies, pure.

The server turns each client text into `WsRequest`s and acts on them in order, so an invalid arg
is answered with its own error event without failing the others, as OKX does; the shapes are
testable without sockets.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import Literal

import orjson

from fake_exchange.okx import derivs
from fake_exchange.okx import frames as of
from fake_exchange.okx.book import OkxBook
from fake_exchange.okx.connection import Key
from fake_exchange.okx.frames import Payload

Op = Literal["ping", "subscribe", "unsubscribe", "error"]


@dataclass(frozen=True, slots=True)
class WsRequest:
    """One thing a client text asks for; `error` is the event to answer an invalid one with."""

    op: Op
    arg: Payload = field(default_factory=dict)
    error: Payload | None = None

    @property
    def key(self) -> Key:
        """(channel, instId), or (channel, instType) for a channel of a whole instType."""
        if self.arg.get("channel") in derivs.TYPE_CHANNELS:
            return (self.arg["channel"], self.arg["instType"])
        return (self.arg["channel"], self.arg["instId"])


def channel_ok(
    kind: str,
    arg: Payload,
    inst_ids: Container[str],
    inst_types: Mapping[str, str] | None = None,
) -> bool:
    """A known instId on a channel of this endpoint (candles on /business, the rest /public);
    derivatives channels for contract instruments only (`inst_types`: instId -> instType;
    funding on SWAPs), `liquidation-orders` for a contract instType, `index-tickers` for an
    index (a spot pair's id, or a contract's `uly`)."""
    channel, inst = arg.get("channel"), arg.get("instId")
    if kind == "public" and channel in derivs.TYPE_CHANNELS:
        return arg.get("instType") in derivs.CONTRACT_TYPES
    if kind == "public" and channel == derivs.INDEX_CHANNEL:  # an index: a pair or a uly
        types = inst_types or {}
        return isinstance(inst, str) and (
            inst in inst_ids
            or any(derivs.index_of(i) == inst for i, t in types.items() if t != "SPOT")
        )
    if not isinstance(channel, str) or inst not in inst_ids:
        return False
    if kind == "business":
        return of.candle_channel_bar(channel) is not None
    if channel in derivs.INSTRUMENT_CHANNELS:
        inst_type = (inst_types or {}).get(str(inst), "SPOT")
        return inst_type == "SWAP" or (channel != "funding-rate" and inst_type != "SPOT")
    return channel in of.PUBLIC_CHANNELS


def parse_requests(
    text: str,
    kind: str,
    tag: str,
    inst_ids: Container[str],
    inst_types: Mapping[str, str] | None = None,
) -> list[WsRequest]:
    """What `text` asks for, one request per subscribe/unsubscribe arg, in order."""
    if text == "ping":
        return [WsRequest("ping")]
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        msg = None
    op = msg.get("op") if isinstance(msg, dict) else None
    args = msg.get("args") if isinstance(msg, dict) else None
    if op not in ("subscribe", "unsubscribe") or not isinstance(args, list) or not args:
        return [WsRequest("error", error=of.ws_error("60012", f"Illegal request: {text}", tag))]
    requests = []
    for arg in args:
        if not isinstance(arg, dict) or not channel_ok(kind, arg, inst_ids, inst_types):
            bad = arg if isinstance(arg, dict) else {}
            requests.append(
                WsRequest("error", error=of.ws_error("60018", of.no_such_channel(bad), tag))
            )
            continue
        requests.append(WsRequest(op, arg))
    return requests


def initial_frame(channel: str, inst: str, book: OkxBook, seq_shift: int, ts: int) -> Payload:
    """What a books/books5/bbo-tbt subscription gets right after its ack: the current book."""
    if channel == "books":
        row = book.snapshot_row(seq_shift=seq_shift)
        row["ts"] = str(ts)
        return of.push("books", inst, [row], "snapshot")
    asks, bids, seq = book.asks(5), book.bids(5), book.seq_id + seq_shift
    if channel == "books5":
        return of.push("books5", inst, [of.top_row(inst, asks, bids, ts, seq)])
    return of.push("bbo-tbt", inst, [of.bbo_row(asks, bids, ts, seq)])


__all__ = ["Op", "WsRequest", "channel_ok", "initial_frame", "parse_requests"]
