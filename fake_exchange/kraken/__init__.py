"""A fake Kraken spot exchange (public market data) for tests: replayed or synthetic data over
Kraken's real websocket v2 and REST protocol, so `ccxt.pro.kraken` runs against it with only
its URLs changed; the recorded v1 frames replay unchanged on the v1 path. See
docs/fake-exchange.md, section "Kraken".
"""

from fake_exchange.kraken.recording import kraken_recording
from fake_exchange.kraken.replay import KrakenReplaySource
from fake_exchange.kraken.server import FakeKraken, KrakenSentFrame
from fake_exchange.kraken.source import KrakenEvent, KrakenFrameSource
from fake_exchange.kraken.synthetic import KrakenSyntheticSource

__all__ = [
    "FakeKraken",
    "KrakenEvent",
    "KrakenFrameSource",
    "KrakenReplaySource",
    "KrakenSentFrame",
    "KrakenSyntheticSource",
    "kraken_recording",
]
