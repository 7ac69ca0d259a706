"""``marketbus doctor``'s pure checks: facts in, verdicts out."""

from __future__ import annotations

import pytest

from marketbus.acl import CONTROL, ROLES, STATUS, STREAMS, SUBS, Need, Role
from marketbus.capacity import estimate
from marketbus.settings import RedisSettings, Settings
from marketbus_cli.doctor_checks import (
    AclFacts,
    Check,
    Denial,
    MarketFacts,
    RedisFacts,
    Status,
    check_acl,
    check_capacity,
    check_eviction,
    check_markets,
    check_persistence,
    check_version,
    denial_of,
    exit_code,
    parse_version,
    redis_checks,
    summary,
    version_from_hello,
    version_from_info,
)


def need(command: str, pattern: str | None = STREAMS, role: Role = Role.PUBLISHER) -> Need:
    return next(n for n in ROLES[role] if n.command == command and n.pattern == pattern)


@pytest.mark.parametrize(
    ("reply", "what"),
    [
        ("OK", None),
        ("This user has no permissions to run the 'xadd' command", "command"),
        ("this user has no permissions to run the 'xgroup|create' command", "command"),
        ("This user has no permissions to access the 'other:key' key", "key"),
        ("this user has no permissions to access one of the keys used as arguments", "key"),
        ("wrong number of arguments for 'hset' command", None),
        ("value is not an integer or out of range", None),
    ],
)
def test_denial_of_reads_dryrun_answers_and_noperm_errors(reply: str, what: str | None) -> None:
    assert denial_of(reply) == what


def test_versions_from_hello_and_info() -> None:
    flat = [b"server", b"redis", b"version", b"7.0.15", b"proto", 2]
    assert version_from_hello(flat) == "7.0.15"
    assert version_from_hello({b"server": b"redis", b"version": b"6.2.1"}) == "6.2.1"
    assert version_from_hello(b"OK") is None
    assert version_from_info("# Server\r\nredis_version:6.0.9\r\nredis_mode:standalone") == "6.0.9"
    assert parse_version("7.0.15") == (7, 0, 15)
    assert parse_version("6.2") == (6, 2)
    assert parse_version("unstable") is None
    assert parse_version(None) is None


@pytest.mark.parametrize(
    ("version", "role", "status"),
    [
        ("7.0.15", Role.CONSUMER, Status.OK),
        ("6.2.0", Role.CONSUMER, Status.OK),
        ("6.0.9", Role.CONSUMER, Status.ERROR),
        ("6.0.9", Role.PUBLISHER, Status.OK),
        ("6.0.9", Role.ARCHIVE, Status.OK),
        ("4.0.14", Role.PUBLISHER, Status.ERROR),
        (None, Role.PUBLISHER, Status.WARN),
    ],
)
def test_version_thresholds(version: str | None, role: Role, status: Status) -> None:
    c = check_version(version, role)
    assert c.status is status
    if status is Status.ERROR and role is Role.CONSUMER:
        assert "XAUTOCLAIM" in c.detail and "6.2" in c.detail


def test_missing_commands_and_key_patterns_are_named_with_the_rules_to_grant() -> None:
    acl = AclFacts(
        "pub",
        "ACL DRYRUN",
        (
            Denial(need("xadd"), "md:{binance:BTC/USDT}:trades", "command"),
            Denial(need("xadd"), "md:{binance:ETH/USDT}:trades", "command"),
            Denial(need("hset", STATUS), "mb:status:binance", "key"),
            Denial(need("expire", STATUS), "mb:status:binance", "key"),
        ),
    )
    (c,) = check_acl(Role.PUBLISHER, acl, control=False)
    assert c.status is Status.ERROR and c.name == "acl"
    assert "+xadd (writes the records)" in c.detail
    assert "~mb:status:* for hset (refused on mb:status:binance)" in c.detail
    assert "ACL DRYRUN" in c.detail
    assert c.detail.endswith("grant it: ACL SETUSER pub +xadd ~mb:status:*")


