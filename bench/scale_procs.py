"""The publisher and the bot of the scale figures, each in its own process.

    python -m bench.scale_procs publisher '{"redis": ..., "base_url": ..., "symbols": [...],
                                            "channels": ["trades", "ticker", "book"]}'
    python -m bench.scale_procs consumer  '{"redis": ..., "symbols": [...], "group": false}'

The publisher runs with the product's defaults (pacing, backpressure, spool) against the
strict fake; only ``maxlen`` is raised so that no trade is trimmed before the bench counts
the ids. The consumer is one ``consumers.Consumer`` following every stream; each entry's lag
is its receipt time minus its Redis entry time (the ms of the entry id), counted per ms.

Both print ``{"ready": true}`` and answer one JSON line per command line: ``stats``,
``memory`` (publisher: what CCXT and the worker hold per market), ``reset`` (consumer: a new
lag histogram), ``quit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from bench.common import quiet_logs, rss_bytes, use_loop
from bench.peer_procs import Child
from marketbus.models import Channel
from marketbus.settings import Settings, load_settings

SCALE_MAXLEN = 1_000_000
"""Per stream: above any run's trades, so every id is still there to be counted."""

Handler = Callable[[dict[str, Any]], dict[str, Any]]


def publisher_settings(spec: dict[str, Any]) -> Settings:
    """One exchange, every market and channel of the run, everything else default."""
    exchange: dict[str, Any] = {
        "name": spec.get("exchange", "binance"),
        "symbols": spec["symbols"],
        "url": spec["base_url"],
        "channels": spec["channels"],
    }
    if spec.get("options"):
        exchange["options"] = spec["options"]
    return load_settings(
        redis={"url": spec["redis"], "maxlen": SCALE_MAXLEN},
        exchanges=[exchange],
        supervisor={"heartbeat_s": 60, "status_interval_s": 1},
    )


