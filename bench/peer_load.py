"""The fake exchange for the peer figures, in its own process, with a sustained-load sender.

    python -m bench.peer_load '{"symbols": 4, "rate": 4000, "duration": 11}'

The same server and commands as ``bench.fakeproc`` (aggTrade only, no candles: every frame
is a trade, nothing the publishers do not read), plus:

- ``ids``: per market, how many aggTrades were written since the last ``clear`` and their
  lowest and highest ``a`` (so the bench can tell which trade ids every publisher must hold);
- ``flood``: ``rate`` aggTrades/s for ``seconds``, continuing each market's ids, written the
  way a live exchange writes: ``per_write`` frames per socket write (1 by default), each a
  complete websocket frame. Frames are made as they are due from a template per market and
  connection kind (2.5-4.6 µs a frame, write included: 200k frames/s at 0.91 core to a bare
  reader, one write each); while the socket's buffer holds more than ``_HIGH_WATER`` bytes
  the sender waits (TCP backpressure, as a kernel would impose), and that waiting is
  reported, so a figure can show whether the fake or the client set the pace.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.fakeproc import FakeProc, _command, _quiet_gc
from fake_exchange import FakeExchange, SyntheticSource
from fake_exchange import binance_frames as bf
from fake_exchange.sources import unified_symbols
from fake_exchange.wsframes import text_frame

_HIGH_WATER = 64 * 1024
"""Bytes a connection's transport may hold before the flood waits for the client to read."""
_TICK = 0.001
"""The flood's pacing step (seconds)."""


@dataclass
class _Market:
    sym_id: str
    agg_id: int
    trade_id: int
    price: str
    # (transport, encode) per subscribed connection: combined envelope or bare payload
    targets: list[tuple[Any, Callable[[int, int, int], bytes]]] = field(default_factory=list)


def _template(stream: str, payload: dict[str, Any], combined: bool) -> Callable[..., bytes]:
    """A frame maker for one market and encoding: ids and times change, the rest is fixed."""
    marks = {"E": 900000000000001, "a": 900000000000002, "f": 900000000000003}
    body = dict(payload, E=marks["E"], T=marks["E"], a=marks["a"], f=marks["f"], l=marks["f"])
    text = orjson.dumps({"stream": stream, "data": body} if combined else body).decode()
    for mark in marks.values():
        text = text.replace(str(mark), "%d")
    fmt = text.encode()

    def make(ms: int, agg: int, tid: int) -> bytes:
        return text_frame(fmt % (ms, agg, tid, tid, ms))

    order = [text.find(k) for k in ('"E":', '"a":', '"f":', '"l":', '"T":')]
    if order != sorted(order):  # the template relies on the payload's field order
        raise RuntimeError(f"unexpected aggTrade field order: {text}")
    return make


def _markets(fx: FakeExchange, last: dict[str, tuple[int, int, str]]) -> list[_Market]:
    out = []
    for sym_id, (agg, tid, price) in sorted(last.items()):
        stream = bf.stream_name(sym_id, "aggTrade")
        m = _Market(sym_id, agg + 1, tid + 1, price)
        sample = bf.agg_trade(sym_id, 0, price, "1.00000000", 0, 0, 0, 0, False)
        for conn in fx._subs.get(stream, ()):
            transport = conn.request.transport
            if not conn.closed and transport is not None:
                m.targets.append((transport, _template(stream, sample, conn.combined)))
        out.append(m)
    return out


