"""``marketbus backfill`` through CCXT's real adapters against the fake Binance and OKX: a day
of trades and candles from their synthetic history, exactly once, resumed after an
interruption (a cancelled task, a killed process), within the rate limit. No Redis needed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from archive.backfill import Backfill, BackfillPlan, Cursors, cursor_path
from archive.backfill_pages import Retry
from archive.store import Store
from consumers.history import History
from fake_exchange import FakeExchange, FakeOkx, SyntheticSource
from fake_exchange.history import DAY_MS, HOUR_MS, SyntheticHistory, floor_day
from fake_exchange.limits import BinanceLimits
from fake_exchange.okx import OkxSyntheticSource
from marketbus.models import Channel, Trade
from marketbus_cli.backfill_cmd import CcxtRest, make_client
from tests.archive_data import commit_records

ROOT = Path(__file__).resolve().parents[2]
BTC, ETH = "BTC/USDT", "ETH/USDT"
TODAY = floor_day(int(time.time() * 1000))
DAY = TODAY - 2 * DAY_MS  # a whole day of the fakes' history


def expected(exchange: str, symbol: str, start: int = DAY, end: int = DAY + DAY_MS) -> list[str]:
    """The trade ids the fake serves for the range: from its own synthetic source."""
    return [str(t.id) for t in SyntheticHistory(exchange, TODAY).between(symbol, start, end)]


@contextlib.asynccontextmanager
async def binance(**kw: Any) -> AsyncIterator[FakeExchange]:
    async with FakeExchange(SyntheticSource([BTC, ETH], rate=50), autoplay=False, **kw) as fx:
        yield fx


@contextlib.asynccontextmanager
async def okx() -> AsyncIterator[FakeOkx]:
    async with FakeOkx(OkxSyntheticSource([BTC], rate=50), autoplay=False) as fx:
        yield fx


async def run(
    fx: FakeExchange | FakeOkx,
    exchange: str,
    d: Path,
    plan: BackfillPlan,
    rate_limit: bool = True,
    **kw: Any,
) -> Any:
    client = make_client(exchange, fx.base_url, rate_limit)
    try:
        rest = CcxtRest(client)
        job = Backfill(rest, d, exchange, **kw)
        return await job.run(plan)
    finally:
        await client.close()


def day_plan(*channels: Channel, symbols: tuple[str, ...] = (BTC,)) -> BackfillPlan:
    return BackfillPlan(symbols, channels, ("1m",), DAY, DAY + DAY_MS)


def archived(d: Path, exchange: str, symbol: str = BTC, channel: str = "trades") -> Any:
    return History(d).read(exchange, symbol, channel, DAY, DAY + DAY_MS)


def check_day(d: Path, exchange: str, symbol: str = BTC) -> None:
    """Every trade id of the day once, in order; the candles are those of these trades."""
    trades = archived(d, exchange, symbol)
    ids = trades.column("id").to_pylist()
    want = expected(exchange, symbol)
    assert len(ids) == len(want) == len(set(ids)) and 24_000 <= len(want) <= 48_000
    assert ids == want
    assert set(trades.column("entry_ms").to_pylist()) == {0}
    candles = archived(d, exchange, symbol, "candles")
    built = History(d).candles(exchange, symbol, "1m", DAY, DAY + DAY_MS)
    assert candles.num_rows == built.num_rows == 1_440
    assert candles.column("open_ms").to_pylist() == built.column("start_ms").to_pylist()
    for col in ("open", "high", "low", "close"):
        assert candles.column(col).to_pylist() == built.column(col).to_pylist(), col
    for got, made in zip(
        candles.column("volume").to_pylist(), built.column("volume").to_pylist(), strict=True
    ):
        assert got == pytest.approx(made, rel=1e-9)
    # and exactly the fake's own candles of its history
    fake = SyntheticHistory(exchange, TODAY).candles(symbol, 60_000, DAY, DAY + DAY_MS)
    assert candles.column("close").to_pylist() == [c.close / 1e8 for c in fake]
    assert candles.column("volume").to_pylist() == [c.volume / 1e8 for c in fake]


# --------------------------------------------------------------------------- the fakes' REST


async def test_binance_history_endpoints_answer_as_binance_does() -> None:
    hist = SyntheticHistory("binance", TODAY)
    day = list(hist.between(BTC, DAY, DAY + HOUR_MS))
    async with binance() as fx, aiohttp.ClientSession() as http:
        fx.play()
        base = f"{fx.base_url}/api/v3"

        async def get(path: str) -> Any:
            resp = await http.get(f"{base}/{path}")
            return resp.status, await resp.json()

        status, body = await get(
            f"aggTrades?symbol=BTCUSDT&startTime={DAY}&endTime={DAY + HOUR_MS + 1}"
        )
        assert (status, body["code"]) == (400, -1127)
        _, rows = await get(
            f"aggTrades?symbol=BTCUSDT&startTime={DAY}&endTime={DAY + HOUR_MS}&limit=1000"
        )
        assert [r["a"] for r in rows] == [t.id for t in day][:1000]
        assert (
            rows[0]["p"] == f"{day[0].px / 1e8:.8f}"
            and rows[0]["f"] == rows[0]["l"] == rows[0]["a"]
        )
        _, rows = await get(f"aggTrades?symbol=BTCUSDT&startTime={day[5].ts}&endTime={day[9].ts}")
        assert [r["a"] for r in rows] == [t.id for t in day if day[5].ts <= t.ts <= day[9].ts]
        _, rows = await get(f"aggTrades?symbol=BTCUSDT&fromId={day[100].id}&limit=3")
        assert [r["a"] for r in rows] == [t.id for t in day[100:103]]
        # past the history's last id, a page by id goes on with the live session
        live: list[Any] = []
        while len(live) < 2:
            await asyncio.sleep(0.05)
            _, live = await get("aggTrades?symbol=BTCUSDT&limit=1000")
        assert live and all(r["a"] < 10**12 for r in live)  # no range: the live session only
        _, rows = await get(f"aggTrades?symbol=BTCUSDT&fromId={hist.end_id(BTC) - 2}&limit=4")
        assert [r["a"] for r in rows] == [
            hist.end_id(BTC) - 2,
            hist.end_id(BTC) - 1,
            *(r["a"] for r in live[:2]),
        ]
        # klines: from startTime, the history's candles (1,000 at most)
        _, k = await get(f"klines?symbol=BTCUSDT&interval=1m&startTime={DAY + 1}&limit=1000")
        assert len(k) == 1000 and k[0][0] == DAY + 60_000 and k[1][0] - k[0][0] == 60_000
        first = hist.candles(BTC, 60_000, DAY + 60_000, DAY + 120_000)[0]
        assert k[0][1:6] == [
            f"{v / 1e8:.8f}" for v in (first.open, first.high, first.low, first.close, first.volume)
        ]
        assert (k[0][6], k[0][8]) == (DAY + 119_999, first.count)
        _, k = await get(f"klines?symbol=BTCUSDT&interval=1d&endTime={DAY}&limit=3")
        assert [r[0] for r in k] == [DAY - 2 * DAY_MS, DAY - DAY_MS, DAY]
        _, k = await get("klines?symbol=BTCUSDT&interval=1m")
        assert all(r[0] >= TODAY for r in k)  # no range: the live session only


async def test_okx_history_endpoints_page_backwards_as_okx_does() -> None:
    hist = SyntheticHistory("okx", TODAY)
    hour = list(hist.between(BTC, DAY, DAY + HOUR_MS))
    async with okx() as fx, aiohttp.ClientSession() as http:
        base = f"{fx.base_url}/api/v5/market"

        async def get(path: str) -> list[Any]:
            body = await (await http.get(f"{base}/{path}")).json()
            assert body["code"] == "0", body
            data: list[Any] = body["data"]
            return data

        rows = await get(f"history-trades?instId=BTC-USDT&type=2&after={DAY + HOUR_MS}&limit=500")
        assert [int(r["tradeId"]) for r in rows] == [t.id for t in hour[::-1][:100]]  # max 100
        assert rows[0]["ts"] == str(hour[-1].ts) and rows[0]["side"] in ("buy", "sell")
        older = await get(f"history-trades?instId=BTC-USDT&after={rows[-1]['tradeId']}&limit=5")
        assert [int(r["tradeId"]) for r in older] == [t.id for t in hour[::-1][100:105]]
        between = await get(
            f"history-trades?instId=BTC-USDT&after={hour[10].id}&before={hour[4].id}"
        )
        assert [int(r["tradeId"]) for r in between] == [t.id for t in hour[9:4:-1]]
        # candles: (before, after), newest first, at most 100
        bars = await get(
            f"history-candles?instId=BTC-USDT&bar=1m&before={DAY - 1}&after={DAY + 300 * 60_000}"
        )
        assert [int(b[0]) for b in bars] == [DAY + m * 60_000 for m in range(299, 199, -1)]
        assert all(b[8] == "1" for b in bars)
        c = hist.candles(BTC, 60_000, DAY + 299 * 60_000, DAY + 300 * 60_000)[0]
        assert float(bars[0][4]) == c.close / 1e8 and float(bars[0][1]) == c.open / 1e8
        day_bar = await get(f"history-candles?instId=BTC-USDT&bar=1Dutc&after={DAY + 1}&limit=1")
        assert (
            int(day_bar[0][0]) == DAY
            and float(day_bar[0][5]) == hist.candles(BTC, DAY_MS, DAY, DAY + 1)[0].volume / 1e8
        )
        hk = await get(f"history-candles?instId=BTC-USDT&bar=6H&after={DAY + DAY_MS}&limit=2")
        assert [int(b[0]) for b in hk] == [DAY + 22 * HOUR_MS, DAY + 16 * HOUR_MS]  # UTC+8 bars
        assert await get("history-candles?instId=BTC-USDT&bar=1m") == []  # no bound: live only


# --------------------------------------------------------------------------- a day, each fake


async def test_a_day_from_binance_every_trade_once_and_its_candles(tmp_path: Path) -> None:
    async with binance() as fx:
        stats = await run(fx, "binance", tmp_path, day_plan(Channel.TRADES, Channel.CANDLES))
    check_day(tmp_path, "binance")
    t = stats.tasks[f"{BTC} trades"]
    assert (t.written, t.known, t.invalid, t.skipped_ms) == (len(expected("binance", BTC)), 0, 0, 0)
    assert stats.tasks[f"{BTC} candles:1m"].written == 1_440
    cursor = Cursors.load(tmp_path, "binance")
    assert cursor.done(BTC, "trades") == cursor.done(BTC, "candles:1m") == [[DAY, DAY + DAY_MS]]


async def test_a_day_from_okx_every_trade_once_and_its_candles(tmp_path: Path) -> None:
    async with okx() as fx:
        await run(fx, "okx", tmp_path, day_plan(Channel.TRADES, Channel.CANDLES), rate_limit=False)
    check_day(tmp_path, "okx")


async def test_okx_cancelled_midway_then_rerun_no_duplicate_no_gap(tmp_path: Path) -> None:
    async with okx() as fx:
        task = asyncio.create_task(
            run(
                fx,
                "okx",
                tmp_path,
                day_plan(Channel.TRADES, Channel.CANDLES),
                False,
                commit_rows=4_000,
            )
        )
        path = cursor_path(tmp_path, "okx")
        while not (path.exists() and Cursors.load(tmp_path, "okx").done(BTC, "trades")):
            assert not task.done()
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        [[start, stop]] = Cursors.load(tmp_path, "okx").done(BTC, "trades")
        assert start == DAY and stop < DAY + DAY_MS
        assert 0 < archived(tmp_path, "okx").num_rows < len(expected("okx", BTC))
        stats = await run(fx, "okx", tmp_path, day_plan(Channel.TRADES, Channel.CANDLES), False)
    assert stats.tasks[f"{BTC} trades"].written > 0
    check_day(tmp_path, "okx")


async def test_killed_process_resumes_from_its_cursor(tmp_path: Path) -> None:
    """The command itself, SIGKILLed after its first commits, then run again to the end."""
    args = [
        sys.executable, "-m", "marketbus_cli", "backfill", "--dir", str(tmp_path),
        "--symbols", f"{BTC},{ETH}", "--channels", "trades,candles", "--since", str(DAY),
        "--until", str(DAY + DAY_MS), "--commit-rows", "3000",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    async with binance() as fx:
        args += ["--exchange-url", fx.base_url]
        proc = await asyncio.create_subprocess_exec(
            *args, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE
        )
        path = cursor_path(tmp_path, "binance")
        deadline = time.monotonic() + 60
        while not (
            path.exists()
            and len(
                orjson.loads(path.read_bytes())["markets"]
                .get(BTC, {})
                .get("trades", {})
                .get("done", [])
            )
            > 0
        ):
            assert proc.returncode is None and time.monotonic() < deadline
            await asyncio.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        done = Cursors.load(tmp_path, "binance").done(BTC, "trades")
        assert done[0][1] < DAY + DAY_MS  # killed midway
        again = await asyncio.create_subprocess_exec(
            *args, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(again.communicate(), 120)
        assert again.returncode == 0, out
    assert f"{BTC} trades: ".encode() in out and b"already archived" in out
    for symbol in (BTC, ETH):
        check_day(tmp_path, "binance", symbol)


async def test_429s_are_waited_out_as_retry_after_says_and_never_banned(tmp_path: Path) -> None:
    # exchangeInfo (20) and one aggTrades page (4) fit a window; a second page within 3 s does not
    # (the fake's windows are fixed, so the run starts just after a window opens: exchangeInfo
    # late in one window and the pages early in the next would all be served)
    limits = BinanceLimits(weight_per_window=24, window_s=3.0, ban_after=2)
    plan = BackfillPlan((BTC,), (Channel.TRADES,), (), DAY, DAY + 4 * HOUR_MS)
    async with binance(limits=limits) as fx:
        await asyncio.sleep(-time.time() % limits.window_s + 0.01)
        stats = await run(fx, "binance", tmp_path, plan, rate_limit=False, retry=Retry(min_s=0.05))
        assert fx.limit_stats is not None
        assert fx.limit_stats.limited >= 1 and fx.limit_stats.banned == 0
    assert stats.retries >= 1 and stats.waited_s >= 1.0  # Retry-After: 1 s at least
    ids = History(tmp_path).read("binance", BTC, "trades", DAY, DAY + 4 * HOUR_MS).column("id")
    assert ids.to_pylist() == expected("binance", BTC, DAY, DAY + 4 * HOUR_MS)


async def test_a_range_over_a_live_gap_writes_only_what_is_missing(tmp_path: Path) -> None:
    """The archive holds the live trades of two hours but a gap of 20 minutes between them
    (what the live path counts as trade_gaps); a backfill of the two hours fills the gap."""
    start, end = DAY + 5 * HOUR_MS, DAY + 7 * HOUR_MS
    gap = (DAY + 5 * HOUR_MS + 50 * 60_000, DAY + 6 * HOUR_MS + 10 * 60_000)
    hist = SyntheticHistory("binance", TODAY)
    live = [
        (f"{t.ts + 40}-0", Trade(exchange="binance", symbol=BTC, ts_ms=t.ts, recv_ns=t.ts * 10**6,
         id=str(t.id), price=t.px / 1e8, amount=t.qty / 1e8, side="sell" if t.maker else "buy"))
        for t in hist.between(BTC, start, end) if not gap[0] <= t.ts < gap[1]
    ]  # fmt: skip
    store = Store(tmp_path)
    store.open()
    commit_records(store, 1, live)
    store.close()
    plan = BackfillPlan((BTC,), (Channel.TRADES,), (), start, end)
    async with binance() as fx:
        stats = await run(fx, "binance", tmp_path, plan)
    t = stats.tasks[f"{BTC} trades"]
    want = expected("binance", BTC, start, end)
    assert (t.known, t.written) == (len(live), len(want) - len(live)) and t.written > 0
    table = History(tmp_path).read("binance", BTC, "trades", start, end)
    assert table.column("id").to_pylist() == want
    rest = table.filter(table.column("entry_ms").to_numpy() == 0)
    assert all(gap[0] <= ts < gap[1] for ts in rest.column("ts_ms").to_pylist())


async def test_the_command_shows_progress_when_asked_and_a_rerun_has_nothing_to_do(
    tmp_path: Path,
) -> None:
    args = [
        sys.executable, "-m", "marketbus_cli", "backfill", "--dir", str(tmp_path),
        "--symbols", "btcusdt", "--channels", "trades,candles", "--since", str(DAY),
        "--until", str(DAY + HOUR_MS),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    outs = []
    async with binance() as fx:
        for flag in ("--progress", "--no-progress"):
            proc = await asyncio.create_subprocess_exec(
                *args, "--exchange-url", fx.base_url, flag, cwd=ROOT, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, err
            outs.append((out.decode(), err.decode()))
    n = len(expected("binance", BTC, DAY, DAY + HOUR_MS))
    (out, err), (again, quiet) = outs
    assert f"{BTC} trades: {n:,} written" in out and f"{BTC} candles:1m: 60 written" in out
    assert f"{BTC} trades" in err and "100.0%" in err and f"{n:,} rows" in err
    assert f"{BTC} trades: 0 written, 0 already archived, 0 invalid, 0 fetched" in again
    assert "100.0%" not in quiet
