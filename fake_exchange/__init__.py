"""A fake Binance spot exchange for tests: replayed or synthetic market data over the real
Binance websocket/REST protocol, so `ccxt.pro.binance` runs against it with only its URLs
changed; `FakeOkx` and `FakeBybit` do the same for OKX v5 and Bybit v5 public. See
docs/fake-exchange.md.
"""

from fake_exchange.bybit import (
    BybitReplaySource,
    BybitSentFrame,
    BybitSyntheticSource,
    FakeBybit,
)
from fake_exchange.faults import Faults
from fake_exchange.okx import FakeOkx, OkxReplaySource, OkxSentFrame, OkxSyntheticSource
from fake_exchange.recording import bundled_recording
from fake_exchange.server import FakeExchange, SentFrame
from fake_exchange.sources import Event, FrameSource, ReplaySource, SyntheticSource

__all__ = [
    "BybitReplaySource",
    "BybitSentFrame",
    "BybitSyntheticSource",
    "Event",
    "FakeBybit",
    "FakeExchange",
    "FakeOkx",
    "Faults",
    "FrameSource",
    "OkxReplaySource",
    "OkxSentFrame",
    "OkxSyntheticSource",
    "ReplaySource",
    "SentFrame",
    "SyntheticSource",
    "bundled_recording",
]
