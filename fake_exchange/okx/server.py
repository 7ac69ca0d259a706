"""The fake OKX v5 public server: OKX's protocol on the shared push engine.

The engine (`fake_exchange.push_server`) owns the lifecycle, the player, the connections and the
fan-out; this module holds what is OKX's: the routes, the requests (`ws_protocol`), the mirror
REST answers from (`market`) and the books faults. A `books` subscription gets a snapshot of the
mirrored book right after its ack, in the same outbox as the updates, so the snapshot and the
updates that follow always chain by seqId. Book faults (`book_faults`) change only the frames
written, never the mirror.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from fake_exchange.okx import derivs
from fake_exchange.okx import frames as of
from fake_exchange.okx.book_faults import SEQ_CHANNELS, BookFaults
from fake_exchange.okx.connection import Connection, Key, OkxSentFrame
from fake_exchange.okx.frame_source import OkxEvent, OkxFrameSource
from fake_exchange.okx.frames import Payload
from fake_exchange.okx.instruments import unified_symbols
from fake_exchange.okx.limits import OkxLimiter, OkxLimits, OkxLimitStats
from fake_exchange.okx.market import OkxMarket
from fake_exchange.okx.rest import OkxRestApi, okx_fault_middleware, okx_limits_middleware
from fake_exchange.okx.rest_derivs import OkxDerivsRestApi
from fake_exchange.okx.ws_protocol import initial_frame, parse_requests
from fake_exchange.push_server import PushServer, State
from fake_exchange.sources import Clock


class FakeOkx(PushServer[OkxSentFrame]):
    """OKX v5 public, on 127.0.0.1, close enough that `ccxt.pro.okx` works unchanged."""

    label = "fake okx"

    def __init__(
        self,
        source: OkxFrameSource,
        host: str = "127.0.0.1",
        port: int = 0,
        autoplay: bool = True,
        *,
        websocket: bool = True,
        answer_pings: bool = True,
        queue_size: int = 10_000,
        sent_limit: int = 1_000_000,
        hold_until_subscribed: float | None = None,
        limits: OkxLimits | None = None,
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
        self.log = logging.getLogger("fake_exchange.okx")
        self.source = source
        self.answer_pings = answer_pings
        self.pings = 0
        self._market: OkxMarket | None = None
        self._markets: list[str] = []
        self._book_faults = BookFaults()
        self.limits = limits
        """OKX's limits (REST per endpoint, connections per second, subscribe requests per
        connection), or None: unlimited, as before (`fake_exchange.okx.limits`)."""
        self._limiter = OkxLimiter(limits) if limits is not None else None
        self._closing: set[int] = set()

    # ------------------------------------------------------------------ the engine's hooks

    def _load(self) -> None:
        self.source.prepare()

    def _setup(self) -> None:
        instruments = self.source.instruments()
        self._market = OkxMarket(instruments, self.source.books())
        self._markets = sorted(unified_symbols(instruments).values())

    def _routes(self) -> list[web.RouteDef]:
        return [
            *OkxRestApi(self._state).routes(),
            *OkxDerivsRestApi(self._state).routes(),
            web.get("/ws/v5/public", self._ws_handler),
            web.get("/ws/v5/business", self._ws_handler),
        ]

    def _middleware(self) -> Middleware:
        faults = okx_fault_middleware(self.faults, lambda: self._websocket)
        if self._limiter is None:
            return faults
        return okx_limits_middleware(self._limiter, faults)

    def _events(self, clock: Clock) -> Iterator[OkxEvent]:
        return self.source.events(clock)

    def _sent_frame(self, conn_id: int, key: Key, frame: Payload, sent_ns: int) -> OkxSentFrame:
        return OkxSentFrame(conn_id, *key, frame, sent_ns)

    # ------------------------------------------------------------------ public helpers

    @property
    def ws_url(self) -> str:
        """ccxt's `urls.api.ws` form: it appends '/public' or '/business' itself."""
        return f"ws://{self.host}:{self.port}/ws/v5"

    def ccxt_config(self) -> dict[str, Any]:
        """Config for `ccxt.pro.okx(...)`: both urls -> this fake, spot only, no rate limit."""
        return {
            "enableRateLimit": False,
            "urls": {"api": {"rest": self.base_url, "ws": self.ws_url}},
            "options": {"defaultType": "spot", "fetchMarkets": {"types": ["spot"]}},
        }

    @property
    def markets(self) -> list[str]:
        """Unified symbols ('BASE/QUOTE') of every SPOT instrument served."""
        return list(self._markets)

    @property
    def market(self) -> OkxMarket:
        """The mirrored market REST answers from (books, trades, last tickers)."""
        return self._state()

    def book_gap(self, n: int = 1, inst_id: str | None = None) -> None:
        """The next `n` books updates (of `inst_id`, or any) skip a seqId: prevSeqId is the
        skipped id, not the last one sent. Later frames chain on normally from there."""
        self._book_faults.add_gap(n, inst_id)

    def bad_checksum(self, n: int = 1, inst_id: str | None = None) -> None:
        """The next `n` books updates (of `inst_id`, or any) carry a wrong checksum."""
        self._book_faults.add_bad_checksum(n, inst_id)

    @property
    def limit_stats(self) -> OkxLimitStats | None:
        """What OKX's limits did (429s, refused connections, connections closed for
        subscribe requests); None when off."""
        return None if self._limiter is None else self._limiter.stats

    @property
    def book_gaps_sent(self) -> int:
        return self._book_faults.gaps_sent

    @property
    def bad_checksums_sent(self) -> int:
        return self._book_faults.bad_checksums_sent

    @property
    def faulted_book_seqs(self) -> list[tuple[str, int]]:
        """(instId, seqId) of each books frame sent with a gap before it or a bad checksum."""
        return list(self._book_faults.faulted)

    # ------------------------------------------------------------------ player

    def _state(self) -> OkxMarket:
        if self._market is None:
            raise RuntimeError("FakeOkx not started")
        return self._market

    async def _publish(self, ev: OkxEvent) -> None:
        self._state().observe(ev.channel, ev.inst_id, ev.frame)
        key = (ev.channel, ev.inst_id)
        if not self._subs.get(key):
            return
        await self._fan_out(key, self._book_faults.outgoing(ev.channel, ev.inst_id, ev.frame))

    # ------------------------------------------------------------------ requests

    def _on_text(self, conn: Connection, text: str) -> None:
        if conn.conn_id in self._closing or not self._within_limits(conn, text):
            return
        market = self._state()
        for req in parse_requests(text, conn.kind, conn.tag, market.inst_ids, market.inst_types):
            if req.op == "ping":
                self.pings += 1
                if self.answer_pings:
                    self._control(conn, "pong")
            elif req.error is not None:
                self._control(conn, req.error)
            elif req.op == "subscribe":
                self._subscribe(conn, req.key, req.arg)
            else:
                self._unregister(conn, req.key)
                self._control(conn, of.ws_event("unsubscribe", req.arg, conn.tag))

    def _within_limits(self, conn: Connection, text: str) -> bool:
        """Count a subscribe/unsubscribe request against its connection's limits: an
        oversized one is refused (60012), one past the requests per window gets 60014 and
        the connection is closed, as OKX does."""
        if self._limiter is None or text == "ping" or '"op"' not in text:
            return True
        verdict = self._limiter.subscribe(conn.conn_id, len(text.encode()), time.monotonic())
        if verdict is None:
            return True
        if verdict == "oversized":
            msg = f"Illegal request: args over {self._limiter.limits.max_request_bytes} bytes"
            self._control(conn, of.ws_error("60012", msg, conn.tag))
            return False
        self._control(conn, of.ws_error("60014", "Requests too frequent.", conn.tag))
        self._closing.add(conn.conn_id)
        self._spawn(self._close_soon(conn))
        return False

    async def _close_soon(self, conn: Connection) -> None:
        """Close after the error event had time to go out (the writer sends it first)."""
        await asyncio.sleep(0.1)
        await conn.ws.close(code=4004, message=b"Requests too frequent.")

    async def _drop(self, conn: Connection) -> None:
        self._closing.discard(conn.conn_id)
        if self._limiter is not None:
            self._limiter.closed(conn.conn_id)
        await super()._drop(conn)

    def _subscribe(self, conn: Connection, key: Key, arg: Payload) -> None:
        """Register, ack, then the channel's initial state; all before any later update."""
        self._register(conn, key)
        self._control(conn, of.ws_event("subscribe", arg, conn.tag))
        initial = self._initial(*key)
        if initial is not None:
            self._push_initial(conn, key, initial)
        self._notify_subscribed()

    def _initial(self, channel: str, inst: str) -> Payload | None:
        """books: a snapshot of the mirror; books5/bbo-tbt: the current top; funding-rate,
        mark-price, open-interest, index-tickers: the last row published (once there is one);
        else nothing."""
        if channel in derivs.INSTRUMENT_CHANNELS or channel == derivs.INDEX_CHANNEL:
            row = self._state().derivative(channel, inst)
            return None if row is None else derivs.push(channel, inst, [row])
        if channel not in SEQ_CHANNELS:
            return None
        book = self._state().book(inst)
        ts = book.ts_ms or int(time.time() * 1000)
        return initial_frame(channel, inst, book, self._book_faults.seq_shift(inst), ts)


__all__ = ["FakeOkx", "Key", "OkxSentFrame", "State"]
