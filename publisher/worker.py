"""One exchange worker: a supervised ccxt.pro session feeding normalized records to a sink.

A session = fresh CCXT client, ``load_markets``, one ``watch_*`` loop per channel and
chunk of symbols (to hold the subscriptions), a heartbeat watchdog and, after a
reconnect, a REST backfill of the trades sent during the gap (``publisher.backfill``).
Records come from the taps (``publisher.ccxt_client``) as CCXT parses them. A session
ends only by an exception: transient ones are retried by tenacity with capped, jittered
exponential backoff (reset after a healthy period; a Retry-After from the exchange is
honoured in full); fatal ones move to FAILED.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import ccxt
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from marketbus.errors import (
    ExchangeUnavailableError,
    FatalError,
    MarketbusError,
    TransientError,
    UnknownSymbolError,
)
from marketbus.models import Channel, Record, Ticker, Trade
from marketbus.settings import ExchangeSettings, SupervisorSettings
from marketbus.subscriptions import Change, effective, loose_symbol
from marketbus.symbols import SymbolResolver
from publisher import backfill as bfill
from publisher.backfill import BackfillMode, TradeMark
from publisher.books import BookGate, book_from_ccxt
from publisher.ccxt_client import has_taps, make_client, watch_params
from publisher.errors_map import from_ccxt
from publisher.klines import CandleTracker
from publisher.native import BinanceFastPath
from publisher.normalize import NormalizeError, ticker_from_ccxt, trade_from_ccxt
from publisher.poller import poll_interval, polled, requests_per_cycle, same_ticker
from publisher.state import ConnState
from publisher.trade_ids import TradeIdTracker

log = structlog.get_logger("marketbus.worker")

MAX_SYMBOLS_PER_SUBSCRIBE = 200
MAX_HELD_TRADES = 200_000
"""Live trades held per worker while a backfill runs; past it new ones are dropped (a gap)."""
MAX_RETRY_AFTER_S = 3_600.0
"""A Retry-After longer than this is taken as this (a misconfigured proxy, not a ban)."""
MAX_BOOK_RESYNCS = 30
"""Book resyncs (gap or bad checksum) per minute per watch before the session is restarted."""

Wanted = Mapping[Channel, Iterable[str]]


class RecordSink(Protocol):
    def put(self, record: Record) -> None: ...


class StaleConnectionError(ExchangeUnavailableError):
    """No frame within the heartbeat interval: the connection is presumed dead."""


@dataclass
class WorkerStats:
    frames: int = 0
    records: int = 0
    invalid: int = 0
    reconnects: int = 0
    errors: int = 0
    last_error: str | None = None
    last_frame_ns: int = 0
    last_backoff_s: float = 0.0
    backfills: int = 0
    backfilled: int = 0
    held_overflow: int = 0
    malformed: int = 0
    book_resyncs: int = 0
    subscription_changes: int = 0
    transitions: dict[str, int] = field(default_factory=dict)


@dataclass(eq=False)
class _Batch:
    """One watch loop holding the subscription of ``symbols`` on ``channel``."""

    channel: Channel
    symbols: tuple[str, ...]
    task: asyncio.Task[None] | None = None


class ExchangeWorker:
    """Publishes one exchange's markets; ``run()`` until cancelled or FAILED."""

    def __init__(
        self,
        cfg: ExchangeSettings,
        sink: RecordSink,
        supervisor: SupervisorSettings | None = None,
        *,
        client_factory: Callable[..., Any] = make_client,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._sink = sink
        self._sup = supervisor or SupervisorSettings()
        self._client_factory = client_factory
        self.state = ConnState.DISCONNECTED
        self.markets: list[str] = []
        self.config_wanted: dict[Channel, tuple[str, ...]] = {c: cfg.symbols for c in cfg.channels}
        self.wanted = dict(self.config_wanted)
        self._changes: list[Change] = []
        self.active: dict[Channel, list[str]] = {}
        self._allowed: frozenset[tuple[Channel, str]] = frozenset()
        self._batches: list[_Batch] = []
        self._tg: asyncio.TaskGroup | None = None
        self._resolver: SymbolResolver | None = None
        self.books = BookGate(cfg.book_interval_ms)
        self.polled: set[Channel] = set()
        self._poll_s = 0.0
        self._polled_tickers: dict[str, Ticker] = {}
        self.klines = CandleTracker(cfg.name)
        self.dropped: dict[str, str] = {}
        self.stats = WorkerStats()
        self._fast_path: BinanceFastPath | None = None
        self.trade_ids = TradeIdTracker()
        self._failures = 0
        self._last_invalid_log = 0.0
        self._session_started = 0.0
        self._connected = asyncio.Event()
        self._client: Any = None
        self._last_trade_ms: dict[str, int] = {}
        self._held: dict[str, list[Trade]] = {}
        self._held_total = 0
        self._live_seen: dict[str, asyncio.Event] = {}
        self.log = log.bind(exchange=self.name)

    # -- state ----------------------------------------------------------------------------
    def _set_state(self, new: ConnState, **kw: Any) -> None:
        if new is self.state:
            return
        old, self.state = self.state, new
        self.stats.transitions[new.value] = self.stats.transitions.get(new.value, 0) + 1
        self.log.info("state", old=old.value, new=new.value, **kw)
        if new is ConnState.CONNECTED:
            self._connected.set()
        else:
            self._connected.clear()

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    def status(self) -> dict[str, Any]:
        """What ``marketbus inspect`` shows and the status key holds."""
        now = time.time_ns()
        age = (now - self.stats.last_frame_ns) / 1e9 if self.stats.last_frame_ns else None
        return {
            "exchange": self.name,
            "state": self.state.value,
            "markets": self.markets,
            "dropped": self.dropped,
            "channels": [c.value for c in self.wanted],
            "subscriptions": {c.value: syms for c, syms in self.active.items() if syms},
            "last_frame_age_s": None if age is None else round(age, 3),
            "frames": self.stats.frames,
            "records": self.stats.records,
            "invalid": self.stats.invalid,
            "reconnects": self.stats.reconnects,
            "errors": self.stats.errors,
            "last_error": self.stats.last_error,
            "trade_gaps": self.trade_ids.gaps,
            "trades_missing": self.trade_ids.missing,
            "trade_duplicates": self.trade_ids.duplicates,
            "malformed_frames": self.stats.malformed,
            "parser": self.cfg.parser,
            "native_frames": self._fast_path.frames if self._fast_path is not None else 0,
            "backfills": self.stats.backfills,
            "backfilled": self.stats.backfilled,
            "book_resyncs": self.stats.book_resyncs,
            "books_unchanged": self.books.stats.unchanged,
            "books_throttled": self.books.stats.throttled,
            "subscription_changes": self.stats.subscription_changes,
            "mode": self.cfg.mode,
            "polled": sorted(c.value for c in self.polled if c in self.active),
        }

    # -- the tap --------------------------------------------------------------------------
    def _on_frame(self) -> None:
        self.stats.last_frame_ns = time.time_ns()
        self.stats.frames += 1
        if self.state is not ConnState.CONNECTED:
            self._set_state(ConnState.CONNECTED)

    def _on_parsed(self, channel: Channel, data: dict[str, Any]) -> None:
        """Called synchronously by CCXT for every parsed trade/ticker: must never raise."""
        try:
            if (channel, data.get("symbol")) not in self._allowed:
                return
            recv_ns = time.time_ns()
            if channel is Channel.TRADES:
                self._publish(trade_from_ccxt(self.name, data, recv_ns))
            else:
                self._publish(ticker_from_ccxt(self.name, data, recv_ns))
        except NormalizeError as e:
            self._invalid(e)
        except Exception as e:  # never let our bug kill CCXT's receive loop
            self._invalid(e)

    def _publish(self, record: Record) -> None:
        """A normalized record from either parser: trades go through id checks and backfill."""
        if (record.channel, record.symbol) not in self._allowed:
            return  # unsubscribed a moment ago, or a frame for a market we do not publish
        if isinstance(record, Trade):
            held = self._held.get(record.symbol)
            if held is None:
                self._emit_trade(record)
            else:
                self._hold(held, record)
        else:
            self._sink.put(record)
            self.stats.records += 1

    def _emit_trade(self, trade: Trade) -> bool:
        """Publish a trade unless its id was published already; True when published."""
        if not self.trade_ids.admit(trade.symbol, trade.id):
            return False
        self._last_trade_ms[trade.symbol] = trade.ts_ms
        self._sink.put(trade)
        self.stats.records += 1
        return True

    def _hold(self, held: list[Trade], trade: Trade) -> None:
        """Keep a live trade back while its symbol is being backfilled (bounded)."""
        if self._held_total >= MAX_HELD_TRADES:
            self.stats.held_overflow += 1
            return
        held.append(trade)
        self._held_total += 1
        seen = self._live_seen.get(trade.symbol)
        if seen is not None:
            seen.set()

    def _publish_safely(self, record: Record) -> None:
        try:
            self._publish(record)
        except Exception as e:  # never let our bug kill CCXT's receive loop
            self._invalid(e)

    def _on_malformed(self, e: Exception, data: Any) -> None:
        """A frame CCXT could not decode or handle: counted and skipped, the socket lives on."""
        self.stats.malformed += 1
        self.stats.last_frame_ns = time.time_ns()
        now = time.monotonic()
        if now - self._last_invalid_log > 5:
            self._last_invalid_log = now
            shown = data[:200] if isinstance(data, str | bytes) else repr(data)[:200]
            self.log.warning(
                "malformed_frame_skipped", error=f"{type(e).__name__}: {e}"[:300],
                frame=shown, total=self.stats.malformed,
            )  # fmt: skip

    def _invalid(self, e: Exception) -> None:
        self.stats.invalid += 1
        now = time.monotonic()
        if now - self._last_invalid_log > 5:
            self._last_invalid_log = now
            self.log.warning("invalid_record_skipped", error=str(e)[:300], total=self.stats.invalid)

    # -- supervision ----------------------------------------------------------------------
    def _wait(self, retry_state: RetryCallState) -> float:
        base = min(
            self._sup.backoff_max_s, self._sup.backoff_min_s * 2 ** max(self._failures - 1, 0)
        )
        delay = min(self._sup.backoff_max_s, base * random.uniform(1.0, 1.5))
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, int | float) and retry_after > delay:
            # the exchange said how long: waiting less risks a longer ban (418), so no cap
            delay = min(float(retry_after), MAX_RETRY_AFTER_S)
        self.stats.last_backoff_s = float(delay)
        return float(delay)

    def _before_sleep(self, retry_state: RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
        self.stats.reconnects += 1
        if self.state is ConnState.RECONNECTING:  # another failed attempt: say so too
            self.log.warning("reconnect_failed", error=str(exc)[:300], retry_in_s=round(wait, 2))
        self._set_state(ConnState.RECONNECTING, error=str(exc)[:300], retry_in_s=round(wait, 2))

    async def run(self) -> None:
        """Run sessions until cancelled; returns when the worker is FAILED."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransientError),
            wait=self._wait,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._supervised_session()
        except FatalError as e:
            self.stats.last_error = str(e)
            self._set_state(ConnState.FAILED, error=str(e))
        except asyncio.CancelledError:
            self._set_state(ConnState.STOPPED)
            raise

    async def _supervised_session(self) -> None:
        self._session_started = time.monotonic()
        try:
            await self._session()
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            headers = getattr(self._client, "last_response_headers", None)
            err = from_ccxt(_first_error(e), headers if isinstance(headers, dict) else None)
            self.stats.errors += 1
            self.stats.last_error = str(err)
            healthy = time.monotonic() - self._session_started >= self._sup.healthy_after_s
            self._failures = (
                1 if healthy and self.state is ConnState.CONNECTED else self._failures + 1
            )
            raise err from e

    async def _session(self) -> None:
        if self.state is ConnState.DISCONNECTED:
            self._set_state(ConnState.CONNECTING)
        client = self._client_factory(self.cfg, self._on_parsed)
        self._client = client
        _hook_frames(client, self._on_frame)
        fast = self._fast_path = None
        if self.cfg.parser == "native":
            fast = self._fast_path = BinanceFastPath(
                self.name,
                {},
                frozenset((Channel.TICKER, Channel.TRADES)),
                self._publish_safely,
                self._invalid,
            )
        if self.cfg.guard_frames or fast is not None:
            _guard_frames(client, self._on_malformed, fast, self._on_frame)
        try:
            await client.load_markets()
            self._resolver = SymbolResolver(self.name, client.markets.values())
            first = not self.markets
            if self._changes:  # compared again now that symbols resolve exactly
                self.wanted = effective(self.config_wanted, self._changes, self.canonical)
            desired = self._resolve_wanted()
            if first and not any(desired.values()) and any(self.wanted.values()):
                raise UnknownSymbolError(self.name, ", ".join(sorted(self.dropped)))
            self.polled = {c for c in Channel if polled(c, client.has, self.cfg.mode)}
            if self.polled:
                self.log.info("polling", channels=sorted(c.value for c in self.polled))
            trades_ws = Channel.TRADES not in self.polled  # a poll fetches its own gap
            gaps = self._backfill_starts(
                client, desired.get(Channel.TRADES, []) if trades_ws else []
            )
            for symbol in gaps:  # hold live trades from the first frame on
                self._held[symbol] = []
                self._live_seen[symbol] = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self._apply(client, desired)
                tg.create_task(self._watchdog())
                tg.create_task(self._ticks())
                if gaps:
                    tg.create_task(self._backfill(client, gaps))
        finally:
            self._tg = None
            self._batches.clear()
            # held trades die with the session: the next one fetches them again over REST
            self._held.clear()
            self._live_seen.clear()
            self._held_total = 0
            for symbol in self.active.get(Channel.BOOK, []):
                self.books.forget(symbol)  # a new session starts from a new snapshot
            with contextlib.suppress(Exception):
                await asyncio.shield(client.close())

    # -- subscriptions ----------------------------------------------------------------------
    def canonical(self, symbol: str) -> str:
        """The unified symbol when the exchange lists it, else a loose normal form."""
        if self._resolver is not None:
            try:
                return self._resolver.resolve(symbol)
            except UnknownSymbolError:
                pass
        return loose_symbol(symbol)

    def apply_changes(self, changes: list[Change]) -> dict[Channel, list[str]]:
        """Run-time subscription changes on top of the configuration (see
        :mod:`marketbus.subscriptions`); the full list each time, not a delta."""
        self._changes = list(changes)
        return self.set_wanted(effective(self.config_wanted, self._changes, self.canonical))

    def set_wanted(self, wanted: Wanted) -> dict[Channel, list[str]]:
        """Change what this worker publishes, live: ``{channel: [symbols]}``.

        Symbols are resolved against the exchange's markets (unknown ones are dropped and
        shown in status); new watch loops start and removed ones stop right away in a
        running session, or at the next session. Returns the resolved subscription (empty
        before the first session has loaded the markets).
        """
        self.wanted = {
            Channel(c): tuple(dict.fromkeys(s.strip() for s in syms if s.strip()))
            for c, syms in wanted.items()
        }
        self.wanted = {c: syms for c, syms in self.wanted.items() if syms}
        self.stats.subscription_changes += 1
        if self._resolver is None:
            return {}
        desired = self._resolve_wanted()
        if self._tg is not None and self._client is not None:
            self._apply(self._client, desired)
        return desired

    def _resolve_wanted(self) -> dict[Channel, list[str]]:
        assert self._resolver is not None
        dropped: dict[str, str] = {}
        desired: dict[Channel, list[str]] = {}
        for channel, raws in self.wanted.items():
            good, bad = self._resolver.resolve_all(raws)
            desired[channel] = good
            for err in bad:
                if err.symbol not in self.dropped:
                    self.log.error("unknown_symbol_dropped", symbol=err.symbol, error=str(err))
                dropped[err.symbol] = str(err)
        self.dropped = dropped
        return desired

    def _apply(self, client: Any, desired: dict[Channel, list[str]]) -> None:
        """Start and stop watch loops so that exactly ``desired`` is subscribed."""
        assert self._tg is not None
        removed: dict[Channel, list[str]] = {}
        running: dict[Channel, set[str]] = {}
        for batch in list(self._batches):
            want = set(desired.get(batch.channel, ()))
            gone = [s for s in batch.symbols if s not in want]
            if gone:
                self._stop_batch(client, batch, gone)
                removed.setdefault(batch.channel, []).extend(gone)
                keep = tuple(s for s in batch.symbols if s in want)
                if keep:
                    self._start_batch(client, batch.channel, keep)
            running.setdefault(batch.channel, set()).update(s for s in batch.symbols if s in want)
        added: dict[Channel, list[str]] = {}
        for channel, symbols in desired.items():
            new = [s for s in symbols if s not in running.get(channel, set())]
            for chunk in _chunks(new, MAX_SYMBOLS_PER_SUBSCRIBE):
                self._start_batch(client, channel, tuple(chunk))
            if new:
                added[channel] = new
        for channel, symbols in removed.items():
            for symbol in symbols:
                if channel is Channel.TRADES:
                    self.trade_ids.forget(symbol)  # resubscribing later is not a gap
                    self._last_trade_ms.pop(symbol, None)
                elif channel is Channel.BOOK:
                    self.books.forget(symbol)
                elif channel is Channel.CANDLES:
                    self.klines.forget(symbol)
        self.active = {c: list(s) for c, s in desired.items() if s}
        self._allowed = frozenset((c, s) for c, syms in self.active.items() for s in syms)
        self.markets = sorted({s for syms in self.active.values() for s in syms})
        if self._fast_path is not None:
            ids = {}
            for channel in (Channel.TRADES, Channel.TICKER):
                for sym in self.active.get(channel, []):
                    ids[client.market(sym)["id"]] = sym
            self._fast_path.symbols = ids
        if added or removed:
            self.log.info(
                "subscriptions",
                added={c.value: s for c, s in added.items()},
                removed={c.value: s for c, s in removed.items()},
                markets=self.markets,
            )

    def _start_batch(self, client: Any, channel: Channel, symbols: tuple[str, ...]) -> None:
        assert self._tg is not None
        batch = _Batch(channel, symbols)
        batch.task = self._tg.create_task(
            self._watch(client, channel, list(symbols)), name=f"{self.name}-{channel.value}"
        )
        self._batches.append(batch)

    def _stop_batch(self, client: Any, batch: _Batch, gone: list[str]) -> None:
        self._batches.remove(batch)
        if batch.task is not None:
            batch.task.cancel()
        if self._tg is not None:
            self._tg.create_task(self._unwatch(client, batch.channel, gone))

    async def _unwatch(self, client: Any, channel: Channel, symbols: list[str]) -> None:
        """Tell the exchange to stop sending (best effort: our filter already drops them)."""
        try:
            async with asyncio.timeout(5):
                params = watch_params(self.name, channel, self.cfg)  # the same stream name
                if channel is Channel.TRADES and client.has.get("unWatchTradesForSymbols"):
                    await client.un_watch_trades_for_symbols(symbols, dict(params))
                elif channel is Channel.TICKER and client.has.get("unWatchTickers"):
                    await client.un_watch_tickers(symbols, dict(params))
                elif channel is Channel.BOOK and client.has.get("unWatchOrderBookForSymbols"):
                    await client.un_watch_order_book_for_symbols(symbols)
                elif channel is Channel.CANDLES and client.has.get("unWatchOHLCVForSymbols"):
                    pairs = [[s, i] for s in symbols for i in self.cfg.candle_intervals]
                    await client.un_watch_ohlcv_for_symbols(pairs)
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # the stream may stay open; the tap filter drops it
            self.log.info("unwatch_failed", channel=channel.value, error=str(e)[:200])

    # -- backfill -------------------------------------------------------------------------
    def _backfill_mode(self, client: Any) -> BackfillMode | None:
        has = bool(client.has.get("fetchTrades"))
        return bfill.backfill_mode(self.name, self.cfg.trade_stream, has)

    def _backfill_starts(self, client: Any, symbols: list[str]) -> dict[str, int]:
        """Symbols with a gap to fill (a trade published before this session) -> cursor."""
        if not symbols:
            return {}
        mode = self._backfill_mode(client)
        if mode is None:
            if self.trade_ids.last or self._last_trade_ms:
                self.log.warning(
                    "backfill_unsupported",
                    trade_stream=self.cfg.trade_stream,
                    hint="trades sent while disconnected are counted as gaps, not fetched",
                )
            return {}
        starts = {}
        for symbol in symbols:
            cursor = bfill.first_cursor(mode, self._last_mark(symbol))
            if cursor is not None:
                starts[symbol] = cursor
        return starts

    def _last_mark(self, symbol: str) -> TradeMark | None:
        ms = self._last_trade_ms.get(symbol)
        if ms is None:
            return None
        return TradeMark(self.trade_ids.last.get(symbol), ms)

    async def _backfill(self, client: Any, starts: dict[str, int]) -> None:
        """Fetch each symbol's gap page by page, then release its held live trades.

        Live trades are held from the session's first frame. A symbol's fetch starts once
        a live trade of it was held (so REST and the websocket overlap and the tracker
        drops the overlap), or after a grace period for a quiet symbol: the
        subscription is active by then and a fetch made after it leaves nothing out.
        """
        mode = self._backfill_mode(client)
        if mode is None:
            return
        await self._connected.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(self._sup.heartbeat_s, 2.0)
        self.stats.backfills += 1
        for symbol, cursor in starts.items():
            seen = self._live_seen.get(symbol)
            if seen is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(seen.wait(), max(0.0, deadline - loop.time()))
            fetched = await self._backfill_symbol(client, mode, symbol, cursor)
            held = self._held.pop(symbol, [])
            self._live_seen.pop(symbol, None)
            self._held_total -= len(held)
            published = 0
            for r in fetched:
                published += self._emit_trade(r)
            for r in held:
                self._emit_trade(r)
            self.stats.backfilled += published
            self.log.info(
                "backfilled",
                symbol=symbol,
                from_cursor=cursor,
                fetched=len(fetched),
                published=published,
                held=len(held),
            )

    async def _backfill_symbol(
        self, client: Any, mode: BackfillMode, symbol: str, cursor: int
    ) -> list[Trade]:
        out: list[Trade] = []
        next_cursor: int | None = cursor
        while next_cursor is not None:
            req = bfill.request_for(mode, symbol, next_cursor)
            rows = await client.fetch_trades(req.symbol, req.since, req.limit, dict(req.params))
            recv_ns = time.time_ns()
            page: list[TradeMark] = []
            for row in rows:
                try:
                    t = trade_from_ccxt(self.name, row, recv_ns)
                except NormalizeError as e:
                    self._invalid(e)
                    continue
                if t.symbol != symbol:
                    continue
                out.append(t)
                page.append(TradeMark(_int_or_none(t.id), t.ts_ms))
            held = self._held.get(symbol)
            first = held[0] if held else None
            held_first = None if first is None else TradeMark(_int_or_none(first.id), first.ts_ms)
            next_cursor = bfill.next_cursor(mode, next_cursor, page, held_first, req.limit)
        return out

    async def _watch(self, client: Any, channel: Channel, symbols: list[str]) -> None:
        if channel in self.polled:
            await self._poll(client, channel, symbols)
            return
        if channel is Channel.BOOK:
            await self._watch_books(client, symbols)
            return
        if channel is Channel.CANDLES:
            await self._watch_candles(client, symbols)
            return
        params = watch_params(self.name, channel, self.cfg)
        tapped = has_taps(self.name)
        if channel is Channel.TRADES:
            if client.has.get("watchTradesForSymbols"):
                while True:
                    trades = await client.watch_trades_for_symbols(
                        symbols, None, None, dict(params)
                    )
                    if not tapped:
                        for t in trades:
                            self._on_parsed(channel, t)
            else:
                async with asyncio.TaskGroup() as tg:
                    for s in symbols:
                        tg.create_task(self._watch_one_trades(client, s, params, tapped))
        else:
            if client.has.get("watchTickers"):
                while True:
                    tickers = await client.watch_tickers(symbols, dict(params))
                    if not tapped:
                        for t in tickers.values():
                            self._on_parsed(channel, t)
            else:
                async with asyncio.TaskGroup() as tg:
                    for s in symbols:
                        tg.create_task(self._watch_one_ticker(client, s, params, tapped))

    async def _watch_one_trades(
        self, client: Any, symbol: str, params: dict[str, Any], tapped: bool
    ) -> None:
        while True:
            trades = await client.watch_trades(symbol, None, None, dict(params))
            if not tapped:
                for t in trades:
                    self._on_parsed(Channel.TRADES, t)

    async def _watch_one_ticker(
        self, client: Any, symbol: str, params: dict[str, Any], tapped: bool
    ) -> None:
        while True:
            t = await client.watch_ticker(symbol, dict(params))
            if not tapped:
                self._on_parsed(Channel.TICKER, t)

    # -- books and candles ----------------------------------------------------------------
    async def _watch_books(self, client: Any, symbols: list[str]) -> None:
        """CCXT keeps each book in sync; a gap or bad checksum raises, and the next call
        resubscribes and refetches the snapshot: counted, and the session goes on."""
        many = len(symbols) > 1 and client.has.get("watchOrderBookForSymbols")
        if not many and len(symbols) > 1:
            async with asyncio.TaskGroup() as tg:
                for s in symbols:
                    tg.create_task(self._watch_books(client, [s]))
            return
        resyncs: list[float] = []
        while True:
            try:
                if many:
                    book = await client.watch_order_book_for_symbols(symbols)
                else:
                    book = await client.watch_order_book(symbols[0])
            except ccxt.InvalidNonce as e:  # ChecksumError is one too
                self._book_resync(symbols, e, resyncs)
                continue
            self._on_book(book)

    def _book_resync(self, symbols: list[str], e: Exception, resyncs: list[float]) -> None:
        self.stats.book_resyncs += 1
        self.books.stats.resyncs += 1
        now = time.monotonic()
        resyncs[:] = [t for t in resyncs if now - t < 60] + [now]
        self.log.warning(
            "book_resync", error=f"{type(e).__name__}: {e}"[:300], symbols=symbols[:5],
            total=self.stats.book_resyncs,
        )  # fmt: skip
        for s in symbols:
            if s in str(e):
                self.books.forget(s)
        if len(resyncs) > MAX_BOOK_RESYNCS:
            raise ExchangeUnavailableError(
                f"{self.name}: {len(resyncs)} book resyncs within a minute: reconnecting"
            ) from e

    def _on_book(self, book: Any) -> None:
        symbol = book.get("symbol") if isinstance(book, dict) else None
        if not isinstance(symbol, str) or (Channel.BOOK, symbol) not in self._allowed:
            return
        recv_ns = time.time_ns()
        try:
            record = book_from_ccxt(self.name, symbol, book, self.cfg.book_depth, recv_ns)
        except NormalizeError as e:
            self.books.stats.invalid += 1
            self._invalid(e)
            return
        out = self.books.offer(record, recv_ns // 1_000_000)
        if out is not None:
            self._sink.put(out)
            self.stats.records += 1

    async def _watch_candles(self, client: Any, symbols: list[str]) -> None:
        pairs = [[s, i] for s in symbols for i in self.cfg.candle_intervals]
        if client.has.get("watchOHLCVForSymbols"):
            while True:
                got = await client.watch_ohlcv_for_symbols(pairs)
                self._on_candles(client, got)
        else:
            async with asyncio.TaskGroup() as tg:
                for s, interval in pairs:
                    tg.create_task(self._watch_one_candles(client, s, interval))

    async def _watch_one_candles(self, client: Any, symbol: str, interval: str) -> None:
        while True:
            await client.watch_ohlcv(symbol, interval)
            self._on_candles(client, {symbol: {interval: ()}})

    def _on_candles(self, client: Any, got: Any) -> None:
        """``got`` names what changed ({symbol: {interval: rows}}); CCXT's cache holds the
        whole recent history, which the tracker needs to see a candle's final values."""
        if not isinstance(got, dict):
            return
        recv_ns = time.time_ns()
        for symbol, per_interval in got.items():
            if (Channel.CANDLES, symbol) not in self._allowed or not isinstance(per_interval, dict):
                continue
            for interval in per_interval:
                rows = client.ohlcvs.get(symbol, {}).get(interval)
                self._on_candle_rows(symbol, interval, rows, recv_ns)

    def _on_candle_rows(
        self, symbol: str, interval: str, rows: Any, recv_ns: int | None = None
    ) -> None:
        if not rows or (Channel.CANDLES, symbol) not in self._allowed:
            return
        try:
            records = self.klines.update(symbol, interval, rows, recv_ns or time.time_ns())
        except (NormalizeError, TypeError, ValueError, IndexError) as e:
            self._invalid(e)
            return
        for r in records:
            self._sink.put(r)
            self.stats.records += 1

    async def _ticks(self) -> None:
        """Trailing book records held back by the throttle; candles closed on time."""
        interval_ms = self.cfg.book_interval_ms
        period = min(1.0, interval_ms / 2000) if interval_ms else 1.0
        while True:
            await asyncio.sleep(period)
            now_ns = time.time_ns()
            for record in self.books.due(now_ns // 1_000_000):
                if (Channel.BOOK, record.symbol) in self._allowed:
                    self._sink.put(record)
                    self.stats.records += 1
            for candle in self.klines.expire(now_ns):
                if (Channel.CANDLES, candle.symbol) in self._allowed:
                    self._sink.put(candle)
                    self.stats.records += 1

    # -- REST polling -----------------------------------------------------------------------
    async def _poll(self, client: Any, channel: Channel, symbols: list[str]) -> None:
        """The websocket loop's stand-in: the same records, fetched at a rate-limited pace."""
        n_int = len(self.cfg.candle_intervals)
        reqs = requests_per_cycle(channel, len(symbols), n_int, client.has)
        interval = poll_interval(self.cfg.poll_interval_s, reqs, float(client.rateLimit or 0))
        self._poll_s = max(self._poll_s, interval)
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self._poll_once(client, channel, symbols)
            self._on_frame()  # a good answer is the poller's heartbeat
            await asyncio.sleep(max(0.0, interval - (loop.time() - started)))

    async def _poll_once(self, client: Any, channel: Channel, symbols: list[str]) -> None:
        if channel is Channel.TRADES:
            mode = self._backfill_mode(client) or BackfillMode.SINCE
            for symbol in symbols:
                mark = self._last_mark(symbol)
                if mark is None:  # start from now, like a websocket: this page is the mark
                    rows = await client.fetch_trades(symbol, None, 100)
                    self._mark_trades(symbol, rows)
                    continue
                cursor = bfill.first_cursor(mode, mark)
                if cursor is None:
                    cursor = mark.ts_ms
                    mode = BackfillMode.SINCE
                last = self.trade_ids.last.get(symbol)
                for t in await self._backfill_symbol(client, mode, symbol, cursor):
                    n = _int_or_none(t.id)
                    if last is not None and n is not None and n <= last:
                        continue  # the page overlaps the last poll by design: not a duplicate
                    self._emit_trade(t)
        elif channel is Channel.TICKER:
            if client.has.get("fetchTickers"):
                got = await client.fetch_tickers(symbols)
                tickers = [got[s] for s in symbols if s in got]
            else:
                tickers = [await client.fetch_ticker(s) for s in symbols]
            recv_ns = time.time_ns()
            for t in tickers:
                try:
                    rec = ticker_from_ccxt(self.name, t, recv_ns)
                except NormalizeError as e:
                    self._invalid(e)
                    continue
                if not same_ticker(self._polled_tickers.get(rec.symbol), rec):
                    self._polled_tickers[rec.symbol] = rec
                    self._publish(rec)
        elif channel is Channel.BOOK:
            for symbol in symbols:
                self._on_book(await client.fetch_order_book(symbol))
        else:
            for symbol in symbols:
                for interval in self.cfg.candle_intervals:
                    rows = await client.fetch_ohlcv(symbol, interval, None, 3)
                    self._on_candle_rows(symbol, interval, rows)

    def _mark_trades(self, symbol: str, rows: list[dict[str, Any]]) -> None:
        recv_ns = time.time_ns()
        for row in rows:
            try:
                t = trade_from_ccxt(self.name, row, recv_ns)
            except NormalizeError:
                continue
            if t.symbol == symbol:
                self.trade_ids.admit(symbol, t.id)
                self._last_trade_ms[symbol] = max(self._last_trade_ms.get(symbol, 0), t.ts_ms)
        if symbol not in self._last_trade_ms:  # no trade yet: everything from now on counts
            self._last_trade_ms[symbol] = time.time_ns() // 1_000_000

    async def _watchdog(self) -> None:
        """CCXT never notices a silent socket (or one a malformed frame wedged): we do."""
        started = time.time_ns()
        while True:
            await asyncio.sleep(min(1.0, self._sup.heartbeat_s / 4))
            limit_ns = int(max(self._sup.heartbeat_s, 3 * self._poll_s) * 1e9)
            if not self._batches:  # nothing subscribed: silence is expected
                started = time.time_ns()
                continue
            last = max(self.stats.last_frame_ns, started)
            if time.time_ns() - last > limit_ns:
                raise StaleConnectionError(
                    f"no frame from {self.name} for {self._sup.heartbeat_s:g} s: reconnecting"
                )


def _int_or_none(s: str) -> int | None:
    try:
        return int(s)
    except ValueError:
        return None


def _chunks(items: list[str], n: int) -> list[list[str]]:
    return [items[i : i + n] for i in range(0, len(items), n)]


def _first_error(e: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups from the TaskGroup."""
    while isinstance(e, BaseExceptionGroup):
        inner = [x for x in e.exceptions if not isinstance(x, asyncio.CancelledError)]
        e = inner[0] if inner else e.exceptions[0]
    return e


def _hook_frames(client: Any, on_frame: Callable[[], None]) -> None:
    """Count every frame the exchange sends (liveness), before CCXT dispatches it."""
    original = client.handle_message

    def handle_message(ws_client: Any, message: Any) -> Any:
        on_frame()
        return original(ws_client, message)

    client.handle_message = handle_message


def _guard_frames(
    client: Any,
    on_malformed: Callable[[Exception, Any], None],
    fast: Callable[[Any, int], bool] | None = None,
    on_frame: Callable[[], None] | None = None,
) -> None:
    """Wrap the frame handler of every websocket client CCXT creates.

    - A frame CCXT cannot decode or handle (malformed, truncated) must not wedge the socket:
      CCXT decodes and dispatches each frame inside its receive loop's done-callback, where
      an exception never reaches a caller, stops the loop and leaves the watch hanging. The
      error is reported and the frame skipped.
    - With the native parser, ``fast(data, recv_ns)`` takes the frames it knows before CCXT
      parses them (True = consumed); everything else goes on to CCXT.
    """
    make_client = client.client

    def guarded_client(url: str) -> Any:
        ws = make_client(url)
        if not getattr(ws, "_marketbus_guarded", False):
            original = ws.handle_text_or_binary_message

            def handle(data: Any) -> Any:
                try:
                    if fast is not None and fast(data, time.time_ns()):
                        if on_frame is not None:
                            on_frame()
                        return None
                    return original(data)
                except Exception as e:
                    on_malformed(e, data)
                    return None

            ws.handle_text_or_binary_message = handle
            ws._marketbus_guarded = True
        return ws

    client.client = guarded_client


__all__ = ["ExchangeWorker", "MarketbusError", "StaleConnectionError"]
