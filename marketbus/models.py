"""The records marketbus carries: validated once at the publisher's boundary.

Prices and sizes are floats (what bots compute with); times are integers:
``ts_ms`` is the exchange's event time in ms, ``recv_ns`` our receive time
(``time.time_ns()``), and the Redis entry id adds the server's write time.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
INT64_MAX = 2**63 - 1  # times are int64 columns in consumers' buffers


class Channel(StrEnum):
    TICKER = "ticker"
    TRADES = "trades"


def _finite(v: float | None) -> float | None:
    if v is not None and not math.isfinite(v):
        raise ValueError("must be finite")
    return v


Price = Annotated[float, Field(gt=0), AfterValidator(_finite)]
Size = Annotated[float, Field(ge=0), AfterValidator(_finite)]
OptPrice = Annotated[float | None, Field(default=None, gt=0), AfterValidator(_finite)]
OptSize = Annotated[float | None, Field(default=None, ge=0), AfterValidator(_finite)]
Side = Literal["buy", "sell"]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    exchange: str = Field(min_length=1, max_length=64)
    symbol: str = Field(min_length=1, max_length=128)
    ts_ms: int = Field(ge=0, le=INT64_MAX, description="exchange event time, ms since epoch")
    recv_ns: int = Field(ge=0, le=INT64_MAX, description="our receive time, ns since epoch")


class Ticker(_Record):
    """Best bid/ask, last price and 24 h statistics where the exchange gives them."""

    channel: Literal[Channel.TICKER] = Channel.TICKER
    last: OptPrice = None
    bid: OptPrice = None
    ask: OptPrice = None
    bid_size: OptSize = None
    ask_size: OptSize = None
    open: OptPrice = None
    high: OptPrice = None
    low: OptPrice = None
    close: OptPrice = None
    base_volume: OptSize = None
    quote_volume: OptSize = None


class Trade(_Record):
    """One public trade; ``id`` is the exchange's, unique and (on Binance) consecutive."""

    channel: Literal[Channel.TRADES] = Channel.TRADES
    id: str = Field(min_length=1, max_length=128)
    price: Price
    amount: Size
    side: Side | None = None


Record = Ticker | Trade

MODELS: dict[Channel, type[Ticker] | type[Trade]] = {
    Channel.TICKER: Ticker,
    Channel.TRADES: Trade,
}
