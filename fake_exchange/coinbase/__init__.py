"""A fake Coinbase Advanced Trade exchange (public market data) for tests: replayed or synthetic
data over Coinbase's real websocket/REST protocol, so `ccxt.pro.coinbase` runs against it with
only its URLs changed. See docs/fake-exchange.md, section "Coinbase".
"""

from fake_exchange.coinbase.recording import coinbase_recording
from fake_exchange.coinbase.replay import CoinbaseReplaySource
from fake_exchange.coinbase.server import CoinbaseSentFrame, FakeCoinbase
from fake_exchange.coinbase.source import CoinbaseEvent, CoinbaseFrameSource
from fake_exchange.coinbase.synthetic import CoinbaseSyntheticSource

__all__ = [
    "CoinbaseEvent",
    "CoinbaseFrameSource",
    "CoinbaseReplaySource",
    "CoinbaseSentFrame",
    "CoinbaseSyntheticSource",
    "FakeCoinbase",
    "coinbase_recording",
]
