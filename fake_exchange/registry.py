"""Every exchange the fake speaks, in one table: what `marketbus fake-exchange --exchange X` (and
`python -m fake_exchange`) builds and serves. Adding an exchange is its package (sources,
server) plus one entry in `FAKES`.

Light on purpose: the `marketbus` command reads the ids and labels for its help text on every
start, so an entry names its classes by import path and they are loaded only when used.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOLD_S = 2.0
"""`--hold-until-subscribed`: the replay starts this long after the first subscription."""

_HERE = __name__
_BINANCE_SOURCES = ("fake_exchange.sources:ReplaySource", "fake_exchange.sources:SyntheticSource")


@dataclass(frozen=True, slots=True)
class Fake:
    """One exchange: names ("module:Name", or "Name" in `package`) of its replay source
    (called `(recording | None, speed=, loop=)`), its synthetic source (`(n, rate=)`) and its
    server (`(source, host=, port=, hold_until_subscribed=)`)."""

    id: str
    label: str
    package: str
    replay: str
    synthetic: str
    server: str
    sources: tuple[str, ...] = ()
    """The source classes its server takes (default: `replay` and `synthetic`)."""

    def load(self, name: str) -> Any:
        module, _, attr = name.rpartition(":")
        return getattr(importlib.import_module(module or self.package), attr)

    def build_source(
        self, recording: Path | None, speed: float, loop: bool, synthetic: int | None, rate: float
    ) -> Any:
        """Synthetic when `synthetic` symbols are asked for, else a replay (bundled by default)."""
        if synthetic is not None:
            return self.load(self.synthetic)(synthetic, rate=rate)
        return self.load(self.replay)(recording, speed=speed, loop=loop)

    def accepts(self, source: object) -> bool:
        types = tuple(self.load(n) for n in self.sources or (self.replay, self.synthetic))
        return isinstance(source, types)

    def build_server(
        self, source: object, host: str, port: int, hold_until_subscribed: float | None = None
    ) -> Any:
        if not self.accepts(source):
            raise ValueError(f"not a {self.label} source: {source!r}")
        server = self.load(self.server)
        return server(source, host=host, port=port, hold_until_subscribed=hold_until_subscribed)


FAKES: dict[str, Fake] = {
    f.id: f
    for f in (
        Fake("binance", "Binance spot", _HERE, "binance_replay", "binance_synthetic",
             "fake_exchange.server:FakeExchange", _BINANCE_SOURCES),
        Fake("binanceusdm", "Binance USD-M futures", _HERE, "usdm_replay", "usdm_synthetic",
             "fake_exchange.server:FakeExchange", _BINANCE_SOURCES),
        Fake("okx", "OKX v5", "fake_exchange.okx", f"{_HERE}:okx_replay", "OkxSyntheticSource",
             "FakeOkx", ("fake_exchange.okx:OkxReplaySource", "OkxSyntheticSource")),
        Fake("bybit", "Bybit v5 spot and linear", "fake_exchange.bybit", "BybitReplaySource",
             "BybitSyntheticSource", "FakeBybit"),
        Fake("coinbase", "Coinbase Advanced Trade", "fake_exchange.coinbase",
             "CoinbaseReplaySource", "CoinbaseSyntheticSource", "FakeCoinbase"),
        Fake("kraken", "Kraken spot, websocket v2", "fake_exchange.kraken", "KrakenReplaySource",
             "KrakenSyntheticSource", "FakeKraken"),
    )
}  # fmt: skip


def fake(exchange: str) -> Fake:
    """The table's entry, or a ValueError naming the choices."""
    try:
        return FAKES[exchange]
    except KeyError:
        raise ValueError(f"unknown exchange {exchange!r}; use one of {', '.join(FAKES)}") from None


def labels() -> str:
    """'binance (Binance spot), okx (OKX v5), ...' for help texts."""
    return ", ".join(f"{f.id} ({f.label})" for f in FAKES.values())


# Binance spot and USD-M: one fake (`FakeExchange`), two venues, so their builders take one.


def binance_replay(recording: Path | None, *, speed: float, loop: bool) -> Any:
    return _binance_replay("binance", recording, speed, loop)


def usdm_replay(recording: Path | None, *, speed: float, loop: bool) -> Any:
    return _binance_replay("binanceusdm", recording, speed, loop)


def okx_replay(recording: Path | None, *, speed: float, loop: bool) -> Any:
    """Every instrument of the recording (the class's default replays BTC-USDT only)."""
    from fake_exchange.okx import OkxReplaySource

    return OkxReplaySource(recording, speed=speed, loop=loop, instruments=None)


def binance_synthetic(n: int, *, rate: float) -> Any:
    from fake_exchange.sources import SyntheticSource

    return SyntheticSource(n, rate=rate)


def usdm_synthetic(n: int, *, rate: float) -> Any:
    from fake_exchange.binance_frames import USDM
    from fake_exchange.sources import USDM_DEFAULT_CHANNELS, SyntheticSource

    return SyntheticSource(n, rate=rate, venue=USDM, channels=USDM_DEFAULT_CHANNELS)


def _binance_replay(exchange: str, recording: Path | None, speed: float, loop: bool) -> Any:
    from fake_exchange.binance_frames import VENUES
    from fake_exchange.recording import bundled_recording
    from fake_exchange.sources import ReplaySource

    path = recording or bundled_recording(VENUES[exchange])
    return ReplaySource(path, speed=speed, loop=loop)


__all__ = ["FAKES", "HOLD_S", "Fake", "fake", "labels"]
