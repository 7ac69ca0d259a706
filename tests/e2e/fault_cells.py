"""The fault table on every exchange (issue #10): the cells' machinery.

The cells run in two test modules (``test_fault_matrix.py``: Binance spot and USD-M, OKX;
``test_fault_matrix_more.py``: Bybit, Coinbase, Kraken) so that the parallel suite spreads them
over its workers. What a cell does and asserts is in ``run_cell``.

One cell per exchange x fault: a synthetic source trading two markets at a modest rate, the
publisher through CCXT's real adapter into a real Redis, the fault injected once the first
trades of both markets are stored. Each cell asserts that the worker is CONNECTED again (or
never left it, for garbage frames), that trades received after the fault reach Redis, and that
per market the trades in Redis are exactly the trades the exchange made, each once, in order:
the source never stops, so the comparison is made up to a cut taken after the recovery and
covers every trade of the fault window. Every exchange here backfills over REST after a
reconnect (``BACKFILL`` says through what), so a gap is never acceptable; a trade the exchange
made that is missing counts as a failure, not as a counted gap. The comparison is made with
the fake's own record of its trades, not with the publisher's gap counter, which cannot see a
gap in Bybit's ids (``unique_trade_ids`` in its profile, ``publisher.bybit``).

The figures (recovery, trades made/stored, backfilled) are printed at the end of the module
for docs/reliability.md ("The fault table on every exchange"), never asserted.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis

from fake_exchange import FakeBybit, FakeExchange, FakeOkx, SyntheticSource
from fake_exchange.binance_frames import USDM
from fake_exchange.bybit import BybitSyntheticSource
from fake_exchange.coinbase import CoinbaseSyntheticSource, FakeCoinbase
from fake_exchange.kraken import FakeKraken, KrakenSyntheticSource
from fake_exchange.okx import OkxSyntheticSource
from marketbus import codec
from marketbus.keys import stream_key
from marketbus.models import Channel, Trade
from marketbus.settings import load_settings
from publisher.app import Publisher
from publisher.state import ConnState
from publisher.worker import ExchangeWorker
from tests.e2e.test_kraken import fresh_redis, until
from tests.redis_server import RedisServer

SUP = {
    "status_interval_s": 0.2,
    "heartbeat_s": 1.0,
    "backoff_min_s": 0.2,
    "backoff_max_s": 1.0,
    "healthy_after_s": 1.0,
}
"""Short heartbeat and backoff: a cell costs about its fault's own duration."""
RATE = 20.0
"""Trades a second over both markets: 10 a market, so the longest gap here (the 429's, about
3.3 s) stays well under Bybit spot's one 60-trade `recent-trade` page and a complete backfill
is possible on every exchange."""
Fx = Any  # FakeExchange | FakeOkx | FakeBybit | FakeCoinbase | FakeKraken: no common base


# -- the exchanges -------------------------------------------------------------------------
@dataclass(frozen=True)
class Venue:
    name: str
    symbols: tuple[str, str]
    fake: Callable[[], Fx]
    keys: list[Any]
    """The trade subscriptions to wait for before the source plays."""
    made: Callable[[Fx, str], list[str]]
    """The ids of every trade the exchange made on a market so far, in order."""


def _binance_made(fx: Fx, symbol: str) -> list[str]:
    sid = symbol.split(":")[0].replace("/", "")
    return [str(a["a"]) for a in fx.market.agg_trades.get(sid, ())]


