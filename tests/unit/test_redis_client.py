"""The asyncio clients we open get redis-py's asyncio Retry, never the synchronous one."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio.retry as async_retry
import redis.retry as sync_retry
from redis.backoff import NoBackoff

from marketbus.redis_client import connect, retry_policy
from marketbus.settings import ExchangeSettings, RedisSettings, Settings
from publisher.app import Publisher

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("marketbus", "publisher", "consumers", "fake_exchange", "bench")


def _retry_of(client: Any) -> Any:
    return client.connection_pool.connection_kwargs["retry"]


@pytest.mark.parametrize("retries", [0, 2, 5])
async def test_connect_gives_the_asyncio_retry(retries: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # redis-py 8.2 warns when it has to convert a sync Retry
        client = connect(RedisSettings(url="redis://127.0.0.1:1/0"), retries=retries)
    try:
        retry = _retry_of(client)
        assert isinstance(retry, async_retry.Retry)
        assert not isinstance(retry, sync_retry.Retry)
        assert retry.get_retries() == retries
    finally:
        await client.aclose()


async def test_the_cluster_client_gets_the_asyncio_retry_too() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        client = connect(RedisSettings(url="redis://127.0.0.1:1/0", cluster=True), retries=0)
    try:
        assert isinstance(client.retry, async_retry.Retry)
    finally:
        await client.aclose()


def test_connect_refuses_a_retry_object() -> None:
    """Callers say how many retries; a Retry object of either kind is refused by name."""
    with pytest.raises(TypeError, match="retries=N"):
        connect(RedisSettings(), retry=sync_retry.Retry(NoBackoff(), 0))


async def test_the_publisher_client_does_not_retry_inside_redis_py() -> None:
    settings = Settings(
        redis=RedisSettings(url="redis://127.0.0.1:1/0"),
        exchanges=[ExchangeSettings(name="binance", symbols=["BTC/USDT"])],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pub = Publisher(settings)
    try:
        retry = _retry_of(pub.redis)
        assert isinstance(retry, async_retry.Retry)
        assert retry.get_retries() == 0
    finally:
        await pub.redis.aclose()


def test_retry_policy_is_the_asyncio_class() -> None:
    assert type(retry_policy(3)) is async_retry.Retry


def test_no_module_of_ours_imports_the_synchronous_redis_retry() -> None:
    """Every Redis client we open is asyncio: the synchronous retry module has no place here."""
    offenders: list[str] = []
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                if any(n == "redis.retry" or n.startswith("redis.retry.") for n in names):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
