"""What to fetch over REST after a reconnect, so the trades sent during the gap are published.

Pure: no I/O, no clock. The worker (``publisher.worker``) holds the live trades of a symbol
while it backfills, asks :func:`first_request` where to start, fetches a page, asks
:func:`next_cursor` whether to go on, then releases the held trades; the
:class:`~publisher.trade_ids.TradeIdTracker` drops what REST and the websocket both carried,
so each trade is published once.

Three ways to page, chosen per exchange by :func:`backfill_mode` (the profile's ``backfill``):

- ``from_id`` (Binance, ``aggTrade`` stream): ``fetch_trades(symbol, None, limit,
  {"fromId": last_id + 1})`` hits ``GET /api/v3/aggTrades?fromId=``, whose ids are the
  ``a`` ids the ``@aggTrade`` stream carries. Exact: no overlap, no gap.
- ``since`` (any exchange with ``fetchTrades``): ``fetch_trades(symbol, last_ms, limit)``;
  pages overlap at the boundary millisecond and the tracker removes the overlap. A full
  page inside one millisecond is asked again with a doubled limit (up to
  ``MAX_SAME_MS_LIMIT``), never stepped over while the exchange can give more; only when it
  cannot (its own page cap) is the rest of that millisecond skipped, and reported.

- ``back_by_id`` (OKX): ``GET /api/v5/market/history-trades?after=<tradeId>`` gives the
  100 trades before a trade id, newest first, and pages only backwards (OKX's
  ``market/trades``, CCXT's default, holds just the latest 500 with no paging: a longer gap
  was lost there). Pages go back from the first live trade held (or the latest) until they
  reach the last trade published (:func:`back_next`); the trades are then published oldest
  first. Memory: the gap, up to ``MAX_BACK_TRADES`` (past it the oldest part stays a counted
  gap).

The forward modes publish page by page (memory: one page), so a long outage on a busy
market never piles its whole gap up in memory.

Binance's ``@trade`` stream carries trade ids (``t``) that ``aggTrades`` cannot be paged
by, and ``/api/v3/historicalTrades`` is not served by every deployment: no backfill there
(``None``), the gap is only counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from publisher.exchanges import profile
from publisher.profile import BackfillMode

DEFAULT_LIMIT = 1_000
"""Trades per REST page (Binance's maximum for aggTrades)."""
BACK_LIMIT = 100
"""Trades per page paging back (OKX's ``history-trades`` maximum)."""
MAX_BACK_TRADES = 200_000
"""The most trades one backward backfill collects before publishing them."""
MAX_SAME_MS_LIMIT = 16_000
"""The largest page asked for while one millisecond's trades do not fit in a page."""


@dataclass(frozen=True, slots=True)
class BackfillRequest:
    """Arguments of one ``fetch_trades(symbol, since, limit, params)`` call."""

    symbol: str
    since: int | None
    limit: int
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TradeMark:
    """Where a trade sits in a symbol's sequence: its numeric id (if any) and time."""

    id: int | None
    ts_ms: int


def backfill_mode(
    exchange_id: str, trade_stream: str, has_fetch_trades: bool
) -> BackfillMode | None:
    """How this exchange's missed trades can be fetched, or ``None`` when they cannot."""
    return profile(exchange_id).backfill(trade_stream, has_fetch_trades)


def first_cursor(mode: BackfillMode, last: TradeMark | None) -> int | None:
    """The cursor of the first page after the last trade published, or ``None`` (none yet)."""
    if last is None:
        return None
    if mode is BackfillMode.FROM_ID:
        return None if last.id is None else last.id + 1
    if mode is BackfillMode.BACK_BY_ID:
        return last.id  # the last trade published: paging back stops there
    return last.ts_ms


def request_for(
    mode: BackfillMode, symbol: str, cursor: int, limit: int = DEFAULT_LIMIT
) -> BackfillRequest:
    """The ``fetch_trades`` call for the page starting at ``cursor``."""
    if mode is BackfillMode.FROM_ID:
        return BackfillRequest(symbol, None, limit, {"fromId": cursor})
    if mode is BackfillMode.BACK_BY_ID:
        return back_request(symbol, cursor, limit)
    return BackfillRequest(symbol, cursor, limit)


def back_request(symbol: str, before_id: int | None, limit: int = BACK_LIMIT) -> BackfillRequest:
    """The page of trades older than trade id ``before_id`` (None: the latest), through
    OKX's ``history-trades`` (CCXT's ``fetchTrades`` ``method`` option)."""
    params: dict[str, Any] = {"method": "publicGetMarketHistoryTrades"}
    if before_id is not None:
        params["after"] = str(before_id)  # OKX: "after" = older than this tradeId
    return BackfillRequest(symbol, None, min(limit, BACK_LIMIT), params)


def in_back_page(trade_id: int, last_id: int, before_id: int | None) -> bool:
    """Whether a trade of a backward page belongs to the gap: after the last published, and
    older than the page's start (an id that is not is no trade of this page: an exchange
    whose ids are not monotonic there, as the fake's synthetic history, ends the paging)."""
    return trade_id > last_id and (before_id is None or trade_id < before_id)


def back_next(
    page_ids: Sequence[int],
    last_id: int,
    limit: int = BACK_LIMIT,
    collected: int = 0,
    before_id: int | None = None,
) -> int | None:
    """The trade id the next backward page starts before, or None when done: the page is
    empty or short (nothing older), it reached the last trade published, it held ids that
    are not older than its start, or ``MAX_BACK_TRADES`` were collected."""
    ids = [n for n in page_ids if before_id is None or n < before_id]
    if not ids or len(ids) < limit or collected >= MAX_BACK_TRADES:
        return None
    oldest = min(ids)
    return None if oldest <= last_id + 1 else oldest


@dataclass(frozen=True, slots=True)
class NextPage:
    """The next ``fetch_trades`` page: where it starts and how many trades to ask for.

    ``skipped_ms``: a millisecond whose trades may not have fit in the largest page the
    exchange gives; its trades past that page were not fetched (the caller reports it).
    """

    cursor: int
    limit: int
    skipped_ms: int | None = None


def next_page(
    mode: BackfillMode,
    cursor: int,
    page: Sequence[TradeMark],
    held_first: TradeMark | None,
    limit: int = DEFAULT_LIMIT,
    base_limit: int = DEFAULT_LIMIT,
) -> NextPage | None:
    """The next page, or ``None`` when the gap is closed.

    Closed when REST has nothing more (an empty or short page) or when the pages reached
    the first live trade held back while backfilling (``held_first``).
    """
    if not page:
        return None
    if mode is BackfillMode.FROM_ID:
        ids = [m.id for m in page if m.id is not None]
        if not ids:
            return None
        nxt = max(ids) + 1
        if held_first is not None and held_first.id is not None and nxt >= held_first.id:
            return None
        if len(page) < limit or nxt <= cursor:
            return None
        return NextPage(nxt, base_limit)
    top = max(m.ts_ms for m in page)
    if held_first is not None and top >= held_first.ts_ms:
        return None
    if top > cursor:
        # the page overlaps the next at millisecond ``top``: the tracker drops the overlap
        return NextPage(top, base_limit) if len(page) >= limit else None
    # every trade of the page is in millisecond ``cursor``
    if len(page) >= limit:
        if limit < MAX_SAME_MS_LIMIT:
            return NextPage(cursor, min(limit * 2, MAX_SAME_MS_LIMIT))  # ask that ms again
        return NextPage(cursor + 1, base_limit, skipped_ms=cursor)
    if limit > base_limit and len(page) == limit // 2:
        # we asked for more and got exactly the previous page size back: the exchange caps
        # its pages (or that millisecond held exactly that many: then nothing is skipped,
        # and the report is a false alarm; the next page tells whether more came after)
        return NextPage(cursor + 1, base_limit, skipped_ms=cursor)
    return None


__all__ = [
    "BACK_LIMIT",
    "DEFAULT_LIMIT",
    "MAX_BACK_TRADES",
    "MAX_SAME_MS_LIMIT",
    "BackfillMode",
    "BackfillRequest",
    "NextPage",
    "TradeMark",
    "back_next",
    "back_request",
    "backfill_mode",
    "first_cursor",
    "in_back_page",
    "next_page",
    "request_for",
]
