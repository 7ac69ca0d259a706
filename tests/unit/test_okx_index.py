"""OKX index prices joined into mark-price frames (``publisher.okx_index``), without sockets."""

from __future__ import annotations

from typing import Any

from publisher.okx_index import index_of, index_symbols, indexed_tickers

MARKETS: dict[str, Any] = {
    "BTC/USDT": {"id": "BTC-USDT", "spot": True, "info": {}},
    "BTC/USDT:USDT": {"id": "BTC-USDT-SWAP", "spot": False, "info": {"uly": "BTC-USDT"}},
    "ETH/USDT:USDT": {"id": "ETH-USDT-SWAP", "spot": False, "info": {"instFamily": "ETH-USDT"}},
    "ETH/USDT": {"id": "ETH-USDT", "spot": True, "info": {}},
    "BTC/USD:BTC": {"id": "BTC-USD-SWAP", "spot": False, "info": {"uly": "BTC-USD"}},
}


def test_a_contracts_index_is_its_underlying_pair() -> None:
    assert index_of("BTC-USDT-SWAP") == "BTC-USDT" and index_of("BTC-USD-250328") == "BTC-USD"
    got = index_symbols(MARKETS, ["BTC/USDT:USDT", "ETH/USDT:USDT", "BTC/USD:BTC", "NOPE"])
    assert got == ["BTC/USDT", "ETH/USDT"]  # inverse BTC-USD has no such pair: left out


class _Adapter:
    def __init__(self) -> None:
        self.seen: list[Any] = []


def _handler() -> Any:
    def original(self: _Adapter, client: Any, message: Any) -> str:
        self.seen.append(message)
        return "handled"

    return indexed_tickers(original)


def _frame(channel: str, rows: list[dict[str, str]], inst: str) -> dict[str, Any]:
    return {"arg": {"channel": channel, "instId": inst}, "data": rows}


def test_index_frames_are_kept_and_joined_into_later_marks() -> None:
    handle, ad = _handler(), _Adapter()
    mark = _frame("mark-price", [{"instId": "BTC-USDT-SWAP", "markPx": "100", "ts": "1"}], "x")
    assert handle(ad, None, mark) == "handled"
    assert "idxPx" not in ad.seen[-1]["data"][0]  # no index yet: left as OKX sent it
    index = _frame("index-tickers", [{"instId": "BTC-USDT", "idxPx": "99.5", "ts": "2"}], "x")
    assert handle(ad, None, index) is None and len(ad.seen) == 1  # not CCXT's: a spot ticker
    mark2 = _frame("mark-price", [{"instId": "BTC-USDT-SWAP", "markPx": "101", "ts": "3"}], "x")
    handle(ad, None, mark2)
    assert ad.seen[-1]["data"][0]["idxPx"] == "99.5"
    other = _frame("mark-price", [{"instId": "ETH-USDT-SWAP", "markPx": "5", "ts": "4"}], "x")
    handle(ad, None, other)
    assert "idxPx" not in ad.seen[-1]["data"][0]  # another index: not known
    tickers = _frame("tickers", [{"instId": "BTC-USDT", "last": "1"}], "x")
    handle(ad, None, tickers)
    assert "idxPx" not in ad.seen[-1]["data"][0]


def test_malformed_index_frames_change_nothing() -> None:
    handle, ad = _handler(), _Adapter()
    for bad in ([{"instId": "BTC-USDT"}], [{"idxPx": "1"}], ["junk"], None):
        handle(ad, None, {"arg": {"channel": "index-tickers"}, "data": bad})
    handle(ad, None, _frame("mark-price", [{"instId": "BTC-USDT-SWAP", "markPx": "1"}], "x"))
    assert "idxPx" not in ad.seen[-1]["data"][0]
    assert handle(ad, None, "not a dict") == "handled"  # CCXT's to judge
