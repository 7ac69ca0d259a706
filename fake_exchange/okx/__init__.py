"""A fake OKX v5 public exchange for tests: replayed or synthetic market data over OKX's real
websocket/REST protocol, so `ccxt.pro.okx` runs against it with only its URLs changed.
See docs/fake-exchange.md, section "OKX".
"""

from fake_exchange.okx.book import OkxBook
from fake_exchange.okx.server import FakeOkx, OkxSentFrame
from fake_exchange.okx.sources import (
    OkxEvent,
    OkxFrameSource,
    OkxReplaySource,
    OkxSyntheticSource,
    okx_recording,
)

__all__ = [
    "FakeOkx",
    "OkxBook",
    "OkxEvent",
    "OkxFrameSource",
    "OkxReplaySource",
    "OkxSentFrame",
    "OkxSyntheticSource",
    "okx_recording",
]
