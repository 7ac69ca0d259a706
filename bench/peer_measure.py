"""What the peer figures read: /proc counters of a process, and Redis' side of a run.

Records are counted by ``XINFO STREAM`` ``entries-added`` (every XADD ever accepted; XLEN
would stop at MAXLEN), bytes per entry by ``MEMORY USAGE key SAMPLES 0`` over ``XLEN``, and
losses per market from the trade ids each stream holds against the ids the fake wrote.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from marketbus import codec

CLK_TCK = os.sysconf("SC_CLK_TCK")

TradeId = Callable[[Mapping[bytes, bytes]], int]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/{pid}/status")


def rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmRSS:") / 1024


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the highest RSS since start or since :func:`reset_peak`."""
    return _status_kb(pid, "VmHWM:") / 1024


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (``clear_refs`` 5, Linux >= 4.0), so each load's peak
    is its own; False where not permitted (then the peak is since the process started)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class Snap:
    """Counters at one instant of a run."""

    t: float
    entries: int
    pub_cpu: float
    redis_cpu: float
    fake_cpu: float


async def entries_added(r: Any, keys: Iterable[str]) -> int:
    """Sum of ``entries-added`` over the streams that exist."""
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.xinfo_stream(k)
    total = 0
    for res in await pipe.execute(raise_on_error=False):
        if isinstance(res, Exception):
            continue  # no such stream yet
        total += int(res["entries-added"])
    return total


async def snap(r: Any, keys: list[str], pub: int, redis_pid: int, fake: int) -> Snap:
    n = await entries_added(r, keys)
    return Snap(time.monotonic(), n, cpu_s(pub), cpu_s(redis_pid), cpu_s(fake))


async def bytes_per_entry(r: Any, keys: Iterable[str]) -> float | None:
    used = entries = 0
    for k in keys:
        n = int(await r.xlen(k))
        if n:
            entries += n
            used += int(await r.execute_command("MEMORY", "USAGE", k, "SAMPLES", "0"))
    return used / entries if entries else None


async def stream_ids(r: Any, key: str, trade_id: TradeId, page: int = 20_000) -> list[int]:
    """Every trade id a stream holds, in stream order."""
    out: list[int] = []
    start = "-"
    while True:
        rows = await r.xrange(key, min=start, max="+", count=page)
        out.extend(trade_id(fields) for _, fields in rows)
        if len(rows) < page:
            return out
        last = rows[-1][0].decode()
        ms, seq = last.split("-")
        start = f"{ms}-{int(seq) + 1}"


def marketbus_id(fields: Mapping[bytes, bytes]) -> int:
    """The trade id of a marketbus entry (``d`` field, msgpack; see docs/wire.md)."""
    _, values = codec.unpack(codec.data_of(fields))
    return int(values[6])


def cryptofeed_id(fields: Mapping[bytes, bytes]) -> int:
    """cryptofeed's ``TradeStream`` writes ``Trade.to_dict()`` as flat fields; ``id`` is the
    aggTrade's ``a`` as text (``str(msg['a'])`` in its Binance feed)."""
    return int(fields[b"id"])


@dataclass(frozen=True)
class Losses:
    sent: int
    stored: int
    lost: int
    duplicates: int
    foreign: int
    per_market: dict[str, int]


def losses(sent: Mapping[str, tuple[int, int]], stored: Mapping[str, list[int]]) -> Losses:
    """Per market, the ids ``lo..hi`` the fake wrote against the ids its stream holds."""
    lost = dup = foreign = n_sent = n_stored = 0
    per: dict[str, int] = {}
    for market, (lo, hi) in sent.items():
        ids = stored.get(market, [])
        inside = [i for i in ids if lo <= i <= hi]
        distinct = len(set(inside))
        n_sent += hi - lo + 1
        n_stored += len(ids)
        per[market] = (hi - lo + 1) - distinct
        lost += per[market]
        dup += len(inside) - distinct
        foreign += len(ids) - len(inside)
    return Losses(n_sent, n_stored, lost, dup, foreign, per)


__all__ = [
    "Losses",
    "Snap",
    "bytes_per_entry",
    "cpu_s",
    "cryptofeed_id",
    "entries_added",
    "losses",
    "marketbus_id",
    "peak_rss_mb",
    "reset_peak",
    "rss_mb",
    "snap",
    "stream_ids",
]
