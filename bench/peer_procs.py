"""The publishers of the peer figures, each in its own process, behind one small client.

    python -m bench.peer_procs marketbus '{"redis": ..., "base_url": ..., "symbols": [...],
                                          "parser": "native"}'

marketbus runs as a user would run it for trades only: the product's defaults (spool, batch,
backpressure) except ``maxlen``, raised so no entry is trimmed before the bench has counted
every trade id (``MAXLEN ~`` is still sent with every XADD). cryptofeed runs from its own
venv (``bench/peer_cryptofeed_runner.py``). Both answer the same JSON-lines protocol:
``{"ready": true}`` once started, one JSON line of counters per ``stats`` line, ``quit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from bench.common import quiet_logs, use_loop
from bench.pubproc import _loop
from marketbus.settings import Settings, load_settings

PEER_MAXLEN = 50_000_000
"""Per stream: above any run's trades, so every id is still there to be counted."""


def marketbus_settings(
    redis_url: str, base_url: str, symbols: list[str], parser: str, linger_ms: float = 0.0
) -> Settings:
    """Binance trades via the fake on one websocket connection; everything else default but
    ``maxlen``, the heartbeat (60 s: the bench reads Redis back between loads) and, where a
    row says so, the sink's ``linger_ms``."""
    return load_settings(
        redis={"url": redis_url, "maxlen": PEER_MAXLEN, "linger_ms": linger_ms},
        exchanges=[
            {
                "name": "binance",
                "symbols": symbols,
                "url": base_url,
                "channels": ["trades"],
                "options": {"options": {"streamLimits": {"spot": 1}}},
                "parser": parser,
            }
        ],
        supervisor={"heartbeat_s": 60, "status_interval_s": 1},
    )


def _counters(obj: object) -> dict[str, Any]:
    """The numeric fields of a stats dataclass (whatever fields it has today)."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return {}
    return {
        k: v
        for k, v in dataclasses.asdict(obj).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


async def _marketbus(spec: dict[str, Any]) -> None:
    from publisher.app import Publisher

    settings = marketbus_settings(
        spec["redis"], spec["base_url"], spec["symbols"], spec["parser"], spec.get("linger_ms", 0)
    )
    async with Publisher(settings) as pub:
        worker = next(iter(pub.workers.values()))

        def stats() -> dict[str, Any]:
            out = {f"sink_{k}": v for k, v in _counters(pub.sink.stats).items()}
            out.update({f"worker_{k}": v for k, v in _counters(worker.stats).items()})
            out["trade_gaps"] = worker.trade_ids.gaps
            out["trades_missing"] = worker.trade_ids.missing
            return out

        await _loop(stats)


class Child:
    """A publisher process speaking the ready / stats / quit protocol."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.proc: asyncio.subprocess.Process | None = None
        self._err = tempfile.TemporaryFile()

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("process not started")
        return self.proc.pid

    async def __aenter__(self) -> Child:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._err,
            env=self.env,
        )
        await self._read(90)
        return self

    def stderr_tail(self, n: int = 3000) -> str:
        self._err.seek(0)
        return self._err.read()[-n:].decode(errors="replace")

    async def _read(self, timeout: float) -> dict[str, Any]:
        if self.proc is None or self.proc.stdout is None:
            raise RuntimeError("process not started")
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"{self.argv[1:3]} exited: {self.stderr_tail()}")
        res: dict[str, Any] = orjson.loads(line)
        return res

    async def stats(self) -> dict[str, Any]:
        if self.proc is None or self.proc.stdin is None:
            raise RuntimeError("process not started")
        self.proc.stdin.write(b"stats\n")
        await self.proc.stdin.drain()
        return await self._read(20)

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.write(b"quit\n")
                await self.proc.stdin.drain()
                self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 20)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        self._err.close()


def marketbus_child(
    redis_url: str, base_url: str, symbols: list[str], parser: str, linger_ms: float = 0.0
) -> Child:
    spec = {
        "redis": redis_url, "base_url": base_url, "symbols": symbols, "parser": parser,
        "linger_ms": linger_ms,
    }  # fmt: skip
    argv = [sys.executable, "-m", "bench.peer_procs", "marketbus", orjson.dumps(spec).decode()]
    return Child(argv)


def main() -> None:
    role, spec = sys.argv[1], orjson.loads(sys.argv[2])
    if role != "marketbus":
        raise SystemExit(f"unknown role {role!r}")
    quiet_logs()
    use_loop(publisher=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_marketbus(spec))


if __name__ == "__main__":
    main()
