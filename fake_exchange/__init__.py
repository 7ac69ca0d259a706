"""A fake Binance spot exchange for tests: replayed or synthetic market data over the real
Binance websocket/REST protocol, so `ccxt.pro.binance` runs against it with only its URLs
changed; `FakeOkx` and `FakeBybit` do the same for OKX v5 and Bybit v5 public. See
docs/fake-exchange.md.

The names below load on first use: the `marketbus` command reads `fake_exchange.registry` for
its help on every start and should not pay for aiohttp and every exchange's package then.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_WHERE = {
    "BybitReplaySource": "fake_exchange.bybit",
    "BybitSentFrame": "fake_exchange.bybit",
    "BybitSyntheticSource": "fake_exchange.bybit",
    "FakeBybit": "fake_exchange.bybit",
    "Faults": "fake_exchange.faults",
    "FakeOkx": "fake_exchange.okx",
    "OkxReplaySource": "fake_exchange.okx",
    "OkxSentFrame": "fake_exchange.okx",
    "OkxSyntheticSource": "fake_exchange.okx",
    "bundled_recording": "fake_exchange.recording",
    "FakeExchange": "fake_exchange.server",
    "SentFrame": "fake_exchange.server",
    "Event": "fake_exchange.sources",
    "FrameSource": "fake_exchange.sources",
    "ReplaySource": "fake_exchange.sources",
    "SyntheticSource": "fake_exchange.sources",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'fake_exchange' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
