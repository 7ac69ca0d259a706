"""Symbol resolution against Binance's real market list, parsed offline by CCXT itself."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import ccxt
import pytest

from marketbus.errors import FatalError, UnknownSymbolError
from marketbus.symbols import SymbolResolver

RECORDING = Path(__file__).resolve().parents[2] / "fake_exchange" / "data" / "BINANCE.jsonl"


def binance_markets() -> list[dict[str, Any]]:
    """CCXT's unified markets from the recorded exchangeInfo, as fetch_markets would build them."""
    with RECORDING.open() as f:
        info = next(json.loads(r["data"]) for r in map(json.loads, f) if r.get("t") == "http")
    ex = ccxt.binance({"options": {"fetchMarkets": {"types": ["spot"]}}})
    # fetch_markets resets these before parsing (no margin pairs fetched for spot only)
    ex.options["crossMarginPairsData"] = []
    ex.options["isolatedMarginPairsData"] = []
    parsed = (ex.parse_market(m) for m in info["symbols"])
    return [m for m in parsed if m is not None]


@pytest.fixture(scope="module")
def markets() -> list[dict[str, Any]]:
    return binance_markets()


@pytest.fixture(scope="module")
def resolver(markets: list[dict[str, Any]]) -> SymbolResolver:
    return SymbolResolver("binance", markets)


def test_the_recording_gives_a_real_market_list(markets: list[dict[str, Any]]) -> None:
    symbols = {m["symbol"] for m in markets}
    assert len(markets) > 1000
    assert {"BTC/USDT", "ETH/BTC", "NKN/USDT", "BLZ/ETH", "LRC/BTC", "RUNE/EUR"} <= symbols


@pytest.mark.parametrize(
    "raw", ["BTCUSDT", "btcusdt", "btc-usdt", "BTC_USDT", "BTC/USDT", " btc/usdt ", "Btc-Usdt"]
)
def test_common_spellings_resolve_to_the_unified_symbol(resolver: SymbolResolver, raw: str) -> None:
    assert resolver.resolve(raw) == "BTC/USDT"


@pytest.mark.parametrize(
    ("raw", "symbol"),
    [
        ("NKNUSDT", "NKN/USDT"),
        ("nknusdt", "NKN/USDT"),
        ("BLZETH", "BLZ/ETH"),
        ("lrc-btc", "LRC/BTC"),
        ("RUNE_EUR", "RUNE/EUR"),
        ("ETHBTC", "ETH/BTC"),
        ("BTCETH", None),  # the pair exists only the other way round
    ],
)
def test_recorded_markets_resolve(resolver: SymbolResolver, raw: str, symbol: str | None) -> None:
    if symbol is None:
        with pytest.raises(UnknownSymbolError):
            resolver.resolve(raw)
    else:
        assert resolver.resolve(raw) == symbol


def test_every_listed_market_resolves_by_its_id_and_symbol(
    resolver: SymbolResolver, markets: list[dict[str, Any]]
) -> None:
    id_count = Counter(m["id"] for m in markets)
    for m in markets:
        assert resolver.resolve(m["symbol"]) == m["symbol"]
        assert resolver.resolve(m["symbol"].lower()) == m["symbol"]
        if id_count[m["id"]] == 1:
            assert resolver.resolve(m["id"]) == m["symbol"]


def test_unknown_symbol_names_it(resolver: SymbolResolver) -> None:
    with pytest.raises(UnknownSymbolError) as info:
        resolver.resolve("FOO/BAR")
    err = info.value
    assert "FOO/BAR" in str(err)
    assert "binance" in str(err)
    assert err.symbol == "FOO/BAR"
    assert err.exchange == "binance"
    assert isinstance(err, FatalError)
    assert isinstance(err, KeyError)  # callers that look symbols up like a dict still work
    assert not str(err).startswith('"')  # no KeyError double quoting


