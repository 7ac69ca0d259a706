"""The fake exchange for the scale figures, in its own process, as strict as the exchange.

    python -m bench.scale_fake '{"symbols": 1000, "rate": 20000, "depth_interval": 1.0,
                                 "limits": {}}'

A synthetic market on ``symbols`` Binance spot markets: ``rate`` frames/s of aggTrade and
ticker round-robin, plus a depth diff per subscribed book every ``depth_interval`` s; with
``limits`` (``fake_exchange.limits.BinanceLimits`` fields, or for OKX
``fake_exchange.okx.limits.OkxLimits`` fields; ``{}`` for the exchange's own) the
request weight, streams per connection and messages per second are enforced. Instead of a
sent log (a million frames in a minute), every aggTrade written is counted per market (how
many, lowest and highest id), and frames per kind.

Prints ``{"base_url": ..., "symbols": [unified...]}``, then answers one JSON line per
command line: ``subscribed`` (streams with a reader), ``stats`` (frames written by kind,
connections, what the limits did), ``stall`` (hold every write for ``seconds``: the
writers stop, nothing is lost), ``ids`` (per market: aggTrades written, lowest and highest
id), ``quit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import sys
from collections import Counter
from typing import Any

import orjson

from bench.fakeproc import FakeProc
from fake_exchange import FakeExchange, FakeOkx, OkxSyntheticSource, SentFrame, SyntheticSource
from fake_exchange.limits import BinanceLimits
from fake_exchange.okx import instruments as okx_instruments
from fake_exchange.okx.limits import OkxLimits
from fake_exchange.sources import unified_symbols


class CountingFake(FakeExchange):
    """A fake that counts what it writes instead of logging every frame."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, sent_limit=1, **kwargs)
        self.kinds: Counter[str] = Counter()
        self.agg: dict[str, list[int]] = {}
        """Symbol id -> [count, lowest a, highest a] of the aggTrades written."""

    def _record(self, frame: SentFrame) -> None:
        p = frame.payload
        kind = p.get("e", "?")
        self.kinds[kind] += 1
        if kind == "aggTrade":
            a = p["a"]
            row = self.agg.get(p["s"])
            if row is None:
                self.agg[p["s"]] = [1, a, a]
            else:
                row[0] += 1
                row[1] = min(row[1], a)
                row[2] = max(row[2], a)


class CountingOkx(FakeOkx):
    """The OKX fake, counting trades per instrument and frames per channel."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, sent_limit=1, **kwargs)
        self.kinds: Counter[str] = Counter()
        self.agg: dict[str, list[int]] = {}

    def _record(self, conn_id: int, key: tuple[str, str], frame: dict[str, Any]) -> None:
        channel, inst = key
        self.kinds[channel] += 1
        if channel != "trades":
            return
        for row in frame.get("data", ()):
            tid = int(row["tradeId"])
            got = self.agg.get(inst)
            if got is None:
                self.agg[inst] = [1, tid, tid]
            else:
                got[0] += 1
                got[1] = min(got[1], tid)
                got[2] = max(got[2], tid)


def _limits(spec: dict[str, Any]) -> BinanceLimits | None:
    raw = spec.get("limits")
    return None if raw is None else BinanceLimits(**raw)


async def _serve(spec: dict[str, Any]) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    fx: CountingFake | CountingOkx
    if spec.get("exchange", "binance") == "okx":
        okx = OkxSyntheticSource(
            spec.get("symbols", 300),
            rate=float(spec.get("rate", 6_000)),
            channels=tuple(spec.get("channels", ("trades", "tickers", "books"))),
            seed=int(spec.get("seed", 0)),
        )
        raw = spec.get("limits")
        fx = CountingOkx(okx, limits=None if raw is None else OkxLimits(**raw))
        await fx.start()
        names = okx_instruments.unified_symbols(okx.instruments())
        ids = okx.inst_ids()
    else:
        source = SyntheticSource(
            spec.get("symbols", 1000),
            rate=float(spec.get("rate", 20_000)),
            channels=tuple(spec.get("channels", ("aggTrade", "ticker"))),
            seed=int(spec.get("seed", 0)),
            kline_intervals=(),
            depth_interval=float(spec.get("depth_interval", 1.0)),
        )
        fx = CountingFake(source, limits=_limits(spec))
        await fx.start()
        names = unified_symbols(source.exchange_info())
        ids = source.symbols()
    # the sender's frames are acyclic: no full collections pausing it (see bench.fakeproc)
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        out = sys.stdout
        hello = {"base_url": fx.base_url, "symbols": [names[i] for i in ids]}
        out.write(orjson.dumps(hello).decode() + "\n")
        out.flush()
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                return
            cmd: dict[str, Any] = {}
            try:
                cmd = orjson.loads(line)
                res = _command(fx, names, cmd)
            except Exception as e:
                res = {"error": f"{type(e).__name__}: {e}"}
            out.write(orjson.dumps(res).decode() + "\n")
            out.flush()
            if cmd.get("cmd") == "quit":
                return
    finally:
        await fx.stop()


def _command(
    fx: CountingFake | CountingOkx, names: dict[str, str], cmd: dict[str, Any]
) -> dict[str, Any]:
    op = cmd["cmd"]
    if op == "subscribed":
        subs = fx.subscribed_streams() if isinstance(fx, CountingFake) else fx.subscribed()
        return {"streams": len(subs)}
    if op == "stats":
        st = fx.limit_stats
        limits = None if st is None else dataclasses.asdict(st)
        if limits is not None and isinstance(fx, CountingOkx):
            limits.setdefault("banned", 0)  # OKX has no ban: 429s (limited) only
        return {"kinds": dict(fx.kinds), "conns": len(fx._conns), "limits": limits}
    if op == "stall":
        fx.faults.stall(float(cmd["seconds"]))
        return {"ok": True}
    if op == "ids":
        return {"ids": {names.get(s, s): row for s, row in fx.agg.items()}}
    if op == "quit":
        return {"ok": True}
    raise ValueError(f"unknown command {op!r}")


class ScaleFake(FakeProc):
    """Client side of ``python -m bench.scale_fake`` (``bench.fakeproc``'s protocol)."""

    async def __aenter__(self) -> ScaleFake:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.scale_fake",
            orjson.dumps(self.spec).decode(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._err,
            limit=1 << 26,
        )
        hello = await self._read(60)
        self.base_url = hello["base_url"]
        self.symbols = hello["symbols"]
        return self


def main() -> None:
    spec = orjson.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(spec))


if __name__ == "__main__":
    main()
