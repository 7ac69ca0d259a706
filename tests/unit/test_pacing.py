"""Pacing within an exchange's limits (``publisher.pacing``), with a clock the test moves."""

from __future__ import annotations

import asyncio
import math

import pytest

from marketbus.settings import ExchangeSettings
from publisher.ccxt_client import ccxt_config, streams_per_connection
from publisher.pacing import Pacer, SnapshotGate, Spacing, WindowBudget, snapshot_limit
from publisher.rest_hooks import refusal_status
from publisher.worker_parts import chunks
from publisher.ws_hooks import is_subscribe_request, pace_sending


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_snapshot_limit_is_the_cheapest_that_covers_the_depth() -> None:
    assert snapshot_limit("binance", 20) == 100  # weight 5, not CCXT's 1,000 (weight 50)
    assert snapshot_limit("binance", 21) == 500
    assert snapshot_limit("binance", 1_000) == 5_000
    assert snapshot_limit("binance", 2_000) == 5_000
    assert snapshot_limit("okx", 20) is None  # books come over the websocket


def test_budget_counts_a_request_from_its_start_to_a_window_after_its_answer() -> None:
    clock = Clock()
    b = WindowBudget(10, 60, clock)
    b.start(6)
    b.start(4)
    assert b.used == 10 and b.delay(1) == math.inf  # only an answer makes room
    clock.now += 5
    b.finish(6)  # answered at 1005: counted until 1065
    assert b.delay(1) == pytest.approx(60)
    clock.now += 10
    b.finish(4)  # answered at 1015
    assert b.delay(5) == pytest.approx(50)  # the 6 leaves at 1065
    assert b.delay(7) == pytest.approx(60)  # both must leave
    clock.now = 1_075.0
    assert b.used == 0 and b.delay(10) == 0


def test_budget_lets_an_oversized_request_through_an_empty_window() -> None:
    clock = Clock()
    b = WindowBudget(10, 60, clock)
    assert b.delay(25) == 0
    b.start(25)
    b.finish(25)
    assert b.delay(1) == pytest.approx(60)


def test_a_refusal_blocks_the_budget_for_its_retry_after() -> None:
    clock = Clock()
    b = WindowBudget(10, 60, clock)
    b.block(30, 429)
    assert b.delay(1) == pytest.approx(30)
    clock.now += 31
    assert b.delay(1) == 0
    b.block(120, 418)
    assert (b.stats.limited, b.stats.banned, b.stats.blocked_s) == (1, 1, 150)


async def test_acquire_waits_for_an_answer_then_spends() -> None:
    b = WindowBudget(2, 0.2)
    await b.acquire(2)
    waiter = asyncio.create_task(b.acquire(1))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    b.finish(2)  # the window of the first starts now: 0.2 s
    await asyncio.wait_for(waiter, 5)
    assert b.stats.waits == 1 and b.stats.waited_s >= 0.1


def test_spacing_keeps_order_and_interval() -> None:
    clock = Clock()
    s = Spacing(3.0, clock)
    delays = [s.reserve() for _ in range(4)]
    assert delays == pytest.approx([0, 1 / 3, 2 / 3, 1])
    clock.now += 5
    assert s.reserve() == 0 and s.waited == 3


async def test_snapshot_gate_admits_a_batch_once_few_books_wait() -> None:
    clock = Clock()
    gate = SnapshotGate(max_pending=3, timeout_s=30, clock=clock)
    await gate.admit(["A", "B"])
    assert gate.room(1) and not gate.room(2)
    second = asyncio.create_task(gate.admit(["C", "D"]))
    await asyncio.sleep(0)
    assert not second.done()
    gate.done("A")
    await asyncio.wait_for(second, 5)
    assert gate.pending == 3
    clock.now += 31  # a snapshot never fetched does not hold the gate for ever
    assert gate.pending == 0
    await gate.admit(["E", "F", "G", "H", "I"])  # more than the gate holds: when it is empty
    assert gate.pending == 5


def test_pacer_sizes_the_rest_budget_from_ccxt_rate_limit() -> None:
    pacer = Pacer("binance")
    budget = pacer.rest_budget(50, 60_000)
    assert budget is not None and budget.capacity == 1_200  # 6,000 weight at 0.2 per weight
    assert pacer.rest_budget(50, 4_000) is budget and budget.capacity == 80
    assert Pacer("bybit").rest_budget(100, 60_000) is None  # no REST budget there
    assert "rest_429" in pacer.status()


