"""Replay into a 3-master Redis Cluster: every archived entry lands on the node serving its
stream's slot, with its id and bytes, and a reset deletes the namespace's streams on every node.

The archive is made on a standalone redis-server, as in tests/integration/test_replay.py (the
archiver on a cluster: tests/integration/test_archive_cluster.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from archive import ArchiveConfig, Archiver
from archive.replay import Replay, ReplayConfig
from marketbus.settings import RedisSettings
from tests.integration.test_replay import ALL, Entries, in_namespace, publish, records, streams
from tests.redis_cluster import running_cluster
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture
async def live(redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path) -> Entries:
    """Records published on a standalone Redis and archived (every entry committed)."""
    await publish(redis, records(200))
    entries = await streams(redis, "md:*")
    total = sum(map(len, entries.values()))
    config = ArchiveConfig(name="a1", roll_age_s=0.1, rescan_s=0.2, count=100)
    async with Archiver(redis_server.url, tmp_path / "archive", config) as a:
        async with asyncio.timeout(30):
            while a.stats.acked < total:
                await asyncio.sleep(0.05)
    return entries


async def cluster_streams(client: RedisCluster, pattern: str) -> Entries:
    keys = sorted([k async for k in client.scan_iter(match=pattern, _type="stream")])
    return {k: await client.xrange(k) for k in keys}


async def test_a_replay_into_a_cluster_writes_every_entry_on_its_node(
    tmp_path: Path, live: Entries
) -> None:
    total = sum(map(len, live.values()))
    with running_cluster() as nodes:
        settings = RedisSettings(url=f"redis://127.0.0.1:{nodes[0].port}/0", cluster=True)
        config = ReplayConfig(namespace="bt1", **ALL, slice_rows=97, batch=50)
        stats = await Replay(settings, tmp_path / "archive", config).run()
        assert (stats.records, stats.streams, stats.done) == (total, len(live), True)
        client: Any = RedisCluster.from_url(settings.url)
        try:
            replayed = await cluster_streams(client, "md.bt1:*")
            assert replayed == {in_namespace(k, "bt1"): v for k, v in live.items()}
            # the streams spread over the nodes, each held by the node its slot names
            owners = {k: client.get_node_from_key(k).port for k in replayed}
            for k, port in owners.items():
                node = aioredis.Redis(port=port)
                try:
                    assert await node.exists(k) == 1, k
                finally:
                    await node.aclose()
            assert len(set(owners.values())) >= 2
            # again with reset: the namespace's streams on every node deleted first
            again = await Replay(
                settings, tmp_path / "archive", config.model_copy(update={"reset": True})
            ).run()
            assert (again.records, again.deleted) == (total, len(live))
            assert await cluster_streams(client, "md.bt1:*") == replayed
        finally:
            await client.aclose()
