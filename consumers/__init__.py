"""The consumer library for bots: follow markets from Redis into PyArrow ring buffers."""

from consumers.consumer import Consumer, ConsumerStats
from consumers.ringbuffer import Column, RingBuffer, RingBufferError
from marketbus.models import Channel, Record, Ticker, Trade

__all__ = [
    "Channel",
    "Column",
    "Consumer",
    "ConsumerStats",
    "Record",
    "RingBuffer",
    "RingBufferError",
    "Ticker",
    "Trade",
]
