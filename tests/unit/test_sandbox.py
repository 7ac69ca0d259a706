"""Testnets (sandbox mode): settings and refusals, CCXT's own sandbox urls and headers, names.

The publisher keeps CCXT's id for the adapter and every per-exchange table, and names the
exchange ``<id>-testnet`` everywhere data or state is keyed (records, streams, status,
workers), so test data never mixes with live data in one Redis.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import ccxt
import ccxt.pro
import pytest
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

from consumers.markets import plan, split_market
from marketbus.errors import ConfigError
from marketbus.keys import (
    control_stream,
    parse_stream_key,
    sandbox_name,
    split_testnet,
    status_key,
    stream_key,
    worker_id,
)
from marketbus.models import Channel, Trade
from marketbus.settings import SANDBOX_TESTED, ExchangeSettings, load_settings, sandbox_refusal
from marketbus_cli import _exchange_id, app, publisher_settings
from marketbus_cli.doctor import config_summary
from publisher.app import Publisher
from publisher.ccxt_client import enter_sandbox, make_client
from publisher.http import PublisherCollector
from publisher.worker import ExchangeWorker

FAKE = "http://127.0.0.1:8765"


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    return []


def _hosts(urls: Any) -> set[str]:
    return {urlsplit(u).hostname or "" for u in _strings(urls) if "://" in u}


class Sink:
    def __init__(self) -> None:
        self.records: list[Any] = []

    def put(self, record: Any) -> None:
        self.records.append(record)


# -- settings -------------------------------------------------------------------------------


def test_sandbox_is_off_by_default_and_names_the_testnet_apart() -> None:
    live = ExchangeSettings(name="binance")
    assert live.sandbox is False and live.bus_name == "binance"
    test = ExchangeSettings(name="Binance", sandbox=True)
    assert test.name == "binance" and test.bus_name == "binance-testnet"


@pytest.mark.parametrize("exchange", SANDBOX_TESTED)
def test_every_tested_exchange_has_a_testnet(exchange: str) -> None:
    assert sandbox_refusal(exchange) is None
    assert ExchangeSettings(name=exchange, sandbox=True).bus_name == f"{exchange}-testnet"


@pytest.mark.parametrize("exchange", ["coinbase", "kraken"])
def test_an_exchange_without_testnet_is_refused_by_name_at_start(exchange: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(None, exchanges=[{"name": exchange, "sandbox": True}])
    msg = str(e.value)
    assert f"{exchange} has no public testnet" in msg
    assert "binance, binanceusdm, bybit, okx" in msg
    # the same exchange live is fine
    assert load_settings(None, exchanges=[{"name": exchange}]).exchanges[0].bus_name == exchange


def test_a_testnet_without_websocket_urls_is_for_polling_only() -> None:
    # ccxt 4.5.90's gate has REST test urls but none for its websockets
    with pytest.raises(ValidationError, match="REST urls only"):
        ExchangeSettings(name="gate", sandbox=True)
    assert ExchangeSettings(name="gate", sandbox=True, mode="poll").bus_name == "gate-testnet"


@pytest.mark.parametrize(
    "options",
    [{"sandbox": True}, {"testnet": True}, {"options": {"sandbox": True}}],
)
def test_ccxts_own_sandbox_switch_in_options_is_refused(options: dict[str, Any]) -> None:
    """It would put testnet data under the live name: only ``sandbox = true`` renames."""
    with pytest.raises(ValidationError, match="use sandbox = true"):
        ExchangeSettings(name="binance", options=options)
    assert ExchangeSettings(name="binance", options={"options": {"sandbox": False}}).options


def test_the_testnet_name_is_not_an_exchange_name() -> None:
    with pytest.raises(ValidationError, match="name = 'binance', sandbox = true"):
        ExchangeSettings(name="binance-testnet")


def test_live_and_testnet_of_one_exchange_may_run_side_by_side() -> None:
    s = load_settings(None, exchanges=[{"name": "binance"}, {"name": "binance", "sandbox": True}])
    assert [e.bus_name for e in s.exchanges] == ["binance", "binance-testnet"]
    with pytest.raises(ConfigError, match="listed twice"):
        load_settings(
            None,
            exchanges=[{"name": "binance", "sandbox": True}, {"name": "binance", "sandbox": True}],
        )


def test_sandbox_from_toml(tmp_path: Any) -> None:
    path = tmp_path / "m.toml"
    path.write_text(
        '[[exchanges]]\nname = "okx"\nsandbox = true\nsymbols = ["BTC-USDT"]\n'
        '[[exchanges]]\nname = "okx"\nsymbols = ["BTC-USDT"]\n'
    )
    s = load_settings(path)
    assert [(e.name, e.sandbox, e.bus_name) for e in s.exchanges] == [
        ("okx", True, "okx-testnet"),
        ("okx", False, "okx"),
    ]


# -- key names --------------------------------------------------------------------------------


def test_testnet_keys() -> None:
    assert sandbox_name("binance") == "binance-testnet"
    assert split_testnet("binance-testnet") == ("binance", True)
    assert split_testnet("binance") == ("binance", False)
    assert split_testnet("-testnet") == ("-testnet", False)
    key = stream_key("binance-testnet", "BTC/USDT", Channel.TRADES)
    assert key == "md:{binance-testnet:BTC/USDT}:trades"
    assert parse_stream_key(key) == ("binance-testnet", "BTC/USDT", Channel.TRADES)
    perp = stream_key("bybit-testnet", "BTC/USDT:USDT", Channel.FUNDING)
    assert parse_stream_key(perp) == ("bybit-testnet", "BTC/USDT:USDT", Channel.FUNDING)
    assert status_key(worker_id("binance-testnet")) == "mb:status:binance-testnet"
    assert status_key(worker_id("binance-testnet", "eu")) == "mb:status:binance-testnet@eu"
    assert control_stream("binance-testnet") == "mb:ctl:{binance-testnet}"


def test_the_consumer_follows_a_testnet_like_any_exchange() -> None:
    assert split_market("binance-testnet:btc-usdt") == ("binance-testnet", "BTC/USDT")
    keys = plan(["binance-testnet:BTC/USDT", "binance:BTC/USDT"], ["trades"])
    assert set(keys) == {"md:{binance-testnet:BTC/USDT}:trades", "md:{binance:BTC/USDT}:trades"}


# -- the CCXT client --------------------------------------------------------------------------

TEST_HOSTS = {
    "binance": {"testnet.binance.vision", "testnet.binancefuture.com"},
    "binanceusdm": {"testnet.binance.vision", "testnet.binancefuture.com"},
    "bybit": {"api-testnet.{hostname}"},
    "okx": {"{hostname}"},  # OKX's demo trading: the live REST host, told by a header
}


@pytest.mark.parametrize("exchange", SANDBOX_TESTED)
def test_the_client_is_in_ccxts_sandbox_mode(exchange: str) -> None:
    fresh = getattr(ccxt.pro, exchange)()
    live_urls = fresh.urls["api"]
    client = make_client(ExchangeSettings(name=exchange, sandbox=True), None)
    assert client.isSandboxModeEnabled is True
    assert client.urls["api"] == fresh.urls["test"]  # CCXT's own test urls, untouched
    assert client.urls["apiBackup"] == live_urls
    rest = {k: v for k, v in client.urls["api"].items() if k != "ws"}
    assert _hosts(rest) and _hosts(rest) <= TEST_HOSTS[exchange]
    shared = _hosts(client.urls["api"]) & _hosts(live_urls)
    assert shared <= ({"{hostname}"} if exchange == "okx" else set())  # no live host is left
    # a live client made afterwards is not affected (no url dict shared with the sandbox one)
    live = make_client(ExchangeSettings(name=exchange), None)
    assert live.isSandboxModeEnabled is False and live.urls["api"] == live_urls


def test_okx_demo_trading_header_and_websocket_urls() -> None:
    client = make_client(ExchangeSettings(name="okx", sandbox=True), None)
    assert client.headers.get("x-simulated-trading") == "1"
    assert client.options["sandboxMode"] is True
    assert client.get_url("tickers") == "wss://wspap.okx.com:443/ws/v5/public?brokerId=9999"
    assert client.get_url("candle1m") == "wss://wspap.okx.com:443/ws/v5/business?brokerId=9999"
    live = make_client(ExchangeSettings(name="okx"), None)
    assert "x-simulated-trading" not in live.headers
    assert live.get_url("tickers") == "wss://ws.okx.com:443/ws/v5/public"


def test_bybit_and_binance_testnet_websockets() -> None:
    bybit = make_client(ExchangeSettings(name="bybit", sandbox=True), None)
    assert _hosts(bybit.urls["api"]["ws"]["public"]) == {"stream-testnet.{hostname}"}
    binance = make_client(ExchangeSettings(name="binance", sandbox=True), None)
    assert binance.urls["api"]["ws"]["spot"] == "wss://stream.testnet.binance.vision/ws"
    assert binance.options["sandboxMode"] is True
    usdm = make_client(ExchangeSettings(name="binanceusdm", sandbox=True), None)
    assert usdm.get_ws_url("linear", "market") == "wss://fstream.binancefuture.com/market/ws"


@pytest.mark.parametrize("exchange", SANDBOX_TESTED)
def test_sandbox_urls_are_rebased_onto_the_fake_exchange(exchange: str) -> None:
    fresh = getattr(ccxt.pro, exchange)()
    client = make_client(ExchangeSettings(name=exchange, sandbox=True, url=FAKE), None)
    assert client.isSandboxModeEnabled is True
    urls = [u for u in _strings(client.urls["api"]) if "://" in u]
    assert urls and all(urlsplit(u).netloc == "127.0.0.1:8765" for u in urls)
    test_paths = sorted(urlsplit(u).path for u in _strings(fresh.urls["test"]) if "://" in u)
    assert sorted(urlsplit(u).path for u in urls) == test_paths


def test_a_client_without_test_urls_is_refused() -> None:
    """CCXT 4.5.90 would install None as coinbase's api urls: refused before that."""
    client = ccxt.pro.coinbase()
    with pytest.raises(ConfigError, match="coinbase has no public testnet"):
        enter_sandbox(client)
    assert client.urls["api"] is not None and not client.isSandboxModeEnabled