async def _below(transports: Iterable[Any], limit: int, timeout: float = 30.0) -> float:
    """Wait until every transport holds fewer than ``limit`` bytes: seconds waited."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for _ in range(int(timeout / 0.0002)):
        if all(t.get_write_buffer_size() < limit for t in transports):
            return loop.time() - t0
        if any(t.is_closing() for t in transports):
            raise ConnectionError("client went away during the flood")
        await asyncio.sleep(0.0002)
    raise TimeoutError(f"client read nothing for {timeout:g} s")


async def flood(
    fx: FakeExchange, last: dict[str, tuple[int, int, str]], rate: float, seconds: float,
    per_write: int = 1,
) -> dict[str, Any]:  # fmt: skip
    """``rate`` aggTrades/s round-robin over the markets, ``per_write`` frames per write."""
    markets = _markets(fx, last)
    first = {m.sym_id: m.agg_id for m in markets}
    transports = {id(t): t for m in markets for t, _ in m.targets}.values()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    waited = 0.0
    n = k = 0
    while (el := loop.time() - t0) < seconds:
        due = int(rate * el) - n
        ms = int(time.time() * 1000)
        while due > 0:
            chunk: dict[int, tuple[Any, list[bytes]]] = {}
            for _ in range(min(per_write, due)):
                m = markets[k % len(markets)]
                k += 1
                for transport, make in m.targets:
                    chunk.setdefault(id(transport), (transport, []))[1].append(
                        make(ms, m.agg_id, m.trade_id)
                    )
                m.agg_id += 1
                m.trade_id += 1
                n += 1
                due -= 1
            for transport, frames in chunk.values():
                transport.write(b"".join(frames) if len(frames) > 1 else frames[0])
            if any(t.get_write_buffer_size() > _HIGH_WATER for t in transports):
                waited += await _below(transports, _HIGH_WATER)
                break  # re-read the clock: due is counted from the start, never skipped
        await asyncio.sleep(_TICK)
    elapsed = loop.time() - t0
    tail = await _below(transports, 1)  # everything handed to the kernel before answering
    for m in markets:
        last[m.sym_id] = (m.agg_id - 1, m.trade_id - 1, m.price)
    return {
        "sent": n,
        "seconds": elapsed,
        "rate": n / elapsed,
        "waited_s": waited,
        "tail_s": tail,
        "per_write": per_write,
        "ids": {m.sym_id: [first[m.sym_id], m.agg_id - 1] for m in markets},
    }


def _ids(fx: FakeExchange, last: dict[str, tuple[int, int, str]]) -> dict[str, Any]:
    """Per market: aggTrades written since the last ``clear`` (count, lowest, highest a,
    whether they are consecutive), remembering each market's last ids for the flood."""
    seen: dict[str, set[int]] = {}
    for f in fx.sent:
        p = f.payload
        if p.get("e") != "aggTrade":
            continue
        seen.setdefault(p["s"], set()).add(p["a"])
        prev = last.get(p["s"])
        if prev is None or p["a"] > prev[0]:
            last[p["s"]] = (p["a"], p["l"], p["p"])
    return {
        s: [len(a), min(a), max(a), max(a) - min(a) + 1 == len(a)] for s, a in sorted(seen.items())
    }


async def _serve(spec: dict[str, Any]) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    source = SyntheticSource(
        spec.get("symbols", 4),
        rate=float(spec.get("rate", 4000)),
        duration=spec.get("duration"),
        channels=("aggTrade",),
        seed=int(spec.get("seed", 0)),
        kline_intervals=(),
    )
    fx = FakeExchange(source, autoplay=False, sent_limit=int(spec.get("sent_limit", 2_000_000)))
    await fx.start()
    last: dict[str, tuple[int, int, str]] = {}
    try:
        names = unified_symbols(source.exchange_info())
        ids = source.symbols()
        out = sys.stdout
        hello = {"base_url": fx.base_url, "symbols": [names[i] for i in ids], "ids": ids}
        out.write(orjson.dumps(hello).decode() + "\n")
        out.flush()
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                return
            cmd: dict[str, Any] = {}
            try:
                cmd = orjson.loads(line)
                if cmd["cmd"] == "ids":
                    res: dict[str, Any] = {"ids": _ids(fx, last)}
                elif cmd["cmd"] == "flood":
                    _ids(fx, last)
                    _quiet_gc()
                    try:
                        res = await flood(
                            fx, last, float(cmd["rate"]), float(cmd["seconds"]),
                            int(cmd.get("per_write", 1)),
                        )  # fmt: skip
                    finally:
                        gc.enable()
                else:
                    res = await _command(fx, names, ids, cmd)
            except Exception as e:
                res = {"error": f"{type(e).__name__}: {e}"}
            out.write(orjson.dumps(res).decode() + "\n")
            out.flush()
            if cmd.get("cmd") == "quit":
                return
    finally:
        await fx.stop()


class PeerFake(FakeProc):
    """Client side: ``python -m bench.peer_load`` with ``bench.fakeproc``'s command protocol."""

    async def __aenter__(self) -> PeerFake:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.peer_load",
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


def main() -> None:
    spec = orjson.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(spec))


if __name__ == "__main__":
    main()
