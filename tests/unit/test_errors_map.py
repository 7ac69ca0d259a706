"""CCXT's and redis-py's exceptions become ours, transient or fatal, in one place each."""

from __future__ import annotations

import ccxt
import pytest
import redis.exceptions as rex

from marketbus.errors import (
    ExchangeAuthError,
    ExchangeUnavailableError,
    FatalError,
    MarketbusError,
    RedisAuthError,
    RedisUnavailableError,
    TransientError,
    UnknownSymbolError,
)
from marketbus.redis_client import from_redis
from publisher.errors_map import from_ccxt, retry_after_of

# -- CCXT -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        ccxt.RequestTimeout("binance GET https://api.binance.com/api/v3/exchangeInfo timed out"),
        ccxt.NetworkError("connection reset"),
        ccxt.ExchangeNotAvailable("binance 503 Service Unavailable"),
        ccxt.OnMaintenance("binance is on maintenance"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_network_trouble_is_exchange_unavailable(exc: BaseException) -> None:
    err = from_ccxt(exc)
    assert isinstance(err, ExchangeUnavailableError)
    assert isinstance(err, TransientError)
    assert type(exc).__name__ in str(err)
    assert err.retry_after is None


def test_ddos_protection_with_retry_after_in_the_message() -> None:
    err = from_ccxt(ccxt.DDoSProtection("binance 429 Too Many Requests Retry-After: 7"))
    assert isinstance(err, ExchangeUnavailableError)
    assert err.retry_after == 7.0


def test_rate_limit_with_retry_after_header() -> None:
    err = from_ccxt(ccxt.RateLimitExceeded("binance 429 slow down"), {"Retry-After": "3"})
    assert isinstance(err, ExchangeUnavailableError)
    assert err.retry_after == 3.0


def test_header_wins_over_the_message() -> None:
    err = from_ccxt(ccxt.DDoSProtection("Retry-After: 60"), {"retry-after": "2.5"})
    assert isinstance(err, TransientError)
    assert err.retry_after == 2.5


@pytest.mark.parametrize(
    ("text", "headers", "seconds"),
    [
        ("Retry-After: 7", None, 7.0),
        ("retry after 12.5 seconds", None, 12.5),
        ('{"code":-1003,"retry-after": 30}', None, 30.0),
        ("RETRY-AFTER:1", None, 1.0),
        ("too many requests", None, None),
        ("too many requests", {}, None),
        ("x", {"RETRY-AFTER": "4"}, 4.0),
        ("x", {"Retry-After": "-5"}, 0.0),  # never a negative wait
        ("x", {"Content-Type": "application/json"}, None),
        ("x", {"Retry-After": "soon"}, None),
    ],
)
def test_retry_after_of(text: str, headers: dict[str, str] | None, seconds: float | None) -> None:
    assert retry_after_of(ccxt.DDoSProtection(text), headers) == seconds


def test_ddos_without_hint_has_no_retry_after() -> None:
    err = from_ccxt(ccxt.DDoSProtection("binance 418 I'm a teapot"))
    assert isinstance(err, ExchangeUnavailableError)
    assert err.retry_after is None


@pytest.mark.parametrize(
    "exc",
    [
        ccxt.AuthenticationError("binance {'code':-2015,'msg':'Invalid API-key'}"),
        ccxt.PermissionDenied("binance key has no permission"),
        ccxt.AccountSuspended("binance account suspended"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_auth_errors_are_fatal(exc: BaseException) -> None:
    err = from_ccxt(exc)
    assert isinstance(err, ExchangeAuthError)
    assert isinstance(err, FatalError)
    assert not isinstance(err, TransientError)


def test_not_supported_is_fatal() -> None:
    err = from_ccxt(ccxt.NotSupported("kraken watchTrades() is not supported yet"))
    assert isinstance(err, FatalError)
    assert not isinstance(err, TransientError)


def test_other_exchange_errors_retry_with_a_fresh_client() -> None:
    err = from_ccxt(ccxt.BadRequest("binance {'code':-1121,'msg':'Invalid symbol.'}"))
    assert isinstance(err, TransientError)
    assert not isinstance(err, ExchangeUnavailableError)


def test_our_errors_pass_through_unchanged() -> None:
    ours = UnknownSymbolError("binance", "FOO/BAR")
    assert from_ccxt(ours) is ours
    transient = ExchangeUnavailableError("x", retry_after=1)
    assert from_ccxt(transient) is transient


def test_message_is_bounded() -> None:
    err = from_ccxt(ccxt.NetworkError("x" * 10_000))
    assert len(str(err)) <= 500
    assert str(err).startswith("NetworkError: ")


# -- redis-py -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        rex.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
        rex.TimeoutError("Timeout reading from socket"),
        rex.BusyLoadingError("Redis is loading the dataset in memory"),
        rex.TryAgainError("TRYAGAIN"),
        rex.ClusterDownError("CLUSTERDOWN The cluster is down"),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_redis_unreachable_is_transient(exc: BaseException) -> None:
    err = from_redis(exc)
    assert isinstance(err, RedisUnavailableError)
    assert isinstance(err, TransientError)


@pytest.mark.parametrize(
    "exc",
    [
        # AuthenticationError is a ConnectionError in redis-py: it must not be retried
        rex.AuthenticationError("invalid username-password pair"),
        rex.AuthorizationError("not authorized"),
        rex.NoPermissionError("this user has no permissions to run the 'xadd' command"),
        rex.ResponseError("WRONGPASS invalid username-password pair or user is disabled."),
        rex.ResponseError("NOAUTH Authentication required."),
        rex.ResponseError("NOPERM User bot has no permissions to access the 'md:{x}' key"),
    ],
    ids=lambda e: f"{type(e).__name__}-{str(e)[:8]}",
)
def test_redis_auth_is_fatal(exc: BaseException) -> None:
    err = from_redis(exc)
    assert isinstance(err, RedisAuthError)
    assert isinstance(err, FatalError)
    assert not isinstance(err, TransientError)
    assert type(exc).__name__ in str(err)


def test_other_redis_response_errors_are_fatal_but_not_auth() -> None:
    err = from_redis(rex.ResponseError("ERR wrong number of arguments for 'xadd' command"))
    assert isinstance(err, FatalError)
    assert not isinstance(err, RedisAuthError)
    assert not isinstance(err, TransientError)


def test_redis_our_errors_pass_through() -> None:
    ours = RedisUnavailableError("down")
    assert from_redis(ours) is ours
    assert isinstance(from_redis(rex.ConnectionError("x")), MarketbusError)
