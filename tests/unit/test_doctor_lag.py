"""``marketbus doctor``'s consumer-group lag check: facts in, verdict out."""

from __future__ import annotations

from marketbus.acl import Role
from marketbus_cli.doctor_checks import (
    GroupLag,
    RedisFacts,
    Status,
    check_lag,
    redis_checks,
)

S1 = "md:{binance:BTC/USDT}:trades"
S2 = "md:{okx:ETH/USDT}:book"


def test_no_group_no_check() -> None:
    assert check_lag(None) is None and check_lag(()) is None
    facts = RedisFacts("redis://x", version="7.0.15", lag=None)
    assert "lag" not in [c.name for c in redis_checks(facts, Role.CONSUMER, None, False)]


def test_groups_well_within_maxlen_are_ok_naming_the_furthest() -> None:
    c = check_lag([GroupLag(S1, "bots", 10, 100_000), GroupLag(S2, "archive", 40_000, 100_000)])
    assert c is not None and c.status is Status.OK
    assert "2 consumer group(s) on 2 stream(s)" in c.detail
    assert "'archive' on md:{okx:ETH/USDT}:book is 40,000 entries behind (40%" in c.detail


def test_a_group_past_half_its_stream_cap_or_with_a_trimmed_range_warns() -> None:
    groups = [
        GroupLag(S1, "bots", 50_001, 100_000, pending=7),
        GroupLag(S2, "archive", 999, 1_000),
        GroupLag(S2, "bots", 10, 1_000, trimmed=5_000),
        GroupLag(S1, "fine", 50_000, 100_000),  # exactly half: not yet
    ]
    c = check_lag(groups)
    assert c is not None and c.status is Status.WARN
    first, second, third = c.detail.split("; ")[:3]
    assert "'bots' on md:{okx:ETH/USDT}:book" in first and "5,000 entries were trimmed" in first
    assert "'archive'" in second and "(100% of its ~1,000 cap)" in second
    assert "'bots' on md:{binance:BTC/USDT}:trades is 50,001" in third and "7 pending" in third
    assert "'fine'" not in c.detail and "raise redis.maxlen" in c.detail
    many = check_lag([GroupLag(S1, f"g{i}", 900, 1_000) for i in range(8)])
    assert many is not None and many.detail.count("entries behind") == 5
    assert "and 3 more" in many.detail


def test_the_check_follows_the_other_redis_checks() -> None:
    facts = RedisFacts("redis://x", version="7.0.15", lag=(GroupLag(S1, "bots", 1, 1_000),))
    names = [c.name for c in redis_checks(facts, Role.CONSUMER, None, False)]
    assert names[-1] == "lag"
