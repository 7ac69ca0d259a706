"""OKX v5 REST for derivatives (`/api/v5/public/open-interest`, `funding-rate`, `mark-price`),
answered from the rows the fake last published on the matching websocket channels.

`public/open-interest` is what `ccxt.okx.fetch_open_interests` (``instType=SWAP``) and
`fetch_open_interest` (``instType``, ``uly``, ``instId``) call; CCXT 4.5.90 reads OKX's open
interest only over REST. An instrument with no published row is left out of a list (as a
market with no data), and an unknown instId is OKX's 51001 with HTTP 200.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from fake_exchange.okx import derivs
from fake_exchange.okx import frames as of
from fake_exchange.okx.market import OkxMarket
from fake_exchange.push_server import json_response


def _error(status: int, code: str, msg: str) -> web.Response:
    return json_response(of.error_body(code, msg), status)


class OkxDerivsRestApi:
    """The `/api/v5/public/*` derivatives routes, read from the market the server owns."""

    def __init__(self, market: Callable[[], OkxMarket]) -> None:
        self._market = market

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v5/public/open-interest", self.open_interest),
            web.get("/api/v5/public/funding-rate", self.funding_rate),
            web.get("/api/v5/public/mark-price", self.mark_price),
        ]

    def _rows(self, request: web.Request, channel: str) -> web.Response:
        inst_type = request.query.get("instType", "")
        if not inst_type:
            return _error(400, "50014", "Parameter instType can not be empty.")
        if inst_type not in (*derivs.CONTRACT_TYPES, "MARGIN", "OPTION"):
            return _error(400, "51000", "Parameter instType error")
        market = self._market()
        entries = market.instruments.get(inst_type, [])
        for key in ("uly", "instFamily", "instId"):
            wanted = request.query.get(key)
            if wanted:
                entries = [e for e in entries if e.get(key) == wanted]
        rows = [market.derivative(channel, e["instId"]) for e in entries]
        return json_response(of.rest_ok([r for r in rows if r is not None]))

    async def open_interest(self, request: web.Request) -> web.Response:
        return self._rows(request, "open-interest")

    async def mark_price(self, request: web.Request) -> web.Response:
        return self._rows(request, "mark-price")

    async def funding_rate(self, request: web.Request) -> web.Response:
        inst = request.query.get("instId", "")
        if not inst:
            return _error(400, "50014", "Parameter instId can not be empty.")
        market = self._market()
        if market.inst_type(inst) != "SWAP" or inst not in market.inst_ids:
            return _error(200, "51001", "Instrument ID does not exist")
        row = market.derivative("funding-rate", inst)
        return json_response(of.rest_ok([] if row is None else [row]))


__all__ = ["OkxDerivsRestApi"]