def test_a_key_refused_on_several_keys_shows_one_and_counts_the_rest() -> None:
    keys = [f"md:{{binance:S{i}/USDT}}:ticker" for i in range(3)]
    acl = AclFacts("u", "probes", tuple(Denial(need("xrevrange"), k, "key") for k in keys))
    (c,) = check_acl(Role.PUBLISHER, acl, control=False)
    assert f"refused on {keys[0]} and 2 more" in c.detail


def test_optional_rights_warn_only_while_control_is_on() -> None:
    acl = AclFacts(
        "pub", "probes", (Denial(need("xread", CONTROL), "mb:ctl:{binance}", "command"),)
    )
    ok, warn = check_acl(Role.PUBLISHER, acl, control=True)
    assert ok.status is Status.OK and "may run the 5 commands" in ok.detail
    assert warn.status is Status.WARN and warn.name == "acl-control"
    assert "marketbus subscribe" in warn.detail and "+xread" in warn.detail
    assert [c.name for c in check_acl(Role.PUBLISHER, acl, control=False)] == ["acl"]


def test_each_optional_feature_missing_is_its_own_warning() -> None:
    acl = AclFacts("pub", "probes", (
        Denial(need("xread", CONTROL), "mb:ctl:{binance}", "command"),
        Denial(need("hgetall", SUBS), "mb:subs:{binance}", "key"),
        Denial(need("info", None), None, "command"),
    ))  # fmt: skip
    checks = {c.name: c for c in check_acl(Role.PUBLISHER, acl, control=True)}
    assert list(checks) == ["acl", "acl-control", "acl-memory-check"]
    assert checks["acl-control"].detail.endswith("grant it: ACL SETUSER pub +xread ~mb:subs:*")
    assert "maxmemory" in checks["acl-memory-check"].detail
    assert checks["acl-memory-check"].detail.endswith("ACL SETUSER pub +info")
    without_control = check_acl(Role.PUBLISHER, acl, control=False)
    assert [c.name for c in without_control] == ["acl", "acl-memory-check"]


def test_permissions_that_could_not_be_checked_are_a_warning() -> None:
    (c,) = check_acl(Role.CONSUMER, AclFacts("u", "probes", error="boom"), control=False)
    assert c.status is Status.WARN and "boom" in c.detail
    assert check_acl(Role.CONSUMER, None, control=False) == []


@pytest.mark.parametrize(
    ("config", "status", "words"),
    [
        ({"appendonly": "yes", "save": ""}, Status.OK, "AOF on"),
        ({"appendonly": "yes", "save": "3600 1"}, Status.OK, "RDB save '3600 1'"),
        ({"appendonly": "no", "save": "3600 1 300 100"}, Status.OK, "RDB snapshots"),
        ({"appendonly": "no", "save": ""}, Status.WARN, "restart loses every stream"),
        (None, Status.WARN, "unknown"),
        ({"save": ""}, Status.WARN, "unknown"),
        ({"appendonly": "yes"}, Status.OK, "AOF on"),  # from INFO: no save schedule there
        ({"appendonly": "no"}, Status.WARN, "RDB snapshots unknown"),
    ],
)
def test_persistence(config: dict[str, str] | None, status: Status, words: str) -> None:
    c = check_persistence(config, None)
    assert c.status is status and words in c.detail


def test_persistence_unknown_says_why() -> None:
    c = check_persistence(None, "CONFIG GET is not permitted to user 'pub'")
    assert "not permitted to user 'pub'" in c.detail


