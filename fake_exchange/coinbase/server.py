"""The fake Coinbase Advanced Trade server: Coinbase's protocol on the shared push engine.

The engine (`fake_exchange.push_server`) owns the lifecycle, the player, the connections and
the outboxes; this module holds what is Coinbase's: one websocket at the root path,
subscriptions keyed by (channel, product id), a snapshot per product right after each subscribe
and then a `subscriptions` message listing what the connection holds, heartbeats once a second
to connections subscribed to them, and the envelope every message gets, whose
`sequence_num` counts the messages of its connection (every channel together, from 0).

A sequence number is taken when a message joins its connection's queue, never before, so the
numbers on the wire are consecutive even while a slow reader holds data messages back (the
engine's `push_data` calls its `still_wanted` check right before it queues: that is where a
waiting message is numbered). The book gap fault takes a number and sends nothing: the client
sees `sequence_num` skip one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from fake_exchange.coinbase import frames as cf
from fake_exchange.coinbase.frames import Payload
from fake_exchange.coinbase.market import CoinbaseMarket
from fake_exchange.coinbase.rest import CoinbaseRestApi, coinbase_fault_middleware
from fake_exchange.coinbase.source import CoinbaseEvent, CoinbaseFrameSource
from fake_exchange.coinbase.ws_protocol import parse_request
from fake_exchange.push_server import PushServer
from fake_exchange.sources import Clock
from fake_exchange.ws_conn import Connection, Key, Out

HEARTBEAT_KEY: Key = (cf.HEARTBEATS, cf.HEARTBEATS)
ACK_KEY: Key = ("subscriptions", "")
"""The key `subscriptions` messages are logged under (they take sequence numbers too)."""


@dataclass(frozen=True, slots=True)
class CoinbaseSentFrame:
    """One message written to one socket with a sequence number: data, snapshots, heartbeats
    and `subscriptions` acks (errors and garbage carry none and are not logged)."""

    conn_id: int
    channel: str
    """The message's `channel`: l2_data, market_trades, ticker, candles, heartbeats..."""
    product_id: str
    """The product of a data message; "" for heartbeats and acks."""
    payload: Payload
    sent_ns: int

    @property
    def seq(self) -> int:
        return int(self.payload["sequence_num"])

    @property
    def stream(self) -> str:
        """'channel:product', the Binance fake's `SentFrame.stream` counterpart."""
        return f"{self.channel}:{self.product_id}"


