"""CPU per frame and per record: CCXT's OKX path vs the native OKX parser, parsing only.

    python -m bench.okx_parse

No socket, no Redis, no event loop turn per frame: the same OKX ``trades`` push frames (text,
from the fake's synthetic source, 50 SPOT instruments) go through

- the CCXT path as the worker runs it: a tapped ``ccxt.pro.okx`` websocket client's
  ``handle_text_or_binary_message`` (orjson decode, ``handle_message``, ``handle_trades``,
  ``parse_trade``, the tap) and :func:`publisher.normalize.trade_from_ccxt`;
- the native path: :class:`publisher.native_okx.OkxFastPath` (orjson decode and the record),

with frames of one trade (OKX's usual) and of four. CPU time (``time.process_time``) over
all frames, median of 7 runs after a warm-up run, the heap frozen as the publisher freezes it
once connected (young-generation GC still runs). Figures go in docs/performance.md.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Callable
from itertools import islice
from typing import Any

import orjson

from fake_exchange import OkxSyntheticSource
from marketbus.models import Channel
from marketbus.settings import ExchangeSettings
from publisher.ccxt_client import make_client
from publisher.native_okx import OkxFastPath
from publisher.normalize import trade_from_ccxt

FRAMES = 20_000
RUNS = 7
INSTRUMENTS = 50


def trade_frames(rows_per_frame: int) -> list[str]:
    source = OkxSyntheticSource(INSTRUMENTS, rate=1e6, total=FRAMES * rows_per_frame,
                                seed=5, channels=("trades",))  # fmt: skip
    source.prepare()
    frames = [ev.frame for ev in islice(source.events(lambda: 1_700_000_000_000), None)]
    texts = []
    for i in range(0, len(frames), INSTRUMENTS * rows_per_frame):
        block = frames[i : i + INSTRUMENTS * rows_per_frame]
        by_inst: dict[str, list[Any]] = {}
        for f in block:
            by_inst.setdefault(f["arg"]["instId"], []).extend(f["data"])
        for inst, rows in by_inst.items():
            frame = {"arg": {"channel": "trades", "instId": inst}, "data": rows}
            texts.append(orjson.dumps(frame).decode())
    return texts


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


async def main() -> None:
    source = OkxSyntheticSource(INSTRUMENTS, channels=("trades",))

    def on_parsed(channel: Channel, data: dict[str, Any]) -> None:
        drop(trade_from_ccxt("okx", data, time.time_ns()))

    cfg = ExchangeSettings(name="okx", symbols=("BTC/USDT",), parser="ccxt")
    client = make_client(cfg, on_parsed)  # tradesLimit 10, as the publisher sets it
    spot = [client.parse_market(m) for m in source.instruments()["SPOT"]]
    client.set_markets([m for m in spot if m is not None])
    ws = client.client("ws://127.0.0.1:9/ws/v5/public")
    ids = {i: client.markets_by_id[i][0]["symbol"] for i in source.inst_ids()}
    fast = OkxFastPath("okx", ids, frozenset({Channel.TRADES}), drop, drop)
    gc.collect()
    gc.freeze()

    def native(text: str) -> None:
        fast(text, time.time_ns())

    print(f"OKX trades frames, {INSTRUMENTS} instruments, CPU µs, median of {RUNS} runs")
    print("rows/frame | ccxt /frame | native /frame | ccxt /record | native /record | ratio")
    for rows in (1, 4):
        texts = trade_frames(rows)
        n_records = sum(len(orjson.loads(t)["data"]) for t in texts)
        ccxt_us = cpu_us(ws.handle_text_or_binary_message, texts)
        native_us = cpu_us(native, texts)
        n = len(texts)
        print(f"{rows:10} | {ccxt_us / n:11.2f} | {native_us / n:13.2f} | "
              f"{ccxt_us / n_records:12.2f} | {native_us / n_records:14.2f} | "
              f"{ccxt_us / native_us:4.1f}x")  # fmt: skip
    client.timeout_on_exit = 0
    await client.close()


if __name__ == "__main__":
    asyncio.run(main())