# -- workers, status, the publisher -------------------------------------------------------------


def test_the_worker_names_the_testnet_and_keeps_the_exchanges_tables() -> None:
    sink = Sink()
    cfg = ExchangeSettings(name="binance", symbols=("BTC/USDT",), sandbox=True)
    w = ExchangeWorker(cfg, sink)
    assert (w.name, w.exchange_id) == ("binance-testnet", "binance")
    assert w.status()["exchange"] == "binance-testnet"
    assert w.pacer.exchange == "binance"  # Binance's limits, not an unknown exchange's
    w._allowed = frozenset({(Channel.TRADES, "BTC/USDT")})
    trade = {"symbol": "BTC/USDT", "id": "7", "timestamp": 1_700_000_000_000, "price": 10.0,
             "amount": 1.0, "side": "buy"}  # fmt: skip
    w._on_parsed(Channel.TRADES, trade)
    w._on_parsed(Channel.TRADES, {**trade, "id": "9"})
    assert [(r.exchange, r.id) for r in sink.records] == [
        ("binance-testnet", "7"), ("binance-testnet", "9"),
    ]  # fmt: skip
    assert isinstance(sink.records[0], Trade)
    assert w.trade_ids.gaps == 1  # Binance's ids are consecutive: 8 is missing


def test_bybit_testnet_tickers_still_carry_its_derivatives() -> None:
    """Per-exchange tables are looked up by CCXT's id: Bybit's linear tickers feed mark
    prices, and its ids are checked for duplicates only, on its testnet too."""
    sink = Sink()
    cfg = ExchangeSettings(name="bybit", symbols=("AAA/USDT:USDT",), sandbox=True)
    w = ExchangeWorker(cfg, sink)
    assert w.trade_ids.consecutive is False
    w._allowed = frozenset({(Channel.MARK, "AAA/USDT:USDT")})
    info = {"markPrice": "10.5", "indexPrice": "10.4"}
    w._on_parsed(
        Channel.TICKER, {"symbol": "AAA/USDT:USDT", "timestamp": 1_700_000_000_000, "info": info}
    )
    assert [(r.exchange, r.mark_price) for r in sink.records] == [("bybit-testnet", 10.5)]


