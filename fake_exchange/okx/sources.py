"""OKX frame sources, one name to import them by: each part lives in a module of its own.

`frame_source` (the event and the protocol), `replay` and `synthetic` (the two sources),
`recording` (the recorded session), `candles` (candles from trades), `instruments` (names).
"""

from __future__ import annotations

from fake_exchange.okx.candles import CandleBuilder
from fake_exchange.okx.frame_source import SEQ_START, OkxEvent, OkxFrameSource
from fake_exchange.okx.instruments import INST_TYPES, inst_id_of, unified_symbols
from fake_exchange.okx.recording import (
    OkxRecording,
    RecordedPush,
    load_okx_recording,
    okx_recording,
)
from fake_exchange.okx.replay import REPLAY_CHANNELS, OkxReplaySource
from fake_exchange.okx.synthetic import SYNTHETIC_CHANNELS, OkxSyntheticSource
from fake_exchange.sources import Clock

__all__ = [
    "INST_TYPES",
    "REPLAY_CHANNELS",
    "SEQ_START",
    "SYNTHETIC_CHANNELS",
    "CandleBuilder",
    "Clock",
    "OkxEvent",
    "OkxFrameSource",
    "OkxRecording",
    "OkxReplaySource",
    "OkxSyntheticSource",
    "RecordedPush",
    "inst_id_of",
    "load_okx_recording",
    "okx_recording",
    "unified_symbols",
]