@pytest.mark.parametrize(
    ("policy", "status"),
    [
        ("noeviction", Status.OK),
        ("volatile-lru", Status.OK),
        ("volatile-ttl", Status.OK),
        ("allkeys-lru", Status.WARN),
        ("allkeys-lfu", Status.WARN),
        ("allkeys-random", Status.WARN),
    ],
)
def test_eviction_policies_that_could_drop_streams_warn(policy: str, status: Status) -> None:
    c = check_eviction({"maxmemory-policy": policy})
    assert c.status is status and policy in c.detail
    assert check_eviction(None).status is Status.WARN


def test_capacity_against_maxmemory() -> None:
    est = estimate(Settings(redis=RedisSettings(maxlen=100_000)))  # ~231 MiB
    no_limit = check_capacity(est, {"maxmemory": "0"})
    assert no_limit.status is Status.OK and "no maxmemory" in no_limit.detail
    roomy = check_capacity(est, {"maxmemory": str(2**30)})
    assert roomy.status is Status.OK and "of maxmemory 1.0 GiB" in roomy.detail
    tight = check_capacity(est, {"maxmemory": str(100 * 2**20)})
    assert tight.status is Status.WARN and "does not fit" in tight.detail
    assert "10 streams x MAXLEN ~100,000" in tight.detail
    unknown = check_capacity(est, None, "CONFIG GET is not permitted to user 'u'")
    assert unknown.status is Status.WARN and "maxmemory unknown" in unknown.detail


def test_markets() -> None:
    ok = check_markets(
        MarketFacts("binance", resolved={"BTCUSDT": "BTC/USDT", "ETH/USDT": "ETH/USDT"}, markets=9)
    )
    assert ok.status is Status.OK and ok.name == "markets:binance"
    assert "BTCUSDT -> BTC/USDT" in ok.detail and "ETH/USDT ->" not in ok.detail
    bad = check_markets(MarketFacts("binance", unknown=("unknown symbol 'NOPE/USDT' on binance",)))
    assert bad.status is Status.ERROR and "'NOPE/USDT'" in bad.detail
    away = check_markets(MarketFacts("binance", "http://x", error="refused", unreachable=True))
    assert away.status is Status.WARN and "unreachable" in away.detail and "make run" in away.detail
    fatal = check_markets(MarketFacts("binance", error="NotSupported: no", fatal=True))
    assert fatal.status is Status.ERROR
    other = check_markets(MarketFacts("binance", error="BadRequest: 451"))
    assert other.status is Status.WARN and "not loaded" in other.detail


def test_redis_down_skips_the_checks_that_need_it() -> None:
    est = estimate(Settings())
    down = redis_checks(
        RedisFacts("redis://h:1/0", error="not reachable"), Role.PUBLISHER, est, True
    )
    assert [(c.name, c.status) for c in down] == [("redis", Status.ERROR)]
    up = redis_checks(
        RedisFacts("redis://h:1/0", True, "pub", version="7.0.15",
                   config={"appendonly": "yes", "save": "", "maxmemory": "0",
                           "maxmemory-policy": "noeviction"},
                   acl=AclFacts("pub", "ACL DRYRUN")),
        Role.PUBLISHER, est, True,
    )  # fmt: skip
    assert [c.name for c in up] == [
        "redis", "version", "acl", "persistence", "eviction", "capacity",
    ]  # fmt: skip
    assert all(c.status is Status.OK for c in up)
    assert "over TLS" in up[0].detail and "'pub'" in up[0].detail


@pytest.mark.parametrize(
    ("statuses", "strict", "code"),
    [
        ([Status.OK], False, 0),
        ([Status.OK], True, 0),
        ([Status.OK, Status.WARN], False, 0),
        ([Status.OK, Status.WARN], True, 1),
        ([Status.WARN, Status.ERROR], False, 2),
        ([Status.ERROR], True, 2),
    ],
)
def test_exit_codes(statuses: list[Status], strict: bool, code: int) -> None:
    checks = [Check(f"c{i}", s, "") for i, s in enumerate(statuses)]
    assert exit_code(checks, strict) == code
    assert sum(summary(checks).values()) == len(checks)
