"""The fakes' derivatives data: Bybit's `allLiquidation` topic and moving linear tickers, OKX's
SWAP channels (`funding-rate`, `mark-price`, `open-interest`, `liquidation-orders`) with their
subscribe rules and REST answers."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import aiohttp
import orjson
import pytest

from fake_exchange import BybitSyntheticSource, FakeOkx, OkxSyntheticSource
from fake_exchange.bybit import frames as yf
from fake_exchange.okx.ws_protocol import channel_ok, parse_requests

pytestmark = pytest.mark.integration

CLOCK = itertools.count(1_700_000_000_000).__next__


def test_bybit_serves_all_liquidation_on_contract_urls_only() -> None:
    assert yf.topic_ok("linear", "allLiquidation.BTCUSDT", {"BTCUSDT"})
    assert not yf.topic_ok("spot", "allLiquidation.BTCUSDT", {"BTCUSDT"})
    assert not yf.topic_ok("linear", "allLiquidation.XRPUSDT", {"BTCUSDT"})


def test_bybit_synthetic_liquidations_and_moving_derivatives_fields() -> None:
    source = BybitSyntheticSource(["AAA/USDT", "AAA/USDT:USDT"], rate=1000, total=600, seed=1,
                                  channels=("tickers", "allLiquidation"))  # fmt: skip
    events = list(source.events(CLOCK))
    kinds = Counter((e.category, e.topic) for e in events)
    assert kinds == {("spot", "tickers.AAAUSDT"): 200, ("linear", "tickers.AAAUSDT"): 200,
                     ("linear", "allLiquidation.AAAUSDT"): 200}  # fmt: skip
    rows = [r for e in events if e.topic.startswith("allLiquidation") for r in e.frame["data"]]
    assert all(set(r) == {"T", "s", "S", "v", "p"} and r["S"] in ("Buy", "Sell") for r in rows)
    deltas = [e.frame["data"] for e in events if e.category == "linear" and "tickers" in e.topic]
    changed = Counter(k for d in deltas for k in d)
    for field in ("markPrice", "indexPrice", "openInterest", "openInterestValue", "fundingRate"):
        assert changed[field] > 10, field
    assert changed["fundingRate"] < changed["markPrice"]  # the rate moves now and then
    assert list(BybitSyntheticSource(["AAA/USDT"], total=10, channels=("allLiquidation",))
                .events(CLOCK)) == []  # fmt: skip  # a spot market has none


def test_okx_derivatives_channels_subscribe_rules() -> None:
    types = {"BTC-USDT": "SPOT", "BTC-USDT-SWAP": "SWAP", "BTC-USDT-261225": "FUTURES"}
    ids = set(types)
    for ch in ("funding-rate", "mark-price", "open-interest"):
        assert channel_ok("public", {"channel": ch, "instId": "BTC-USDT-SWAP"}, ids, types)
        assert not channel_ok("public", {"channel": ch, "instId": "BTC-USDT"}, ids, types)
    assert channel_ok("public", {"channel": "mark-price", "instId": "BTC-USDT-261225"}, ids, types)
    assert not channel_ok("public", {"channel": "funding-rate", "instId": "BTC-USDT-261225"},
                          ids, types)  # fmt: skip
    liq = {"channel": "liquidation-orders", "instType": "SWAP"}
    text = orjson.dumps({"op": "subscribe", "args": [liq, {**liq, "instType": "SPOT"}]}).decode()
    ok, bad = parse_requests(text, "public", "c1", ids, types)
    assert (ok.op, ok.key) == ("subscribe", ("liquidation-orders", "SWAP"))
    assert bad.op == "error" and bad.error is not None and bad.error["code"] == "60018"


def test_okx_synthetic_swaps_are_listed_and_their_liquidations_keyed_by_inst_type() -> None:
    source = OkxSyntheticSource(["AAA/USDT", "AAA/USDT:USDT"], rate=1000, total=500, seed=1,
                                channels=("tickers", "funding-rate", "liquidation-orders"))  # fmt: skip
    swaps = {e["instId"]: e for e in source.instruments()["SWAP"]}
    assert swaps["AAA-USDT-SWAP"]["settleCcy"] == "USDT" and swaps["AAA-USDT-SWAP"]["uly"] == (
        "AAA-USDT"
    )
    keys = Counter((e.channel, e.inst_id) for e in source.events(CLOCK))
    assert set(keys) == {("tickers", "AAA-USDT"), ("tickers", "AAA-USDT-SWAP"),
                         ("funding-rate", "AAA-USDT-SWAP"), ("liquidation-orders", "SWAP")}  # fmt: skip


async def _get(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        return resp.status, await resp.json()


async def test_okx_rest_answers_with_the_last_published_rows() -> None:
    source = OkxSyntheticSource(["AAA/USDT", "AAA/USDT:USDT", "BBB/USDT:USDT"], rate=2000,
                                total=400, seed=5,
                                channels=("funding-rate", "mark-price", "open-interest"))  # fmt: skip
    async with FakeOkx(source, autoplay=False) as fx, aiohttp.ClientSession() as s:
        base = f"{fx.base_url}/api/v5/public"
        status, body = await _get(s, f"{base}/open-interest?instType=SWAP")
        assert status == 200 and body["data"] == []  # nothing published yet
        fx.play()
        await fx.wait_done(timeout=20)
        status, body = await _get(s, f"{base}/open-interest?instType=SWAP")
        history = fx.market.open_interest_history
        assert {r["instId"] for r in body["data"]} == {"AAA-USDT-SWAP", "BBB-USDT-SWAP"}
        assert [r for r in body["data"] if r["instId"] == "AAA-USDT-SWAP"] == [
            history["AAA-USDT-SWAP"][-1]
        ]
        one = f"{base}/open-interest?instType=SWAP&uly=BBB-USDT&instId=BBB-USDT-SWAP"
        assert (await _get(s, one))[1]["data"] == [history["BBB-USDT-SWAP"][-1]]
        status, body = await _get(s, f"{base}/open-interest")
        assert status == 400 and body["code"] == "50014"
        status, body = await _get(s, f"{base}/funding-rate?instId=AAA-USDT-SWAP")
        assert body["data"] == [fx.market.derivative("funding-rate", "AAA-USDT-SWAP")]
        status, body = await _get(s, f"{base}/funding-rate?instId=AAA-USDT")
        assert status == 200 and body["code"] == "51001"
        status, body = await _get(s, f"{base}/mark-price?instType=SWAP&instId=AAA-USDT-SWAP")
        assert body["data"] == [fx.market.derivative("mark-price", "AAA-USDT-SWAP")]
