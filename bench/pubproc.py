"""A publisher (or consumer) in its own process, for the latency and soak figures.

    python -m bench.pubproc publisher '{"redis": ..., "base_url": ..., "symbols": [...]}'
    python -m bench.pubproc consumer  '{"redis": ..., "symbols": [...], "capacity": 5000}'

Prints ``{"ready": true}`` once started and runs until stdin closes (or a ``quit`` line).
A ``stats`` line answers the process's counters as one JSON line.

Consumer options: ``callback`` (a no-op ``on_record``), ``group`` (a group name: group mode,
``XREADGROUP`` + ``XACK``, member ``bench-1``), ``ids`` (the stats also give the last
entry id taken per stream, so a bench can count what it had to receive).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from typing import Any

import orjson

from bench.common import quiet_logs, use_loop
from marketbus.models import Channel
from marketbus.settings import Settings, load_settings


def publisher_settings(
    redis_url: str,
    base_url: str,
    symbols: list[str],
    *,
    maxlen: int = 100_000,
    parser: str = "ccxt",
) -> Settings:
    """Binance via the fake, every watch on one websocket connection (``streamLimits``)."""
    return load_settings(
        redis={"url": redis_url, "maxlen": maxlen, "spool_size": 2_000_000},
        exchanges=[
            {
                "name": "binance",
                "symbols": symbols,
                "url": base_url,
                "channels": ["ticker", "trades"],
                "options": {"options": {"streamLimits": {"spot": 1}}},
                "parser": parser,
            }
        ],
        supervisor={"heartbeat_s": 60, "status_interval_s": 1},
    )


async def _publisher(spec: dict[str, Any]) -> None:
    from publisher.app import Publisher

    settings = publisher_settings(
        spec["redis"], spec["base_url"], spec["symbols"], parser=spec.get("parser", "ccxt")
    )
    async with Publisher(settings) as pub:

        def stats() -> dict[str, Any]:
            s = pub.sink.stats
            w = next(iter(pub.workers.values()))
            return {
                "written": s.written,
                "accepted": s.accepted,
                "overflow": s.overflow,
                "rejected": s.rejected,
                "frames": w.stats.frames,
                "records": w.stats.records,
                "invalid": w.stats.invalid,
                "trade_gaps": w.trade_ids.gaps,
                "trades_missing": w.trade_ids.missing,
            }

        await _loop(stats)


async def _consumer(spec: dict[str, Any]) -> None:
    from consumers import Consumer

    markets = [f"binance:{s}" for s in spec["symbols"]]
    group = spec.get("group")
    kw: dict[str, Any] = {"group": str(group), "name": "bench-1"} if group else {}
    async with Consumer(
        spec["redis"],
        markets,
        (Channel.TICKER, Channel.TRADES),
        capacity=int(spec.get("capacity", 5_000)),
        backfill=0,
        block_ms=100,
        count=1000,
        linger_ms=float(spec.get("linger_ms", 0)),
        **kw,
    ) as c:
        seen = [0]

        def on_record(_: Any) -> None:
            seen[0] += 1

        if spec.get("callback"):
            c.on_record(on_record)

        def stats() -> dict[str, Any]:
            out: dict[str, Any] = {
                "received": c.stats.received,
                "invalid": c.stats.invalid,
                "rows": sum(len(b) for b in c.buffers.values()),
                "callbacks": seen[0],
                "acked": c.stats.acked,
            }
            if spec.get("ids"):
                # the newest entry ingested per stream: a buffer never holds an id twice
                out["ids"] = {k: f"{ms}-{seq}" for k, (ms, seq) in c._buffer_last.items()}
            return out

        await _loop(stats)


async def _loop(stats: Any) -> None:
    out = sys.stdout
    out.write('{"ready": true}\n')
    out.flush()
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line or line.strip() == "quit":
            return
        out.write(orjson.dumps(stats()).decode() + "\n")
        out.flush()


class Proc:
    """Client side of ``python -m bench.pubproc ROLE SPEC``."""

    def __init__(self, role: str, spec: dict[str, Any]) -> None:
        self.role = role
        self.spec = spec
        self.proc: asyncio.subprocess.Process | None = None
        self._err = tempfile.TemporaryFile()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def __aenter__(self) -> Proc:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.pubproc",
            self.role,
            orjson.dumps(self.spec).decode(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._err,
        )
        await self._read(60)
        return self

    def stderr_tail(self, n: int = 3000) -> str:
        """The end of what the process logged (warnings and errors)."""
        self._err.seek(0)
        return self._err.read()[-n:].decode(errors="replace")

    async def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            self._err.seek(0)
            tail = self._err.read()[-3000:].decode(errors="replace")
            raise RuntimeError(f"{self.role} process exited: {tail}")
        res: dict[str, Any] = orjson.loads(line)
        return res

    async def stats(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(b"stats\n")
        await self.proc.stdin.drain()
        return await self._read(10)

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.write(b"quit\n")
                await self.proc.stdin.drain()
                self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        self._err.close()


def main() -> None:
    role, spec = sys.argv[1], orjson.loads(sys.argv[2])
    quiet_logs()
    use_loop(publisher=role == "publisher")
    run = {"publisher": _publisher, "consumer": _consumer}[role]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(spec))


if __name__ == "__main__":
    main()
