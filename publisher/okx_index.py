"""OKX's index price in its mark records.

OKX's ``mark-price`` channel carries the mark price only; the index price a contract's mark
follows is on ``index-tickers``, subscribed per index (a contract's ``uly``: ``BTC-USDT`` for
``BTC-USDT-SWAP``). CCXT 4.5.90 parses both with one ``handle_ticker`` (``idxPx`` becomes
``indexPrice``) but never joins them. In front of that handler (an override in OKX's profile,
``publisher.okx``):

- an ``index-tickers`` frame updates the latest index price per index and goes no further
  (CCXT would store it as the spot pair's ticker, which shares the index's id);
- a ``mark-price`` frame gets ``idxPx`` = its index's latest price, so the mark record the
  tap builds from CCXT's parse has both. Before the first index frame, ``index_price`` is
  None, as before.

The worker holds the ``index-tickers`` subscription of the indexes of the contracts whose
``mark`` it publishes (:func:`index_symbols`, ``publisher.deriv_worker``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

INDEX_KEY = "_marketbus_okx_index"
INDEX_CHANNEL = "index-tickers"
WATCH_PARAMS = {"channel": INDEX_CHANNEL}
"""``watch_tickers(symbols, WATCH_PARAMS)`` subscribes ``index-tickers`` of those ids."""


def index_of(inst_id: str) -> str:
    """A contract's index: 'BTC-USDT-SWAP' -> 'BTC-USDT', 'BTC-USD-250328' -> 'BTC-USD'."""
    return inst_id.rsplit("-", 1)[0]


def index_symbols(markets: Mapping[str, Any], symbols: Iterable[str]) -> list[str]:
    """The unified symbols CCXT subscribes ``index-tickers`` by, for these contracts: the spot
    pair whose id is the contract's index (OKX names an index like the pair). Contracts whose
    index has no such pair (inverse ones: ``BTC-USD``) are left out: no index price for them."""
    by_id = {m.get("id"): s for s, m in markets.items() if m.get("spot")}
    out: dict[str, None] = {}
    for symbol in symbols:
        market = markets.get(symbol) or {}
        info = market.get("info") or {}
        uly = info.get("uly") or info.get("instFamily") or index_of(str(market.get("id", "")))
        spot = by_id.get(uly)
        if spot is not None:
            out[spot] = None
    return list(out)


def indexed_tickers(original: Callable[..., Any]) -> Callable[..., Any]:
    """``handle_ticker`` with index prices kept and joined into mark-price frames."""

    def handle_ticker(self: Any, client: Any, message: Any) -> Any:
        arg = message.get("arg") if isinstance(message, dict) else None
        channel = arg.get("channel") if isinstance(arg, dict) else None
        if channel == INDEX_CHANNEL:
            prices: dict[str, str] = self.__dict__.setdefault(INDEX_KEY, {})
            for row in message.get("data") or ():
                if isinstance(row, dict):
                    inst, px = row.get("instId"), row.get("idxPx")
                    if isinstance(inst, str) and isinstance(px, str) and px:
                        prices[inst] = px
            return None
        if channel == "mark-price":
            prices = self.__dict__.get(INDEX_KEY) or {}
            if prices:
                for row in message.get("data") or ():
                    if isinstance(row, dict) and not row.get("idxPx"):
                        px = prices.get(index_of(str(row.get("instId", ""))))
                        if px is not None:
                            row["idxPx"] = px
        return original(self, client, message)

    return handle_ticker


__all__ = ["INDEX_CHANNEL", "WATCH_PARAMS", "index_of", "index_symbols", "indexed_tickers"]
