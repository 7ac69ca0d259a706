from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog

from tests.redis_server import RedisServer, running_redis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session, on a free loopback port."""
    with running_redis() as server:
        yield server


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Any]:
    """A client on the session server, flushed before each test."""
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=False)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
async def fake_redis() -> AsyncIterator[Any]:
    """fakeredis: for fast unit tests of code that talks to Redis, never for integration."""
    import fakeredis

    client = fakeredis.FakeAsyncRedis(decode_responses=False)
    yield client
    await client.aclose()


@pytest.fixture(autouse=True)
def _plain_logs() -> None:
    # reset first: a CLI test may have pointed the logger factory at a stream now closed
    structlog.reset_defaults()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        cache_logger_on_first_use=False,
    )