@pytest.mark.parametrize("raw", ["", "   ", "/", "-"])
def test_empty_input_is_unknown(resolver: SymbolResolver, raw: str) -> None:
    with pytest.raises(UnknownSymbolError):
        resolver.resolve(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("BTC/USDX", "BTC/USDT"), ("ETH/USDTT", "ETH/USDT"), ("NKM/USDT", "NKN/USDT")],
)
def test_near_miss_gets_suggestions(resolver: SymbolResolver, raw: str, expected: str) -> None:
    with pytest.raises(UnknownSymbolError) as info:
        resolver.resolve(raw)
    err = info.value
    assert expected in err.suggestions
    assert len(err.suggestions) <= 3
    assert all(s in resolver.symbols for s in err.suggestions)
    assert "did you mean" in str(err) and expected in str(err)


def test_far_miss_gets_no_suggestions(resolver: SymbolResolver) -> None:
    with pytest.raises(UnknownSymbolError) as info:
        resolver.resolve("QQQQQQ/ZZZZZZ")
    assert info.value.suggestions == ()
    assert "did you mean" not in str(info.value)


def test_resolve_all_keeps_going_and_deduplicates(resolver: SymbolResolver) -> None:
    good, bad = resolver.resolve_all(
        ["BTCUSDT", "btc/usdt", "FOO/BAR", "NKN-USDT", "BTC_USDT", "nope", "nknusdt"]
    )
    assert good == ["BTC/USDT", "NKN/USDT"]  # first-seen order, once each
    assert [e.symbol for e in bad] == ["FOO/BAR", "nope"]
    assert all(isinstance(e, UnknownSymbolError) for e in bad)


def test_resolve_all_of_nothing(resolver: SymbolResolver) -> None:
    assert resolver.resolve_all([]) == ([], [])


def test_symbols_are_sorted_and_complete(
    resolver: SymbolResolver, markets: list[dict[str, Any]]
) -> None:
    assert resolver.symbols == sorted({m["symbol"] for m in markets})


def _m(symbol: str, mid: str, base: str, quote: str, *, spot: bool) -> dict[str, Any]:
    return {"symbol": symbol, "id": mid, "base": base, "quote": quote, "spot": spot}


SPOT = _m("BTC/USDT", "BTCUSDT", "BTC", "USDT", spot=True)
SWAP = _m("BTC/USDT:USDT", "BTCUSDT", "BTC", "USDT", spot=False)


@pytest.mark.parametrize("order", [(SPOT, SWAP), (SWAP, SPOT)], ids=["spot-first", "swap-first"])
def test_spot_wins_a_loose_collision_whatever_the_order(order: tuple[dict[str, Any], ...]) -> None:
    r = SymbolResolver("binance", order)
    assert r.resolve("BTCUSDT") == "BTC/USDT"
    assert r.resolve("btc-usdt") == "BTC/USDT"
    assert r.resolve("BTC/USDT:USDT") == "BTC/USDT:USDT"  # still reachable by its own name
    assert r.resolve("btc/usdt:usdt") == "BTC/USDT:USDT"


def test_swap_alone_is_found_by_its_id() -> None:
    r = SymbolResolver("binance", [SWAP])
    assert r.resolve("BTCUSDT") == "BTC/USDT:USDT"


def test_markets_without_a_symbol_are_skipped() -> None:
    r = SymbolResolver("x", [{"id": "AB"}, {"symbol": None}, {"symbol": 5}, {"symbol": "A/B"}])
    assert r.symbols == ["A/B"]
    assert r.resolve("ab") == "A/B"


def test_a_symbol_is_returned_in_its_listed_case() -> None:
    r = SymbolResolver("x", [{"symbol": "1000pepe/USDT", "base": "1000pepe", "quote": "USDT"}])
    assert r.resolve("1000PEPE/USDT") == "1000pepe/USDT"
    assert r.resolve("1000PEPEUSDT") == "1000pepe/USDT"