async def test_live_and_testnet_workers_status_and_removal_stay_apart(fake_redis: Any) -> None:
    settings = load_settings(
        None,
        exchanges=[{"name": "binance"}, {"name": "binance", "sandbox": True}],
        control=False,
    )
    pub = Publisher(settings, redis=fake_redis)
    assert set(pub.workers) == {"binance", "binance-testnet"}
    assert pub.workers["binance"].name == "binance"
    assert pub.workers["binance-testnet"].exchange_id == "binance"
    labels = {
        sample.labels["exchange"]
        for family in PublisherCollector(pub).collect()
        for sample in family.samples
        if "exchange" in sample.labels
    }
    assert labels == {"binance", "binance-testnet"}  # metrics labels
    await pub._write_status()
    assert {k.decode() for k in await fake_redis.keys("mb:status:*")} == {
        "mb:status:binance",
        "mb:status:binance-testnet",
    }
    with pytest.raises(ConfigError, match="'binance-testnet' is running already"):
        await pub.add_exchange(ExchangeSettings(name="binance", sandbox=True))
    await pub.remove_exchange("binance-testnet")
    assert set(pub.workers) == {"binance"}
    await pub.add_exchange(ExchangeSettings(name="binance", sandbox=True))
    assert set(pub.workers) == {"binance", "binance-testnet"}


