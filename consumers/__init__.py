"""The consumer library for bots: follow markets from Redis into PyArrow ring buffers."""

from consumers.candles import CandleBuilder, interval_ms
from consumers.consumer import Consumer, ConsumerStats
from consumers.ringbuffer import Column, RingBuffer, RingBufferError
from marketbus.models import Channel, Record, Ticker, Trade

__all__ = [
    "CandleBuilder",
    "Channel",
    "Column",
    "Consumer",
    "ConsumerStats",
    "Record",
    "RingBuffer",
    "RingBufferError",
    "Ticker",
    "Trade",
    "interval_ms",
]
