"""The derivatives channels of a worker: ``funding``, ``mark``, ``open_interest``,
``liquidations``.

Each channel is fed the way :func:`publisher.deriv_feeds.source` picks for the exchange: from
the exchange's tickers (Bybit: the ``tickers`` subscription, shared with channel ``ticker``),
a CCXT watch method, or a CCXT fetch method on the polling timer. Records reach the worker
through the taps as CCXT parses them (the profile's ``taps``: lossless, like trades);
the loops here only hold the subscriptions, or poll. Values go through
:mod:`publisher.derivatives` (pure) and a :class:`~publisher.derivatives.DerivativesGate` that
drops repeats. A derivatives channel asked for a spot market is skipped with a log line
(``derivatives_channel_skipped``) and shown in status (``skipped``), never an error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import ccxt

from marketbus.models import DERIVATIVES, Channel
from publisher.ccxt_client import tapped_channels
from publisher.deriv_feeds import Feed, Source, is_contract, source
from publisher.derivatives import DerivativesGate, derivative_from_ccxt, from_ticker_info
from publisher.exchanges import profile
from publisher.normalize import NormalizeError
from publisher.worker_parts import WorkerParts


class DerivativesMixin(WorkerParts):
    deriv_gate: DerivativesGate
    skipped: dict[str, str]

    def _deriv_source(self, client: Any, channel: Channel) -> Source:
        return source(self.exchange_id, channel, getattr(client, "has", {}) or {}, self.cfg.mode)

    # -- which markets ----------------------------------------------------------------------
    def _contracts_only(
        self, channel: Channel, symbols: list[str], before: Mapping[str, str] | None = None
    ) -> list[str]:
        """The symbols ``channel`` can be published for; the others go to ``skipped``, with a
        log line unless ``before`` (the last resolution's) already had them.

        A derivatives channel needs a contract market and a way to get it (some CCXT method
        or the exchange's tickers); anything else keeps its other channels and goes on."""
        if channel not in DERIVATIVES:
            return symbols
        client = self._client
        markets = getattr(client, "markets", None) or {}
        feed = self._deriv_source(client, channel).feed if client is not None else Feed.NONE
        keep: list[str] = []
        for symbol in symbols:
            market = markets.get(symbol) if isinstance(markets, dict) else None
            if feed is Feed.NONE:
                why = f"{self.name} offers no {channel.value} through CCXT"
            elif not is_contract(market):
                kind = market.get("type") if isinstance(market, dict) else "unknown"
                why = f"{symbol} is a {kind} market: {channel.value} exists for contracts only"
            else:
                keep.append(symbol)
                continue
            key = f"{channel.value}|{symbol}"
            if key not in (self.skipped if before is None else before):
                self.log.warning(
                    "derivatives_channel_skipped", channel=channel.value, symbol=symbol, why=why
                )
            self.skipped[key] = why
        return keep

    # -- watch loops ------------------------------------------------------------------------
    async def _watch_derivatives(self, client: Any, channel: Channel, symbols: list[str]) -> None:
        src = self._deriv_source(client, channel)
        if src.feed is Feed.POLL:
            await self._poll(client, channel, symbols)
            return
        tapped = channel in tapped_channels(self.exchange_id)
        if src.feed is Feed.TICKER:  # the tickers subscription carries it (held, maybe shared)
            many = bool(client.has.get("watchTickers"))
            method = "watch_tickers" if many else "watch_ticker"
            tapped = Channel.TICKER in tapped_channels(self.exchange_id)
            await self._hold_subscription(client, Channel.TICKER, Source(Feed.WATCH, method, many), symbols,
                             tapped, derive=channel)  # fmt: skip
            return
        if src.feed is Feed.WATCH:
            index = profile(self.exchange_id).mark_index if channel is Channel.MARK else None
            if index is None:
                await self._hold_subscription(client, channel, src, symbols, tapped)
                return
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._hold_index(client, *index, symbols))
                tg.create_task(self._hold_subscription(client, channel, src, symbols, tapped))
            return
        # Feed.NONE: _contracts_only never lets such a channel through; hold nothing
        await asyncio.Event().wait()

    async def _hold_subscription(
        self,
        client: Any,
        channel: Channel,
        src: Source,
        symbols: list[str],
        tapped: bool,
        derive: Channel | None = None,
    ) -> None:
        """Keep ``src``'s subscription of ``symbols`` alive; without a tap, publish what each
        call returns (a tap already saw all of it, as parsed)."""
        method = getattr(client, str(src.method))
        if not src.many and len(symbols) > 1:
            async with asyncio.TaskGroup() as tg:
                for s in symbols:
                    tg.create_task(
                        self._hold_subscription(client, channel, src, [s], tapped, derive)
                    )
            return
        while True:
            got = await method(symbols if src.many else symbols[0])
            if not tapped:
                self._deliver(channel, got, derive)

    async def _hold_index(
        self,
        client: Any,
        symbols_of: Callable[[Mapping[str, Any], list[str]], list[str]],
        params: dict[str, str],
        symbols: list[str],
    ) -> None:
        """Hold the subscription that carries the index price of these contracts' marks
        (the profile's ``mark_index``). Its frames are taken in front of CCXT's handler, so
        the call never returns; a refusal leaves the marks without index, said once."""
        watch = symbols_of(client.markets or {}, symbols)
        if not watch:
            return
        try:
            while True:
                await client.watch_tickers(watch, dict(params))
        except ccxt.BadRequest as e:  # an index the exchange refused (60018): marks go on
            self.log.warning("index_price_unavailable", symbols=watch[:5], error=str(e)[:200])

    def _deliver(self, channel: Channel, got: Any, derive: Channel | None) -> None:
        recv_ns = time.time_ns()
        for item in _structures(got):
            if derive is not None:
                self._derive_from_ticker(item, recv_ns, frozenset({derive}))
            else:
                self._on_derivative(channel, item, recv_ns)

    async def _poll_derivative_once(
        self, client: Any, channel: Channel, symbols: list[str]
    ) -> None:
        src = self._deriv_source(client, channel)
        method = getattr(client, str(src.method))
        if src.many:
            got = await method(symbols)
        else:
            got = [await method(s) for s in symbols]
        recv_ns = time.time_ns()
        for item in _structures(got):
            self._on_derivative(channel, item, recv_ns)

    # -- records ----------------------------------------------------------------------------
    def _on_derivative(self, channel: Channel, data: Any, recv_ns: int | None = None) -> None:
        """One CCXT structure of a derivatives channel, from a tap, a watch or a poll."""
        if not isinstance(data, dict) or (channel, data.get("symbol")) not in self._allowed:
            return
        try:
            record = derivative_from_ccxt(
                self.name, channel, data, recv_ns or time.time_ns(), self.exchange_id
            )
        except NormalizeError as e:
            self._invalid(e)
            return
        if self.deriv_gate.offer(record):
            self._publish(record)

    def _derive_from_ticker(
        self, ticker: Any, recv_ns: int, only: frozenset[Channel] | None = None
    ) -> None:
        """The derivatives channels an exchange's ticker carries (Bybit linear), for the ones
        this market is subscribed to."""
        carried = profile(self.exchange_id).ticker_carries
        if not carried or not isinstance(ticker, dict):
            return
        symbol = ticker.get("symbol")
        wanted = frozenset(
            c for c in (only or carried) if c in carried and (c, symbol) in self._allowed
        )
        if not wanted:
            return
        for record in from_ticker_info(self.name, ticker, recv_ns, wanted):
            if self.deriv_gate.offer(record):
                self._publish(record)

    def _ticker_feeds(self, symbol: str, desired: dict[Channel, list[str]]) -> bool:
        """Whether some channel still wants ``symbol``'s tickers subscription held (the
        ``ticker`` channel, or one its tickers carry)."""
        client = self._client
        for channel in (Channel.TICKER, *profile(self.exchange_id).ticker_carries):
            if symbol not in desired.get(channel, ()):
                continue
            if channel is Channel.TICKER or (
                client is not None and self._deriv_source(client, channel).feed is Feed.TICKER
            ):
                return True
        return False

    def _watch_feeds(
        self, symbol: str, method: str, desired: dict[Channel, list[str]], but: Channel
    ) -> bool:
        """Whether a channel other than ``but`` still wants ``symbol`` from the websocket
        ``method`` (Binance USD-M: ``mark`` and ``funding`` both come in ``markPrice``)."""
        client = self._client
        if client is None:
            return False
        for channel in DERIVATIVES:
            if channel is not but and symbol in desired.get(channel, ()):
                src = self._deriv_source(client, channel)
                if src.feed is Feed.WATCH and src.method == method:
                    return True
        return False


def _structures(got: Any) -> Iterable[dict[str, Any]]:
    """What a CCXT call returned, as structures: one, a list, or a dict by symbol."""
    if isinstance(got, dict):
        if "symbol" in got or "info" in got:
            return [got]
        return [v for v in got.values() if isinstance(v, dict)]
    if isinstance(got, list | tuple):
        return [v for v in got if isinstance(v, dict)]
    return []


__all__ = ["DerivativesMixin"]