# -- the command line -------------------------------------------------------------------------


def test_publish_sandbox_flag() -> None:
    s = publisher_settings(None, None, None, exchange="bybit", sandbox=True)
    assert [(e.name, e.bus_name) for e in s.exchanges] == [("bybit", "bybit-testnet")]
    assert publisher_settings(None, None, None, exchange="bybit").exchanges[0].sandbox is False


def test_publish_refuses_sandbox_for_an_exchange_without_testnet() -> None:
    result = CliRunner().invoke(app, ["publish", "--exchange", "coinbase", "--sandbox"])
    assert result.exit_code == 2
    assert "coinbase has no public testnet" in result.output
    assert "binance, binanceusdm, bybit, okx" in result.output


def test_doctor_names_the_testnet() -> None:
    s = load_settings(None, exchanges=[{"name": "bybit"}, {"name": "bybit", "sandbox": True}])
    summary = config_summary(s, None)
    assert "bybit: 5 symbol(s)" in summary and "bybit-testnet: 5 symbol(s)" in summary


def test_subscribe_addresses_a_testnet_worker() -> None:
    assert _exchange_id("binance-testnet") == "binance-testnet"
    assert _exchange_id("Bybit-Testnet@eu") == "bybit-testnet@eu"
    with pytest.raises(typer.Exit) as e:  # after one red line naming it
        _exchange_id("nosuch-testnet")
    assert e.value.exit_code == 2


def test_ccxt_lists_no_id_with_a_dash() -> None:
    """The ``-testnet`` suffix cannot collide with a CCXT id."""
    assert not [e for e in ccxt.exchanges if "-" in e]
