"""Symbol normalization: ``BTCUSDT``, ``btc-usdt``, ``BTC_USDT`` and ``BTC/USDT`` name one market.

Resolution is against the exchange's own market list (CCXT's ``markets``), so an
input is only accepted when the exchange really lists it. Pure: build a resolver
from market dicts, then look up.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from marketbus.errors import UnknownSymbolError


def normalize_symbol(symbol: str) -> str:
    """``btc-usdt``, ``BTC_USDT``, `` btc/usdt `` -> ``BTC/USDT`` (``BTCUSDT`` stays as is):
    the spelling-level part of resolution, for code that has no market list at hand."""
    return symbol.strip().upper().replace("-", "/").replace("_", "/")


def squash(s: str) -> str:
    """Letters and digits only, upper case: ``btc/usdt`` and ``BTCUSDT`` meet at ``BTCUSDT``."""
    return "".join(ch for ch in s.upper() if ch.isalnum())


class SymbolResolver:
    """Maps any common spelling of a market to CCXT's unified symbol."""

    def __init__(self, exchange: str, markets: Iterable[Mapping[str, Any]]) -> None:
        self.exchange = exchange
        self._unified: dict[str, str] = {}
        self._loose: dict[str, str] = {}
        for m in markets:
            symbol = m.get("symbol")
            if not isinstance(symbol, str):
                continue
            self._unified[symbol.upper()] = symbol
            # spot markets win a loose-key collision (BTCUSDT spot vs BTC/USDT:USDT swap)
            keys = {squash(symbol)}
            if isinstance(m.get("id"), str):
                keys.add(squash(m["id"]))
            if isinstance(m.get("base"), str) and isinstance(m.get("quote"), str):
                keys.add(squash(m["base"] + m["quote"]))
            spot = m.get("spot", True) is not False
            for k in keys:
                if spot or k not in self._loose:
                    self._loose[k] = symbol

    @property
    def symbols(self) -> list[str]:
        return sorted(self._unified.values())

    def resolve(self, raw: str) -> str:
        """The unified symbol for ``raw``, or :class:`UnknownSymbolError` naming it."""
        text = raw.strip()
        if not text:
            raise UnknownSymbolError(self.exchange, raw)
        exact = self._unified.get(normalize_symbol(text))
        if exact is not None:
            return exact
        loose = self._loose.get(squash(text))
        if loose is not None:
            return loose
        close = difflib.get_close_matches(text.upper(), list(self._unified), n=3, cutoff=0.75)
        raise UnknownSymbolError(self.exchange, raw, tuple(self._unified[c] for c in close))

    def resolve_all(self, raws: Iterable[str]) -> tuple[list[str], list[UnknownSymbolError]]:
        """Resolve many; unknown ones come back as errors instead of stopping the rest."""
        good: list[str] = []
        bad: list[UnknownSymbolError] = []
        for raw in raws:
            try:
                sym = self.resolve(raw)
            except UnknownSymbolError as e:
                bad.append(e)
                continue
            if sym not in good:
                good.append(sym)
        return good, bad
