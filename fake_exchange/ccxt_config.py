"""The config dict that points `ccxt.pro.binance` at the fake and nowhere else.

Every REST group ccxt 4.5 knows for Binance (`urls.api.*`) and every websocket url
(`urls.api.ws.*`) is redirected, so a call the fake does not serve fails with a 404 from
127.0.0.1 instead of reaching the internet. The integration tests check that no url of a
configured client still names another host.
"""

from __future__ import annotations

from typing import Any

# urls.api group -> path on binance (ccxt/binance.py describe()['urls']['api'])
REST_GROUPS: dict[str, str] = {
    "public": "/api/v3",
    "private": "/api/v3",
    "v1": "/api/v1",
    "sapi": "/sapi/v1",
    "sapiV2": "/sapi/v2",
    "sapiV3": "/sapi/v3",
    "sapiV4": "/sapi/v4",
    "dapiPublic": "/dapi/v1",
    "dapiPrivate": "/dapi/v1",
    "dapiPrivateV2": "/dapi/v2",
    "dapiData": "/futures/data",
    "eapiPublic": "/eapi/v1",
    "eapiPrivate": "/eapi/v1",
    "fapiPublic": "/fapi/v1",
    "fapiPublicV2": "/fapi/v2",
    "fapiPublicV3": "/fapi/v3",
    "fapiPrivate": "/fapi/v1",
    "fapiPrivateV2": "/fapi/v2",
    "fapiPrivateV3": "/fapi/v3",
    "fapiData": "/futures/data",
    "papi": "/papi/v1",
    "papiV2": "/papi/v2",
}

# urls.api.ws keys (ccxt/pro/binance.py describe()['urls']['api']['ws'])
WS_KEYS = (
    "spot",
    "margin",
    "linear",
    "inverse",
    "stock",
    "option",
    "optionMarket",
    "optionPrivate",
    "papi",
)
WS_API_KEYS = ("spot", "linear", "inverse")


def ccxt_config(base_url: str, ws_url: str) -> dict[str, Any]:
    """Config for `ccxt.pro.binance(config)`: urls -> fake, spot only, no rate limiter."""
    ws: dict[str, Any] = {key: ws_url for key in WS_KEYS}
    ws["ws-api"] = {key: ws_url for key in WS_API_KEYS}
    api: dict[str, Any] = {group: base_url + path for group, path in REST_GROUPS.items()}
    api["ws"] = ws
    return {
        "enableRateLimit": False,
        "urls": {"api": api},
        "options": {
            "defaultType": "spot",
            # the default also loads linear+inverse futures (fapi/dapi exchangeInfo)
            "fetchMarkets": {"types": ["spot"]},
            "fetchMargins": False,
            "fetchCurrencies": False,
        },
    }
