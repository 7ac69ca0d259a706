"""Shared pieces of the benchmark suite: figures, repeats, quiet logs, RSS, bounded waits."""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog

SYMBOLS = 50
"""Markets used by the publisher, consumer and latency figures (x2 channels = 100 streams)."""


@dataclass
class Figure:
    """One reported figure: repeated runs of a value, and the reference measured alongside.

    ``better`` says which way is good ("higher" for rates, "lower" for times). ``target`` is a
    human rule (e.g. ">= 0.25x ref"), checked by ``met`` when set by the figure's code.
    """

    name: str
    unit: str
    runs: list[float]
    better: str = "higher"
    reference: str | None = None
    reference_runs: list[float] = field(default_factory=list)
    target: str | None = None
    met: bool | None = None
    failed: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def min(self) -> float:
        return min(self.runs) if self.runs else float("nan")

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else float("nan")

    @property
    def best(self) -> float:
        if not self.runs:
            return float("nan")
        return max(self.runs) if self.better == "higher" else min(self.runs)

    @property
    def ref_median(self) -> float | None:
        return statistics.median(self.reference_runs) if self.reference_runs else None

    @property
    def ratio(self) -> float | None:
        ref = self.ref_median
        if ref is None or ref == 0 or not self.runs:
            return None
        return self.median / ref

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(min=self.min, median=self.median, ref_median=self.ref_median, ratio=self.ratio)
        return d


@dataclass
class Context:
    """Options every figure sees."""

    quick: bool = False
    repeats: int = 3
    profile_dir: str | None = None

    def pick(self, full: int, quick: int) -> int:
        return quick if self.quick else full


def quiet_logs() -> None:
    """Warnings and errors only (the table is the output), on stderr."""
    from marketbus.logs import configure

    configure(level="warning", json=False)
    logging.getLogger("fake_exchange").setLevel(logging.WARNING)
    logging.getLogger("ccxt").setLevel(logging.WARNING)
    _ = structlog


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size from /proc (Linux)."""
    with open(f"/proc/{pid or os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc status")


async def wait_until(
    cond: Callable[[], bool | Awaitable[bool]],
    timeout: float,
    what: str,
    interval: float = 0.01,
) -> None:
    """Poll ``cond`` until true; TimeoutError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        res = cond()
        if not isinstance(res, bool):
            res = await res
        if res:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def timed_us(fn: Callable[[], object], n: int) -> float:
    """Mean µs per call of ``fn`` over ``n`` calls."""
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


class Profiler:
    """pyinstrument around a block when ``--profile DIR`` is given and pyinstrument exists."""

    def __init__(self, ctx: Context, name: str) -> None:
        self.ctx = ctx
        self.name = name
        self._p: Any = None

    def __enter__(self) -> Profiler:
        if self.ctx.profile_dir is None:
            return self
        try:
            from pyinstrument import Profiler as _P
        except ImportError:
            return self
        self._p = _P(async_mode="disabled", interval=0.0005)
        self._p.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._p is None or self.ctx.profile_dir is None:
            return
        self._p.stop()
        os.makedirs(self.ctx.profile_dir, exist_ok=True)
        path = os.path.join(self.ctx.profile_dir, f"{self.name}.txt")
        with open(path, "w") as f:
            f.write(self._p.output_text(unicode=True, color=False, show_all=False))


LOOP_ENV = "MARKETBUS_BENCH_LOOP"


def use_loop(name: str | None = None, *, publisher: bool = False) -> str:
    """Install the event loop a benchmark process runs on, here and (when given) via the
    environment in the child processes.

    ``--loop asyncio|uvloop`` puts every process on that loop. Without it each runs as the
    product does: a publisher on ``settings.loop``'s default (``auto``: uvloop where
    installed, as ``marketbus publish``), everything else (fake exchange, consumers, the
    bare reader) on asyncio's default loop.
    """
    if name is not None:
        os.environ[LOOP_ENV] = name
    name = os.environ.get(LOOP_ENV) or ("auto" if publisher else "asyncio")
    from marketbus.aio import loop_factory

    factory = loop_factory(name)
    if factory is not None:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return "uvloop"
    return "asyncio"
