"""REST polling loops of a worker (``mode = "poll"``, or no websocket for a channel).

The pure rules (which channels, how often, what counts as changed) are in
``publisher.poller``; trades are fetched from the last one published with the backfill
cursor, so each is published once and none is skipped between polls.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from marketbus.models import DERIVATIVES, Channel
from publisher import backfill as bfill
from publisher.backfill import BackfillMode
from publisher.normalize import NormalizeError, ticker_from_ccxt, trade_from_ccxt
from publisher.poller import poll_interval, requests_per_cycle, same_ticker
from publisher.worker_parts import WorkerParts


class PollingMixin(WorkerParts):
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
        if channel in DERIVATIVES:
            await self._poll_derivative_once(client, channel, symbols)
        elif channel is Channel.TRADES:
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
                # the page overlaps the last poll by design: not duplicates
                last = self.trade_ids.last.get(symbol)
                await self._backfill_symbol(client, mode, symbol, cursor, skip_through=last)
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
