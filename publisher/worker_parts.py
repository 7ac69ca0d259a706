"""What the parts of an exchange worker share: its state, declared once, and its stats.

:class:`~publisher.worker.ExchangeWorker` is assembled from small parts, one job each:
subscriptions (``publisher.subscribing``), watch loops (``publisher.watching``), REST polling
(``publisher.polling``) and the supervised session itself (``publisher.worker``). The parts
are mixins over :class:`WorkerParts`, which declares the attributes they read and the
methods they call on each other, so each module type-checks on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from marketbus.models import Channel, Record, Ticker, Trade
from marketbus.settings import ExchangeSettings
from marketbus.subscriptions import Change
from marketbus.symbols import SymbolResolver
from publisher.backfill import BackfillMode, TradeMark
from publisher.books import BookGate
from publisher.derivatives import DerivativesGate
from publisher.fast_path import FastPath
from publisher.klines import CandleTracker
from publisher.pacing import Pacer
from publisher.trade_ids import TradeIdTracker

MAX_SYMBOLS_PER_SUBSCRIBE = 200
MAX_BOOK_RESYNCS = 30
"""Book resyncs (gap or bad checksum) per minute per watch before the session is restarted."""

Wanted = Mapping[Channel, Iterable[str]]


class RecordSink(Protocol):
    def put(self, record: Record) -> None: ...


@dataclass
class WorkerStats:
    frames: int = 0
    records: int = 0
    invalid: int = 0
    reconnects: int = 0
    errors: int = 0
    bugs: int = 0
    """Exceptions no boundary maps (our bugs): each one FAILED the worker."""
    last_error: str | None = None
    last_frame_ns: int = 0
    last_backoff_s: float = 0.0
    backfills: int = 0
    backfilled: int = 0
    backfill_skipped_ms: int = 0
    held_overflow: int = 0
    malformed: int = 0
    book_resyncs: int = 0
    subscription_changes: int = 0
    transitions: dict[str, int] = field(default_factory=dict)


@dataclass(eq=False)
class Batch:
    """One watch loop holding the subscription of ``symbols`` on ``channel``."""

    channel: Channel
    symbols: tuple[str, ...]
    task: asyncio.Task[None] | None = None


class WorkerParts:
    """Attributes and cross-part methods of a worker (set and defined by its parts)."""

    name: str  # on the bus (records, keys, status): binance-testnet in sandbox mode
    exchange_id: str  # CCXT's id: the adapter and every per-exchange table
    cfg: ExchangeSettings
    log: Any
    stats: WorkerStats
    markets: list[str]
    config_wanted: dict[Channel, tuple[str, ...]]
    wanted: dict[Channel, tuple[str, ...]]
    active: dict[Channel, list[str]]
    dropped: dict[str, str]
    polled: set[Channel]
    books: BookGate
    klines: CandleTracker
    trade_ids: TradeIdTracker
    pacer: Pacer
    _changes: list[Change]
    _allowed: frozenset[tuple[Channel, str]]
    _batches: list[Batch]
    _tg: asyncio.TaskGroup | None
    _client: Any
    _resolver: SymbolResolver | None
    _sink: RecordSink
    _fast_path: FastPath | None
    _poll_s: float
    _polled_tickers: dict[str, Ticker]
    _last_trade_ms: dict[str, int]
    deriv_gate: DerivativesGate
    skipped: dict[str, str]

    if TYPE_CHECKING:  # defined by the parts; declared here so each part type-checks

        def _on_frame(self) -> None: ...

        def _on_parsed(self, channel: Channel, data: dict[str, Any]) -> None: ...

        def _publish(self, record: Record) -> None: ...

        def _emit_trade(self, trade: Trade) -> bool: ...

        def _invalid(self, e: Exception) -> None: ...

        def _backfill_mode(self, client: Any) -> BackfillMode | None: ...

        def _last_mark(self, symbol: str) -> TradeMark | None: ...

        async def _backfill_symbol(
            self,
            client: Any,
            mode: BackfillMode,
            symbol: str,
            cursor: int,
            skip_through: int | None = None,
        ) -> tuple[int, int]: ...

        async def _watch(self, client: Any, channel: Channel, symbols: list[str]) -> None: ...

        async def _poll(self, client: Any, channel: Channel, symbols: list[str]) -> None: ...

        def _on_book(self, book: Any) -> None: ...

        def _on_candle_rows(
            self, symbol: str, interval: str, rows: Any, recv_ns: int | None = None
        ) -> None: ...

        async def _watch_derivatives(
            self, client: Any, channel: Channel, symbols: list[str]
        ) -> None: ...

        async def _poll_derivative_once(
            self, client: Any, channel: Channel, symbols: list[str]
        ) -> None: ...

        def _on_derivative(
            self, channel: Channel, data: Any, recv_ns: int | None = None
        ) -> None: ...

        def _derive_from_ticker(
            self, ticker: Any, recv_ns: int, only: frozenset[Channel] | None = None
        ) -> None: ...

        def _contracts_only(
            self, channel: Channel, symbols: list[str], before: Mapping[str, str] | None = None
        ) -> list[str]: ...

        def _ticker_feeds(self, symbol: str, desired: dict[Channel, list[str]]) -> bool: ...

        def _watch_feeds(
            self, symbol: str, method: str, desired: dict[Channel, list[str]], but: Channel
        ) -> bool: ...


def int_or_none(s: str) -> int | None:
    try:
        return int(s)
    except ValueError:
        return None


def chunks(
    items: list[str],
    n: int | Callable[[object], int],
    group: Callable[[str], object] | None = None,
) -> list[list[str]]:
    """``items`` in lists of at most ``n``; with ``group``, a list never mixes two groups
    (CCXT subscribes a whole list on the url of its first symbol: Bybit's spot and linear
    markets must not share one). ``n`` may depend on the group (``n(group)``: a connection
    of one market type holds fewer streams than another's)."""
    groups: dict[object, list[str]] = {}
    for item in items:
        groups.setdefault(None if group is None else group(item), []).append(item)
    out: list[list[str]] = []
    for key, g in groups.items():
        size = max(1, n(key) if callable(n) else n)
        out.extend(g[i : i + size] for i in range(0, len(g), size))
    return out
