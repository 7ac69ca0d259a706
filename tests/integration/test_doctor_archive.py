"""``marketbus doctor`` and ``marketbus inspect`` against a real redis-server show each
archiver's status (the hash ``marketbus archive`` writes): one line each, a warning when its
lag nears MAXLEN, when it fails, or when its status is stale."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from archive import ArchiveConfig, Archiver
from archive.status import StatusWriter, archive_status_key, status_fields
from marketbus import codec
from marketbus_cli import app
from tests.factories import trade
from tests.integration.test_doctor import as_user, doctor
from tests.redis_server import RedisServer, running_redis

pytestmark = pytest.mark.integration

A = "md:{binance:BTC/USDT}:trades"
CAP = {"MARKETBUS_REDIS__MAXLEN": "1000"}


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with running_redis() as s:
        yield s


def archive_once(url: str, root: Path, name: str, rows: int) -> dict[str, str]:
    """A real archiver run until it committed ``rows`` rows, its status hash written (as
    ``marketbus archive`` writes it) with MAXLEN 1000; returns the hash's fields."""

    async def run() -> dict[str, str]:
        config = ArchiveConfig(name=name, roll_age_s=0.05, rescan_s=0.05, block_ms=20)
        async with Archiver(url, root, config) as a:
            deadline = time.monotonic() + 20
            while (a.stats.rows < rows or a.stats.lag != 0) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert a.stats.rows == rows and a.stats.lag == 0, a.stats
            writer = StatusWriter(a, maxlen=1000)
            await writer.write()
            return status_fields(a, maxlen=1000, started_at=time.time())

    return asyncio.run(run())


def inspect(*args: str) -> Any:
    unset = {k: None for k in os.environ if k.startswith("MARKETBUS_") or k == "REDIS_URL"}
    return CliRunner().invoke(app, ["inspect", *args], env={**unset, "COLUMNS": "200"})


def put(r: Any, name: str, fields: dict[str, str], **changes: Any) -> None:
    """``fields`` (a status hash) under ``name``, its figures changed by ``changes``."""
    data = {**json.loads(fields["stats"]), **changes, "name": name}
    r.hset(archive_status_key(name), mapping={**fields, "stats": json.dumps(data)})


def test_doctor_and_inspect_show_each_archiver_and_warn_on_lag_failure_and_staleness(
    server: RedisServer, tmp_path: Path
) -> None:
    r: Any = redis.Redis.from_url(server.url)
    for i in range(300):
        r.xadd(A, codec.encode(trade(i)))
    code, checks = doctor("--redis-url", server.url, "--role", "consumer", env=CAP)
    assert not [c for c in checks if c.startswith("archive:")]  # none running: no line

    fields = archive_once(server.url, tmp_path, "arch-1", 300)
    now_ms = int(time.time() * 1000)
    # the same figures under other names: one behind by 80% of MAXLEN on its busiest stream,
    # one whose commits fail, one whose status is two minutes old (killed)
    put(r, "arch-lagging", fields, lag=900, lag_max=800, lag_ratio=0.8)
    put(r, "arch-failing", fields, state="failing", writable=False, write_errors=3,
        last_error="OSError: [Errno 28] No space left on device")  # fmt: skip
    put(r, "arch-gone", fields, updated_ms=now_ms - 120_000)

    code, checks = doctor("--redis-url", server.url, "--role", "consumer", env=CAP)
    assert code == 0  # warnings only
    ok = checks["archive:arch-1"]
    assert ok["status"] == "ok", ok
    assert ok["detail"].startswith("archiving, status "), ok
    assert "lag 0 entries (busiest stream 0, 0% of MAXLEN 1,000)" in ok["detail"]
    assert "300 rows in 1 files" in ok["detail"]
    assert "last commit " in ok["detail"] and "errors: 0 write, 0 Redis" in ok["detail"]
    lagging = checks["archive:arch-lagging"]
    assert lagging["status"] == "warn"
    assert "lag 800 entries on its busiest stream is 80% of MAXLEN 1000" in lagging["detail"]
    assert "lag 900 entries (busiest stream 800, 80% of MAXLEN 1,000)" in lagging["detail"]
    failing = checks["archive:arch-failing"]
    assert failing["status"] == "warn"
    assert "arch-failing is failing: OSError: [Errno 28] No space left" in failing["detail"]
    assert "errors: 3 write, 0 Redis" in failing["detail"]
    gone = checks["archive:arch-gone"]
    assert gone["status"] == "warn" and "status 120 s old (not running?)" in gone["detail"]
    code, _ = doctor("--redis-url", server.url, "--role", "consumer", "--strict", env=CAP)
    assert code == 1

    # inspect: the same, one line per archiver; --json holds the statuses
    out = inspect("--redis-url", server.url).stdout
    lines = [line.strip() for line in out.splitlines() if line.strip().startswith("arch-")]
    assert [line.partition(":")[0] for line in lines] == [
        "arch-1", "arch-failing", "arch-gone", "arch-lagging"
    ]  # fmt: skip
    assert "300 rows in 1 files" in lines[0] and "failing" in lines[1]
    data = json.loads(inspect("--json", "--redis-url", server.url).stdout)
    assert [a["name"] for a in data["archivers"]] == [
        "arch-1", "arch-failing", "arch-gone", "arch-lagging"
    ]  # fmt: skip
    assert data["archivers"][0]["rows"] == 300 and data["workers"] == []
    r.close()


def test_a_user_who_may_not_read_the_status_hashes_gets_no_archive_line(
    server: RedisServer, tmp_path: Path
) -> None:
    r: Any = redis.Redis.from_url(server.url)
    r.xadd(A, codec.encode(trade(1)))
    fields = archive_once(server.url, tmp_path, "arch-1", 1)
    r.execute_command("ACL", "SETUSER", "blind", "on", ">doctor-Pa55-word", "resetkeys",
                      "~md:*", "-@all", "+ping", "+scan", "+xinfo", "+hello")  # fmt: skip
    _, checks = doctor(*as_user(server, "blind")[0], "--role", "consumer",
                          env={**CAP, **as_user(server, "blind")[1]})  # fmt: skip
    assert "redis" in checks and not [c for c in checks if c.startswith("archive:")]
    assert json.loads(fields["stats"])["name"] == "arch-1"
    r.close()
