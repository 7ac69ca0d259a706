"""URL rebasing onto the fake exchange, the CCXT client config, and the parse taps."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ccxt
import ccxt.pro
import pytest

from marketbus.models import Channel
from marketbus.settings import ExchangeSettings
from publisher.ccxt_client import ccxt_config, has_taps, make_client, watch_params
from publisher.endpoints import rebase_urls

RECORDING = Path(__file__).resolve().parents[2] / "fake_exchange" / "data" / "BINANCE.jsonl"
FAKE = "http://127.0.0.1:8765"


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list | tuple):
        for v in node:
            yield from _strings(v)


# -- rebase_urls ----------------------------------------------------------------------------

API = {
    "public": "https://api.binance.com/api/v3",
    "sapi": "https://api.binance.com/sapi/v1?x=1#frag",
    "ws": {
        "spot": "wss://stream.binance.com:9443/ws",
        "ws-api": {"spot": "wss://ws-api.binance.com:443/ws-api/v3"},
    },
    "plain": "ws://stream.example.com/stream",
    "label": "not a url",
    "n": 3,
    "none": None,
}


def test_rebase_keeps_paths_and_maps_schemes_for_an_http_base() -> None:
    out = rebase_urls(API, FAKE)
    assert out["public"] == "http://127.0.0.1:8765/api/v3"
    assert out["sapi"] == "http://127.0.0.1:8765/sapi/v1?x=1#frag"
    assert out["ws"]["spot"] == "ws://127.0.0.1:8765/ws"
    assert out["ws"]["ws-api"]["spot"] == "ws://127.0.0.1:8765/ws-api/v3"
    assert out["plain"] == "ws://127.0.0.1:8765/stream"


def test_rebase_onto_an_https_base_keeps_tls() -> None:
    out = rebase_urls(API, "https://fake.test:8443")
    assert out["public"] == "https://fake.test:8443/api/v3"
    assert out["ws"]["spot"] == "wss://fake.test:8443/ws"
    assert out["plain"] == "wss://fake.test:8443/stream"


@pytest.mark.parametrize(
    "base", ["http://127.0.0.1:8765/binance", "http://127.0.0.1:8765/binance/"]
)
def test_rebase_onto_a_base_with_a_path_prefixes_it(base: str) -> None:
    out = rebase_urls(API, base)
    assert out["public"] == "http://127.0.0.1:8765/binance/api/v3"
    assert out["ws"]["spot"] == "ws://127.0.0.1:8765/binance/ws"


def test_non_url_values_are_kept_and_the_input_is_untouched() -> None:
    before = copy.deepcopy(API)
    out = rebase_urls(API, FAKE)
    assert out["label"] == "not a url"
    assert out["n"] == 3
    assert out["none"] is None
    assert API == before
    assert out is not API and out["ws"] is not API["ws"]


@pytest.mark.parametrize(
    "base", ["ws://127.0.0.1:8765", "wss://x", "127.0.0.1:8765", "localhost:8765", "", "ftp://h"]
)
def test_bad_base_scheme_is_a_value_error(base: str) -> None:
    with pytest.raises(ValueError, match="http"):
        rebase_urls(API, base)


def test_rebase_every_real_binance_url() -> None:
    api = ccxt.pro.binance().urls["api"]
    out = rebase_urls(api, FAKE)
    strings = list(_strings(out))
    assert len(strings) == len(list(_strings(api)))
    assert all(s.startswith(("http://127.0.0.1:8765/", "ws://127.0.0.1:8765/")) for s in strings)
    assert out["ws"]["spot"].endswith("/ws")


# -- make_client ----------------------------------------------------------------------------


def _one_market(market_id: str) -> dict[str, Any]:
    with RECORDING.open() as f:
        info = next(json.loads(r["data"]) for r in map(json.loads, f) if r.get("t") == "http")
    ex = ccxt.binance()
    ex.options["crossMarginPairsData"] = []
    ex.options["isolatedMarginPairsData"] = []
    raw = next(m for m in info["symbols"] if m["symbol"] == market_id)
    market: dict[str, Any] = ex.parse_market(raw)
    return market


NKN = _one_market("NKNUSDT")

AGG_TRADE = {
    "e": "aggTrade",
    "E": 1633998523963,
    "s": "NKNUSDT",
    "a": 15683430,
    "p": "0.35280000",
    "q": "58.00000000",
    "f": 19862790,
    "l": 19862790,
    "T": 1633998523963,
    "m": False,
    "M": True,
}
BOOK_TICKER = {
    "u": 499869768,
    "s": "NKNUSDT",
    "b": "0.35210000",
    "B": "672.00000000",
    "a": "0.35260000",
    "A": "3199.00000000",
}
TICKER_24H = {
    "e": "24hrTicker",
    "E": 1633998513378,
    "s": "NKNUSDT",
    "c": "0.35240000",
    "b": "0.35210000",
    "B": "672.00000000",
    "a": "0.35260000",
    "A": "3199.00000000",
    "o": "0.35100000",
    "h": "0.36500000",
    "l": "0.34000000",
    "v": "25877000.00000000",
    "q": "9060211.12340000",
    "C": 1633998513000,
}
MINI_TICKER = {k: v for k, v in TICKER_24H.items() if k not in "bBaAC"} | {"e": "24hrMiniTicker"}


class Hook:
    def __init__(self) -> None:
        self.calls: list[tuple[Channel, dict[str, Any]]] = []

    def __call__(self, channel: Channel, data: dict[str, Any]) -> None:
        self.calls.append((channel, data))


async def _closed(client: Any) -> None:
    client.timeout_on_exit = 0
    await client.close()


async def test_client_for_a_fake_exchange_points_everything_at_it() -> None:
    client = make_client(ExchangeSettings(url=FAKE), None)
    try:
        strings = list(_strings(client.urls["api"]))
        assert strings
        assert not [s for s in strings if "binance.com" in s]
        assert all("127.0.0.1:8765" in s for s in strings)
        assert client.urls["api"]["ws"]["spot"] == "ws://127.0.0.1:8765/ws"
        assert client.enableRateLimit is False
        assert client.options["defaultType"] == "spot"
        assert client.options["fetchMarkets"]["types"] == ["spot"]
        # the class-level defaults are untouched: a live client made later is still live
        assert "binance.com" in ccxt.pro.binance().urls["api"]["public"]
    finally:
        await _closed(client)


async def test_client_without_url_keeps_live_urls_and_rate_limit() -> None:
    client = make_client(ExchangeSettings(), None)
    try:
        assert client.urls["api"] == ccxt.pro.binance().urls["api"]
        assert client.urls["api"]["public"].startswith("https://api.binance.com/")
        assert client.enableRateLimit is True
    finally:
        await _closed(client)


def test_ccxt_config_merges_user_options_deeply() -> None:
    cfg = ExchangeSettings(
        options={"options": {"fetchMarkets": {"types": ["spot", "linear"]}, "x": 1}, "timeout": 5}
    )
    config = ccxt_config(cfg)
    assert config["options"]["fetchMarkets"]["types"] == ["spot", "linear"]
    assert config["options"]["defaultType"] == "spot"  # kept beside the user's keys
    assert config["options"]["x"] == 1
    assert config["timeout"] == 5
    assert config["enableRateLimit"] is True


def test_trades_limit_defaults_and_override() -> None:
    assert has_taps("binance")
    assert ccxt_config(ExchangeSettings())["options"]["tradesLimit"] == 10
    assert ccxt_config(ExchangeSettings(trades_limit=5_000))["options"]["tradesLimit"] == 5_000
    assert ccxt_config(ExchangeSettings(name="bitstamp"))["options"]["tradesLimit"] == 100_000


async def test_trade_tap_hands_over_each_parsed_trade() -> None:
    hook = Hook()
    client = make_client(ExchangeSettings(url=FAKE), hook)
    try:
        client.set_markets([NKN])
        result = client.parse_ws_trade(AGG_TRADE, client.market("NKN/USDT"))
        assert len(hook.calls) == 1
        channel, data = hook.calls[0]
        assert channel is Channel.TRADES
        assert data is result  # the very structure CCXT returns, unchanged
        assert data["symbol"] == "NKN/USDT"
        assert data["id"] == "15683430"
        assert data["price"] == 0.3528
    finally:
        await _closed(client)


@pytest.mark.parametrize(
    ("frame", "hooked"), [(TICKER_24H, True), (MINI_TICKER, True), (BOOK_TICKER, False)]
)
async def test_ticker_tap_sees_24h_tickers_only(frame: dict[str, Any], hooked: bool) -> None:
    hook = Hook()
    client = make_client(ExchangeSettings(url=FAKE), hook)
    try:
        client.set_markets([NKN])
        result = client.parse_ws_ticker(frame, "spot")
        assert result["symbol"] == "NKN/USDT"
        if hooked:
            assert hook.calls == [(Channel.TICKER, result)]
        else:
            assert hook.calls == []  # a bookTicker (watch_bids_asks) is not a 24 h ticker
    finally:
        await _closed(client)


async def test_tapped_client_without_hook_parses_normally() -> None:
    client = make_client(ExchangeSettings(), None)
    try:
        client.set_markets([NKN])
        plain = ccxt.pro.binance()
        plain.set_markets([NKN])
        market = client.market("NKN/USDT")
        assert client.parse_ws_trade(AGG_TRADE, market) == plain.parse_ws_trade(AGG_TRADE, market)
        assert client.parse_ws_ticker(TICKER_24H, "spot") == plain.parse_ws_ticker(
            TICKER_24H, "spot"
        )
        await _closed(plain)
    finally:
        await _closed(client)


async def test_two_clients_have_their_own_hooks() -> None:
    a, b = Hook(), Hook()
    ca = make_client(ExchangeSettings(), a)
    cb = make_client(ExchangeSettings(), b)
    try:
        for c in (ca, cb):
            c.set_markets([NKN])
        ca.parse_ws_trade(AGG_TRADE, ca.market("NKN/USDT"))
        assert len(a.calls) == 1 and b.calls == []
    finally:
        await _closed(ca)
        await _closed(cb)


async def test_exchange_without_taps_gets_the_plain_class() -> None:
    hook = Hook()
    client = make_client(ExchangeSettings(name="bitstamp"), hook)
    try:
        assert type(client) is ccxt.pro.bitstamp
        assert client.__dict__["_marketbus_on_parsed"] is None
    finally:
        await _closed(client)


def test_watch_params() -> None:
    cfg = ExchangeSettings(trade_stream="trade", ticker_stream="miniTicker")
    assert watch_params("binance", Channel.TRADES, cfg) == {"name": "trade"}
    assert watch_params("binance", Channel.TICKER, cfg) == {"name": "miniTicker"}
    assert watch_params("binance", Channel.TRADES, ExchangeSettings()) == {"name": "aggTrade"}
    assert watch_params("kraken", Channel.TRADES, cfg) == {}
