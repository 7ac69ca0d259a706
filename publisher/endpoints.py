"""Point a CCXT exchange at another host (the fake exchange) by rewriting only its URLs.

Every URL under ``urls.api`` keeps its path and loses its scheme and host, so the
same adapter code path runs against the fake and the live exchange (Bybit's 14: five REST
groups, the spot/linear/inverse/option public and the private websockets). Nothing else
changes except what a local server needs (no rate limiter); which market types are loaded
is the same as live (the profile's ``market_types``). In sandbox mode ``urls.api``
already holds CCXT's test urls when they are rebased, so the testnet path (its url paths,
OKX's demo-trading header and ``?brokerId=`` websocket query) runs against the fake too.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit


def _rebase(url: str, base: str) -> str:
    b = urlsplit(base)
    u = urlsplit(url)
    secure = b.scheme in ("https", "wss")
    if u.scheme in ("ws", "wss"):
        scheme = "wss" if secure else "ws"
    else:
        scheme = "https" if secure else "http"
    return urlunsplit((scheme, b.netloc, b.path.rstrip("/") + u.path, u.query, u.fragment))


def _walk(node: Any, base: str) -> Any:
    if isinstance(node, str) and "://" in node:
        return _rebase(node, base)
    if isinstance(node, dict):
        return {k: _walk(v, base) for k, v in node.items()}
    return node


def rebase_urls(api_urls: dict[str, Any], base_url: str) -> dict[str, Any]:
    """A copy of CCXT's ``urls.api`` with every REST and websocket URL sent to ``base_url``."""
    if urlsplit(base_url).scheme not in ("http", "https"):
        raise ValueError(f"exchange url must be http(s)://host:port, got {base_url!r}")
    walked: dict[str, Any] = _walk(api_urls, base_url)
    return walked
