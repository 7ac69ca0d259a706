"""CPU per frame and per record: CCXT's Bybit path vs the native Bybit parser, parsing only.

    python -m bench.bybit_parse

No socket, no Redis, no event loop turn per frame: the same Bybit v5 push frames (text, from
the fake's synthetic source, 25 ids each a spot pair and a perpetual) go through

- the CCXT path as the worker runs it: a tapped ``ccxt.pro.bybit`` websocket client's
  ``handle_text_or_binary_message`` on the spot or the linear url (orjson decode,
  ``handle_message``, ``handle_trades``/``handle_ticker``, ``parse_ws_trade``/``parse_ticker``,
  the tap) and :mod:`publisher.normalize`;
- the native path: :class:`publisher.native_bybit.BybitFastPath` bound to the same url
  (orjson decode and the record),

for spot and linear ``publicTrade`` frames of one trade (Bybit's usual) and of four, and spot
``tickers`` snapshots (linear tickers stay on CCXT's path). CPU time (``time.process_time``)
over all frames, median of 7 runs after a warm-up run, the heap frozen as the publisher
freezes it once connected (young-generation GC still runs). Figures go in docs/performance.md.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Callable
from itertools import islice
from typing import Any

import ccxt
import orjson

from fake_exchange import BybitSyntheticSource
from marketbus.models import Channel
from marketbus.settings import ExchangeSettings
from publisher.ccxt_client import make_client
from publisher.native_bybit import BybitFastPath
from publisher.normalize import ticker_from_ccxt, trade_from_ccxt

FRAMES = 20_000
RUNS = 7
IDS = 25
URLS = {"spot": "ws://127.0.0.1:9/v5/public/spot", "linear": "ws://127.0.0.1:9/v5/public/linear"}


def source() -> BybitSyntheticSource:
    src = BybitSyntheticSource(IDS, rate=1e6, total=FRAMES * 8, seed=5,
                               channels=("publicTrade", "tickers"))  # fmt: skip
    src.prepare()
    return src


def frames(src: BybitSyntheticSource, category: str, topic: str, rows_per_frame: int) -> list[str]:
    """``topic`` frames of ``category`` as text, ``rows_per_frame`` trades a frame."""
    evs = [ev for ev in islice(src.events(lambda: 1_700_000_000_000), None)
           if ev.category == category and ev.topic.startswith(topic)]  # fmt: skip
    if topic == "tickers":
        return [orjson.dumps(ev.frame).decode() for ev in evs[:FRAMES]]
    by_topic: dict[str, list[Any]] = {}
    for ev in evs:
        by_topic.setdefault(ev.topic, []).extend(ev.frame["data"])
    texts = []
    for name, rows in by_topic.items():
        for i in range(0, len(rows) - rows_per_frame + 1, rows_per_frame):
            frame = {"topic": name, "type": "snapshot", "ts": 1_700_000_000_000,
                     "data": rows[i : i + rows_per_frame]}  # fmt: skip
            texts.append(orjson.dumps(frame).decode())
    return texts[: FRAMES // rows_per_frame]


def markets(instruments: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """CCXT's unified markets from the source's ``instruments-info`` entries."""

    def answer(params: dict[str, Any]) -> Any:
        entries = [] if params.get("status") == "PreLaunch" else instruments[params["category"]]
        return {"retCode": 0, "result": {"category": params["category"], "list": entries}}

    ex = ccxt.bybit({"options": {"fetchMarkets": {"types": ["spot", "linear"]}}})
    ex.publicGetV5MarketInstrumentsInfo = answer
    return list(ex.load_markets().values())


def cpu_us(feed: Callable[[str], Any], texts: list[str]) -> float:
    """Median CPU µs over all ``texts`` (the first run is a warm-up)."""
    runs = []
    for _ in range(RUNS + 1):
        t0 = time.process_time()
        for text in texts:
            feed(text)
        runs.append(time.process_time() - t0)
    return statistics.median(runs[1:]) * 1e6


def drop(_: object) -> None:
    """Where records go: nowhere (the sink is not measured here)."""


def records_in(text: str) -> int:
    data = orjson.loads(text)["data"]
    return len(data) if isinstance(data, list) else 1


async def main() -> None:
    src = source()

    def on_parsed(channel: Channel, data: dict[str, Any]) -> None:
        if channel is Channel.TRADES:
            drop(trade_from_ccxt("bybit", data, time.time_ns()))
        elif channel is Channel.TICKER:
            drop(ticker_from_ccxt("bybit", data, time.time_ns()))

    cfg = ExchangeSettings(name="bybit", symbols=("BTC/USDT",), parser="ccxt")
    client = make_client(cfg, on_parsed)  # tradesLimit 10, as the publisher sets it
    loaded = markets(src.instruments())
    client.set_markets(loaded)
    ws = {c: client.client(u) for c, u in URLS.items()}
    ids = {ev.topic.split(".")[-1] for ev in src.initial()}
    followed = [m for m in loaded if m["id"] in ids and m["type"] in ("spot", "swap")]
    fast = BybitFastPath("bybit", {}, frozenset({Channel.TRADES, Channel.TICKER}), drop, drop)
    fast.follow(followed)
    gc.collect()
    gc.freeze()

    print(f"Bybit v5 frames, {IDS} ids (spot + perpetual), CPU µs, median of {RUNS} runs")
    print("frames                | ccxt /frame | native /frame | ccxt /record | native /record "
          "| ratio")  # fmt: skip
    for category, topic, rows in [("spot", "publicTrade", 1), ("linear", "publicTrade", 1),
                                  ("linear", "publicTrade", 4), ("spot", "tickers", 1)]:  # fmt: skip
        texts = frames(src, category, topic, rows)
        n_records = sum(map(records_in, texts))
        take = fast.for_url(URLS[category])
        assert all(take(t, 0) for t in texts[:50])  # the fast path takes every one of them

        def native(text: str, _take: Callable[[str, int], bool] = take) -> None:
            _take(text, time.time_ns())

        ccxt_us = cpu_us(ws[category].handle_text_or_binary_message, texts)
        native_us = cpu_us(native, texts)
        n = len(texts)
        label = f"{category} {topic} x{rows}"
        print(f"{label:21} | {ccxt_us / n:11.2f} | {native_us / n:13.2f} | "
              f"{ccxt_us / n_records:12.2f} | {native_us / n_records:14.2f} | "
              f"{ccxt_us / native_us:4.1f}x")  # fmt: skip
    client.timeout_on_exit = 0
    await client.close()


if __name__ == "__main__":
    asyncio.run(main())
