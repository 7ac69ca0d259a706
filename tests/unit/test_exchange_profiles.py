"""One place per exchange: each exchange's profile, its fake, and what any other exchange gets.

The registry (``publisher.exchanges``) is the only thing the publisher asks about an exchange;
these tests keep it whole (every faked exchange has a profile in its own module, every tap and
override names a method CCXT's adapter has, no other module of the publisher names an
exchange) and check that an unknown id gets the generic behaviour everywhere it is read.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import ccxt
import ccxt.pro
import pytest

from fake_exchange.registry import FAKES
from marketbus.models import Channel, Record
from marketbus.settings import NATIVE_PARSERS, SANDBOX_TESTED, ExchangeSettings
from publisher.backfill import BackfillMode, backfill_mode
from publisher.ccxt_client import (
    _client_class,
    ccxt_config,
    has_taps,
    subscribe_limit,
    tapped_channels,
    watch_params,
)
from publisher.deriv_feeds import Feed, Source, source
from publisher.derivatives import liquidation_from_ccxt
from publisher.exchanges import FAST_PATHS, GENERIC, PROFILES, profile
from publisher.pacing import ExchangeLimits, limits_of, snapshot_limit
from publisher.trade_ids import TradeIdTracker
from publisher.worker import ExchangeWorker

PUBLISHER = Path(__file__).resolve().parents[2] / "publisher"
UNKNOWN = ("kraken2", "bitget", "binance-testnet")
TS_MS = 1_700_000_000_000
RECV_NS = 1_700_000_000_123_000_000


@pytest.mark.parametrize("exchange", sorted(FAKES))
def test_every_faked_exchange_has_a_profile_in_its_own_module(exchange: str) -> None:
    assert exchange in PROFILES
    assert PROFILES[exchange].id == exchange
    assert importlib.import_module(f"publisher.{exchange}").PROFILE is PROFILES[exchange]


def test_every_profile_has_a_fake_and_is_a_ccxt_exchange() -> None:
    assert set(PROFILES) - set(FAKES) == set()
    assert set(PROFILES) <= set(ccxt.exchanges)
    assert all(p.id == i for i, p in PROFILES.items())


@pytest.mark.parametrize("exchange", sorted(PROFILES))
def test_taps_and_overrides_name_methods_of_the_adapter(exchange: str) -> None:
    p = profile(exchange)
    base = getattr(ccxt.pro, exchange)
    named = {t.method for t in p.taps} | {t.within for t in p.taps if t.within} | set(p.overrides)
    assert [m for m in sorted(named) if not callable(getattr(base, m, None))] == []


def test_no_other_publisher_module_names_an_exchange() -> None:
    """What the publisher knows about an exchange is in that exchange's module, not in a
    branch or table elsewhere (an exchange id as a string literal is the tell)."""
    own = {f"{i}.py" for i in PROFILES}
    found = []
    for path in sorted(PUBLISHER.glob("*.py")):
        if path.name in own:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in PROFILES:
                found.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert found == []


def test_the_scan_for_exchange_names_is_not_blind() -> None:
    tree = ast.parse((PUBLISHER / "binanceusdm.py").read_text())
    assert any(isinstance(n, ast.Constant) and n.value == "binanceusdm" for n in ast.walk(tree))


@pytest.mark.parametrize("exchange", UNKNOWN)
def test_an_unknown_id_gets_the_generic_profile(exchange: str) -> None:
    p = profile(exchange)
    assert p is GENERIC
    assert not has_taps(exchange) and tapped_channels(exchange) == frozenset()
    assert p.overrides == {} and p.market_types == ("spot",) and p.default_type == "spot"
    assert subscribe_limit(exchange, 200) == 200
    assert limits_of(exchange) == ExchangeLimits() and snapshot_limit(exchange, 20) is None
    assert backfill_mode(exchange, "aggTrade", True) is BackfillMode.SINCE
    assert backfill_mode(exchange, "trade", True) is BackfillMode.SINCE
    assert backfill_mode(exchange, "aggTrade", False) is None
    assert TradeIdTracker.for_exchange(exchange).consecutive is True
    assert p.native_parser is None and exchange not in FAST_PATHS
    assert p.ticker_carries == frozenset() and p.feeds == {} and p.mark_index is None
    liq = {"symbol": "BTC/USDT:USDT", "timestamp": TS_MS, "side": "buy", "price": 1.0,
           "contracts": 2.0}  # fmt: skip
    assert liquidation_from_ccxt(exchange, liq, RECV_NS).side == "buy"  # the order's side
    assert liquidation_from_ccxt("bybit", liq, RECV_NS).side == "sell"  # Bybit: the position's


def test_the_generic_profile_on_a_real_ccxt_exchange() -> None:
    """bitget: no profile, so CCXT's adapter as is, spot markets, by-time backfill."""
    cfg = ExchangeSettings(name="bitget", symbols=("BTC/USDT",))
    options = ccxt_config(cfg)["options"]
    assert options["tradesLimit"] == 100_000  # no taps: CCXT's cache is what is read
    assert options["defaultType"] == "spot"
    assert options["fetchMarkets"] == {"types": ["spot"]}
    assert "subscriptionLimitByStream" not in options
    assert "watchOrderBookLimit" not in options
    assert watch_params("bitget", Channel.TRADES, cfg) == {}
    assert cfg.native is False
    assert _client_class("bitget", ccxt.pro.bitget) is ccxt.pro.bitget
    has = {"watchTickers": True, "watchFundingRates": True, "watchMarkPrices": True}
    assert source("bitget", Channel.FUNDING, has) == Source(Feed.WATCH, "watch_funding_rates", True)
    assert source("bitget", Channel.MARK, has) == Source(Feed.WATCH, "watch_mark_prices", True)