def test_refusal_status_from_ccxt_messages() -> None:
    assert refusal_status(Exception("binance 418 I'm a teapot {...}")) == 418
    assert refusal_status(Exception("binance 429 Too Many Requests")) == 429
    assert refusal_status(Exception("binance {'msg': 'IP banned until 1'}")) == 418
    assert refusal_status(Exception("binance slow down")) == 429


def test_chunks_follow_a_size_per_group() -> None:
    items = [f"s{i}" for i in range(7)] + [f"p{i}" for i in range(3)]
    got = chunks(items, lambda g: 3 if g == "s" else 2, lambda x: x[0])
    assert got == [["s0", "s1", "s2"], ["s3", "s4", "s5"], ["s6"], ["p0", "p1"], ["p2"]]
    assert chunks(items[:4], 0) == [["s0"], ["s1"], ["s2"], ["s3"]]


def test_binance_config_asks_small_snapshots_and_binance_stream_limits() -> None:
    config = ccxt_config(ExchangeSettings(name="binance"))
    assert config["options"]["watchOrderBookLimit"] == 100
    assert config["options"]["subscriptionLimitByStream"]["spot"] == 1_024
    deep = ccxt_config(ExchangeSettings(name="binance", book_depth=50))
    assert deep["options"]["watchOrderBookLimit"] == 500
    mine = ExchangeSettings(
        name="binance", options={"options": {"subscriptionLimitByStream": {"spot": 100}}}
    )
    assert ccxt_config(mine)["options"]["subscriptionLimitByStream"]["spot"] == 100
    okx = ccxt_config(ExchangeSettings(name="okx", symbols=["BTC/USDT"]))
    assert "watchOrderBookLimit" not in okx["options"]


class _Client:
    def __init__(self, options: dict[str, object]) -> None:
        self.options = options


def test_streams_per_connection_reads_ccxt_option() -> None:
    client = _Client({"subscriptionLimitByStream": {"spot": 1_024, "option": 200}})
    assert streams_per_connection(client, "spot") == 1_024
    assert streams_per_connection(client, "swap") is None
    assert streams_per_connection(_Client({}), "spot") is None


class _Ws:
    """What pace_sending wraps: a CCXT websocket client's ``send``."""

    def __init__(self) -> None:
        self.sent: list[object] = []

    async def send(self, message: object) -> None:
        self.sent.append(message)


class _WsFactory:
    def __init__(self) -> None:
        self.made: list[_Ws] = []

    def client(self, url: str) -> _Ws:
        ws = _Ws()
        self.made.append(ws)
        return ws


async def test_subscribe_requests_wait_for_room_in_their_connections_window() -> None:
    """OKX: at most N subscribe/unsubscribe requests per window on a connection; the one
    past it waits (and says so), pings and other messages go at once, each connection has
    its own window."""
    client = _WsFactory()
    waits: list[float] = []
    pace_sending(client, None, (2, 0.3), waits.append)
    ws = client.client("ws://a")
    other = client.client("ws://b")
    sub = {"op": "subscribe", "args": [{"channel": "trades", "instId": "BTC-USDT"}]}
    t0 = asyncio.get_running_loop().time()
    await ws.send(sub)
    await ws.send({**sub, "op": "unsubscribe"})
    await ws.send("ping")  # not a request: no wait
    assert asyncio.get_running_loop().time() - t0 < 0.2 and waits == []
    await other.send(sub)  # its own window
    await ws.send(sub)  # the third in the window: waits for the first to leave it
    assert asyncio.get_running_loop().time() - t0 >= 0.3
    assert len(waits) == 1 and 0 < waits[0] <= 0.3 + 0.3
    assert [m if isinstance(m, str) else m["op"] for m in ws.sent] == [  # type: ignore[index]
        "subscribe", "unsubscribe", "ping", "subscribe",
    ]  # fmt: skip
    assert is_subscribe_request(sub) and not is_subscribe_request({"method": "SUBSCRIBE"})


def test_okx_rest_budget_counts_per_two_seconds() -> None:
    """OKX counts REST requests per 2 s: a minute's budget would be spent in one second."""
    pacer = Pacer("okx")
    assert pacer.limits.rest_window_ms == 2_000 and pacer.limits.subscribes_per_window == 480
    budget = pacer.rest_budget(110, pacer.limits.rest_window_ms or 60_000)
    assert budget is not None
    # CCXT's okx cost 1 (tickers: OKX allows 20 per 2 s) -> at most 18 in a window
    assert math.floor(budget.capacity) == 18 and budget.window_s == pytest.approx(2.25)
    assert pacer.status()["ws_subscribe_waits"] == 0
