"""The fake exchange in its own process, driven over stdin/stdout with JSON lines.

The figures must measure the publisher (or a reader), not the fake that feeds it: in one
process the fake's frame generation and socket writes would share the core under test.

    python -m bench.fakeproc '{"symbols": 50, "rate": 5000, "duration": 4}'

Prints ``{"base_url": ..., "symbols": [unified...]}`` then answers one command per line:
``wait_subscribed``, ``play``, ``wait_done``, ``burst``, ``counts``, ``trades``, ``clear``,
``quit``. Every answer is one JSON line (``{"error": ...}`` on failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import tempfile
import time
from collections import Counter
from typing import Any

import orjson

from fake_exchange import FakeExchange, SyntheticSource
from fake_exchange.sources import unified_symbols


async def _serve(spec: dict[str, Any]) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    source = SyntheticSource(
        spec.get("symbols", 50),
        rate=float(spec.get("rate", 1000)),
        duration=spec.get("duration"),
        total=spec.get("total"),
        channels=tuple(spec.get("channels", ("aggTrade", "ticker"))),
        seed=int(spec.get("seed", 0)),
    )
    fx = FakeExchange(source, autoplay=False, sent_limit=int(spec.get("sent_limit", 2_000_000)))
    await fx.start()
    try:
        info = source.exchange_info()
        names = unified_symbols(info)
        ids = source.symbols()
        out = sys.stdout
        out.write(
            orjson.dumps({"base_url": fx.base_url, "symbols": [names[i] for i in ids]}).decode()
            + "\n"
        )
        out.flush()
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                return
            try:
                cmd = orjson.loads(line)
                res = await _command(fx, names, ids, cmd)
            except Exception as e:
                res = {"error": f"{type(e).__name__}: {e}"}
            out.write(orjson.dumps(res).decode() + "\n")
            out.flush()
            if cmd.get("cmd") == "quit":
                return
    finally:
        await fx.stop()


def _quiet_gc() -> None:
    """No cyclic-GC pauses in the fake while it sends. Its sent log grows by a frame per frame,
    so its full collections grew to 15-25 ms every few seconds; the frames due meanwhile then
    left in one bunch, and that bunch showed as the publisher's p99 (figure 5). The fake's
    frames are acyclic (freed by reference counting); collection resumes when sending ends."""
    gc.collect()
    gc.freeze()
    gc.disable()


async def _command(
    fx: FakeExchange, names: dict[str, str], ids: list[str], cmd: dict[str, Any]
) -> dict[str, Any]:
    op = cmd["cmd"]
    if op == "wait_subscribed":
        await fx.wait_subscribed(cmd["streams"], timeout=float(cmd.get("timeout", 30)))
        return {"ok": True}
    if op == "play":
        _quiet_gc()
        t = time.time_ns()
        fx.play()
        return {"t_ns": t}
    if op == "wait_done":
        try:
            await fx.wait_done(float(cmd.get("timeout", 120)))
        finally:
            gc.enable()
        return {"t_ns": time.time_ns()}
    if op == "burst":
        _quiet_gc()
        t0 = time.time_ns()
        try:
            await fx.send_burst(ids, int(cmd["n"]))
        finally:
            gc.enable()
        return {"t0_ns": t0, "t1_ns": time.time_ns()}
    if op == "counts":
        # data frames written, per unified symbol and kind (aggTrade / 24hrTicker), all sockets
        c: Counter[str] = Counter()
        for f in fx.sent:
            p = f.payload
            c[f"{names.get(p.get('s', ''), '?')}|{p.get('e')}"] += 1
        return {"counts": dict(c), "frames": len(fx.sent), "conns": len(fx._conns)}
    if op == "trades":
        # (unified symbol, aggTrade id, sent_ns) of every aggTrade written
        rows = [
            (names.get(f.payload["s"], "?"), f.payload["a"], f.sent_ns)
            for f in fx.sent
            if f.payload.get("e") == "aggTrade"
        ]
        return {"trades": rows}
    if op == "clear":
        fx.sent.clear()
        return {"ok": True}
    if op == "quit":
        return {"ok": True}
    raise ValueError(f"unknown command {op!r}")


class FakeProc:
    """Client side: start ``python -m bench.fakeproc`` and call its commands."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.proc: asyncio.subprocess.Process | None = None
        self.base_url = ""
        self.symbols: list[str] = []
        self._err = tempfile.TemporaryFile()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def __aenter__(self) -> FakeProc:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.fakeproc",
            orjson.dumps(self.spec).decode(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._err,
            limit=1 << 26,
        )
        hello = await self._read(30)
        self.base_url = hello["base_url"]
        self.symbols = hello["symbols"]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.call("quit"), 5)
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        self._err.close()

    async def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            self._err.seek(0)
            tail = self._err.read()[-2000:].decode(errors="replace")
            raise RuntimeError(f"fake exchange process exited: {tail}")
        res: dict[str, Any] = orjson.loads(line)
        if "error" in res:
            raise RuntimeError(f"fake exchange: {res['error']}")
        return res

    async def call(self, cmd: str, timeout: float = 120, **kw: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps({"cmd": cmd, **kw}) + b"\n")
        await self.proc.stdin.drain()
        return await self._read(timeout)


def streams_for(symbols: list[str], kinds: tuple[str, ...] = ("aggTrade", "ticker")) -> list[str]:
    return [s.replace("/", "").lower() + "@" + k for s in symbols for k in kinds]


def main() -> None:
    spec = orjson.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    if spec.get("uvloop"):
        import uvloop

        uvloop.install()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(spec))


if __name__ == "__main__":
    main()
