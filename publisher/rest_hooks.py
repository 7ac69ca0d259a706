"""REST pacing in front of CCXT (``publisher.pacing``): every request within the exchange's
weight budget, Retry-After obeyed, book snapshots retried after it instead of hammering.

Hooks on one client instance (like ``publisher.ws_hooks``): ``fetch2`` (every REST request
of CCXT goes through it) waits for the budget with CCXT's own cost of the request and
blocks the budget on a 429/418; CCXT's leaky-bucket ``throttle`` steps aside where the
budget paces (it would space a thousand snapshots over 50 s that the minute allows at once);
``fetch_rest_order_book_safe`` (the snapshot a websocket book starts from) waits out a
Retry-After and tries again, and tells the snapshot gate when it is done.

Other REST errors keep their meaning: a 429 on ``load_markets`` still ends the session and
the supervisor waits its Retry-After (``publisher.worker``), now with the budget blocked too.
"""

from __future__ import annotations

import re
from typing import Any

import ccxt

from publisher.errors_map import RETRY_AFTER_ATTR, retry_after_of
from publisher.pacing import Pacer

DEFAULT_RETRY_AFTER_S = 5.0
"""A 429/418 without a Retry-After (Binance always sends one)."""
SNAPSHOT_ATTEMPTS = 5
"""Snapshot fetches refused for the rate before the book's watch gets the error."""

_STATUS = re.compile(r"\b(418|429)\b")
REFUSED = (ccxt.DDoSProtection, ccxt.RateLimitExceeded)
"""CCXT's refusals for the rate: in ccxt 4.5.90 ``RateLimitExceeded`` (OKX's 50011, Coinbase's
429) is a ``NetworkError``, not a ``DDoSProtection``."""


def refusal_status(e: BaseException) -> int:
    """418 (banned) or 429 (slow down) from CCXT's DDoSProtection message."""
    m = _STATUS.search(str(e)[:200])
    if m is not None:
        return int(m.group(1))
    return 418 if "banned" in str(e).lower() else 429


def tag_retry_after(client: Any) -> None:
    """Tag each 429/418 CCXT raises with the Retry-After of its own response.

    ``client.last_response_headers`` is the last response's, not the refused one's: OKX's
    ``load_markets`` sends three requests at once, and those that succeed overwrite the
    header the refused one carried (the worker then retried after its 0.5 s backoff, not the
    2 s asked). CCXT calls ``handle_errors`` with each response's own headers, then
    ``handle_http_status_code``, with no ``await`` between them or before the raise.
    """
    handle_errors = client.handle_errors
    handle_status = client.handle_http_status_code
    current: dict[str, Any] = {}

    def tag(e: BaseException, headers: Any) -> None:
        wait = retry_after_of(e, headers if isinstance(headers, dict) else None)
        if wait is not None:
            setattr(e, RETRY_AFTER_ATTR, wait)

    def tagged_errors(code: Any, reason: Any, url: Any, method: Any, headers: Any,
                      *rest: Any) -> Any:  # fmt: skip
        current["headers"] = headers
        try:
            return handle_errors(code, reason, url, method, headers, *rest)
        except REFUSED as e:
            tag(e, headers)
            raise

    def tagged_status(*args: Any) -> Any:
        try:
            return handle_status(*args)
        except REFUSED as e:
            tag(e, current.get("headers"))
            raise

    client.handle_errors = tagged_errors
    client.handle_http_status_code = tagged_status


def pace_rest(client: Any, pacer: Pacer) -> bool:
    """Put the budget in front of ``client``'s REST calls; False where the exchange has none."""
    window_ms = pacer.limits.rest_window_ms or float(
        getattr(client, "rollingWindowSize", 0) or 60_000
    )
    budget = pacer.rest_budget(float(getattr(client, "rateLimit", 0) or 0), window_ms)
    if budget is None:
        return False
    fetch2 = client.fetch2

    async def paced_fetch2(
        path: Any,
        api: Any = "public",
        method: str = "GET",
        params: Any = None,
        config: Any = None,
    ) -> Any:
        params = {} if params is None else params
        config = {} if config is None else config
        cost = float(client.calculate_rate_limiter_cost(api, method, path, params, config) or 1)
        await budget.acquire(cost)
        try:
            return await fetch2(path, api, method, params, config)
        except REFUSED as e:  # 429 and 418
            headers = getattr(client, "last_response_headers", None)
            wait = retry_after_of(e, headers if isinstance(headers, dict) else None)
            budget.block(DEFAULT_RETRY_AFTER_S if wait is None else wait, refusal_status(e))
            raise
        finally:
            budget.finish(cost)

    async def no_leaky_bucket(cost: Any = None) -> None:
        """CCXT's throttle, called inside ``fetch2`` when ``enableRateLimit``: the budget
        above has paced this request already."""

    fetch_order_book = client.fetch_order_book

    async def paced_snapshot(symbol: str, limit: Any = None, params: Any = None) -> Any:
        """CCXT retries a failed snapshot at once (3 times); a refusal for the rate is
        retried once the budget's Retry-After has passed (``fetch2`` waits for it)."""
        params = {} if params is None else params
        retries = int(client.handle_option("watchOrderBook", "maxRetries", 3) or 3)
        refused = failed = 0
        try:
            while True:
                try:
                    return await fetch_order_book(symbol, limit, params)
                except REFUSED:
                    refused += 1
                    if refused >= SNAPSHOT_ATTEMPTS:
                        raise
                except Exception:
                    failed += 1
                    if failed >= retries:
                        raise
        finally:
            pacer.books.done(symbol)

    client.fetch2 = paced_fetch2
    client.throttle = no_leaky_bucket
    client.fetch_rest_order_book_safe = paced_snapshot
    return True


__all__ = ["pace_rest", "refusal_status", "tag_retry_after"]
