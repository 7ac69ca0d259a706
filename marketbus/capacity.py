"""How much memory the configured streams may hold: streams x MAXLEN x bytes per entry.

Pure (settings in, bytes out), so ``marketbus doctor`` and the publisher at start can both
hold it against Redis' ``maxmemory``: a stream bounded by ``MAXLEN ~ N`` is bounded in count,
not in bytes, and a Redis that fills up refuses every write (``noeviction``) or evicts streams.

Bytes per entry, as Redis stores them (``d`` + ``h`` fields in the stream's listpacks, entry
ids and node overhead included): 2,000 records of each kind with realistic, varying values
(prices moving around 37,000 with cents, sizes with 4-5 decimals, ids counting up) written
with ``codec.encode`` into redis-server 7.0.15, then ``MEMORY USAGE key SAMPLES 0`` / 2,000.
Measured (two random seeds): trades 192-198, ticker 259, candles 220-233, book 233 / 398 / 625 /
1,092 / 2,181 at 1 / 5 / 10 / 20 / 50 levels a side; of a perpetual (``BTC/USDT:USDT``):
funding 212, mark 152, open interest 170, liquidations 166
(``tests/integration/test_capacity_derivatives.py``). The constants round those up by ~5 % (book: a line through them
that stays above every point), so the estimate errs on the side of "does not fit".
``tests/integration/test_capacity.py`` measures again and fails when a constant is below what
Redis stores or more than a third above it. (docs/wire.md's 172 B a trade had one fixed size
on every trade; varying sizes pack less well.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from marketbus.models import Channel
from marketbus.settings import Settings
from marketbus.symbols import squash

ENTRY_BYTES: Mapping[Channel, int] = {
    Channel.TRADES: 210,
    Channel.TICKER: 290,
    Channel.CANDLES: 245,
    Channel.FUNDING: 225,
    Channel.MARK: 160,
    Channel.OPEN_INTEREST: 180,
    Channel.LIQUIDATIONS: 175,
}
BOOK_BASE_BYTES = 190
BOOK_LEVEL_BYTES = 46  # one bid level and one ask level
TRIM_SLACK = 100
"""``MAXLEN ~ N`` trims whole listpack nodes (``stream-node-max-entries``, 100 by default), so a
stream holds up to about that many entries more than N."""
HEADROOM = 0.9
"""Share of ``maxmemory`` the streams may take: Redis needs the rest for client buffers, the
status keys, replication and AOF rewrite buffers."""


def entry_bytes(channel: Channel, book_depth: int = 20) -> int:
    """Bytes one entry of ``channel`` takes in Redis (book: at ``book_depth`` levels a side)."""
    if channel is Channel.BOOK:
        return BOOK_BASE_BYTES + BOOK_LEVEL_BYTES * book_depth
    return ENTRY_BYTES[channel]


@dataclass(frozen=True)
class ChannelEstimate:
    """The streams of one channel on one exchange."""

    exchange: str
    channel: Channel
    streams: int
    entry_bytes: int
    bytes: int


@dataclass(frozen=True)
class Estimate:
    maxlen: int
    parts: tuple[ChannelEstimate, ...]

    @property
    def streams(self) -> int:
        return sum(p.streams for p in self.parts)

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.parts)


def estimate(settings: Settings) -> Estimate:
    """What the configured streams hold once full (each at ``redis.maxlen`` entries).

    Symbols spelled two ways (``BTCUSDT``, ``BTC/USDT``) count once: they are one stream.
    """
    maxlen = settings.redis.maxlen
    entries = maxlen + TRIM_SLACK
    parts = []
    for ex in settings.exchanges:
        markets = len({squash(s) for s in ex.symbols})
        for ch in ex.channels:
            per = entry_bytes(ch, ex.book_depth)
            parts.append(ChannelEstimate(ex.bus_name, ch, markets, per, markets * entries * per))
    return Estimate(maxlen, tuple(parts))


def fits(needed: int, maxmemory: int, headroom: float = HEADROOM) -> bool:
    """Whether ``needed`` bytes fit in ``maxmemory`` (0: no limit) with the headroom left."""
    return maxmemory <= 0 or needed <= maxmemory * headroom


def human_bytes(n: float) -> str:
    """``1.5 GiB``, ``820 MiB``, ``12 KiB``, ``512 B``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" or abs(n) >= 100 else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


__all__ = ["Estimate", "entry_bytes", "estimate", "fits", "human_bytes"]
