"""The fake Bybit v5 public server: Bybit's protocol on the shared push engine.

The engine (`fake_exchange.push_server`) owns the lifecycle, the player, the connections and the
fan-out; this module holds what is Bybit's: one public url per category (`/v5/public/spot`,
`/v5/public/linear`), subscriptions keyed by (category, topic), the snapshot each book and
ticker subscription gets right after its ack (in the same outbox as the deltas, so `u` chains),
the mirror REST answers from (`market`) and the book gap fault.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from fake_exchange.bybit import frames as yf
from fake_exchange.bybit.frames import Payload
from fake_exchange.bybit.market import BybitMarket
from fake_exchange.bybit.rest import BybitRestApi, bybit_fault_middleware
from fake_exchange.bybit.source import BybitEvent, BybitFrameSource
from fake_exchange.bybit.ws_protocol import parse_request
from fake_exchange.push_server import PushServer
from fake_exchange.sources import Clock
from fake_exchange.ws_conn import Connection, Key


@dataclass(frozen=True, slots=True)
class BybitSentFrame:
    """One data frame written to one socket (acks, pongs, errors and garbage are not logged)."""

    conn_id: int
    category: str
    topic: str
    payload: Payload
    sent_ns: int

    @property
    def stream(self) -> str:
        """'category:topic', the Binance fake's `SentFrame.stream` counterpart."""
        return f"{self.category}:{self.topic}"


class FakeBybit(PushServer[BybitSentFrame]):
    """Bybit v5 public (spot and linear), on 127.0.0.1, close enough that `ccxt.pro.bybit`
    works unchanged."""

    label = "fake bybit"

    def __init__(
        self,
        source: BybitFrameSource,
        host: str = "127.0.0.1",
        port: int = 0,
        autoplay: bool = True,
        *,
        websocket: bool = True,
        answer_pings: bool = True,
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
        self.log = logging.getLogger("fake_exchange.bybit")
        self.source = source
        self.answer_pings = answer_pings
        self.pings = 0
        self.dropped_book_updates: list[tuple[str, str, Payload]] = []
        """(category, topic, frame) of each book delta a `book_gap` kept from its subscribers."""
        self._gaps: list[tuple[str | None, str | None]] = []
        self._market: BybitMarket | None = None

    # ------------------------------------------------------------------ the engine's hooks

    def _load(self) -> None:
        self.source.prepare()

    def _setup(self) -> None:
        self._market = BybitMarket(self.source.instruments())
        for ev in self.source.initial():
            self._market.observe(ev.category, ev.topic, ev.frame)

    def _routes(self) -> list[web.RouteDef]:
        return [
            *BybitRestApi(self._state).routes(),
            *(web.get(f"/v5/public/{c}", self._ws_handler) for c in yf.CATEGORIES),
        ]

    def _middleware(self) -> Middleware:
        return bybit_fault_middleware(self.faults, lambda: self._websocket)

    def _events(self, clock: Clock) -> Iterator[BybitEvent]:
        return self.source.events(clock)

    def _sent_frame(self, conn_id: int, key: Key, frame: Payload, sent_ns: int) -> BybitSentFrame:
        return BybitSentFrame(conn_id, *key, frame, sent_ns)

    # ------------------------------------------------------------------ public helpers

    @property
    def ws_url(self) -> str:
        """The public websocket base: ccxt appends nothing, each category has its own url."""
        return f"ws://{self.host}:{self.port}/v5/public"

    def ccxt_config(self) -> dict[str, Any]:
        """Config for `ccxt.pro.bybit(...)`: every url -> this fake, spot and linear markets,
        no rate limit (what `publisher.endpoints.rebase_urls` makes of Bybit's urls)."""
        rest = self.base_url
        ws = f"ws://{self.host}:{self.port}"
        return {
            "enableRateLimit": False,
            "urls": {
                "api": {
                    **dict.fromkeys(("spot", "futures", "v2", "public", "private"), rest),
                    "ws": {
                        "public": {
                            c: f"{ws}/v5/public/{c}"
                            for c in ("spot", "inverse", "option", "linear")
                        },
                        "private": {
                            "spot": {
                                "unified": f"{ws}/v5/private",
                                "nonUnified": f"{ws}/spot/private/v3",
                            },
                            "contract": f"{ws}/v5/private",
                            "usdc": f"{ws}/trade/option/usdc/private/v1",
                            "trade": f"{ws}/v5/trade",
                        },
                    },
                }
            },
            "options": {"defaultType": "spot", "fetchMarkets": {"types": ["spot", "linear"]}},
        }

    @property
    def markets(self) -> list[str]:
        """Unified symbols of the spot markets and linear perpetuals served."""
        inst = self._state().instruments
        spot = [f"{e['baseCoin']}/{e['quoteCoin']}" for e in inst.get("spot", [])]
        perps = [
            f"{e['baseCoin']}/{e['quoteCoin']}:{e.get('settleCoin', e['quoteCoin'])}"
            for e in inst.get("linear", [])
            if e.get("contractType") == "LinearPerpetual"
        ]
        return sorted(spot + perps)

    @property
    def market(self) -> BybitMarket:
        """The mirrored market REST and the snapshots answer from."""
        return self._state()

    def book_gap(self, n: int = 1, symbol: str | None = None, category: str | None = None) -> None:
        """The next `n` book deltas (of `symbol`'s topics on `category`, or any) are kept from
        their subscribers: they miss those changes and the next delta's `u` skips one."""
        self._gaps.extend([(category, symbol)] * n)

    @property
    def book_gaps_sent(self) -> int:
        return len(self.dropped_book_updates)

    # ------------------------------------------------------------------ player

    def _state(self) -> BybitMarket:
        if self._market is None:
            raise RuntimeError("FakeBybit not started")
        return self._market

    async def _publish(self, ev: BybitEvent) -> None:
        for topic, frame in self._state().observe(ev.category, ev.topic, ev.frame):
            key = (ev.category, topic)
            if not self._subs.get(key):
                continue
            if self._gaps and topic.startswith("orderbook.") and self._take_gap(key):
                self.dropped_book_updates.append((*key, frame))
                continue
            await self._fan_out(key, frame)

    def _take_gap(self, key: Key) -> bool:
        symbol = key[1].rsplit(".", 1)[-1]
        for i, (category, target) in enumerate(self._gaps):
            if category in (None, key[0]) and target in (None, symbol):
                del self._gaps[i]
                return True
        return False

    # ------------------------------------------------------------------ requests

    def _on_text(self, conn: Connection, text: str) -> None:
        category = conn.kind
        market = self._state()
        subscribed = {topic for _, topic in conn.subs}
        req = parse_request(
            text, category, conn.tag, market.symbols.get(category, set()), subscribed
        )
        if req.op == "ping":
            self.pings += 1
            if self.answer_pings and req.reply is not None:
                self._control(conn, req.reply)
            return
        if req.reply is not None:
            self._control(conn, req.reply)
        if req.op == "subscribe":
            now = yf.now_ms()
            for topic in req.topics:
                self._register(conn, (category, topic))
                snapshot = market.snapshot(category, topic, now)
                if snapshot is not None:
                    self._push_initial(conn, (category, topic), snapshot)
            self._notify_subscribed()
        elif req.op == "unsubscribe":
            for topic in req.topics:
                self._unregister(conn, (category, topic))


__all__ = ["BybitSentFrame", "FakeBybit"]
