"""`marketbus fake-exchange --hold-until-subscribed` end to end, per exchange: the fake is a
process replaying its bundled recording, the publisher starts only after a replay would be
over, and still every recorded trade of every market arrives in Redis once, through CCXT's
real adapter."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from fake_exchange.binance_frames import VENUES
from fake_exchange.bybit.recording import bybit_recording, load_bybit_recording
from fake_exchange.okx.recording import load_okx_recording, okx_recording
from fake_exchange.recording import bundled_recording, load_recording
from fake_exchange.registry import FAKES, HOLD_S
from fake_exchange.sources import unified_symbols
from marketbus import codec
from marketbus.keys import stream_key
from marketbus.models import Channel, Trade
from marketbus.settings import load_settings
from publisher.app import Publisher
from tests.e2e.test_binanceusdm import PERPS as USDM_PERPS
from tests.e2e.test_coinbase import RECORDED as COINBASE_RECORDED
from tests.e2e.test_coinbase import recorded_trade_ids as coinbase_trade_ids
from tests.e2e.test_end_to_end import RECORDED as BINANCE_RECORDED
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e

MARKETBUS = str(Path(sys.executable).with_name("marketbus"))
SPEED = 30.0
"""Every bundled replay lasts at most 1 s at this speed (checked: `replay_seconds`)."""
LEAD = 1.2
"""How long after the fake is up the publisher starts: without the hold, the replay is over."""
FAST = {"status_interval_s": 0.2, "heartbeat_s": 30, "backoff_min_s": 0.2, "backoff_max_s": 1}
OKX_REPLAYED = {  # every instrument of the recording: spot, an inverse swap, a dated future
    "BTC-USDT": "BTC/USDT",
    "UNI-USD-SWAP": "UNI/USD:UNI",
    "BTC-USD-220527": "BTC/USD:BTC-220527",
}
"""The instrument `OkxReplaySource` replays by default (the recording also has futures)."""

Trades = dict[str, list[str]]
"""Unified symbol -> the recording's trade ids for it."""


def binance_trades(exchange: str) -> Callable[[], Trades]:
    """aggTrade ids per market of a Binance recording (spot or USD-M)."""

    def trades() -> Trades:
        rec = load_recording(bundled_recording(VENUES[exchange]))
        unified = unified_symbols(rec.exchange_info)
        out: Trades = {}
        for f in rec.frames:
            if f.stream.endswith("@aggTrade"):
                out.setdefault(unified[f.data["s"]], []).append(str(f.data["a"]))
        return out

    return trades


def okx_trades() -> Trades:
    out: Trades = {}
    for f in load_okx_recording(okx_recording()).frames:
        arg = f.frame.get("arg", {})
        if arg.get("channel") == "trades" and arg.get("instId") in OKX_REPLAYED:
            symbol = OKX_REPLAYED[arg["instId"]]
            out.setdefault(symbol, []).extend(r["tradeId"] for r in f.frame["data"])
    return out


def bybit_trades() -> Trades:
    out: Trades = {}
    for f in load_bybit_recording(bybit_recording()).frames:
        if f.category == "linear" and f.frame.get("topic", "").startswith("publicTrade."):
            for r in f.frame["data"]:
                out.setdefault(f"{r['s'].removesuffix('USDT')}/USDT:USDT", []).extend([r["i"]])
    return out


def coinbase_trades() -> Trades:
    ids = coinbase_trade_ids()  # the subscribe snapshots' trades and the updates
    return {s: sorted(ids[pid]) for s, pid in COINBASE_RECORDED.items()}


# exchange -> (the markets the publisher follows, the recording's trades per market)
CASES: dict[str, tuple[list[str], Callable[[], Trades]]] = {
    "binance": (list(BINANCE_RECORDED), binance_trades("binance")),
    "binanceusdm": (list(USDM_PERPS), binance_trades("binanceusdm")),
    "okx": (list(OKX_REPLAYED.values()), okx_trades),
    "bybit": (["BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT", "DOGE/USDT:USDT"], bybit_trades),
    "coinbase": (list(COINBASE_RECORDED), coinbase_trades),
}


def replay_seconds(exchange: str) -> float:
    """How long the bundled replay plays at SPEED (the sum of its events' delays)."""
    source = FAKES[exchange].build_source(None, SPEED, False, None, 1.0)
    source.prepare()
    return float(sum(ev.delay for ev in source.events(lambda: int(time.time() * 1000))))


def tail(log: Path) -> str:
    return log.read_text()[-2000:]


@contextlib.asynccontextmanager
async def fake_process(exchange: str, log: Path) -> AsyncIterator[str]:
    """`marketbus fake-exchange --exchange X --speed SPEED --hold-until-subscribed`: its URL;
    stopped with SIGTERM (exit code 0)."""
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            MARKETBUS, "fake-exchange", "--exchange", exchange, "--speed", str(SPEED),
            "--hold-until-subscribed", stdout=asyncio.subprocess.PIPE, stderr=err,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line.startswith(b"http://127.0.0.1:"), tail(log)
            yield line.decode().strip()
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 15) == 0, tail(log)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def stored_ids(r: aioredis.Redis, exchange: str, symbol: str) -> list[str]:
    ids = []
    entries = await r.xrange(stream_key(exchange, symbol, Channel.TRADES))
    assert entries is not None
    for _, fields in entries:
        assert fields is not None
        t = codec.decode_fields(fields)
        assert isinstance(t, Trade)
        ids.append(t.id)
    return ids


@pytest.mark.parametrize("exchange", list(CASES))
async def test_a_publisher_started_late_gets_every_recorded_trade(
    redis_server: RedisServer, exchange: str, tmp_path: Path
) -> None:
    markets, recorded_trades = CASES[exchange]
    recorded = recorded_trades()
    assert sum(map(len, recorded.values())) > 0 and set(recorded) <= set(markets)
    assert all(len(set(ids)) == len(ids) for ids in recorded.values())
    assert replay_seconds(exchange) < LEAD  # so without the hold nothing would be left
    r = aioredis.Redis.from_url(redis_server.url)
    await r.flushdb()
    async with fake_process(exchange, tmp_path / "fake.log") as url:
        await asyncio.sleep(LEAD)
        cfg = {"name": exchange, "symbols": markets, "url": url, "channels": ["trades"]}
        settings = load_settings(redis={"url": redis_server.url}, exchanges=[cfg], supervisor=FAST)
        async with Publisher(settings) as pub:

            async def all_in() -> bool:
                for s in markets:
                    have = await r.xlen(stream_key(exchange, s, Channel.TRADES))
                    if have < len(recorded.get(s, ())):
                        return False
                return True

            async with asyncio.timeout(HOLD_S + 30):
                while not await all_in():
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # anything extra (a duplicate) would land too
            for s in markets:
                got = await stored_ids(r, exchange, s)
                assert sorted(got) == sorted(recorded.get(s, [])), s  # each recorded trade, once
            st = pub.workers[exchange].status()
            assert st["invalid"] == st["trade_duplicates"] == st["reconnects"] == 0
    await r.aclose()