VENUES = {
    "binance": Venue(
        "binance", ("AAA/USDT", "BBB/USDT"),
        lambda: FakeExchange(SyntheticSource(["AAA/USDT", "BBB/USDT"], rate=RATE, seed=1,
                                             channels=("aggTrade",)), autoplay=False),
        ["aaausdt@aggTrade", "bbbusdt@aggTrade"], _binance_made,
    ),
    "binanceusdm": Venue(
        "binanceusdm", ("AAA/USDT:USDT", "BBB/USDT:USDT"),
        lambda: FakeExchange(SyntheticSource(["AAA/USDT:USDT", "BBB/USDT:USDT"], rate=RATE,
                                             seed=2, venue=USDM, channels=("aggTrade",)),
                             autoplay=False),
        ["aaausdt@aggTrade", "bbbusdt@aggTrade"], _binance_made,
    ),
    "okx": Venue(
        "okx", ("AAA/USDT", "BBB/USDT"),
        lambda: FakeOkx(OkxSyntheticSource(["AAA/USDT", "BBB/USDT"], rate=RATE, seed=3,
                                           channels=("trades",)), autoplay=False),
        [("trades", "AAA-USDT"), ("trades", "BBB-USDT")],
        lambda fx, s: [x["tradeId"] for x in fx.market.trades.get(s.replace("/", "-"), ())],
    ),
    "bybit": Venue(
        "bybit", ("AAA/USDT", "AAA/USDT:USDT"),
        lambda: FakeBybit(BybitSyntheticSource(["AAA/USDT", "AAA/USDT:USDT"], rate=RATE,
                                               seed=4, channels=("publicTrade",)),
                          autoplay=False),
        [("spot", "publicTrade.AAAUSDT"), ("linear", "publicTrade.AAAUSDT")],
        lambda fx, s: [x["i"] for x in fx.market.trades.get(
            ("linear" if ":" in s else "spot", "AAAUSDT"), ())],
    ),
    "coinbase": Venue(
        "coinbase", ("AAA/USD", "BBB/USD"),
        lambda: FakeCoinbase(CoinbaseSyntheticSource(["AAA-USD", "BBB-USD"], rate=RATE, seed=5,
                                                     channels=("market_trades",)),
                             autoplay=False),
        [("market_trades", "AAA-USD"), ("market_trades", "BBB-USD")],
        lambda fx, s: [x["trade_id"] for x in fx.market.trades.get(s.replace("/", "-"), ())],
    ),
    "kraken": Venue(
        "kraken", ("AAA/USD", "BBB/USD"),
        lambda: FakeKraken(KrakenSyntheticSource(["AAA/USD", "BBB/USD"], rate=RATE, seed=6,
                                                 channels=("trade",)), autoplay=False),
        [("trade", "AAA/USD"), ("trade", "BBB/USD")],
        lambda fx, s: [str(t.trade_id) for t in fx.market.trades.get(
            fx.market.by_v2.get(s, s), ())],
    ),
}  # fmt: skip

BACKFILL = {
    "binance": "REST `aggTrades?fromId=` (by trade id)",
    "binanceusdm": "REST `aggTrades?startTime=` (by time)",
    "okx": "REST `history-trades?after=` (by trade id, paged back)",
    "bybit": "REST `recent-trade` (the latest 60 spot / 1000 linear, no older pages)",
    "coinbase": "REST `products/{id}/ticker?start=&end=` (by time)",
    "kraken": "REST `Trades?since=` (by time)",
}
"""How each exchange's missed trades come back after a reconnect (publisher/backfill.py)."""


# -- the faults ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Fault:
    name: str
    caused_by: str
    inject: Callable[[Fx], None]
    reconnects: bool
    least_s: float = 0.0
    """The recovery can be no faster than this (what the fault itself lasts)."""


def _close_and_refuse(abrupt: bool) -> Callable[[Fx], None]:
    def inject(fx: Fx) -> None:
        fx.faults.refuse(1)
        assert fx.faults.close_all(abrupt=abrupt) >= 1

    return inject


def _stall(fx: Fx) -> None:
    fx.faults.stall(3)


def _garbage(fx: Fx) -> None:
    assert fx.faults.send_garbage(3, "malformed") >= 1


def _http(status: int, count: int, retry_after: int | None) -> Callable[[Fx], None]:
    def inject(fx: Fx) -> None:
        fx.faults.http_error(status, count=count, retry_after=retry_after)
        assert fx.faults.close_all() >= 1

    return inject


FAULTS = {
    "abrupt": Fault("socket closed (abrupt)", "`close_all(abrupt=True)` + `refuse(1)`",
                    _close_and_refuse(True), True, 1.0),
    "clean": Fault("socket closed (clean)", "`close_all(abrupt=False)` + `refuse(1)`",
                   _close_and_refuse(False), True, 1.0),
    "stall": Fault("stall 3 s", "`stall(3)`, heartbeat 1 s", _stall, True, 3.0),
    "malformed": Fault("malformed frames (guard on)", "`send_garbage(3, 'malformed')`",
                       _garbage, False),
    "429": Fault("429 on reconnect", "`http_error(429, retry_after=2)` + `close_all()`",
                 _http(429, 1, 2), True, 2.0),
    "500": Fault("HTTP 500 twice on reconnect", "`http_error(500, count=2)` + `close_all()`",
                 _http(500, 2, None), True),
}  # fmt: skip

NOT_APPLICABLE: dict[tuple[str, str], str] = {}
"""(exchange, fault) cells a fake cannot cause, with the reason. Every fake runs the shared
`Faults` (close, stall, garbage, refusal, REST errors with the exchange's own bodies and the
Retry-After header), so none is left out today."""

CELLS = [(v, f) for v in VENUES for f in FAULTS if (v, f) not in NOT_APPLICABLE]


# -- measured figures, printed at the end --------------------------------------------------
@dataclass
class Result:
    exchange: str
    fault: str
    recovery_s: float
    made: int
    stored: int
    backfilled: int
    reconnects: int
    malformed: int


