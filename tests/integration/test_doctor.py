"""``marketbus doctor`` against real redis-servers (ACL users, AOF on and off, down, TLS) and the
fake exchange: what it reports, its exit codes, and that it writes nothing.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from marketbus.acl import Role, acl_rules
from marketbus.keys import control_stream, status_key, subscriptions_key
from marketbus_cli import app
from tests.integration.test_security import tls_server  # noqa: F401  (a fixture)
from tests.redis_server import RedisServer, free_port, running_redis

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECRET = "doctor-Pa55-word"  # every ACL user's password; grep'd for in outputs
USERS = {
    "publisher": acl_rules(Role.PUBLISHER, optional=False),
    "controlled": acl_rules(Role.PUBLISHER),
    "consumer": acl_rules(Role.CONSUMER),
    "archive": acl_rules(Role.ARCHIVE),
    # a publisher without XADD, and without the status keys
    "nowrite": "resetkeys ~md:* -@all +ping +xrevrange +hset +expire",
    "nowrite-dryrun": "resetkeys ~md:* -@all +ping +xrevrange +hset +expire +acl|dryrun",
    # every right but ACL DRYRUN: permissions are probed with real commands
    "everything": "~* &* +@all -acl|dryrun",
}
TRADES = "md:{binance:BTC/USDT}:trades"


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    """The project's fake Binance, in its own process (the doctor loads its markets)."""
    p = subprocess.Popen(
        [sys.executable, "-m", "fake_exchange", "--synthetic", "3", "--rate", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    try:
        assert p.stdout is not None
        ready, _, _ = select.select([p.stdout], [], [], 30)
        assert ready, "the fake exchange printed no URL"
        url = p.stdout.readline().decode().strip()
        assert url.startswith("http://127.0.0.1:"), url
        yield url
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


@pytest.fixture(scope="module")
def acl_server() -> Iterator[RedisServer]:
    """AOF off (the fixture's default), the default user left as the admin, plus USERS."""
    with running_redis() as server:
        admin = redis.Redis.from_url(server.url)
        for user, rules in USERS.items():
            admin.execute_command("ACL", "SETUSER", user, "on", f">{SECRET}", *rules.split())
        admin.close()
        yield server


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    unset: dict[str, str | None] = {
        k: None for k in os.environ if k.startswith("MARKETBUS_") or k == "REDIS_URL"
    }
    return CliRunner().invoke(
        app, ["doctor", *args], env={**unset, "COLUMNS": "200", **(env or {})}
    )


def doctor(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """Exit code and the checks by name, from ``--json``."""
    r = invoke("--json", *args, env=env)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    data = json.loads(r.stdout)
    assert data["exit_code"] == r.exit_code
    assert SECRET not in r.stdout + r.stderr
    checks = {c["check"]: c for c in data["checks"]}
    assert set(data["summary"]) == {"ok", "warn", "error"}
    return r.exit_code, checks


def as_user(
    server: RedisServer, user: str, password: str = SECRET
) -> tuple[list[str], dict[str, str]]:
    return ["--redis-url", server.url], {
        "MARKETBUS_REDIS__USERNAME": user,
        "MARKETBUS_REDIS__PASSWORD": password,
    }


def statuses(checks: dict[str, Any]) -> dict[str, str]:
    return {name: c["status"] for name, c in checks.items()}


# -- ACL permissions ---------------------------------------------------------------------------


def test_a_least_privileged_publisher_passes_and_what_it_may_not_see_is_a_warning(
    acl_server: RedisServer, fake_url: str
) -> None:
    args, env = as_user(acl_server, "publisher")
    code, checks = doctor(*args, "--exchange-url", fake_url, env=env)
    assert code == 0, checks
    assert statuses(checks) == {
        "config": "ok", "redis": "ok", "version": "ok", "acl": "ok", "acl-control": "warn",
        "acl-memory-check": "warn", "persistence": "warn", "eviction": "warn",
        "capacity": "warn", "markets:binance": "ok",
    }  # fmt: skip
    assert "'publisher'" in checks["redis"]["detail"]
    assert "probe commands" in checks["acl"]["detail"]  # it may not run ACL DRYRUN
    assert "marketbus subscribe" in checks["acl-control"]["detail"]
    assert "+xread" in checks["acl-control"]["detail"]
    assert checks["acl-memory-check"]["detail"].endswith("+info")
    for name in ("persistence", "eviction", "capacity"):
        assert "CONFIG GET is not permitted to user 'publisher'" in checks[name]["detail"]
    assert doctor(*args, "--exchange-url", fake_url, "--strict", env=env)[0] == 1
    # with the optional rights too, their warnings go, and INFO tells memory and AOF
    args, env = as_user(acl_server, "controlled")
    _, checks = doctor(*args, "--exchange-url", fake_url, env=env)
    assert not any(n.startswith("acl-") for n in checks), checks
    assert checks["acl"]["status"] == "ok"
    assert checks["eviction"]["status"] == checks["capacity"]["status"] == "ok"
    assert "noeviction" in checks["eviction"]["detail"]
    assert "AOF off, RDB snapshots unknown" in checks["persistence"]["detail"]


@pytest.mark.parametrize(("user", "method"), [("nowrite", "probe commands"),
                                              ("nowrite-dryrun", "ACL DRYRUN")])  # fmt: skip
def test_each_missing_command_and_key_pattern_is_named(
    acl_server: RedisServer, fake_url: str, user: str, method: str
) -> None:
    args, env = as_user(acl_server, user)
    code, checks = doctor(*args, "--exchange-url", fake_url, env=env)
    assert code == 2
    acl = checks["acl"]
    assert acl["status"] == "error"
    assert "+xadd (writes the records)" in acl["detail"]
    assert "~mb:status:* for hset (refused on mb:status:binance)" in acl["detail"]
    assert "~mb:status:* for expire" in acl["detail"]
    assert method in acl["detail"]
    assert acl["detail"].endswith(f"ACL SETUSER {user} +xadd ~mb:status:*")
    assert "+xrevrange" not in acl["detail"].split("grant")[0]  # it has that one
    # the table names them too, and says how it ends
    r = invoke(*args, "--exchange-url", fake_url, env=env)
    assert r.exit_code == 2
    assert "+xadd" in r.stdout and "~mb:status:*" in r.stdout and "exit 2" in r.stdout


def test_roles_are_checked_against_their_own_commands(acl_server: RedisServer) -> None:
    def acl_of(user: str, role: str) -> tuple[int, dict[str, Any]]:
        args, env = as_user(acl_server, user)
        nowhere = f"http://127.0.0.1:{free_port()}"  # an exchange that warns, never errs
        code, checks = doctor(*args, "--role", role, "--exchange-url", nowhere, env=env)
        markets = any(n.startswith("markets:") for n in checks)
        assert markets is (role == "publisher")  # consumers never talk to an exchange
        return code, checks["acl"]

    code, acl = acl_of("consumer", "consumer")
    assert (code, acl["status"]) == (0, "ok")
    assert "7 commands role consumer" in acl["detail"]
    code, acl = acl_of("archive", "archive")
    assert (code, acl["status"]) == (0, "ok")
    code, acl = acl_of("consumer", "publisher")
    assert code == 2 and "+xadd" in acl["detail"] and "+hset" in acl["detail"]
    code, acl = acl_of("publisher", "consumer")
    assert code == 2
    for cmd in ("+xreadgroup", "+xautoclaim", "+xgroup|create", "+xack", "+scan"):
        assert cmd in acl["detail"], cmd
    code, acl = acl_of("consumer", "archive")  # a group member, but no EXISTS, XPENDING
    for cmd in ("+exists", "+xpending"):
        assert code == 2 and cmd in acl["detail"], cmd


def test_the_doctor_writes_nothing(acl_server: RedisServer) -> None:
    """Its probes fail after the ACL check or only read: streams, groups, pending entries,
    status and control keys are the same afterwards, through ACL DRYRUN and through probes."""
    admin = redis.Redis.from_url(acl_server.url)
    admin.flushall()
    for i in range(5):
        admin.xadd(TRADES, {"d": f"x{i}"})
    admin.xgroup_create(TRADES, "bots", id="0")
    admin.xreadgroup("bots", "b1", {TRADES: ">"}, count=2)  # two pending
    admin.hset(status_key("binance"), mapping={"state": "CONNECTED"})
    admin.expire(status_key("binance"), 300)
    admin.xadd(control_stream("binance"), {"op": "+"})
    admin.hset(subscriptions_key("binance"), "k", "v")

    def snapshot() -> dict[str, Any]:
        out: dict[str, Any] = {"dbsize": admin.dbsize()}
        for k in sorted(admin.scan_iter(match="*")):
            kind = admin.type(k)
            if kind == b"stream":
                groups = admin.xinfo_groups(k)
                out[k] = (admin.xrange(k), [(g["name"], g["pending"]) for g in groups])
            else:
                out[k] = (admin.hgetall(k), admin.ttl(k) > 0)
        return out

    before = snapshot()
    assert before["dbsize"] == 4
    for user in ("default", "everything"):
        for role in ("publisher", "consumer", "archive"):
            env = {} if user == "default" else as_user(acl_server, user)[1]
            _, checks = doctor("--redis-url", acl_server.url, "--role", role,
                               "--symbols", "BTC/USDT", "--channels", "trades",
                               "--exchange-url", f"http://127.0.0.1:{free_port()}", env=env)  # fmt: skip
            assert checks["acl"]["status"] == "ok", checks["acl"]
            method = "ACL DRYRUN" if user == "default" else "probe commands"
            assert method in checks["acl"]["detail"]
    assert snapshot() == before
    admin.close()


# -- persistence, eviction, memory -------------------------------------------------------------


def test_aof_on_is_all_good_and_aof_off_a_warning(fake_url: str) -> None:
    with running_redis("--appendonly", "yes") as server:
        code, checks = doctor("--redis-url", server.url, "--exchange-url", fake_url, "--strict")
    assert code == 0, checks
    assert set(statuses(checks).values()) == {"ok"}
    assert checks["persistence"]["detail"] == "AOF on"
    assert "ACL DRYRUN" in checks["acl"]["detail"]
    with running_redis() as server:  # appendonly no, save ""
        code, checks = doctor("--redis-url", server.url, "--exchange-url", fake_url)
        assert code == 0
        assert checks["persistence"]["status"] == "warn"
        assert "restart loses every stream" in checks["persistence"]["detail"]
        code, _ = doctor("--redis-url", server.url, "--exchange-url", fake_url, "--strict")
        assert code == 1
        r = invoke("--redis-url", server.url, "--exchange-url", fake_url)
        assert r.exit_code == 0 and "restart loses every stream" in r.stdout
    with running_redis("--save", "3600 1") as server:
        _, checks = doctor("--redis-url", server.url, "--role", "consumer")
        assert checks["persistence"]["status"] == "ok"
        assert "RDB snapshots" in checks["persistence"]["detail"]


def test_an_evicting_policy_and_a_maxmemory_too_small_warn() -> None:
    with running_redis("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru") as server:
        code, checks = doctor("--redis-url", server.url, "--role", "consumer")
        assert code == 0
        assert checks["eviction"]["status"] == "warn"
        assert "allkeys-lru" in checks["eviction"]["detail"]
        assert checks["capacity"]["status"] == "warn"
        assert "does not fit" in checks["capacity"]["detail"]
        assert "10 streams x MAXLEN ~100,000" in checks["capacity"]["detail"]
        # a MAXLEN that fits: the capacity warning goes, the eviction one stays
        code, checks = doctor("--redis-url", server.url, "--role", "consumer",
                              env={"MARKETBUS_REDIS__MAXLEN": "10000"})  # fmt: skip
        assert checks["capacity"]["status"] == "ok", checks["capacity"]
        assert checks["eviction"]["status"] == "warn"


# -- Redis down, bad credentials, TLS ----------------------------------------------------------


def test_redis_down_is_an_error_and_the_exchange_is_still_checked(fake_url: str) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    code, checks = doctor("--redis-url", down, "--exchange-url", fake_url, "--symbols", "BTCUSDT")
    assert code == 2
    assert statuses(checks) == {"config": "ok", "redis": "error", "markets:binance": "ok"}
    assert "not reachable" in checks["redis"]["detail"]
    assert down in checks["redis"]["detail"]


def test_a_wrong_password_is_an_error_that_does_not_show_it(acl_server: RedisServer) -> None:
    args, env = as_user(acl_server, "publisher", password="not-the-" + SECRET)
    r = invoke("--json", *args, "--role", "consumer", env=env)
    assert r.exit_code == 2
    checks = {c["check"]: c for c in json.loads(r.stdout)["checks"]}
    assert "credentials" in checks["redis"]["detail"]
    assert SECRET not in r.stdout + r.stderr


def test_tls_with_the_configured_ca(tls_server: tuple[RedisServer, Path]) -> None:  # noqa: F811
    server, cert = tls_server
    code, checks = doctor("--redis-url", server.url, "--role", "consumer",
                          env={"MARKETBUS_REDIS__TLS_CA_FILE": str(cert)})  # fmt: skip
    assert checks["redis"]["status"] == "ok" and "over TLS" in checks["redis"]["detail"]
    assert code == 0
    code, checks = doctor("--redis-url", server.url, "--role", "consumer")  # no CA: untrusted
    assert code == 2 and "certificate" in checks["redis"]["detail"].lower()


# -- configuration -----------------------------------------------------------------------------


def test_a_bad_configuration_exits_2_naming_each_bad_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[redis]\nmaxlen = 0\n\n[[exchanges]]\nname = "binance"\nchannels = ["tick"]\n')
    code, checks = doctor("--config", str(bad))
    assert code == 2
    assert list(checks) == ["config"]  # nothing else can be checked
    detail = checks["config"]["detail"]
    assert "redis.maxlen" in detail and "exchanges.0.channels" in detail and "'tick'" in detail
    # from the environment and from flags alike
    _, checks = doctor(env={"MARKETBUS_REDIS__MAXLEN": "lots"})
    assert "redis.maxlen" in checks["config"]["detail"]
    assert "'lots'" in checks["config"]["detail"]
    code, checks = doctor("--exchange", "nope")
    assert code == 2 and "'nope'" in checks["config"]["detail"]
    code, checks = doctor("--redis-password-file", str(tmp_path / "missing.pw"))
    assert code == 2 and "redis.password_file" in checks["config"]["detail"]
    # the table says it too
    r = invoke("--config", str(bad))
    assert r.exit_code == 2 and "redis.maxlen" in r.stdout and "exit 2" in r.stdout


def test_the_config_file_is_what_is_checked(acl_server: RedisServer, tmp_path: Path) -> None:
    cfg = tmp_path / "marketbus.toml"
    cfg.write_text(
        f'[redis]\nurl = "{acl_server.url}"\nmaxlen = 1000\n\n'
        '[[exchanges]]\nname = "binance"\nsymbols = ["BTC/USDT"]\nchannels = ["book"]\n'
    )
    code, checks = doctor("--config", str(cfg), "--role", "archive")
    assert code == 0, checks
    assert f"file {cfg}" in checks["config"]["detail"]
    assert "1 streams x MAXLEN ~1,000" in checks["capacity"]["detail"]


# -- exchanges and symbols ---------------------------------------------------------------------


def test_symbols_are_resolved_against_the_fake_exchange(
    acl_server: RedisServer, fake_url: str
) -> None:
    base = ("--redis-url", acl_server.url, "--exchange-url", fake_url)
    code, checks = doctor(*base, "--symbols", "btc-usdt,ETHUSDT")
    m = checks["markets:binance"]
    assert m["status"] == "ok", m
    assert "btc-usdt -> BTC/USDT" in m["detail"] and "ETHUSDT -> ETH/USDT" in m["detail"]
    assert fake_url in m["detail"]
    code, checks = doctor(*base, "--symbols", "BTC/USDT,NOPE/USDT")
    assert code == 2
    m = checks["markets:binance"]
    assert m["status"] == "error"
    assert "unknown symbol 'NOPE/USDT' on binance" in m["detail"]
    assert "BTC/USDT" not in m["detail"].split(";")[0]


def test_an_unreachable_exchange_is_a_warning_pointing_at_the_replay(
    acl_server: RedisServer,
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    base = ("--redis-url", acl_server.url, "--exchange-url", nowhere, "--timeout", "5")
    code, checks = doctor(*base)
    m = checks["markets:binance"]
    assert m["status"] == "warn"
    assert "unreachable" in m["detail"] and "make run" in m["detail"]
    assert code == 0
    assert doctor(*base, "--strict")[0] == 1


# -- the real command --------------------------------------------------------------------------


def test_in_a_real_process(acl_server: RedisServer) -> None:
    """``python -m marketbus_cli`` (what the console script runs): exit codes cross the process
    boundary, --json is the whole of stdout, and nothing prints a traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKETBUS_")}
    env.pop("REDIS_URL", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "marketbus_cli", "doctor", "--role", "consumer", *args],
            capture_output=True, text=True, timeout=60, cwd=ROOT, env={**env, "COLUMNS": "200"},
        )  # fmt: skip

    down = run("--json", "--redis-url", f"redis://127.0.0.1:{free_port()}/0")
    assert down.returncode == 2
    assert json.loads(down.stdout)["summary"]["error"] == 1
    up = run("--redis-url", acl_server.url)
    assert up.returncode == 0
    assert "marketbus doctor (role consumer)" in up.stdout and "exit 0" in up.stdout
    for p in (down, up):
        assert "Traceback" not in p.stdout + p.stderr
