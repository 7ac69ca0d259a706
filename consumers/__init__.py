"""The consumer library for bots: follow markets from Redis into PyArrow ring buffers."""

from consumers.books import Best, LatestBook
from consumers.candles import CandleBuilder, interval_ms
from consumers.consumer import Consumer, ConsumerStats
from consumers.exchange_candles import CandleSeries, ExchangeCandles
from consumers.ringbuffer import Column, RingBuffer, RingBufferError
from marketbus.models import (
    BookTop,
    Candle,
    Channel,
    Funding,
    Liquidation,
    MarkPrice,
    OpenInterest,
    Record,
    Ticker,
    Trade,
)

__all__ = [
    "Best",
    "BookTop",
    "Candle",
    "CandleBuilder",
    "CandleSeries",
    "Channel",
    "Column",
    "Consumer",
    "ConsumerStats",
    "ExchangeCandles",
    "Funding",
    "LatestBook",
    "Liquidation",
    "MarkPrice",
    "OpenInterest",
    "Record",
    "RingBuffer",
    "RingBufferError",
    "Ticker",
    "Trade",
    "interval_ms",
]
