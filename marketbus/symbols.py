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


class AmbiguousSymbolError(UnknownSymbolError):
    """A spelling that names several listed markets and no rule picks one: refused, every
    candidate named, so the caller writes the one it means."""

    def __init__(self, exchange: str, symbol: str, candidates: tuple[str, ...]) -> None:
        super().__init__(exchange, symbol, candidates)
        self.candidates = candidates
        self.args = (
            f"ambiguous symbol {symbol!r} on {exchange}: it names {' and '.join(candidates)}; "
            "write the one you mean",
        )


class SymbolResolver:
    """Maps any common spelling of a market to CCXT's unified symbol.

    A unified symbol is taken as written (``BTC/USDT``, ``BTC/USDT:USDT``). A loose spelling
    (``BTCUSDT``, ``btc-usdt``, the exchange's own id) may name several markets where an
    exchange lists spot and contracts under one id (Bybit's ``BTCUSDT``): the spot market
    wins; without one, the market whose exchange id it is; a spelling still naming several
    markets is refused (:class:`AmbiguousSymbolError`) with each of them named.
    """

    def __init__(self, exchange: str, markets: Iterable[Mapping[str, Any]]) -> None:
        self.exchange = exchange
        self._unified: dict[str, str] = {}
        self._loose: dict[str, list[str]] = {}
        self._spot: set[str] = set()
        self._ids: dict[str, set[str]] = {}
        for m in markets:
            symbol = m.get("symbol")
            if not isinstance(symbol, str):
                continue
            self._unified[symbol.upper()] = symbol
            keys = {squash(symbol)}
            if isinstance(m.get("id"), str):
                keys.add(squash(m["id"]))
                self._ids.setdefault(squash(m["id"]), set()).add(symbol)
            if isinstance(m.get("base"), str) and isinstance(m.get("quote"), str):
                keys.add(squash(m["base"] + m["quote"]))
            if m.get("spot", True) is not False:
                self._spot.add(symbol)
            for k in keys:
                named = self._loose.setdefault(k, [])
                if symbol not in named:
                    named.append(symbol)

    @property
    def symbols(self) -> list[str]:
        return sorted(self._unified.values())

    def resolve(self, raw: str) -> str:
        """The unified symbol for ``raw``, or :class:`UnknownSymbolError` naming it
        (:class:`AmbiguousSymbolError` when it names several markets)."""
        text = raw.strip()
        if not text:
            raise UnknownSymbolError(self.exchange, raw)
        exact = self._unified.get(normalize_symbol(text))
        if exact is not None:
            return exact
        key = squash(text)
        named = self._loose.get(key)
        if named:
            spot = [s for s in named if s in self._spot]
            by_id = [s for s in named if s in self._ids.get(key, ())]
            for rule in (named, spot, by_id):  # the only one, the spot one, the one of that id
                if len(rule) == 1:
                    return rule[0]
            raise AmbiguousSymbolError(self.exchange, raw, tuple(sorted(named)))
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
