"""Cross-exchange spread: an example bot that trades nothing.

    python examples/spread.py                                   # binance and okx BTC/USDT
    python examples/spread.py binance:ETH/USDT okx:ETH/USDT --redis-url redis://host:6379/0
    python examples/spread.py --seconds 60                      # stop after a minute

Follows the same market on two (or more) exchanges through the consumer library and prints,
once a second and for each pair A, B: A's best bid minus B's best ask in bps of B's ask (what
selling on A while buying on B would gain before fees; negative: no opportunity), both
directions. Best bid/ask come from the latest book top when the exchange publishes books,
else from its ticker; each side shows where it came from and its age (now minus the
exchange's time of that quote). The Redis password, if any, comes from
MARKETBUS_REDIS__PASSWORD, never from argv.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import sys
import time
from typing import TextIO

from consumers import Best, Consumer
from consumers.markets import split_market
from marketbus.errors import ConfigError
from marketbus.settings import RedisSettings

DEFAULT_MARKETS = ("binance:BTC/USDT", "okx:BTC/USDT")


def spread_bps(bid: float | None, ask: float | None) -> float | None:
    """``bid - ask`` in basis points of ``ask``; None when a side is missing."""
    if bid is None or ask is None:
        return None
    return (bid - ask) / ask * 1e4


def _px(v: float | None) -> str:
    return "-" if v is None else repr(v)


def _side(market: str, best: Best | None, now_ms: int) -> str:
    if best is None:
        return f"{market} waiting"
    age = best.age_ms(now_ms) / 1000
    return f"{market} bid {_px(best.bid)} ask {_px(best.ask)} {best.source.value} {age:.2f}s"


def _bps(v: float | None) -> str:
    return "-" if v is None else f"{v:+.2f} bps"


def spread_line(
    a: tuple[str, str], best_a: Best | None, b: tuple[str, str], best_b: Best | None, now_ms: int
) -> str:
    """One line for the pair (exchange, symbol) A, B: both sides, then A bid - B ask and
    B bid - A ask."""
    ab = spread_bps(best_a.bid if best_a else None, best_b.ask if best_b else None)
    ba = spread_bps(best_b.bid if best_b else None, best_a.ask if best_a else None)
    return (
        f"{time.strftime('%H:%M:%S', time.gmtime(now_ms / 1000))} "
        f"{_side(':'.join(a), best_a, now_ms)} | {_side(':'.join(b), best_b, now_ms)} | "
        f"{a[0]} bid - {b[0]} ask {_bps(ab)} | {b[0]} bid - {a[0]} ask {_bps(ba)}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Print the cross-exchange spread once a second.")
    p.add_argument("markets", nargs="*", default=list(DEFAULT_MARKETS),
                   help="two or more exchange:SYMBOL (default: %(default)s)")  # fmt: skip
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument(
        "--seconds", type=float, default=0.0, help="stop after N s (0: run until Ctrl-C)"
    )
    p.add_argument("--interval", type=float, default=1.0, help="seconds between lines")
    args = p.parse_args(argv)
    if len(args.markets) < 2:
        p.error("give at least two markets, e.g. binance:BTC/USDT okx:BTC/USDT")
    if args.interval <= 0 or args.seconds < 0:
        p.error("--interval must be > 0 and --seconds >= 0")
    return args


async def run(
    argv: list[str] | None = None, out: TextIO = sys.stdout, stop: asyncio.Event | None = None
) -> int:
    """The bot: returns the exit code; ``stop`` (or ``--seconds``) ends it."""
    args = parse_args(argv)
    redis = RedisSettings(
        url=args.redis_url, password=os.environ.get("MARKETBUS_REDIS__PASSWORD") or None
    )
    stop = stop or asyncio.Event()
    deadline = time.monotonic() + args.seconds if args.seconds else None
    try:
        markets = [split_market(m) for m in args.markets]
    except ConfigError as e:
        print(f"spread: {e}", file=sys.stderr)
        return 2
    pairs = list(itertools.combinations(markets, 2))
    consumer = Consumer(redis, args.markets, ["book", "ticker"], backfill=1, capacity=1000)
    async with consumer as c:
        reader = asyncio.create_task(c.run())  # ends with an error if the consumer fails
        while not stop.is_set() and not reader.done():
            now_ms = time.time_ns() // 1_000_000
            for a, b in pairs:
                line = spread_line(a, c.best(*a), b, c.best(*b), now_ms)
                print(line, file=out, flush=True)
            wait = args.interval
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
        if reader.done() and not reader.cancelled():
            reader.result()  # the consumer failed (e.g. a wrong password): raise its error
    reader.cancel()  # the consumer has stopped: the reader ends with it
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    return 0


async def _main() -> int:
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    return await run(sys.argv[1:], stop=stop)


if __name__ == "__main__":
    sys.exit(asyncio.run(_main()))
