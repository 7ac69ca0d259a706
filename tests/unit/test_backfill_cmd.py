"""``marketbus backfill``'s command line: registration, refused options, the CCXT client it
builds and how CCXT's errors reach the backfill (no network)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ccxt
import pytest
import typer
from typer.testing import CliRunner

from marketbus.errors import ExchangeUnavailableError, FatalError
from marketbus_cli import app
from marketbus_cli.backfill_cmd import CcxtRest, make_client, register


def test_registered_on_the_main_app_and_by_register() -> None:
    assert "backfill" in {c.name for c in app.registered_commands}
    sub = typer.Typer()
    register(sub)
    assert [c.name for c in sub.registered_commands] == ["backfill"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--channels", "book"], "trades and candles only"),
        (["--channels", "nope"], "unknown channel"),
        (["--since", "yesterday"], "not a time"),
        (["--since", "2026-11-02", "--until", "2026-11-01"], "--since must be before --until"),
        (["--channels", "candles", "--interval", "7m"], "unknown interval"),
        (["--exchange", "nope"], "unknown exchange"),
        (["--exchange-url", "ftp://127.0.0.1:1"], "--exchange-url"),
        (["--log-level", "loud"], "--log-level"),
    ],
)
def test_bad_options_exit_2_naming_what_is_wrong(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    args = ["backfill", "--dir", str(tmp_path), "--symbols", "BTC/USDT", "--since", "2026-11-01"]
    res = CliRunner().invoke(app, [*args, *extra])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not (tmp_path / "_archive").exists()


async def test_the_client_is_the_publishers_config_with_the_rate_limiter_on() -> None:
    client = make_client("binance", "http://127.0.0.1:9", rate_limit=True)
    try:
        assert client.enableRateLimit is True
        assert client.options["fetchMarkets"]["types"] == ["spot"]
        urls: list[str] = []

        def walk(node: Any) -> None:
            if isinstance(node, str) and "://" in node:
                urls.append(node)
            elif isinstance(node, dict):
                for v in node.values():
                    walk(v)

        walk(client.urls["api"])
        assert urls and all("127.0.0.1:9" in u for u in urls)
    finally:
        await client.close()
    off = make_client("okx", None, rate_limit=False)
    try:
        assert off.enableRateLimit is False and off.urls["api"]["rest"] == "https://{hostname}"
    finally:
        await off.close()


class _Refusing:
    """A CCXT client whose calls fail as CCXT fails on a 429, a bad symbol, a bug."""

    id = "binance"

    def __init__(self, error: Exception, headers: dict[str, str] | None = None) -> None:
        self.error = error
        self.last_response_headers = headers

    async def fetch_trades(self, *args: Any) -> Any:
        raise self.error

    async def fetch_ohlcv(self, *args: Any) -> Any:
        raise self.error


async def test_ccxt_errors_become_ours_with_the_retry_after_the_exchange_sent() -> None:
    limited = CcxtRest(_Refusing(ccxt.RateLimitExceeded("binance 429"), {"Retry-After": "7"}))
    with pytest.raises(ExchangeUnavailableError) as e:
        await limited.fetch_trades("BTC/USDT", 1, 10, {"until": 5})
    assert e.value.retry_after == 7.0
    banned = CcxtRest(_Refusing(ccxt.DDoSProtection("binance 418"), {"retry-after": "120"}))
    with pytest.raises(ExchangeUnavailableError) as e:
        await banned.fetch_ohlcv("BTC/USDT", "1m", 1, 10)
    assert e.value.retry_after == 120.0
    with pytest.raises(FatalError):
        await CcxtRest(_Refusing(ccxt.NotSupported("no"))).fetch_trades("BTC/USDT")
