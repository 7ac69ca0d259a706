"""`hold_until_subscribed` on every server kind: the Binance fake (spot and USD-M share it) and
the push engine under OKX, Bybit and Coinbase. The source (a replay at full speed, which would
otherwise be spent before any client arrives) starts `delay` after the first websocket
subscription, a second subscriber does not restart the wait, and the first subscriber gets
every frame the source makes for its key."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest

from fake_exchange import FakeBybit, FakeExchange, FakeOkx, ReplaySource, bundled_recording
from fake_exchange.bybit import BybitReplaySource
from fake_exchange.coinbase import CoinbaseReplaySource, FakeCoinbase
from fake_exchange.okx import OkxReplaySource
from fake_exchange.push_server import Hold

pytestmark = pytest.mark.integration

DELAY = 1.5
"""The hold in these tests (the CLI's is `registry.HOLD_S`, 2 s)."""
SECOND = 0.8
"""When the second client subscribes: 0.7 s before the hold ends (time to connect on a loaded
host), and a restarted hold would play at SECOND + DELAY, 0.8 s after the real end."""


@dataclass(frozen=True)
class Kind:
    """One server kind: how to make it, where a client subscribes (and how), which written
    frames the source pushed for that key, and how many it makes for it."""

    make: Callable[[float | None], Any]
    path: str
    subscribe: dict[str, Any]
    pushed: Callable[[Any], bool]
    expected: Callable[[], int]


def _binance() -> Kind:
    stream = "nknusdt@depth@100ms"

    def expected() -> int:
        src = ReplaySource(bundled_recording(), speed=0)
        src.prepare()
        return sum(ev.stream == stream for ev in src.events(_clock))

    return Kind(
        lambda hold: FakeExchange(
            ReplaySource(bundled_recording(), speed=0), hold_until_subscribed=hold
        ),
        "/ws",
        {"method": "SUBSCRIBE", "params": [stream], "id": 1},
        lambda f: f.stream == stream,
        expected,
    )


def _okx() -> Kind:
    def expected() -> int:
        src = OkxReplaySource(speed=0)
        src.prepare()
        return sum((ev.channel, ev.inst_id) == ("trades", "BTC-USDT") for ev in src.events(_clock))

    return Kind(
        lambda hold: FakeOkx(OkxReplaySource(speed=0), hold_until_subscribed=hold),
        "/ws/v5/public",
        {"op": "subscribe", "args": [{"channel": "trades", "instId": "BTC-USDT"}]},
        lambda f: (f.channel, f.inst_id) == ("trades", "BTC-USDT"),
        expected,
    )


def _bybit() -> Kind:
    topic = "publicTrade.SOLUSDT"

    def expected() -> int:
        src = BybitReplaySource(speed=0)
        src.prepare()
        return sum((ev.category, ev.topic) == ("linear", topic) for ev in src.events(_clock))

    return Kind(
        lambda hold: FakeBybit(BybitReplaySource(speed=0), hold_until_subscribed=hold),
        "/v5/public/linear",
        {"op": "subscribe", "args": [topic]},
        lambda f: (f.category, f.topic) == ("linear", topic),
        expected,
    )


def _coinbase() -> Kind:
    def expected() -> int:
        src = CoinbaseReplaySource(speed=0)
        src.prepare()
        return sum(
            ev.channel == "l2_data" and ev.event.get("product_id") == "ETH-USD"
            for ev in src.events(_clock)
        )

    return Kind(
        lambda hold: FakeCoinbase(CoinbaseReplaySource(speed=0), hold_until_subscribed=hold),
        "/",
        {"type": "subscribe", "product_ids": ["ETH-USD"], "channel": "level2"},
        lambda f: (
            (f.channel, f.product_id) == ("l2_data", "ETH-USD")
            and f.payload["events"][0]["type"] == "update"
        ),  # not the snapshot sent on subscribe
        expected,
    )


KINDS = {"binance": _binance, "okx": _okx, "bybit": _bybit, "coinbase": _coinbase}


def _clock() -> int:
    return int(time.time() * 1000)


@contextlib.asynccontextmanager
async def client(url: str, subscribe: dict[str, Any] | None) -> AsyncIterator[list[Any]]:
    """A websocket client that (optionally) subscribes and reads everything it is sent."""
    got: list[Any] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0) as ws:
        if subscribe is not None:
            await ws.send_str(orjson.dumps(subscribe).decode())

        async def read() -> None:
            async for msg in ws:
                got.append(msg.data)

        reader = asyncio.create_task(read())
        try:
            yield got
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


def ws_url(fx: Any, path: str) -> str:
    return f"ws://{fx.host}:{fx.port}{path}"


@pytest.mark.parametrize("kind", list(KINDS))
async def test_the_source_starts_after_the_first_subscription_and_is_not_restarted(
    kind: str,
) -> None:
    k = KINDS[kind]()
    async with k.make(DELAY) as fx:
        url = ws_url(fx, k.path)
        async with client(url, None):  # connected, not subscribed: no hold released
            await asyncio.sleep(0.4)  # the source, at full speed, would be spent by now
            assert fx.hold.subscribed_at is None
            assert not [f for f in fx.sent if k.pushed(f)]
        async with client(url, k.subscribe):
            async with asyncio.timeout(10):
                while fx.hold.subscribed_at is None:
                    await asyncio.sleep(0.01)
            first = fx.hold.subscribed_at
            await asyncio.sleep(first + SECOND - time.time())
            assert not [f for f in fx.sent if k.pushed(f)]  # still holding
            async with client(url, k.subscribe):  # a second subscriber, late in the hold
                await fx.wait_done(timeout=30)
                assert fx.hold.subscribed_at == first  # not restarted
        pushed = [f for f in fx.sent if k.pushed(f)]
        by_conn: dict[int, list[Any]] = {}
        for f in pushed:
            by_conn.setdefault(f.conn_id, []).append(f)
        start = min(f.sent_ns for f in pushed) / 1e9
        assert first + DELAY <= start < first + SECOND + DELAY, start - first  # not restarted
        # both subscribers, the one that came during the hold too: every frame of the key
        assert [len(v) for v in by_conn.values()] == [k.expected()] * 2


@pytest.mark.parametrize("kind", list(KINDS))
async def test_without_a_hold_the_source_plays_at_start(kind: str) -> None:
    """The default, for contrast: a late client misses what a full-speed replay already sent."""
    k = KINDS[kind]()
    async with k.make(None) as fx:
        assert fx.hold.delay is None
        await fx.wait_done(timeout=30)  # spent before anyone subscribed
        async with client(ws_url(fx, k.path), k.subscribe):
            await asyncio.sleep(0.3)
        assert not [f for f in fx.sent if k.pushed(f)]


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_a_negative_or_nan_hold_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="hold_until_subscribed"):
        Hold(bad)
