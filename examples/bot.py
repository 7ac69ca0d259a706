"""An example bot: follows markets through the consumer library and prints a line per second.

REDIS_URL=redis://localhost:6379/0 MARKETS=binance:BTC/USDT python examples/bot.py

The Redis password, when there is one, comes from MARKETBUS_REDIS__PASSWORD (never the URL).
The bot exits (non-zero) when its consumer fails, e.g. on a wrong password; SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from consumers import Consumer, Record, Trade
from marketbus.settings import RedisSettings


async def main() -> None:
    redis = RedisSettings(
        url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        password=os.environ.get("MARKETBUS_REDIS__PASSWORD") or None,
    )
    markets = [m.strip() for m in os.environ.get("MARKETS", "binance:BTC/USDT").split(",")]
    trades = 0

    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)

    async with Consumer(redis, markets, backfill=100) as c:

        def count(record: Record) -> None:
            nonlocal trades
            trades += isinstance(record, Trade)

        c.on_record(count)
        reader = asyncio.create_task(c.run())  # raises if the consumer fails
        while not stop.is_set() and not reader.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            for m in markets:
                exchange, symbol = m.split(":", 1)
                t = c.buffer(exchange, symbol, "ticker").last()
                if t is not None:
                    print(
                        f"{m} bid {t['bid']} ask {t['ask']} last {t['last']} trades seen {trades}",
                        flush=True,
                    )
        if reader.done():
            reader.result()
        reader.cancel()


if __name__ == "__main__":
    asyncio.run(main())
