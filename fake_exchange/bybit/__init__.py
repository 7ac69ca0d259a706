"""A fake Bybit v5 public exchange (spot and linear) for tests: replayed or synthetic market data
over Bybit's real websocket/REST protocol, so `ccxt.pro.bybit` runs against it with only its
URLs changed. See docs/fake-exchange.md, section "Bybit".
"""

from fake_exchange.bybit.recording import bybit_recording
from fake_exchange.bybit.replay import BybitReplaySource
from fake_exchange.bybit.server import BybitSentFrame, FakeBybit
from fake_exchange.bybit.source import BybitEvent, BybitFrameSource
from fake_exchange.bybit.synthetic import BybitSyntheticSource

__all__ = [
    "BybitEvent",
    "BybitFrameSource",
    "BybitReplaySource",
    "BybitSentFrame",
    "BybitSyntheticSource",
    "FakeBybit",
    "bybit_recording",
]
