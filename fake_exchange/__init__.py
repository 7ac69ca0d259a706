"""A fake Binance spot exchange for tests: replayed or synthetic market data over the real
Binance websocket/REST protocol, so `ccxt.pro.binance` runs against it with only its URLs
changed. See docs/fake-exchange.md.
"""

from fake_exchange.faults import Faults
from fake_exchange.recording import bundled_recording
from fake_exchange.server import FakeExchange, SentFrame
from fake_exchange.sources import Event, FrameSource, ReplaySource, SyntheticSource

__all__ = [
    "Event",
    "FakeExchange",
    "Faults",
    "FrameSource",
    "ReplaySource",
    "SentFrame",
    "SyntheticSource",
    "bundled_recording",
]
