"""Redis ACL users with least privilege, and TLS (``rediss://``) with a self-signed certificate."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions as rex

from consumers import Consumer
from marketbus import codec
from marketbus.acl import Role, acl_rules
from marketbus.errors import RedisAuthError
from marketbus.keys import stream_key
from marketbus.redis_client import connect
from marketbus.settings import RedisSettings
from publisher.sink import StreamSink
from tests.factories import trade
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration

TRADES = stream_key("binance", "BTC/USDT", "trades")

# What each role needs, and nothing more: marketbus.acl defines it (marketbus doctor checks it).
PUBLISHER_ACL = "on >pub-secret " + acl_rules(Role.PUBLISHER, optional=False)
# run-time subscription changes (marketbus subscribe) also need the optional rights
CONTROLLED_ACL = "on >ctl-secret " + acl_rules(Role.PUBLISHER)
CONSUMER_ACL = "on >con-secret " + acl_rules(Role.CONSUMER)


@pytest.fixture
def acl_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    for user, rules in (
        ("publisher", PUBLISHER_ACL),
        ("consumer", CONSUMER_ACL),
        ("controlled", CONTROLLED_ACL),
        (
            "operator",
            "on >op-secret resetkeys ~mb:ctl:* ~mb:subs:* ~mb:status:* -@all "
            "+hset +xadd +hget +hgetall +del +ping +hello",
        ),
        ("default", "off"),
    ):
        out = subprocess.run(
            ["redis-cli", "-p", str(server.port), "ACL", "SETUSER", user, *rules.split()],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        assert out.stdout.strip() == "OK", out.stdout
    yield server
    server.close()


def url(server: RedisServer, user: str, password: str) -> str:
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0"


async def test_publisher_and_consumer_users_work_within_their_rights(
    acl_server: RedisServer,
) -> None:
    pub = aioredis.Redis.from_url(url(acl_server, "publisher", "pub-secret"))
    async with StreamSink(pub) as sink:
        for i in range(10):
            sink.put(trade(i))
        await sink.drain()
    got: list[str] = []
    consumer_url = url(acl_server, "consumer", "con-secret")
    async with Consumer(consumer_url, ["binance:BTC/USDT"], ["trades"], backfill=100) as c:
        got = c.buffer("binance", "BTC/USDT", "trades").table().column("id").to_pylist()
    assert got == [str(i) for i in range(10)]
    seen: list[str] = []
    async with Consumer(consumer_url, ["binance:BTC/USDT"], ["trades"], backfill=0, group="bots",
                        name="b1", block_ms=50) as c:  # fmt: skip
        c.on_record(lambda r: seen.append(r.id))  # type: ignore[union-attr]
        async with StreamSink(pub) as sink:
            sink.put(trade(10))
            await sink.drain()
        async with asyncio.timeout(5):
            while not seen:
                await asyncio.sleep(0.02)
    assert seen == ["10"]
    await pub.aclose()


async def test_each_user_is_refused_what_it_must_not_do(acl_server: RedisServer) -> None:
    pub = aioredis.Redis.from_url(url(acl_server, "publisher", "pub-secret"))
    con = aioredis.Redis.from_url(url(acl_server, "consumer", "con-secret"))
    await pub.xadd(TRADES, codec.encode(trade(1)))
    with pytest.raises(rex.NoPermissionError):
        await pub.xread({TRADES: "0"})  # the publisher cannot follow the market data
    with pytest.raises(rex.NoPermissionError):
        await pub.delete(TRADES)
    with pytest.raises(rex.NoPermissionError):
        await pub.xadd("other:key", {"a": "b"})  # only its own keys
    with pytest.raises(rex.NoPermissionError):
        await con.xadd(TRADES, codec.encode(trade(2)))  # the consumer cannot write
    with pytest.raises(rex.NoPermissionError):
        await con.hset("mb:status:binance", "state", "x")
    assert len(await con.xrevrange(TRADES)) == 1
    await pub.aclose()
    await con.aclose()


async def test_a_sink_without_write_permission_fails_clearly(acl_server: RedisServer) -> None:
    con = aioredis.Redis.from_url(url(acl_server, "consumer", "con-secret"))
    sink = StreamSink(con)
    await sink.start()
    sink.put(trade(1))
    with pytest.raises(RedisAuthError, match="NoPermissionError"):
        await asyncio.wait_for(sink.drain(), 5)
    await sink.stop(drain_timeout=0.1)
    await con.aclose()


async def test_wrong_password_for_an_acl_user(acl_server: RedisServer) -> None:
    with pytest.raises(RedisAuthError):
        async with Consumer(url(acl_server, "consumer", "nope"), ["binance:BTC/USDT"]):
            pass


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[RedisServer, Path]]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    server = RedisServer(scheme="rediss")
    server.args = ["--tls-port", str(server.port), "--port", "0", "--tls-cert-file", str(cert),
                   "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                   "--tls-auth-clients", "no"]  # fmt: skip
    server.start()
    yield server, cert
    server.close()


async def test_tls_with_a_self_signed_certificate(tls_server: tuple[RedisServer, Path]) -> None:
    server, cert = tls_server
    settings = RedisSettings(url=server.url, tls_ca_file=cert)
    client: Any = connect(settings)
    async with StreamSink(client) as sink:
        for i in range(5):
            sink.put(trade(i))
        await sink.drain()
    await client.aclose()
    async with Consumer(settings, ["binance:BTC/USDT"], ["trades"], backfill=10) as c:
        ids = c.buffer("binance", "BTC/USDT", "trades").table().column("id").to_pylist()
    assert ids == ["0", "1", "2", "3", "4"]


async def test_tls_refuses_an_untrusted_server(tls_server: tuple[RedisServer, Path]) -> None:
    server, _ = tls_server
    with pytest.raises(Exception, match=r"(?i)certificate|ssl"):
        async with Consumer(server.url, ["binance:BTC/USDT"]):
            pass


class _Worker:
    name = "binance"

    def __init__(self) -> None:
        self.applied: list[Any] = []

    def apply_changes(self, changes: list[Any]) -> dict[Any, Any]:
        self.applied.append(changes)
        return {}


async def test_control_needs_its_own_permissions_and_says_so_without_them(
    acl_server: RedisServer,
) -> None:
    """Without rights on the control keys the publisher keeps its configured subscriptions
    (and says why once); with the role's optional rights it follows run-time changes."""
    from marketbus.models import Channel
    from marketbus_cli.subs import write_change
    from publisher.control import ControlLoop

    pub = aioredis.Redis.from_url(url(acl_server, "publisher", "pub-secret"))
    loop = ControlLoop(pub, _Worker())
    await asyncio.wait_for(loop.run(), 5)  # returns: disabled, not a crash or a retry loop
    assert loop.enabled is False

    # the same publisher rights plus the optional ones: changes are followed
    ctl = aioredis.Redis.from_url(url(acl_server, "controlled", "ctl-secret"))
    worker = _Worker()
    loop = ControlLoop(ctl, worker)
    task = asyncio.create_task(loop.run())
    operator = aioredis.Redis.from_url(url(acl_server, "operator", "op-secret"))
    await write_change(operator, "binance", ["ETH/USDT"], [Channel.TRADES], "+")
    async with asyncio.timeout(5):
        while not worker.applied:
            await asyncio.sleep(0.02)
    assert [c.symbol for c in worker.applied[-1]] == ["ETH/USDT"]
    assert loop.enabled
    loop.stop()
    await asyncio.wait_for(task, 3)
    for c in (pub, ctl, operator):
        await c.aclose()
