"""Subscriptions of a worker: what it should publish, resolved, and kept so while it runs.

The wanted set is the configuration plus run-time changes (:mod:`marketbus.subscriptions`).
Applying it starts one watch loop per channel and chunk of new symbols and stops the loops
of removed ones (telling the exchange to unsubscribe, best effort), in a running session:
no reconnect, nothing else interrupted.
"""

from __future__ import annotations

import asyncio
from typing import Any

from marketbus.errors import InternalError, UnknownSymbolError
from marketbus.models import DERIVATIVES, Channel
from marketbus.subscriptions import Change, effective, loose_symbol
from publisher.ccxt_client import streams_per_connection, subscribe_limit, watch_params
from publisher.deriv_feeds import UNWATCH_METHODS, Feed, source
from publisher.errors_map import from_ccxt
from publisher.profile import Source
from publisher.stream_routing import keep_on_batch_connection
from publisher.worker_parts import MAX_SYMBOLS_PER_SUBSCRIBE, Batch, Wanted, WorkerParts, chunks


class SubscriptionsMixin(WorkerParts):
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
        cleaned = {Channel(c): tuple(dict.fromkeys(filter(None, map(str.strip, syms))))
                   for c, syms in wanted.items()}  # fmt: skip
        self.wanted = {c: syms for c, syms in cleaned.items() if syms}
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
        before, self.skipped = self.skipped, {}
        for channel, raws in self.wanted.items():
            good, bad = self._resolver.resolve_all(raws)
            desired[channel] = self._contracts_only(channel, good, before)
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
                self._stop_batch(client, batch, gone, desired)
                removed.setdefault(batch.channel, []).extend(gone)
                keep = tuple(s for s in batch.symbols if s in want)
                if keep:
                    keep_on_batch_connection(client, batch.symbols, keep)
                    self._start_batch(client, batch.channel, keep)
            running.setdefault(batch.channel, set()).update(s for s in batch.symbols if s in want)
        added: dict[Channel, list[str]] = {}
        limit = subscribe_limit(self.exchange_id, MAX_SYMBOLS_PER_SUBSCRIBE)
        for channel, symbols in desired.items():
            new = [s for s in symbols if s not in running.get(channel, set())]
            per_symbol = len(self.cfg.candle_intervals) if channel is Channel.CANDLES else 1

            def size(market_type: object, per_symbol: int = per_symbol) -> int:
                # a watch loop's streams all go on one of CCXT's connections, which holds
                # at most so many (Binance: 1,024 a connection; CCXT refuses past it)
                per_conn = streams_per_connection(client, market_type)
                return limit if per_conn is None else min(limit, per_conn // per_symbol)

            for chunk in chunks(new, size, lambda s: _market_type(client, s)):
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
                elif channel in DERIVATIVES:
                    self.deriv_gate.forget(symbol, channel)
        self.active = {c: list(s) for c, s in desired.items() if s}
        self._allowed = frozenset((c, s) for c, syms in self.active.items() for s in syms)
        self.markets = sorted({s for syms in self.active.values() for s in syms})
        if self._fast_path is not None:
            self._fast_path.follow(
                client.market(sym)
                for channel in (Channel.TRADES, Channel.TICKER)
                for sym in self.active.get(channel, [])
            )
        if added or removed:
            self.log.info(
                "subscriptions",
                added={c.value: s for c, s in added.items()},
                removed={c.value: s for c, s in removed.items()},
                markets=self.markets,
            )

    def _start_batch(self, client: Any, channel: Channel, symbols: tuple[str, ...]) -> None:
        assert self._tg is not None
        batch = Batch(channel, symbols)
        batch.task = self._tg.create_task(
            self._watch(client, channel, list(symbols)), name=f"{self.name}-{channel.value}"
        )
        self._batches.append(batch)

    def _stop_batch(
        self,
        client: Any,
        batch: Batch,
        gone: list[str],
        desired: dict[Channel, list[str]] | None = None,
    ) -> None:
        self._batches.remove(batch)
        if batch.task is not None:
            batch.task.cancel()
        if desired is not None and (
            batch.channel is Channel.TICKER
            or getattr(self._derivative_source(client, batch.channel), "feed", None) is Feed.TICKER
        ):
            # one tickers subscription may feed several channels (Bybit: ticker, funding,
            # mark, open interest): it goes only when none of them wants it any more
            gone = [s for s in gone if not self._ticker_feeds(s, desired)]
            if gone and batch.channel is not Channel.TICKER:
                keep_on_batch_connection(client, batch.symbols, gone)
                self._tg_unwatch(client, Channel.TICKER, gone)
                return
        src = self._derivative_source(client, batch.channel)
        if desired is not None and src is not None:
            if src.feed is Feed.WATCH and src.method is not None:
                # one stream may feed two channels (Binance USD-M: markPrice, mark and funding)
                method = src.method
                gone = [s for s in gone
                        if not self._watch_feeds(s, method, desired, but=batch.channel)]  # fmt: skip
        keep_on_batch_connection(client, batch.symbols, gone)
        self._tg_unwatch(client, batch.channel, gone)

    def _tg_unwatch(self, client: Any, channel: Channel, gone: list[str]) -> None:
        if self._tg is not None and gone:
            self._tg.create_task(self._unwatch(client, channel, gone))

    def _derivative_source(self, client: Any, channel: Channel) -> Source | None:
        if channel not in DERIVATIVES:
            return None
        return source(self.exchange_id, channel, getattr(client, "has", {}) or {}, self.cfg.mode)

    async def _unwatch(self, client: Any, channel: Channel, symbols: list[str]) -> None:
        """Tell the exchange to stop sending (best effort: our filter already drops them)."""
        try:
            async with asyncio.timeout(5):
                params = watch_params(self.exchange_id, channel, self.cfg)  # the same stream name
                if channel is Channel.TRADES and client.has.get("unWatchTradesForSymbols"):
                    await client.un_watch_trades_for_symbols(symbols, dict(params))
                elif channel is Channel.TICKER and client.has.get("unWatchTickers"):
                    await client.un_watch_tickers(symbols, dict(params))
                elif channel is Channel.BOOK and client.has.get("unWatchOrderBookForSymbols"):
                    await client.un_watch_order_book_for_symbols(symbols)
                elif channel is Channel.CANDLES and client.has.get("unWatchOHLCVForSymbols"):
                    pairs = [[s, i] for s in symbols for i in self.cfg.candle_intervals]
                    await client.un_watch_ohlcv_for_symbols(pairs)
                elif channel in DERIVATIVES:
                    await self._unwatch_derivatives(client, channel, symbols)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the stream may stay open; the tap filter drops it
            err = from_ccxt(e)
            if isinstance(err, InternalError):  # ours: say it loudly, with the traceback
                self.log.error("unwatch_bug", channel=channel.value, error=str(err), exc_info=e)
            else:
                self.log.info("unwatch_failed", channel=channel.value, error=str(e)[:200])

    async def _unwatch_derivatives(self, client: Any, channel: Channel, symbols: list[str]) -> None:
        """The websocket stream of a derivatives channel, where CCXT can unsubscribe it
        (``un_watch_mark_prices``); the others stay open and the filter drops them."""
        src = self._derivative_source(client, channel)
        unwatch = UNWATCH_METHODS.get(src.method or "") if src and src.feed is Feed.WATCH else None
        if unwatch is None or not client.has.get(unwatch[0]):
            self.log.info("unwatch_not_offered", channel=channel.value, symbols=symbols[:5])
            return
        if unwatch[2]:
            await getattr(client, unwatch[1])(symbols)
        else:
            for s in symbols:
                await getattr(client, unwatch[1])(s)


def _market_type(client: Any, symbol: str) -> object:
    """spot, swap, future...: one watch loop holds markets of one type (one url)."""
    markets = getattr(client, "markets", None)
    market = markets.get(symbol) if isinstance(markets, dict) else None
    return market.get("type") if isinstance(market, dict) else None