def print_results(request: pytest.FixtureRequest, results: list[Result]) -> None:
    """The module's figures as a docs/reliability.md table, after its last cell."""
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if tr is None or capture is None or not results:
        return
    lines = ["", "| exchange | fault | recovered in (s) | made / stored | backfilled | "
             "reconnects | malformed counted |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        lines.append(
            f"| {r.exchange} | {FAULTS[r.fault].name} | {r.recovery_s:.2f} | "
            f"{r.made} / {r.stored} | {r.backfilled} | {r.reconnects} | {r.malformed} |"
        )
    with capture.global_and_fixture_disabled():
        for line in lines:
            tr.write_line(line)


# -- the cell ------------------------------------------------------------------------------
@asynccontextmanager
async def running(redis_server: RedisServer, venue: Venue) -> AsyncIterator[tuple[Fx, Publisher]]:
    async with venue.fake() as fx:
        cfg = {"name": venue.name, "symbols": list(venue.symbols), "url": fx.base_url,
               "channels": ["trades"]}  # fmt: skip
        settings = load_settings(redis={"url": redis_server.url}, exchanges=[cfg], supervisor=SUP)
        async with Publisher(settings) as pub:
            await fx.wait_subscribed(venue.keys, timeout=20)
            fx.play()
            yield fx, pub


async def stored_ids(r: aioredis.Redis, venue: Venue, symbol: str) -> list[str]:
    rows: Any = await r.xrange(stream_key(venue.name, symbol, Channel.TRADES))
    trades = [codec.decode_fields(f) for _, f in rows]
    assert all(isinstance(t, Trade) for t in trades)
    return [t.id for t in trades if isinstance(t, Trade)]


async def newest_recv_ns(r: aioredis.Redis, venue: Venue) -> int:
    """The receive time of the newest trade stored on either market (0: none)."""
    newest = 0
    for s in venue.symbols:
        rows: Any = await r.xrevrange(stream_key(venue.name, s, Channel.TRADES), count=1)
        for _, f in rows:
            newest = max(newest, codec.decode_fields(f).recv_ns)
    return newest


async def recovered(
    r: aioredis.Redis, venue: Venue, w: ExchangeWorker, fault: Fault, reconnects: int
) -> float:
    """Seconds from the fault until a trade received afterwards (by the new session, for a
    fault that reconnects) is in Redis."""
    t0 = time.monotonic()
    mark = time.time_ns()
    if fault.reconnects:

        async def back() -> bool:
            return w.stats.reconnects > reconnects and w.state is ConnState.CONNECTED

        await until(back, timeout=20)
        mark = time.time_ns()

    async def fresh() -> bool:
        return await newest_recv_ns(r, venue) > mark

    await until(fresh, timeout=20)
    return time.monotonic() - t0


async def run_cell(redis_server: RedisServer, exchange: str, fault_id: str) -> Result:
    """One cell: the fault injected on a running publisher, then every trade checked."""
    venue, fault = VENUES[exchange], FAULTS[fault_id]
    r = await fresh_redis(redis_server)
    try:
        async with running(redis_server, venue) as (fx, pub):
            w = pub.workers[venue.name]

            async def first_trades() -> bool:
                return all([len(await stored_ids(r, venue, s)) >= 1 for s in venue.symbols])

            await until(first_trades, timeout=20)
            before = (w.stats.reconnects, w.stats.backfilled, w.stats.malformed)
            fault.inject(fx)
            recovery = await recovered(r, venue, w, fault, before[0])
            assert recovery >= fault.least_s, "recovered before the fault was over"
            if not fault.reconnects:
                assert w.stats.malformed - before[2] >= 3  # counted, skipped
                assert w.stats.reconnects == before[0] and w.state is ConnState.CONNECTED
            # a cut after the recovery: every trade made up to it, the fault window included
            cut = {s: venue.made(fx, s) for s in venue.symbols}

            async def caught_up() -> bool:
                return all([len(await stored_ids(r, venue, s)) >= len(cut[s]) for s in cut])

            await until(caught_up, timeout=20)
            made = stored = 0
            for s, want in cut.items():
                got = await stored_ids(r, venue, s)
                now = venue.made(fx, s)
                assert got == now[: len(got)], f"{s}: not the exchange's trades, once, in order"
                assert got[: len(want)] == want, s
                made, stored = made + len(want), stored + len(set(got) & set(want))
            assert w.trade_ids.gaps == 0 and w.trade_ids.missing == 0
            assert w.state is ConnState.CONNECTED
            if fault.reconnects:
                assert w.stats.reconnects > before[0] and w.stats.backfills >= 1
            return Result(
                exchange, fault_id, recovery, made, stored, w.stats.backfilled - before[1],
                w.stats.reconnects - before[0], w.stats.malformed - before[2],
            )  # fmt: skip
    finally:
        await r.aclose()
