"""/healthz, /readyz and /metrics on a running publisher."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from fake_exchange import FakeExchange, SyntheticSource
from marketbus.settings import load_settings
from publisher.app import Publisher
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e


async def test_ops_endpoints_report_readiness_and_metrics(redis_server: RedisServer) -> None:
    source = SyntheticSource(["BTC/USDT"], rate=200, channels=("aggTrade", "ticker"))
    async with FakeExchange(source) as fx:
        settings = load_settings(
            redis={"url": redis_server.url},
            exchanges=[{"name": "binance", "symbols": ["BTC/USDT"], "url": fx.base_url}],
            metrics_port=0,
        )
        async with Publisher(settings) as pub, aiohttp.ClientSession() as http:
            assert pub.ops is not None and pub.ops.port
            base = f"http://127.0.0.1:{pub.ops.port}"
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200
            async with asyncio.timeout(15):
                while True:
                    async with http.get(f"{base}/readyz") as r:
                        if r.status == 200:
                            body = await r.json()
                            break
                        assert r.status == 503
                    await asyncio.sleep(0.1)
            assert body["workers"]["binance"]["state"] == "CONNECTED"
            async with asyncio.timeout(10):
                while pub.sink.stats.written < 20:
                    await asyncio.sleep(0.05)
            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
            assert 'marketbus_state{exchange="binance",state="CONNECTED"} 1.0' in text
            written = next(
                float(line.split()[-1])
                for line in text.splitlines()
                if line.startswith("marketbus_written_total")
            )
            assert written >= 20
            assert "marketbus_publish_lag_ms" in text
            assert 'marketbus_book_resyncs_total{exchange="binance"} 0.0' in text
            subscribed = sorted(
                ln for ln in text.splitlines() if ln.startswith("marketbus_subscribed_markets{")
            )
            assert subscribed == [
                'marketbus_subscribed_markets{channel="ticker",exchange="binance"} 1.0',
                'marketbus_subscribed_markets{channel="trades",exchange="binance"} 1.0',
            ]
