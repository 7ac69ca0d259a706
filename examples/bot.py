"""An example bot: follows markets through the consumer library and prints a line per second.

REDIS_URL=redis://localhost:6379/0 MARKETS=binance:BTC/USDT python examples/bot.py
"""

from __future__ import annotations

import asyncio
import os

from consumers import Consumer, Trade


async def main() -> None:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    markets = os.environ.get("MARKETS", "binance:BTC/USDT").split(",")
    trades = 0

    async with Consumer(url, markets, backfill=100) as c:

        def count(record: object) -> None:
            nonlocal trades
            trades += isinstance(record, Trade)

        c.on_record(count)
        while True:
            await asyncio.sleep(1)
            for m in markets:
                exchange, symbol = m.split(":", 1)
                t = c.buffer(exchange, symbol, "ticker").last()
                if t is not None:
                    print(
                        f"{m} bid {t['bid']} ask {t['ask']} last {t['last']} trades seen {trades}"
                    )


if __name__ == "__main__":
    asyncio.run(main())
