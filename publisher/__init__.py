"""The publisher: ccxt.pro websockets -> normalized records -> Redis Streams."""

from publisher.app import Publisher
from publisher.sink import StreamSink
from publisher.state import ConnState
from publisher.worker import ExchangeWorker

__all__ = ["ConnState", "ExchangeWorker", "Publisher", "StreamSink"]
