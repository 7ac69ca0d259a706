"""One exchange worker: a supervised ccxt.pro session feeding normalized records to a sink.

A session = fresh CCXT client, ``load_markets``, one ``watch_*`` loop per channel and
chunk of symbols (to hold the subscriptions), a heartbeat watchdog and, after a
reconnect, a REST backfill of the trades sent during the gap (``publisher.backfill``).
Records come from the taps (``publisher.ccxt_client``) as CCXT parses them. The watch
loops, REST polling and live subscription changes are parts of their own
(``publisher.watching``, ``publisher.polling``, ``publisher.subscribing``). A session
ends only by an exception: transient ones are retried by tenacity with capped, jittered
exponential backoff (reset after a healthy period; a Retry-After from the exchange is
honoured in full); fatal ones move to FAILED.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from typing import Any

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from marketbus.errors import (
    ExchangeUnavailableError,
    FatalError,
    InternalError,
    MarketbusError,
    TransientError,
    UnknownSymbolError,
)
from marketbus.models import DERIVATIVES, Channel, Record, Ticker, Trade
from marketbus.settings import ExchangeSettings, SupervisorSettings
from marketbus.subscriptions import Change, effective
from marketbus.symbols import SymbolResolver
from publisher import backfill as bfill
from publisher import gc_policy
from publisher.backfill import BackfillMode, TradeMark
from publisher.book_resyncs import note_book_drops
from publisher.books import BookGate
from publisher.ccxt_client import make_client
from publisher.deriv_feeds import Feed, source
from publisher.deriv_worker import DerivativesMixin
from publisher.derivatives import DerivativesGate
from publisher.errors_map import from_ccxt
from publisher.exchanges import profile
from publisher.klines import CandleTracker
from publisher.native import FastPath
from publisher.normalize import NormalizeError, ticker_from_ccxt, trade_from_ccxt
from publisher.pacing import Pacer
from publisher.poller import polled
from publisher.polling import PollingMixin
from publisher.rest_hooks import pace_rest, tag_retry_after
from publisher.state import ConnState
from publisher.subscribing import SubscriptionsMixin
from publisher.trade_ids import TradeIdTracker
from publisher.watching import WatchMixin
from publisher.worker_parts import Batch, RecordSink, WorkerStats, int_or_none
from publisher.ws_hooks import ReadGate, guard_frames, hook_frames, pace_reading, pace_sending

log = structlog.get_logger("marketbus.worker")

MAX_HELD_TRADES = 200_000
"""Live trades held per worker while a backfill runs; past it new ones are dropped (a gap)."""
MAX_RETRY_AFTER_S = 3_600.0
"""A Retry-After longer than this is taken as this (a misconfigured proxy, not a ban)."""


class StaleConnectionError(ExchangeUnavailableError):
    """No frame within the heartbeat interval: the connection is presumed dead."""


class ExchangeWorker(SubscriptionsMixin, WatchMixin, PollingMixin, DerivativesMixin):
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
        self.name = cfg.bus_name  # what records, keys, status and metrics say
        self.exchange_id = cfg.name  # what CCXT and the per-exchange tables know
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
        self._batches: list[Batch] = []
        self._tg: asyncio.TaskGroup | None = None
        self._resolver: SymbolResolver | None = None
        self.books = BookGate(cfg.book_interval_ms)
        self.polled: set[Channel] = set()
        self._poll_s = 0.0
        self._polled_tickers: dict[str, Ticker] = {}
        self.klines = CandleTracker(self.name)
        self.deriv_gate = DerivativesGate()
        self.dropped: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        self.stats = WorkerStats()
        self._fast_path: FastPath | None = None
        self.trade_ids = TradeIdTracker.for_exchange(self.exchange_id, on_anomaly=self._id_anomaly)
        self.pacer = Pacer(self.exchange_id)
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
        self._ticker_carries = bool(profile(self.exchange_id).ticker_carries) and cfg.mode != "poll"

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
            "skipped": self.skipped,
            "channels": [c.value for c in self.wanted],
            "subscriptions": {c.value: syms for c, syms in self.active.items() if syms},
            "last_frame_age_s": None if age is None else round(age, 3),
            "frames": self.stats.frames,
            "records": self.stats.records,
            "invalid": self.stats.invalid,
            "reconnects": self.stats.reconnects,
            "errors": self.stats.errors,
            "bugs": self.stats.bugs,
            "last_error": self.stats.last_error,
            "trade_gaps": self.trade_ids.gaps,
            "trades_missing": self.trade_ids.missing,
            "trade_duplicates": self.trade_ids.duplicates,
            "trade_id_resets": self.trade_ids.resets,
            "trade_id_outliers": self.trade_ids.outliers,
            "trade_ids_out_of_range": self.trade_ids.out_of_range,
            "malformed_frames": self.stats.malformed,
            "parser": "native" if self.cfg.native else "ccxt",
            "native_frames": self._fast_path.frames if self._fast_path is not None else 0,
            "backfills": self.stats.backfills,
            "backfilled": self.stats.backfilled,
            "book_resyncs": self.stats.book_resyncs,
            "books_unchanged": self.books.stats.unchanged,
            "books_throttled": self.books.stats.throttled,
            "derivatives_unchanged": self.deriv_gate.unchanged,
            "subscription_changes": self.stats.subscription_changes,
            **self.pacer.status(),
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
        """Called synchronously by CCXT for every parsed structure we tap: must never raise."""
        try:
            if channel in DERIVATIVES:
                self._on_derivative(channel, data)
                return
            if channel is Channel.TICKER and self._ticker_carries:
                self._derive_from_ticker(data, time.time_ns())
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

    def _id_anomaly(self, kind: str, symbol: str, last: int, trade_id: int) -> None:
        """A trade id far from the market's last one: a sequence reset or a one-off."""
        if kind == "reset":
            self.log.warning(
                "trade_ids_reset", symbol=symbol, last=last, now=trade_id,
                hint="the exchange restarted its trade-id sequence; continuing from the new ids",
            )  # fmt: skip
        else:
            self.log.warning(
                "trade_id_outlier", symbol=symbol, last=last, outlier=trade_id,
                hint="one trade carried an id far from its neighbours; published, not a floor",
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
            first = _first_error(e)
            if not isinstance(first, Exception):  # SystemExit, KeyboardInterrupt: not ours
                raise
            headers = getattr(self._client, "last_response_headers", None)
            err = from_ccxt(first, headers if isinstance(headers, dict) else None)
            self.stats.errors += 1
            self.stats.last_error = str(err)
            if isinstance(err, InternalError):
                self.stats.bugs += 1
                self.log.error("worker_bug", error=str(err), exc_info=first)
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
        hook_frames(client, self._on_frame)
        note_book_drops(client)  # a batch watch may swallow a book's rejection: see the module
        fast = self._fast_path = None
        make_fast = profile(self.exchange_id).native_parser
        if self.cfg.native and make_fast is not None:
            fast = self._fast_path = make_fast(
                self.name,
                {},
                frozenset((Channel.TICKER, Channel.TRADES)),
                self._publish_safely,
                self._invalid,
            )
        if self.cfg.guard_frames or fast is not None:
            guard_frames(client, self._on_malformed, fast, self._on_frame)
        if isinstance(self._sink, ReadGate):
            pace_reading(client, self._sink)
        tag_retry_after(client)  # each refusal's own Retry-After, not the last reply's
        pace_rest(client, self.pacer)  # within the exchange's limits, fake or live
        limits = self.pacer.limits
        if limits.messages_per_second or limits.subscribes_per_window:
            subscribes = (
                (limits.subscribes_per_window, limits.subscribe_window_s)
                if limits.subscribes_per_window
                else None
            )
            pace_sending(client, limits.messages_per_second, subscribes, self.pacer.subscribe_wait)
        self.pacer.books.clear()
        try:
            await client.load_markets()
            if self._sup.gc_freeze:
                gc_policy.connection_ready()
            self._resolver = SymbolResolver(self.name, client.markets.values())
            first = not self.markets
            if self._changes:  # compared again now that symbols resolve exactly
                self.wanted = effective(self.config_wanted, self._changes, self.canonical)
            desired = self._resolve_wanted()
            if first and not any(desired.values()) and self.dropped:
                raise UnknownSymbolError(self.name, ", ".join(sorted(self.dropped)))
            self.polled = {
                c for c in Channel if c not in DERIVATIVES and polled(c, client.has, self.cfg.mode)
            }
            self.polled |= {
                c
                for c in DERIVATIVES
                if source(self.exchange_id, c, client.has, self.cfg.mode).feed is Feed.POLL
            }
            wanted_polled = sorted(c.value for c in self.polled if desired.get(c))
            if wanted_polled:  # what this session polls (self.polled also covers later adds)
                self.log.info("polling", channels=wanted_polled)
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
            if self._sup.gc_freeze:
                gc_policy.connection_closed()

    # -- backfill -------------------------------------------------------------------------
    def _backfill_mode(self, client: Any) -> BackfillMode | None:
        has = bool(client.has.get("fetchTrades"))
        return bfill.backfill_mode(self.exchange_id, self.cfg.trade_stream, has)

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
            fetched, published = await self._backfill_symbol(client, mode, symbol, cursor)
            held = self._held.pop(symbol, [])
            self._live_seen.pop(symbol, None)
            self._held_total -= len(held)
            for r in held:
                self._emit_trade(r)
            self.stats.backfilled += published
            self.log.info(
                "backfilled",
                symbol=symbol,
                from_cursor=cursor,
                fetched=fetched,
                published=published,
                held=len(held),
            )

    async def _backfill_symbol(
        self,
        client: Any,
        mode: BackfillMode,
        symbol: str,
        cursor: int,
        skip_through: int | None = None,
    ) -> tuple[int, int]:
        """Fetch and publish the gap page by page: (trades fetched, trades published).

        ``skip_through``: numeric ids up to this one are known overlap (a poll's page
        re-reads the last one), skipped without counting them as duplicates.

        Each page is published before the next is asked for (memory: one page, however
        long the outage), after the sink has room (a backfill obeys backpressure too).
        """
        if mode is BackfillMode.BACK_BY_ID:
            return await self._backfill_back(client, symbol, cursor)
        fetched = published = 0
        nxt: bfill.NextPage | None = bfill.NextPage(cursor, bfill.DEFAULT_LIMIT)
        while nxt is not None:
            if isinstance(self._sink, ReadGate):
                await self._sink.wait_for_room()
            req = bfill.request_for(mode, symbol, nxt.cursor, nxt.limit)
            rows = await client.fetch_trades(req.symbol, req.since, req.limit, dict(req.params))
            recv_ns = time.time_ns()
            self.stats.last_frame_ns = max(
                self.stats.last_frame_ns, recv_ns
            )  # liveness (_backfill_back)
            page: list[TradeMark] = []
            for row in rows:
                try:
                    t = trade_from_ccxt(self.name, row, recv_ns)
                except NormalizeError as e:
                    self._invalid(e)
                    continue
                if t.symbol != symbol:
                    continue
                fetched += 1
                n = int_or_none(t.id)
                page.append(TradeMark(n, t.ts_ms))
                if skip_through is not None and n is not None and n <= skip_through:
                    continue
                published += self._emit_trade(t)
            held = self._held.get(symbol)
            first = held[0] if held else None
            held_first = None if first is None else TradeMark(int_or_none(first.id), first.ts_ms)
            nxt = bfill.next_page(mode, nxt.cursor, page, held_first, nxt.limit)
            if nxt is not None and nxt.skipped_ms is not None:
                self.stats.backfill_skipped_ms += 1
                self.log.warning(
                    "backfill_millisecond_skipped", symbol=symbol, ms=nxt.skipped_ms,
                    hint="more trades in one millisecond than the exchange's largest page",
                )  # fmt: skip
        return fetched, published

    async def _backfill_back(self, client: Any, symbol: str, last_id: int) -> tuple[int, int]:
        """The gap paged backwards (``BackfillMode.BACK_BY_ID``): from the first live trade
        held (or the latest) back to ``last_id``, then published oldest first, in chunks
        after the sink has room: (trades fetched, trades published)."""
        held = self._held.get(symbol)
        before = int_or_none(held[0].id) if held else None
        gap: dict[int, Trade] = {}
        fetched = 0
        while True:
            req = bfill.back_request(symbol, before)
            rows = await client.fetch_trades(req.symbol, req.since, req.limit, dict(req.params))
            recv_ns = time.time_ns()
            # a REST page is the exchange answering: a long backfill on a quiet socket must
            # not look stale to the watchdog (it would restart the session, and the backfill)
            self.stats.last_frame_ns = max(self.stats.last_frame_ns, recv_ns)
            ids: list[int] = []
            for row in rows:
                try:
                    t = trade_from_ccxt(self.name, row, recv_ns)
                except NormalizeError as e:
                    self._invalid(e)
                    continue
                n = int_or_none(t.id)
                if t.symbol != symbol or n is None:
                    continue
                fetched += 1
                ids.append(n)
                if bfill.in_back_page(n, last_id, before):
                    gap[n] = t
            nxt = bfill.back_next(ids, last_id, req.limit, len(gap), before)
            if nxt is None:
                break
            before = nxt
        published = 0
        ordered = [gap[n] for n in sorted(gap)]
        for i in range(0, len(ordered), 1_000):
            if isinstance(self._sink, ReadGate):
                await self._sink.wait_for_room()
            published += sum(self._emit_trade(t) for t in ordered[i : i + 1_000])
        return fetched, published

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


def _first_error(e: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups from the TaskGroup."""
    while isinstance(e, BaseExceptionGroup):
        inner = [x for x in e.exceptions if not isinstance(x, asyncio.CancelledError)]
        e = inner[0] if inner else e.exceptions[0]
    return e


__all__ = ["ExchangeWorker", "MarketbusError", "StaleConnectionError", "WorkerStats"]
