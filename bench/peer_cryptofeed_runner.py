"""cryptofeed's Binance feed into Redis Streams, pointed at our fake exchange (the peer figures).

Run with the throwaway venv's python (``bench/peer.py`` makes it), never with the project's:
this script imports cryptofeed and nothing of marketbus.

    <venv>/bin/python bench/peer_cryptofeed_runner.py '{"rest": "http://127.0.0.1:P", ...}'

What is changed from a stock ``FeedHandler`` + ``Binance`` + ``TradeStream`` and why:

- the exchange's endpoints: ``Binance.websocket_endpoints`` / ``rest_endpoints`` name the
  fake (plain ``ws://`` and ``http://`` on 127.0.0.1) instead of binance.com;
- cryptofeed refuses any websocket address that does not start with ``wss://``
  (``WSAsyncConn.__init__``): the patched constructor hands it a ``wss://`` spelling of the
  same address and then puts the real ``ws://`` address back, so every other line of it runs;
- its log goes to a file we name, its symbol cache to a directory we name (``XDG_CACHE_HOME``).

Everything else is cryptofeed's default: uvloop, ``websockets`` with ``max_queue=1024``, the
backend's queue (``max_depth=10_000``, ``overflow='drop_oldest'``, ``batch_max=500``). The
``overflow`` spec key sets the backend's overflow policy (``"block"``: its lossless mode).

Prints ``{"ready": true}`` once the feed runs; each ``stats`` line on stdin answers the
backend's counters as one JSON line; ``quit`` (or EOF) stops the feed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import asdict
from typing import Any

from cryptofeed import FeedHandler
from cryptofeed.backends.redis import TradeStream
from cryptofeed.connection import (
    RestEndpoint,
    Routes,
    WebsocketEndpoint,
    WSAsyncConn,
)
from cryptofeed.defines import TRADES
from cryptofeed.exchanges import Binance

_wss_checked_init = WSAsyncConn.__init__


def _ws_init(
    self: Any, address: str, conn_id: str, subscription: Any = None, **kwargs: Any
) -> None:
    """``WSAsyncConn.__init__`` without its wss-only check (the fake serves plain ws)."""
    plain = address.startswith("ws://")
    spelled = "wss://" + address.removeprefix("ws://") if plain else address
    _wss_checked_init(self, spelled, conn_id, subscription, **kwargs)
    self.address = address


def point_at(rest: str, ws: str) -> None:
    """Binance's endpoints -> the fake; the routes are cryptofeed's own."""
    Binance.websocket_endpoints = [WebsocketEndpoint(ws)]
    Binance.rest_endpoints = [
        RestEndpoint(
            rest,
            routes=Routes("/api/v3/exchangeInfo", l2book="/api/v3/depth?symbol={}&limit={}"),
        )
    ]
    WSAsyncConn.__init__ = _ws_init


async def _main(spec: dict[str, Any]) -> None:
    point_at(spec["rest"], spec["ws"])
    queue_opts: dict[str, Any] = {}
    if spec.get("overflow"):
        queue_opts["overflow"] = spec["overflow"]
    backend = TradeStream(host="127.0.0.1", port=int(spec["redis_port"]), **queue_opts)
    fh = FeedHandler(config={"log": {"filename": spec["log"], "level": "WARNING"}})
    fh.add_feed(Binance(symbols=spec["symbols"], channels=[TRADES], callbacks={TRADES: backend}))
    task = asyncio.create_task(fh.run_async(install_signal_handlers=False))
    out = sys.stdout
    out.write('{"ready": true}\n')
    out.flush()
    try:
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line or line.strip() == "quit" or task.done():
                return
            stats = asdict(backend.stats)
            stats["feed_running"] = not task.done()
            out.write(json.dumps(stats) + "\n")
            out.flush()
    finally:
        fh.request_stop()
        try:
            await asyncio.wait_for(task, 15)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()


def main() -> None:
    spec = json.loads(sys.argv[1])
    if spec.get("uvloop", True):  # cryptofeed's default config: {'uvloop': True}
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    else:
        runner = asyncio.Runner()
    with runner:
        runner.run(_main(spec))


if __name__ == "__main__":
    main()
