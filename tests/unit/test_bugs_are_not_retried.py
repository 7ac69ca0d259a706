"""Our own bugs are bugs: never mapped to a transient error and retried forever."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import ccxt
import pytest
from structlog.testing import capture_logs

from marketbus.aio import cancel_and_wait
from marketbus.errors import ExchangeUnavailableError, InternalError, TransientError
from marketbus.settings import ExchangeSettings, SupervisorSettings
from publisher.errors_map import from_ccxt, raised_in_library
from publisher.state import ConnState
from publisher.worker import ExchangeWorker


def _raised(e: BaseException) -> BaseException:
    try:
        raise e
    except BaseException as caught:
        return caught


def test_an_attribute_error_in_our_code_is_a_bug() -> None:
    err = from_ccxt(_raised(AttributeError("'NoneType' object has no attribute 'symbol'")))
    assert isinstance(err, InternalError)
    assert not isinstance(err, TransientError)
    assert "AttributeError" in str(err)


def test_an_error_raised_inside_ccxt_is_retried_with_a_fresh_client() -> None:
    """A TypeError from CCXT's own parsing is the exchange data's or CCXT's trouble."""
    exchange = ccxt.binance()
    try:
        exchange.parse_trade(None)  # CCXT's code raises on bad data
    except Exception as e:
        assert raised_in_library(e)
        assert isinstance(from_ccxt(e), TransientError)
    else:
        raise AssertionError("ccxt accepted a None trade")


@pytest.mark.parametrize(
    "exc",
    [
        aiohttp.ClientConnectionError("reset"),
        aiohttp.ServerDisconnectedError(),
        TimeoutError(),
        ConnectionResetError(104, "reset"),
    ],
)
def test_network_errors_of_aiohttp_and_the_os_are_transient(exc: BaseException) -> None:
    assert isinstance(from_ccxt(exc), ExchangeUnavailableError)


async def test_a_bug_fails_the_worker_once_with_its_traceback_logged() -> None:
    calls = 0

    def broken_factory(cfg: Any, on_parsed: Any) -> Any:
        nonlocal calls
        calls += 1
        return None.load_markets  # type: ignore[attr-defined]  # our bug, on purpose

    cfg = ExchangeSettings(name="binance", symbols=["BTC/USDT"])
    sup = SupervisorSettings(backoff_min_s=0.01, backoff_max_s=0.02)
    worker = ExchangeWorker(cfg, sink=_NullSink(), supervisor=sup, client_factory=broken_factory)
    with capture_logs() as logs:
        await asyncio.wait_for(worker.run(), 5)
    assert worker.state is ConnState.FAILED
    assert calls == 1  # not retried
    assert worker.stats.bugs == 1 and worker.stats.reconnects == 0
    [bug] = [e for e in logs if e["event"] == "worker_bug"]
    assert isinstance(bug["exc_info"], AttributeError)


async def test_system_exit_in_a_session_is_not_swallowed() -> None:
    def exiting_factory(cfg: Any, on_parsed: Any) -> Any:
        raise SystemExit(3)

    cfg = ExchangeSettings(name="binance", symbols=["BTC/USDT"])
    worker = ExchangeWorker(cfg, sink=_NullSink(), client_factory=exiting_factory)
    with pytest.raises(SystemExit):
        await worker.run()


async def test_cancel_and_wait_logs_the_error_a_task_ended_with() -> None:
    async def fails() -> None:
        raise KeyError("lost")

    task = asyncio.create_task(fails(), name="the-task")
    await asyncio.sleep(0)
    with capture_logs() as logs:
        await cancel_and_wait(task)
    [entry] = [e for e in logs if e["event"] == "task_failed"]
    assert entry["task"] == "the-task" and "KeyError" in entry["error"]


async def test_cancel_and_wait_is_quiet_for_a_cancelled_task() -> None:
    task = asyncio.create_task(asyncio.sleep(10))
    await asyncio.sleep(0)
    with capture_logs() as logs:
        await cancel_and_wait(task)
    assert not [e for e in logs if e["event"] == "task_failed"]


class _NullSink:
    def put(self, record: Any) -> None:
        pass
