"""How a backfill pages an exchange's REST history: one time range of one market, oldest first.

The client is anything with CCXT's ``fetch_trades`` / ``fetch_ohlcv`` (:class:`RestSource`);
the command line hands in CCXT's async client, the tests a small fake. It raises our own
errors (:mod:`marketbus.errors`): a :class:`~marketbus.errors.TransientError` is retried
here, after its ``retry_after`` (an exchange's 429/418 ``Retry-After``) or an exponential
backoff; anything else ends the backfill.

Three ways to page trades, by exchange (:data:`PROFILES`):

- ``window`` (Binance ``GET /api/v3/aggTrades``): ``fetch_trades(s, since, 1000,
  {"until": end})``, windows of at most an hour (Binance refuses more). A full page ends at
  some millisecond ``top``: its trades before ``top`` are kept, the next page starts at
  ``top`` (so no trade is fetched twice and none is stepped over). A full page inside one
  millisecond goes on by id (``{"fromId": last + 1}``) through that millisecond.
- ``backward`` (OKX ``GET /api/v5/market/history-trades``, which pages only towards the
  past): per hour-window, ``{"type": "2", "after": window end}`` (older than a time), then
  ``{"type": "1", "after": oldest id}`` until a trade before the window shows; the window's
  trades are handed out oldest first, so the range still progresses forward.
- ``since`` (any other exchange): ``fetch_trades(s, since, limit)`` from the last
  millisecond seen; an empty page (or one past the range) ends it. A full page inside one
  millisecond skips the rest of it (counted in ``skipped_ms``).

Candles: ``fetch_ohlcv(s, interval, since, limit)`` from the range's first open time on, the
next page after the last candle (an empty page: the next ``limit`` intervals), keeping only
closed candles (their interval ended before ``closed_before``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, Protocol, TypeVar

import structlog

from marketbus.errors import TransientError
from marketbus.models import INTERVALS_MS

log = structlog.get_logger("marketbus.archive")

HOUR_MS = 3_600_000
T = TypeVar("T")


class RestSource(Protocol):
    """What a backfill needs of an exchange client: CCXT's async methods, our errors."""

    async def fetch_trades(
        self,
        symbol: str,
        since: int | None = None,
        limit: int | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]: ...

    async def fetch_ohlcv(
        self,
        symbol: str,
        timeframe: str = "1m",
        since: int | None = None,
        limit: int | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> list[list[Any]]: ...


@dataclass(frozen=True, slots=True)
class Profile:
    """How one exchange's history is paged."""

    trades: Literal["window", "backward", "since"]
    trade_limit: int
    ohlcv_limit: int
    trade_params: Mapping[str, Any] | None = None


PROFILES: dict[str, Profile] = {
    "binance": Profile("window", 1_000, 1_000),
    "okx": Profile("backward", 100, 100, {"method": "publicGetMarketHistoryTrades"}),
}
DEFAULT_PROFILE = Profile("since", 1_000, 500)


def profile(exchange: str) -> Profile:
    return PROFILES.get(exchange, DEFAULT_PROFILE)


@dataclass(frozen=True, slots=True)
class Page:
    """Rows of one range, oldest first, and how far the range is now fetched: every row with a
    time before ``done_to`` was handed out (in this page or an earlier one)."""

    rows: list[Any]
    done_to: int
    skipped_ms: tuple[int, ...] = ()


@dataclass
class Retry:
    """How failed requests are retried (``TransientError`` only)."""

    attempts: int = 10
    min_s: float = 0.5
    max_s: float = 60.0
    max_wait_s: float = 900.0
    """A longer ``Retry-After`` (a long ban) is not waited out: the backfill stops."""
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    retries: int = 0
    waited_s: float = 0.0

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        delay = self.min_s
        for attempt in range(1, self.attempts + 1):
            try:
                return await fn()
            except TransientError as e:
                if attempt == self.attempts:
                    raise
                if e.retry_after is not None:  # the exchange said how long (429/418)
                    if e.retry_after > self.max_wait_s:
                        raise
                    wait = e.retry_after
                else:
                    wait, delay = delay, min(delay * 2, self.max_s)
                wait += random.uniform(0, 0.1 * self.min_s)  # jitter
                self.retries += 1
                self.waited_s += wait
                log.warning("backfill_retry", error=str(e)[:300], wait_s=round(wait, 3),
                            attempt=attempt)  # fmt: skip
                await self.sleep(wait)
        raise AssertionError("unreachable")  # the loop returns or raises


def trade_ts(t: Mapping[str, Any]) -> int:
    ts = t.get("timestamp")
    return int(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else -1


def _int_id(t: Mapping[str, Any]) -> int | None:
    try:
        return int(t["id"])
    except (KeyError, TypeError, ValueError):
        return None


async def trade_pages(
    client: RestSource,
    symbol: str,
    start_ms: int,
    end_ms: int,
    prof: Profile,
    retry: Retry,
) -> AsyncIterator[Page]:
    """Every trade of ``symbol`` with ``start_ms <= ts < end_ms``, page by page."""
    pager = {"window": _window, "backward": _backward, "since": _since}[prof.trades]
    async for page in pager(client, symbol, start_ms, end_ms, prof, retry):
        yield page


async def _window(
    client: RestSource, symbol: str, start_ms: int, end_ms: int, prof: Profile, retry: Retry
) -> AsyncIterator[Page]:
    cursor, limit = start_ms, prof.trade_limit
    while cursor < end_ms:
        w_end = min(end_ms, cursor + HOUR_MS)  # Binance: at most an hour, ends inclusive
        got = await retry.call(
            partial(client.fetch_trades, symbol, cursor, limit, {"until": w_end - 1})
        )
        rows = [t for t in got if cursor <= trade_ts(t) < w_end]
        if len(got) < limit:
            yield Page(rows, w_end)
            cursor = w_end
            continue
        top = max(trade_ts(t) for t in got)
        if top > cursor:
            yield Page([t for t in rows if trade_ts(t) < top], top)
            cursor = top
            continue
        # a whole page inside one millisecond: through it by id
        yield Page(rows, cursor)
        async for page in _by_id(client, symbol, cursor, got, limit, retry):
            yield page
        cursor += 1


async def _by_id(
    client: RestSource,
    symbol: str,
    ms: int,
    got: list[dict[str, Any]],
    limit: int,
    retry: Retry,
) -> AsyncIterator[Page]:
    """The rest of millisecond ``ms`` after a full page ``got`` of it, by ``fromId``."""
    while len(got) >= limit:
        last = max((i for i in map(_int_id, got) if i is not None), default=None)
        if last is None:
            return
        got = await retry.call(
            partial(client.fetch_trades, symbol, None, limit, {"fromId": last + 1})
        )
        rows = [t for t in got if trade_ts(t) == ms]
        yield Page(rows, ms + 1 if len(rows) < len(got) or len(got) < limit else ms)
        if len(rows) < len(got):
            return


async def _backward(
    client: RestSource, symbol: str, start_ms: int, end_ms: int, prof: Profile, retry: Retry
) -> AsyncIterator[Page]:
    base = dict(prof.trade_params or {})
    cursor, limit = start_ms, prof.trade_limit
    while cursor < end_ms:
        w_end = min(end_ms, cursor + HOUR_MS)
        window: dict[str, dict[str, Any]] = {}
        params: dict[str, Any] = {**base, "type": "2", "after": w_end}
        while True:
            got = await retry.call(partial(client.fetch_trades, symbol, None, limit, params))
            for t in got:
                if cursor <= trade_ts(t) < w_end:
                    window[str(t.get("id"))] = t
            ids = [i for i in map(_int_id, got) if i is not None]
            if not got or not ids or min(trade_ts(t) for t in got) < cursor:
                break  # the start of the window (or of the exchange's history) reached
            params = {**base, "type": "1", "after": min(ids)}
        rows = sorted(window.values(), key=lambda t: (trade_ts(t), _int_id(t) or 0))
        yield Page(rows, w_end)
        cursor = w_end


async def _since(
    client: RestSource, symbol: str, start_ms: int, end_ms: int, prof: Profile, retry: Retry
) -> AsyncIterator[Page]:
    cursor, limit = start_ms, prof.trade_limit
    while cursor < end_ms:
        got = await retry.call(partial(client.fetch_trades, symbol, cursor, limit))
        got = [t for t in got if trade_ts(t) >= cursor]
        if not got:
            yield Page([], end_ms)
            return
        rows = [t for t in got if trade_ts(t) < end_ms]
        top = max(trade_ts(t) for t in got)
        if top >= end_ms or (top == cursor and len(got) < limit):
            yield Page(rows, end_ms)
            return
        if top > cursor:
            yield Page([t for t in rows if trade_ts(t) < top], top)
            cursor = top
        else:  # a full page in one millisecond and no way to go on inside it
            yield Page(rows, cursor + 1, skipped_ms=(cursor,))
            cursor += 1


async def candle_pages(
    client: RestSource,
    symbol: str,
    interval: str,
    start_ms: int,
    end_ms: int,
    closed_before: int,
    prof: Profile,
    retry: Retry,
) -> AsyncIterator[Page]:
    """Closed candles of ``interval`` opening in ``[start_ms, end_ms)`` (rows: CCXT's
    ``[open_ms, o, h, l, c, v]``), page by page."""
    width = INTERVALS_MS[interval]
    limit = prof.ohlcv_limit
    cursor = -(-start_ms // width) * width
    end = min(end_ms, closed_before - closed_before % width)
    while cursor < end:
        got = await retry.call(partial(client.fetch_ohlcv, symbol, interval, cursor, limit))
        rows = sorted(
            (r for r in got if cursor <= int(r[0]) < end and int(r[0]) % width == cursor % width),
            key=lambda r: int(r[0]),
        )
        nxt = int(rows[-1][0]) + width if rows else cursor + limit * width
        if not rows and any(int(r[0]) >= end for r in got):
            nxt = end
        yield Page(rows, min(nxt, end))
        cursor = nxt


def first_open(start_ms: int, interval: str) -> int:
    width = INTERVALS_MS[interval]
    return -(-start_ms // width) * width


__all__ = [
    "DEFAULT_PROFILE",
    "PROFILES",
    "Page",
    "Profile",
    "RestSource",
    "Retry",
    "candle_pages",
    "first_open",
    "profile",
    "trade_pages",
    "trade_ts",
]
