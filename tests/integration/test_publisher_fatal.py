"""A fatal Redis error mid-run ends the publisher with a reason and a non-zero exit."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator

import pytest

from fake_exchange import FakeExchange, SyntheticSource
from marketbus.errors import RedisAuthError
from marketbus.settings import load_settings
from publisher.app import Publisher
from tests.integration.test_security import PUBLISHER_ACL
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture
def acl_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    for user, rules in (("publisher", PUBLISHER_ACL), ("default", "on nopass ~* &* +@all")):
        subprocess.run(
            ["redis-cli", "-p", str(server.port), "ACL", "SETUSER", user, *rules.split()],
            check=True, capture_output=True,
        )  # fmt: skip
    yield server
    server.close()


def _revoke(server: RedisServer, rules: str) -> None:
    subprocess.run(
        ["redis-cli", "-p", str(server.port), "ACL", "SETUSER", "publisher", *rules.split()],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["redis-cli", "-p", str(server.port), "CLIENT", "KILL", "USER", "publisher"],
        check=False, capture_output=True,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ("-xadd", "no permissions to run the 'xadd' command"),  # its permission to write revoked
        (
            "resetpass >another-secret",
            "WRONGPASS|invalid username-password|[Aa]uthentication",
        ),  # its password changed
    ],
)
async def test_revoked_user_mid_run_stops_the_publisher(
    acl_server: RedisServer, change: str, why: str
) -> None:
    source = SyntheticSource(["BTC/USDT"], rate=500, duration=30, channels=("aggTrade",))
    async with FakeExchange(source) as fx:
        settings = load_settings(
            redis={"url": f"redis://publisher:pub-secret@127.0.0.1:{acl_server.port}/0",
                   "batch_size": 50},
            exchanges=[{"name": "binance", "symbols": ["BTC/USDT"], "url": fx.base_url,
                        "channels": ["trades"]}],
            supervisor={"backoff_min_s": 0.2, "backoff_max_s": 1},
        )  # fmt: skip
        async with Publisher(settings) as pub:
            async with asyncio.timeout(20):
                while pub.sink.stats.written < 100:
                    await asyncio.sleep(0.05)
            _revoke(acl_server, change)
            # wait() returns by itself: the process would exit, not live on reading
            await asyncio.wait_for(pub.wait(), 20)
            with pytest.raises(RedisAuthError, match=why):
                pub.sink.check()
