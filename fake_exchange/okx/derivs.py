"""OKX v5 public derivatives data for SWAP instruments: the channels `funding-rate`,
`mark-price`, `open-interest` and `liquidation-orders`, their REST counterparts
(`public/funding-rate`, `public/mark-price`, `public/open-interest`), and the random walk the
synthetic source moves them with. Pure.

Shapes are OKX's (numbers as decimal strings, times as ms strings). `funding-rate`,
`mark-price` and `open-interest` are subscribed per instId; `liquidation-orders` per instType
(`{"channel": "liquidation-orders", "instType": "SWAP"}`: every SWAP's liquidations on one
subscription), so its frames are keyed by the instType. Each detail's `side` is the
liquidation order's (a liquidated long, `posSide` long, is sold). A subscription gets the
current funding, mark price or open interest right after its ack.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal

from fake_exchange.okx.frames import Payload, fmt

INSTRUMENT_CHANNELS = frozenset({"funding-rate", "mark-price", "open-interest"})
"""Derivatives channels subscribed per instId."""
TYPE_CHANNELS = frozenset({"liquidation-orders"})
"""Channels subscribed per instType (`arg.instType`); the fake keys them by it."""
INDEX_CHANNEL = "index-tickers"
"""The index price of an underlying (`instId` = the index, e.g. `BTC-USDT`, a SWAP's `uly`):
where OKX publishes what its `mark-price` frames lack. The fake keys it by the index."""
CHANNELS = INSTRUMENT_CHANNELS | TYPE_CHANNELS | {INDEX_CHANNEL}
CONTRACT_TYPES = ("SWAP", "FUTURES")
FUNDING_PERIOD_MS = 8 * 3_600_000


def swap_inst_id(symbol: str) -> str:
    """'BTC/USDT:USDT' -> 'BTC-USDT-SWAP' (a linear perpetual's instId)."""
    pair, colon, settle = symbol.upper().partition(":")
    base, slash, quote = pair.partition("/")
    if not colon or not slash or not base or settle != quote:
        raise ValueError(f"a linear swap is BASE/QUOTE:QUOTE, not {symbol!r}")
    return f"{base}-{quote}-SWAP"


def instrument_swap(inst_id: str, tick_sz: str, ct_val: str, list_ms: int) -> Payload:
    """A SWAP entry of `public/instruments`, shaped like the recorded ones (linear, USDT)."""
    base, quote, _ = inst_id.split("-")
    return {
        "alias": "", "baseCcy": "", "category": "1", "ctMult": "1", "ctType": "linear",
        "ctVal": ct_val, "ctValCcy": base, "expTime": "", "instFamily": f"{base}-{quote}",
        "instId": inst_id, "instType": "SWAP", "lever": "100", "listTime": str(list_ms),
        "lotSz": "1", "maxIcebergSz": "100000000", "maxLmtSz": "100000000", "maxMktSz": "5000",
        "maxStopSz": "5000", "maxTriggerSz": "100000000", "maxTwapSz": "100000000",
        "minSz": "1", "optType": "", "quoteCcy": "", "settleCcy": quote, "state": "live",
        "stk": "", "tickSz": tick_sz, "uly": f"{base}-{quote}",
    }  # fmt: skip


def funding_row(
    inst_id: str, rate: Decimal, next_rate: Decimal | None, funding_ms: int, ts_ms: int
) -> Payload:
    """A `funding-rate` row: `fundingTime` is when the coming payment settles at
    `fundingRate`; `nextFundingRate` ("" when not forecast) the one after, at
    `nextFundingTime`."""
    return {
        "fundingRate": fmt(rate),
        "fundingTime": str(funding_ms),
        "instId": inst_id,
        "instType": "SWAP",
        "interestRate": "0.0001",
        "maxFundingRate": "0.00375",
        "method": "current_period",
        "minFundingRate": "-0.00375",
        "nextFundingRate": "" if next_rate is None else fmt(next_rate),
        "nextFundingTime": str(funding_ms + FUNDING_PERIOD_MS),
        "premium": "0.0000512",
        "settFundingRate": "0.0001",
        "settState": "settled",
        "ts": str(ts_ms),
    }


def mark_row(inst_id: str, mark: Decimal, ts_ms: int, inst_type: str = "SWAP") -> Payload:
    """A `mark-price` row (OKX's feed has no index price: that is `index-tickers`)."""
    return {"instType": inst_type, "instId": inst_id, "markPx": fmt(mark), "ts": str(ts_ms)}


def index_of(inst_id: str) -> str:
    """A contract's index (its `uly`): 'BTC-USDT-SWAP' -> 'BTC-USDT'."""
    return inst_id.rsplit("-", 1)[0]


def index_row(index: str, px: Decimal, ts_ms: int) -> Payload:
    """An `index-tickers` row, shaped as OKX's (24 h figures: the price itself here)."""
    p = fmt(px)
    return {
        "instId": index, "idxPx": p, "high24h": p, "low24h": p, "open24h": p,
        "sodUtc0": p, "sodUtc8": p, "ts": str(ts_ms),
    }  # fmt: skip


def open_interest_row(
    inst_id: str, oi: Decimal, ct_val: Decimal, mark: Decimal, ts_ms: int
) -> Payload:
    """An `open-interest` row (and `public/open-interest`'s): `oi` in contracts, `oiCcy` in
    the base currency, `oiUsd` in USD."""
    coins = oi * ct_val
    return {
        "instType": "SWAP",
        "instId": inst_id,
        "oi": fmt(oi),
        "oiCcy": fmt(coins),
        "oiUsd": fmt(round(coins * mark, 2)),
        "ts": str(ts_ms),
    }


def liquidation_item(inst_id: str, side: str, sz: Decimal, bk_px: Decimal, ts_ms: int) -> Payload:
    """One `liquidation-orders` data item: one instrument's liquidation, one detail."""
    uly = inst_id.rsplit("-", 1)[0]
    detail = {
        "bkLoss": "0",
        "bkPx": fmt(bk_px),
        "ccy": "",
        "posSide": "long" if side == "sell" else "short",
        "side": side,
        "sz": fmt(sz),
        "ts": str(ts_ms),
    }
    return {"details": [detail], "instFamily": uly, "instId": inst_id, "instType": "SWAP",
            "uly": uly}  # fmt: skip


def liquidation_frame(inst_type: str, items: list[Payload]) -> Payload:
    return {"arg": {"channel": "liquidation-orders", "instType": inst_type}, "data": items}


@dataclass(slots=True)
class SwapState:
    """The derivatives side of one synthetic SWAP: funding, mark price, open interest."""

    inst_id: str
    ct_val: Decimal
    rate: Decimal = Decimal("0.0001")
    next_rate: Decimal | None = Decimal("0.00012")
    mark: Decimal = Decimal(0)
    oi: Decimal = Decimal(100_000)
    index: Decimal = Decimal(0)

    def funding(self, ts_ms: int) -> Payload:
        funding_ms = (ts_ms // FUNDING_PERIOD_MS + 1) * FUNDING_PERIOD_MS
        return funding_row(self.inst_id, self.rate, self.next_rate, funding_ms, ts_ms)

    def frame(
        self, channel: str, last: Decimal, tick: Decimal, ts_ms: int, rng: random.Random
    ) -> Payload:
        """The next frame of `channel`, the state moved first (around the last price)."""
        if channel == "funding-rate":
            if rng.random() < 0.4:
                self.rate += Decimal(rng.choice((-1, 1))) * Decimal("0.000001")
            if rng.random() < 0.2:
                self.next_rate = None if self.next_rate is not None else self.rate
            return push(channel, self.inst_id, [self.funding(ts_ms)])
        if channel == "mark-price":
            self.mark = max(tick, last + tick * rng.randint(-3, 3))
            return push(channel, self.inst_id, [mark_row(self.inst_id, self.mark, ts_ms)])
        if channel == INDEX_CHANNEL:
            self.index = max(tick, last + tick * rng.randint(-2, 2))
            uly = index_of(self.inst_id)
            return push(channel, uly, [index_row(uly, self.index, ts_ms)])
        if channel == "open-interest":
            self.oi = max(Decimal(0), self.oi + rng.randint(-500, 500))
            row = open_interest_row(self.inst_id, self.oi, self.ct_val, self.mark or last, ts_ms)
            return push(channel, self.inst_id, [row])
        if channel == "liquidation-orders":
            items = [
                liquidation_item(
                    self.inst_id,
                    rng.choice(("buy", "sell")),
                    Decimal(rng.randint(1, 400)),
                    max(tick, last + tick * rng.randint(-20, 20)),
                    ts_ms,
                )
                for _ in range(rng.randint(1, 2))
            ]
            return liquidation_frame("SWAP", items)
        raise ValueError(f"not a derivatives channel: {channel!r}")


def push(channel: str, inst_id: str, rows: list[Payload]) -> Payload:
    return {"arg": {"channel": channel, "instId": inst_id}, "data": rows}


__all__ = [
    "CHANNELS",
    "CONTRACT_TYPES",
    "FUNDING_PERIOD_MS",
    "INDEX_CHANNEL",
    "INSTRUMENT_CHANNELS",
    "TYPE_CHANNELS",
    "SwapState",
    "funding_row",
    "index_of",
    "index_row",
    "instrument_swap",
    "liquidation_frame",
    "liquidation_item",
    "mark_row",
    "open_interest_row",
    "swap_inst_id",
]
