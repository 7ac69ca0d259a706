"""Watch loops of a worker: one per channel and chunk of symbols, holding the subscription.

Trades and tickers reach us through the taps as CCXT parses them (the loop only keeps the
subscription alive); books and candles are read from CCXT's synchronized caches after each
update. A channel CCXT has no websocket for is polled instead (``publisher.polling``). The
derivatives channels have loops of their own (``publisher.deriv_worker``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import ccxt

from marketbus.errors import ExchangeUnavailableError
from marketbus.models import DERIVATIVES, Channel
from publisher.book_resyncs import take as take_resyncs
from publisher.books import book_from_ccxt
from publisher.ccxt_client import has_taps, watch_params
from publisher.normalize import NormalizeError
from publisher.pacing import snapshot_limit
from publisher.worker_parts import MAX_BOOK_RESYNCS, WorkerParts


class WatchMixin(WorkerParts):
    async def _watch(self, client: Any, channel: Channel, symbols: list[str]) -> None:
        if channel in DERIVATIVES:  # fed its own way per exchange: publisher.deriv_worker
            await self._watch_derivatives(client, channel, symbols)
            return
        if channel in self.polled:
            await self._poll(client, channel, symbols)
            return
        if channel is Channel.BOOK:
            await self._watch_books(client, symbols)
            return
        if channel is Channel.CANDLES:
            await self._watch_candles(client, symbols)
            return
        params = watch_params(self.exchange_id, channel, self.cfg)
        tapped = has_taps(self.exchange_id)
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

    async def _watch_books(self, client: Any, symbols: list[str]) -> None:
        """CCXT keeps each book in sync; a gap or bad checksum raises, and the next call
        resubscribes and refetches the snapshot: counted, and the session goes on.

        Where a book starts from a REST snapshot (Binance: of the size
        ``publisher.pacing.snapshot_limit`` picks, CCXT's ``watchOrderBookLimit``), a batch
        is subscribed only once few books still wait for theirs: CCXT caches every diff of
        a book until its snapshot is in."""
        many = len(symbols) > 1 and client.has.get("watchOrderBookForSymbols")
        if not many and len(symbols) > 1:
            async with asyncio.TaskGroup() as tg:
                for s in symbols:
                    tg.create_task(self._watch_books(client, [s]))
            return
        if snapshot_limit(self.exchange_id, self.cfg.book_depth) is not None:
            await self.pacer.books.admit(symbols)
        resyncs: list[float] = []
        seen: dict[str, tuple[Any, Any]] = {}
        mine = frozenset(symbols)
        counted: deque[Exception] = deque(maxlen=64)  # noted ones that may still be raised
        while True:
            raised: Exception | None = None
            try:
                if many:
                    book = await client.watch_order_book_for_symbols(symbols)
                else:
                    book = await client.watch_order_book(symbols[0])
            except ccxt.InvalidNonce as e:  # ChecksumError is one too
                raised, book = e, None
            # noted drops include those a race's losing future swallowed (book_resyncs)
            noted = take_resyncs(client, mine)
            if raised is not None and not any(raised is c for c in (*noted, *counted)):
                noted.append(raised)  # CCXT's own gap path, which notes nothing
            for err in noted:
                self._book_resync(symbols, err, resyncs)
            if noted:
                counted.extend(noted)
                seen.clear()
            if book is None:
                continue
            if not many:
                self._on_book(book)
                continue
            # A *_for_symbols watch returns one symbol's book a call: books of the others that
            # changed while this task waited for its turn (frames handled back to back) would
            # not be published until their next update, and a quiet market's last state
            # never. Every book of the batch that moved since it was last seen goes out.
            self._on_book(book)
            self._mark_seen(seen, book)
            books = getattr(client, "orderbooks", None)
            if not isinstance(books, dict):
                continue
            for s in symbols:
                other = books.get(s)
                if other is not None and other is not book and seen.get(s) != _version(other):
                    self._on_book(other)
                    self._mark_seen(seen, other)

    @staticmethod
    def _mark_seen(seen: dict[str, tuple[Any, Any]], book: Any) -> None:
        symbol = book.get("symbol") if isinstance(book, dict) else None
        if isinstance(symbol, str):
            seen[symbol] = _version(book)

    def _book_resync(self, symbols: list[str], e: Exception, resyncs: list[float]) -> None:
        self.stats.book_resyncs += 1
        self.books.stats.resyncs += 1
        now = time.monotonic()
        resyncs[:] = [t for t in resyncs if now - t < 60] + [now]
        self.log.warning(
            "book_resync", error=f"{type(e).__name__}: {e}"[:300], symbols=symbols[:5],
            total=self.stats.book_resyncs,
        )  # fmt: skip
        for s in symbols:  # the next book of each starts a fresh record series
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


def _version(book: Any) -> tuple[Any, Any]:
    """What tells one state of a CCXT book from the next: its nonce and timestamp."""
    return (book.get("nonce"), book.get("timestamp"))