def _counters(obj: object) -> dict[str, Any]:
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return {}
    return {
        k: v
        for k, v in dataclasses.asdict(obj).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def ccxt_memory(client: Any) -> dict[str, Any]:
    """What a CCXT client holds per market: books (levels, diffs cached before a snapshot),
    tickers, trades, and the websocket clients with their futures and subscriptions."""
    if client is None:
        return {}
    books = getattr(client, "orderbooks", None) or {}
    levels = cached = 0
    for book in list(books.values()):
        with contextlib.suppress(Exception):
            levels += len(book["bids"]) + len(book["asks"])
            cached += len(getattr(book, "cache", ()) or ())
    trades = getattr(client, "trades", None) or {}
    clients = getattr(client, "clients", None) or {}
    return {
        "books": len(books),
        "book_levels": levels,
        "book_diffs_cached": cached,
        "tickers": len(getattr(client, "tickers", None) or {}),
        "trade_caches": len(trades),
        "trades_cached": sum(len(t) for t in list(trades.values())),
        "ws_connections": len(clients),
        "ws_futures": sum(len(getattr(c, "futures", {}) or {}) for c in clients.values()),
        "ws_subscriptions": sum(
            len(getattr(c, "subscriptions", {}) or {}) for c in clients.values()
        ),
    }


async def _publisher(spec: dict[str, Any]) -> None:
    from publisher.app import Publisher

    rss_empty = rss_bytes() / 2**20  # everything imported, nothing loaded or subscribed
    async with Publisher(publisher_settings(spec)) as pub:
        worker = next(iter(pub.workers.values()))

        def stats(_: dict[str, Any]) -> dict[str, Any]:
            out = {f"sink_{k}": v for k, v in _counters(pub.sink.stats).items()}
            out.update({f"worker_{k}": v for k, v in _counters(worker.stats).items()})
            status = worker.status()
            out.update(
                rss_empty_mb=rss_empty,
                state=status["state"],
                markets=len(worker.markets),
                dropped=sorted(worker.dropped),
                resolved={m: worker.canonical(m) for m in spec["symbols"]}
                if worker.markets
                else {},
                trade_gaps=worker.trade_ids.gaps,
                trades_missing=worker.trade_ids.missing,
                pacer=worker.pacer.status(),
                books=dataclasses.asdict(worker.books.stats),
            )
            return out

        def memory(_: dict[str, Any]) -> dict[str, Any]:
            return {
                "ccxt": ccxt_memory(worker._client),
                "book_gate": len(worker.books._last),
                "trade_ids": len(worker.trade_ids.last),
            }

        await _serve_commands({"stats": stats, "memory": memory})


class LagMeter:
    """Receipt time minus Redis entry time of every entry ingested, counted per ms."""

    def __init__(self) -> None:
        self.hist: Counter[int] = Counter()

    def add(self, entries: Sequence[Sequence[Any]]) -> None:
        now_ms = int(time.time() * 1000)
        hist = self.hist
        for entry in entries:
            raw = entry[0]
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            hist[now_ms - int(text.partition("-")[0])] += 1

    def summary(self) -> dict[str, Any]:
        n = sum(self.hist.values())
        if not n:
            return {"n": 0}
        out: dict[str, Any] = {"n": n}
        keys = sorted(self.hist)
        for q in (50, 90, 99, 99.9):
            want, seen = n * q / 100, 0
            for k in keys:
                seen += self.hist[k]
                if seen >= want:
                    out[f"p{q:g}"] = k
                    break
        out["max"] = keys[-1]
        return out


async def _consumer(spec: dict[str, Any]) -> None:
    from consumers import Consumer

    exchange = spec.get("exchange", "binance")
    markets = [f"{exchange}:{s}" for s in spec["symbols"]]
    channels = [Channel(c) for c in spec.get("channels", ("trades", "ticker", "book"))]
    lag = LagMeter()

    class MeteredConsumer(Consumer):
        def _ingest_batch(self, key: str, entries: Sequence[Sequence[Any]]) -> None:
            lag.add(entries)
            super()._ingest_batch(key, entries)

    kw: dict[str, Any] = {"group": "bench", "name": "bot-1"} if spec.get("group") else {}
    async with MeteredConsumer(
        spec["redis"], markets, channels, backfill=0, capacity=1_000, block_ms=100, **kw
    ) as c:

        def stats(_: dict[str, Any]) -> dict[str, Any]:
            return {"lag_ms": lag.summary(), **_counters(c.stats)}

        def reset(_: dict[str, Any]) -> dict[str, Any]:
            lag.hist.clear()
            return {"ok": True}

        await _serve_commands({"stats": stats, "reset": reset})


async def _serve_commands(handlers: dict[str, Handler]) -> None:
    out = sys.stdout
    out.write('{"ready": true}\n')
    out.flush()
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line or line.strip() == "quit":
            return
        try:
            cmd = orjson.loads(line)
            res = handlers[cmd["cmd"]](cmd)
        except Exception as e:
            res = {"error": f"{type(e).__name__}: {e}"}
        out.write(orjson.dumps(res).decode() + "\n")
        out.flush()


class ScaleChild(Child):
    """A ``bench.scale_procs`` process: ``call`` sends one command line."""

    def __init__(self, role: str, spec: dict[str, Any]) -> None:
        argv = [sys.executable, "-m", "bench.scale_procs", role, orjson.dumps(spec).decode()]
        super().__init__(argv)

    async def __aenter__(self) -> ScaleChild:
        await super().__aenter__()
        return self

    async def call(self, cmd: str, **kw: Any) -> dict[str, Any]:
        if self.proc is None or self.proc.stdin is None:
            raise RuntimeError("process not started")
        self.proc.stdin.write(orjson.dumps({"cmd": cmd, **kw}) + b"\n")
        await self.proc.stdin.drain()
        res = await self._read(60)
        if "error" in res:
            raise RuntimeError(f"{self.argv[3]}: {res['error']}")
        return res


def main() -> None:
    role, spec = sys.argv[1], orjson.loads(sys.argv[2])
    quiet_logs()
    use_loop(publisher=role == "publisher")
    run = {"publisher": _publisher, "consumer": _consumer}[role]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(spec))


if __name__ == "__main__":
    main()