def test_profiles_change_what_the_generic_rows_would_say() -> None:
    """The same capabilities, read through a profile: Bybit's tickers carry funding, Binance
    USD-M's funding comes in its mark price stream."""
    has = {"watchTickers": True, "watchFundingRates": True, "watchMarkPrices": True}
    assert source("bybit", Channel.FUNDING, has) == Source(Feed.TICKER)
    assert source("binanceusdm", Channel.FUNDING, has) == Source(
        Feed.WATCH, "watch_mark_prices", True
    )
    assert source("bybit", Channel.FUNDING, has, mode="poll") == Source(Feed.NONE)


def test_settings_name_lists_equal_the_registry() -> None:
    """Settings may not import the publisher (tests/unit/test_layers.py): their lists of
    exchanges are kept equal to the profiles here."""
    assert set(FAST_PATHS) == NATIVE_PARSERS
    assert {i for i, p in PROFILES.items() if p.native_parser is not None} == NATIVE_PARSERS
    assert {i for i, p in PROFILES.items() if p.sandbox_tested} == set(SANDBOX_TESTED)


def test_a_sandbox_follows_its_adapters_liquidation_side() -> None:
    """A Bybit testnet's records say ``bybit-testnet``; Bybit's side convention still applies."""
    cfg = ExchangeSettings(name="bybit", sandbox=True, symbols=["BTC/USDT:USDT"],
                           channels=[Channel.LIQUIDATIONS])  # fmt: skip
    published: list[Record] = []
    worker = ExchangeWorker(cfg, _Sink(published))
    worker._allowed = frozenset({(Channel.LIQUIDATIONS, "BTC/USDT:USDT")})
    liq = {"symbol": "BTC/USDT:USDT", "timestamp": TS_MS, "side": "buy", "price": 1.0,
           "contracts": 2.0}  # fmt: skip
    worker._on_derivative(Channel.LIQUIDATIONS, liq, RECV_NS)
    assert [(r.exchange, r.side) for r in published] == [("bybit-testnet", "sell")]  # type: ignore[attr-defined]


class _Sink:
    def __init__(self, out: list[Record]) -> None:
        self.out = out

    def put(self, record: Record) -> None:
        self.out.append(record)
