"""``marketbus doctor`` against a real redis-server: consumer groups near their stream's
MAXLEN warn (bots and the archiver's group alike), with the numbers Redis keeps."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from marketbus import codec
from tests.factories import trade
from tests.integration.test_doctor import as_user, doctor
from tests.redis_server import RedisServer, running_redis

pytestmark = pytest.mark.integration

A = "md:{binance:BTC/USDT}:trades"
B = "md:{binance:ETH/USDT}:trades"
C = "md:{okx:BTC/USDT}:trades"
CAP = {"MARKETBUS_REDIS__MAXLEN": "1000"}


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with running_redis() as s:
        yield s


def write(r: redis.Redis, key: str, n: int, maxlen: int | None = 1000) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(key, codec.encode(trade(i)), maxlen=maxlen, approximate=False)
    pipe.execute()


def lag_check(server: RedisServer, env: dict[str, str] | None = None) -> dict[str, Any] | None:
    code, checks = doctor(
        "--redis-url", server.url, "--role", "consumer", env={**CAP, **(env or {})}
    )
    assert code in (0, 1), checks
    return checks.get("lag")


def test_groups_near_or_past_maxlen_warn_and_the_others_do_not(server: RedisServer) -> None:
    r = redis.Redis.from_url(server.url)
    assert lag_check(server) is None  # no stream, no group: nothing to say
    # A: the archiver's group read 100, then 2,000 more came with MAXLEN 1000: it lost some
    r.xgroup_create(A, "archive", id="0", mkstream=True)
    write(r, A, 100)
    r.xreadgroup("archive", "a1", {A: ">"}, count=100)
    write(r, A, 2000)
    # B: bots 700 of 1,000 behind (more than half); C: bots at the newest entry
    write(r, B, 1000)
    r.xgroup_create(B, "bots", id="0")
    r.xreadgroup("bots", "b1", {B: ">"}, count=300)
    write(r, C, 10)
    r.xgroup_create(C, "bots", id="$")
    lag = lag_check(server)
    assert lag is not None and lag["status"] == "warn", lag
    assert (
        f"group 'archive' on {A} is 1,000 entries behind (100% of its ~1,000 cap" in lag["detail"]
    )
    assert "1,000 entries were trimmed before it read them" in lag["detail"]
    assert f"group 'bots' on {B} is 700 entries behind (70%" in lag["detail"]
    assert "300 pending" in lag["detail"]
    assert C not in lag["detail"]
    # B's bots catch up, A's archiver reads what is left: all good
    r.xreadgroup("bots", "b1", {B: ">"}, count=1000)
    r.xreadgroup("archive", "a1", {A: ">"}, count=5000)
    lag = lag_check(server)
    assert lag is not None and lag["status"] == "ok", lag
    assert "3 consumer group(s) on 3 stream(s)" in lag["detail"]
    r.close()


def test_a_lag_redis_overstates_after_a_loss_is_counted_on_what_the_stream_holds(
    server: RedisServer,
) -> None:
    """Redis never counts the entries trimmed before a group read them, so its ``lag`` stays
    that much too high; the doctor counts what the stream holds after the group instead."""
    r = redis.Redis.from_url(server.url)
    r.xgroup_create(A, "archive", id="0", mkstream=True)
    write(r, A, 100)
    r.xreadgroup("archive", "a1", {A: ">"}, count=100)
    write(r, A, 2900)  # 1,900 trimmed before the group read them
    r.xreadgroup("archive", "a1", {A: ">"}, count=900)
    assert r.xinfo_groups(A)[0]["lag"] == 2000  # what Redis says
    lag = lag_check(server)
    assert lag is not None and lag["status"] == "ok", lag
    assert "is 100 entries behind (10% of its ~1,000 cap" in lag["detail"]
    r.close()


def test_a_user_who_may_not_look_gets_no_lag_check(server: RedisServer) -> None:
    r = redis.Redis.from_url(server.url)
    write(r, A, 10)
    r.xgroup_create(A, "bots", id="0")
    r.execute_command("ACL", "SETUSER", "noxinfo", "on", ">pw", "~md:*", "+@all", "-xinfo")
    args, env = as_user(server, "noxinfo", "pw")
    _, checks = doctor(*args, "--role", "consumer", env={**CAP, **env})
    assert "lag" not in checks and checks["redis"]["status"] == "ok"
    assert lag_check(server) is not None  # the default user may
    r.close()