class FakeCoinbase(PushServer[CoinbaseSentFrame]):
    """Coinbase Advanced Trade public market data on 127.0.0.1, close enough that
    `ccxt.pro.coinbase` works unchanged."""

    label = "fake coinbase"

    def __init__(
        self,
        source: CoinbaseFrameSource,
        host: str = "127.0.0.1",
        port: int = 0,
        autoplay: bool = True,
        *,
        websocket: bool = True,
        heartbeat_s: float = 1.0,
        queue_size: int = 10_000,
        sent_limit: int = 1_000_000,
        hold_until_subscribed: float | None = None,
    ) -> None:
        super().__init__(
            host,
            port,
            autoplay,
            websocket=websocket,
            queue_size=queue_size,
            sent_limit=sent_limit,
            hold_until_subscribed=hold_until_subscribed,
        )
        self.log = logging.getLogger("fake_exchange.coinbase")
        self.source = source
        self.heartbeat_s = heartbeat_s
        self.dropped_book_updates: list[tuple[int, str, Payload]] = []
        """(conn_id, product id, message) of each `l2_data` update a `book_gap` kept from a
        subscriber: its sequence number was taken, nothing was sent."""
        self._gaps: list[str | None] = []
        self._seq: dict[int, int] = {}
        self._market: CoinbaseMarket | None = None
        self._heartbeats: asyncio.Task[None] | None = None
        self._started_ns = time.time_ns()

    # ------------------------------------------------------------------ the engine's hooks

    def _load(self) -> None:
        self.source.prepare()

    def _setup(self) -> None:
        self._market = CoinbaseMarket(self.source.products())
        now_ms = int(time.time() * 1000)
        for ev in self.source.initial(lambda: now_ms):
            self._market.observe(ev.channel, ev.event, now_ms)

    def _routes(self) -> list[web.RouteDef]:
        return [
            *CoinbaseRestApi(self._state, time.time_ns).routes(),
            web.get("/", self._ws_handler),
        ]

    def _middleware(self) -> Middleware:
        return coinbase_fault_middleware(self.faults, lambda: self._websocket)

    def _events(self, clock: Clock) -> Iterator[CoinbaseEvent]:
        return self.source.events(clock)

    def _sent_frame(
        self, conn_id: int, key: Key, frame: Payload, sent_ns: int
    ) -> CoinbaseSentFrame:
        product = key[1] if key not in (HEARTBEAT_KEY, ACK_KEY) else ""
        return CoinbaseSentFrame(conn_id, str(frame["channel"]), product, frame, sent_ns)

    async def start(self) -> None:
        await super().start()
        self._heartbeats = asyncio.create_task(self._beat(), name=f"{self.label}-heartbeats")

    async def stop(self) -> None:
        if self._heartbeats is not None:
            self._heartbeats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeats
        await super().stop()

    # ------------------------------------------------------------------ public helpers

    @property
    def ws_url(self) -> str:
        """The websocket: the root path, as `wss://advanced-trade-ws.coinbase.com`."""
        return f"ws://{self.host}:{self.port}"

    def ccxt_config(self) -> dict[str, Any]:
        """Config for `ccxt.pro.coinbase(...)`: both urls -> this fake, no rate limit (what
        `publisher.endpoints.rebase_urls` makes of Coinbase's urls)."""
        return {
            "enableRateLimit": False,
            "urls": {"api": {"rest": self.base_url, "ws": self.ws_url}},
        }

    @property
    def markets(self) -> list[str]:
        """`BASE/QUOTE` of the products served (`BTC/USD` for `BTC-USD`; ccxt renames a few
        currencies, CGLD is its CELO)."""
        return sorted(
            f"{p['base_currency_id']}/{p['quote_currency_id']}" for p in self._state().products
        )

    @property
    def market(self) -> CoinbaseMarket:
        """The mirrored market REST and the snapshots answer from."""
        return self._state()

    def book_gap(self, n: int = 1, product_id: str | None = None) -> None:
        """The next `n` `l2_data` updates (of `product_id`, or any) that have subscribers are
        lost on their way: each subscriber's sequence number skips one."""
        if n < 1:
            raise ValueError("book_gap needs n >= 1")
        self._gaps.extend([product_id] * n)

    # ------------------------------------------------------------------ player

    def _state(self) -> CoinbaseMarket:
        if self._market is None:
            raise RuntimeError("FakeCoinbase not started")
        return self._market

    async def _publish(self, ev: CoinbaseEvent) -> None:
        now_ms = ev.ts_ns // 1_000_000
        for channel, pid, event in self._state().observe(ev.channel, ev.event, now_ms):
            for sub in cf.SUBSCRIBED_AS[channel]:
                key = (sub, pid)
                if not self._subs.get(key):
                    continue
                data_channel = "l2_data" if sub == "level2" else sub
                if (
                    self._gaps
                    and channel == "l2_data"
                    and event.get("type") == "update"
                    and self._take_gap(pid)
                ):
                    self._lose(key, data_channel, event, ev.ts_ns)
                    continue
                await self._push(key, data_channel, [event], ev.ts_ns)

    def _take_gap(self, pid: str) -> bool:
        for i, target in enumerate(self._gaps):
            if target in (None, pid):
                del self._gaps[i]
                return True
        return False

    def _lose(self, key: Key, channel: str, event: Payload, ts_ns: int) -> None:
        for conn in [c for c in self._subs.get(key, ()) if not c.closed]:
            lost = cf.envelope(channel, ts_ns, self._take_seq(conn), [event])
            self.dropped_book_updates.append((conn.conn_id, key[1], lost))

    async def _beat(self) -> None:
        """A `heartbeats` message every `heartbeat_s` to each connection subscribed to them;
        `heartbeat_counter` counts the beats since the server started."""
        counter = 0
        while True:
            await asyncio.sleep(self.heartbeat_s)
            counter += 1
            if not self._subs.get(HEARTBEAT_KEY):
                continue
            ns = time.time_ns()
            events = cf.heartbeat(ns, ns - self._started_ns, counter)
            await self._push(HEARTBEAT_KEY, cf.HEARTBEATS, events, ns)

    # ------------------------------------------------------------------ sequence numbers

    def _take_seq(self, conn: Connection) -> int:
        n = self._seq.get(conn.conn_id, 0)
        self._seq[conn.conn_id] = n + 1
        return n

    async def _push(self, key: Key, channel: str, events: list[Payload], ts_ns: int) -> None:
        """Queue one message on every connection subscribed to `key`, numbered per connection
        as it joins the queue (waiting for room, like the engine's `_fan_out`)."""
        conns = [c for c in self._subs.get(key, ()) if not c.closed]
        if not conns:
            return
        head, tail = cf.envelope_parts(channel, ts_ns, orjson.dumps(events).decode())
        base = {"channel": channel, "timestamp": cf.iso(ts_ns)}
        for conn in conns:
            epoch = conn.subs.get(key)
            out = Out(key=key)

            def number(n: int, out: Out = out) -> None:
                out.text = head + str(n) + tail
                out.frame = {**base, "sequence_num": n, "events": events}

            peek = self._seq.get(conn.conn_id, 0)
            number(peek)
            if conn.outbox.try_push_data(out):
                self._seq[conn.conn_id] = peek + 1
                continue

            def still_wanted(
                conn: Connection = conn, epoch: int | None = epoch, number: Any = number
            ) -> bool:
                if conn.closed or conn.subs.get(key) != epoch:
                    return False
                number(self._take_seq(conn))  # queued right after this returns True
                return True

            await conn.outbox.push_data(out, still_wanted)

    def _send_now(
        self, conn: Connection, key: Key, channel: str, events: list[Payload], ts_ns: int
    ) -> None:
        """A message that must not wait (a snapshot, an ack): numbered and queued at once."""
        frame = cf.envelope(channel, ts_ns, self._take_seq(conn), events)
        conn.outbox.push_control(Out(orjson.dumps(frame).decode(), key, frame))

    async def _drop(self, conn: Connection) -> None:
        await super()._drop(conn)
        self._seq.pop(conn.conn_id, None)

    # ------------------------------------------------------------------ requests

    def _on_text(self, conn: Connection, text: str) -> None:
        market = self._state()
        req = parse_request(text, market.ids)
        if req.reply is not None:
            self._control(conn, req.reply)
            return
        now = time.time_ns()
        for pid in req.product_ids:
            key = (req.channel, pid)
            if req.op == "unsubscribe":
                self._unregister(conn, key)
                continue
            self._register(conn, key)
            snapshot = market.snapshot(req.channel, pid, now)
            if snapshot is not None:
                self._send_now(conn, key, snapshot[0], [snapshot[1]], now)
        held: dict[str, list[str]] = {}
        for channel, pid in conn.subs:
            held.setdefault(channel, []).append(pid)
        self._send_now(conn, ACK_KEY, "subscriptions", cf.subscriptions(held), now)
        if req.op == "subscribe":
            self._notify_subscribed()


__all__ = ["ACK_KEY", "HEARTBEAT_KEY", "CoinbaseSentFrame", "FakeCoinbase"]
