"""``marketbus doctor``: the operator's first command, and a container's pre-flight.

Gathers facts (Redis replies, the exchanges' market lists) with short timeouts and never
writes anything; :mod:`marketbus_cli.doctor_checks` turns them into checks. Permissions are
asked of Redis with ``ACL DRYRUN`` where the user may run it (Redis 7+), else by sending each
command in a form that Redis refuses *after* its ACL check (see :mod:`marketbus.acl`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import redis.exceptions as rex
from rich.console import Console
from rich.table import Table

from consumers.trims import (
    GroupInfo,
    StreamInfo,
    TrimInfoUnavailable,
    parse_groups,
    parse_stream_info,
)
from marketbus.acl import Need, Role, configured_keys, needs
from marketbus.capacity import estimate
from marketbus.errors import (
    ExchangeUnavailableError,
    FatalError,
    MarketbusError,
    RedisUnavailableError,
    UnknownSymbolError,
)
from marketbus.keys import stream_pattern
from marketbus.redaction import scrub
from marketbus.redis_client import connect, from_redis
from marketbus.settings import ExchangeSettings, Settings, redact_url
from marketbus_cli.doctor_checks import (
    LAG_SHARE,
    MIN_DRYRUN,
    AclFacts,
    Check,
    Denial,
    GroupLag,
    MarketFacts,
    RedisFacts,
    Status,
    check_config,
    check_markets,
    denial_of,
    exit_code,
    parse_version,
    redis_checks,
    summary,
    version_from_hello,
    version_from_info,
)

CONFIG_PARAMS = ("appendonly", "save", "maxmemory", "maxmemory-policy")
LAG_STREAMS = 10_000  # streams looked at for consumer-group lag, at most


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def _error_text(e: BaseException) -> str:
    return _text(e.args[0]) if e.args else str(e)


# -- Redis -------------------------------------------------------------------------------------


async def _version(client: Any) -> str | None:
    """From HELLO (no ACL rule needed), else INFO server."""
    try:
        version = version_from_hello(await client.execute_command("HELLO", "2"))
    except rex.ResponseError:
        version = None
    if version is None:
        try:
            info = await client.info("server")
        except rex.ResponseError:
            return None
        version = str(info.get("redis_version")) if isinstance(info, dict) else None
        version = version or version_from_info(_text(info))
    return version


async def _config(client: Any, user: str) -> tuple[dict[str, str] | None, str | None]:
    out: dict[str, str] = {}
    try:
        for name in CONFIG_PARAMS:
            reply = await client.execute_command("CONFIG", "GET", name)
            pairs = (
                reply.items()
                if isinstance(reply, dict)
                else zip(reply[0::2], reply[1::2], strict=True)
            )
            out.update({_text(k): _text(v) for k, v in pairs})
    except rex.NoPermissionError:
        return None, f"CONFIG GET is not permitted to user {user!r}"
    except rex.ResponseError as e:  # managed services that rename or disable CONFIG
        return None, f"CONFIG GET refused: {_error_text(e)}"
    return out, None


async def _from_info(client: Any) -> dict[str, str]:
    """What INFO tells of the same settings, for a user that may not run CONFIG GET (the
    publisher's optional ``INFO memory`` right): maxmemory and its policy, and whether AOF is
    on. Empty when INFO is refused too."""
    try:
        memory = await client.info("memory")
        persistence = await client.info("persistence")
    except rex.ResponseError:
        return {}
    out: dict[str, str] = {}
    if isinstance(memory, dict):
        if "maxmemory" in memory:
            out["maxmemory"] = str(memory["maxmemory"])
        if "maxmemory_policy" in memory:
            out["maxmemory-policy"] = str(memory["maxmemory_policy"])
    if isinstance(persistence, dict) and "aof_enabled" in persistence:
        out["appendonly"] = "yes" if int(persistence["aof_enabled"]) else "no"
    return out


async def _whoami(client: Any, settings: Settings) -> str:
    try:
        return _text(await client.execute_command("ACL", "WHOAMI"))
    except rex.ResponseError:  # not permitted (or Redis < 6): the configured name
        return settings.redis.username or urlsplit(settings.redis.url).username or "default"


def wanted(settings: Settings, role: Role) -> list[tuple[Need, str | None]]:
    """Each need of ``role`` with each configured key of its pattern."""
    keys = configured_keys(settings)
    out: list[tuple[Need, str | None]] = []
    for need in needs(role):
        if need.pattern is None:
            out.append((need, None))
            continue
        found = keys.get(need.pattern) or (need.pattern.replace("*", "{marketbus:doctor}"),)
        out += [(need, k) for k in found]
    return out


async def _pipelined(client: Any, commands: Sequence[tuple[str, ...]]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for args in commands:
        pipe.execute_command(*args)
    return list(await pipe.execute(raise_on_error=False))


async def _dryrun(
    client: Any, user: str, todo: Sequence[tuple[Need, str | None]]
) -> list[Denial] | None:
    """Denials by ``ACL DRYRUN``; None when this connection may not run it."""
    try:
        await client.execute_command("ACL", "DRYRUN", user, "PING")
    except rex.ResponseError:  # NOPERM for acl|dryrun, an unknown user, Redis < 7
        return None
    replies = await _pipelined(client, [("ACL", "DRYRUN", user, *n.args(k)) for n, k in todo])
    out = []
    for (need, key), reply in zip(todo, replies, strict=True):
        if isinstance(reply, rex.ResponseError):
            continue  # an argument DRYRUN did not like: not a refusal by the ACL
        if isinstance(reply, BaseException):
            raise reply
        what = denial_of(_text(reply))
        if what is not None:
            out.append(Denial(need, key, what))
    return out


async def _probe(client: Any, todo: Sequence[tuple[Need, str | None]]) -> list[Denial]:
    """Denials by sending each need's harmless form: NOPERM names a refusal (needs without
    one are left unchecked)."""
    todo = [(n, k) for n, k in todo if not n.dryrun_only]
    replies = await _pipelined(client, [n.args(k) for n, k in todo])
    out = []
    for (need, key), reply in zip(todo, replies, strict=True):
        if isinstance(reply, rex.ResponseError):
            what = denial_of(_error_text(reply))
            if what is not None:
                out.append(Denial(need, key, what))
        elif isinstance(reply, BaseException):
            raise reply
    return out


async def gather_acl(
    client: Any, settings: Settings, role: Role, version: str | None, user: str
) -> AclFacts:
    todo = wanted(settings, role)
    try:
        v = parse_version(version)
        how = "probe commands"
        if v is None or v >= MIN_DRYRUN:
            denials = await _dryrun(client, user, todo)
            if denials is not None:
                return AclFacts(user, "ACL DRYRUN", tuple(denials))
            how = "probe commands; ACL DRYRUN is not permitted to this user"
        return AclFacts(user, how, tuple(await _probe(client, todo)))
    except (rex.ConnectionError, rex.TimeoutError, OSError):
        raise
    except rex.RedisError as e:  # e.g. a cluster that cannot route a probe
        return AclFacts(user, "probe commands", error=f"{type(e).__name__}: {e}"[:300])


async def gather_redis(settings: Settings, role: Role, timeout: float) -> RedisFacts:
    rs = settings.redis
    facts = RedisFacts(redact_url(rs.url), tls=urlsplit(rs.url).scheme == "rediss")
    user = rs.username or urlsplit(rs.url).username
    client: Any = None
    try:
        async with asyncio.timeout(timeout):
            client = connect(rs, retries=0, socket_timeout=timeout)
            version = await _version(client)  # the first command: connects, authenticates
            whoami = await _whoami(client, settings)
            config, config_error = await _config(client, whoami)
            if config is None:
                config = await _from_info(client) or None
            acl = await gather_acl(client, settings, role, version, whoami)
            lag = await gather_lag(client, settings.redis.maxlen)
            archivers = await gather_archivers(client)
    except TimeoutError:
        return _with(facts, user=user, error=f"no answer within {timeout:g} s")
    except MarketbusError as e:
        return _with(facts, user=user, error=str(e))
    except (rex.RedisError, OSError) as e:
        err = from_redis(e)
        if isinstance(err, RedisUnavailableError):
            return _with(facts, user=user, error=f"not reachable: {err}")
        return _with(facts, user=user, error=str(err))
    finally:
        if client is not None:
            await client.aclose()
    return RedisFacts(
        facts.target, facts.tls, whoami, None, version, config, config_error, acl, lag,
        archivers,
    )  # fmt: skip


async def gather_lag(client: Any, maxlen: int) -> tuple[GroupLag, ...] | None:
    """How far behind each consumer group of each ``md:*`` stream is (``XINFO``, read only).
    None when this user may not look, or Redis has no ``entries-added`` (before 7.0)."""
    try:
        keys: list[Any] = []
        async for k in client.scan_iter(match=stream_pattern(), count=1000, _type="stream"):
            keys.append(k)
            if len(keys) >= LAG_STREAMS:
                break
        if not keys:
            return ()
        pipe = client.pipeline(transaction=False)
        for k in keys:  # raw replies: HELLO 2 above may have changed the protocol under redis-py
            pipe.execute_command("XINFO", "STREAM", k)
            pipe.execute_command("XINFO", "GROUPS", k)
        replies = await pipe.execute(raise_on_error=False)
        out: list[GroupLag] = []
        for i, k in enumerate(keys):
            stream, groups = replies[2 * i], replies[2 * i + 1]
            for reply in (stream, groups):
                if isinstance(reply, rex.NoPermissionError):
                    return None
            if isinstance(stream, BaseException) or isinstance(groups, BaseException):
                continue  # deleted since SCAN (or not a stream any more)
            info = parse_stream_info(stream)
            for g in parse_groups(groups).values():
                out.append(await _group_lag(client, _text(k), info, g, maxlen))
    except (rex.NoPermissionError, TrimInfoUnavailable):
        return None
    return tuple(out)


async def gather_archivers(client: Any) -> tuple[dict[str, Any], ...] | None:
    """The status hashes the archivers write (``mb:status:archive:<name>``, read only); None
    when this user may not read them."""
    from archive.status import STATUS_PATTERN, parse_status

    out = []
    try:
        async for key in client.scan_iter(match=STATUS_PATTERN, count=100, _type="hash"):
            reply = await client.execute_command("HGETALL", key)
            if isinstance(reply, list):  # a raw RESP2 reply: field, value, ...
                reply = dict(zip(reply[0::2], reply[1::2], strict=False))
            fields = {_text(k).encode(): _text(v).encode() for k, v in dict(reply).items()}
            status = parse_status(fields)
            if status is not None:
                out.append(status)
    except rex.NoPermissionError:
        return None
    return tuple(out)


async def _group_lag(
    client: Any, key: str, info: StreamInfo, g: GroupInfo, maxlen: int
) -> GroupLag:
    """A group's distance from the stream's newest entry. Redis' ``lag`` counts entries
    trimmed before the group read them as unread (a group that lost some stays "behind"
    them), so a lag that would warn is counted again on what the stream holds."""
    cap = info.length if info.trimmed_ever else maxlen
    trimmed = 0
    if g.last_delivered >= info.last_generated:
        behind = 0
    elif info.first is None or g.last_delivered < info.first:
        behind = info.length  # everything held is after it; what was before it is gone
        if g.entries_read is not None:
            trimmed = max(info.below_first - g.entries_read, 0)
    else:
        behind = info.length if g.lag is None else min(g.lag, info.length)
        limit = int(LAG_SHARE * cap) + 1
        if behind >= limit:
            ld = f"{g.last_delivered[0]}-{g.last_delivered[1]}"
            try:
                held = len(await client.xrange(key, min=f"({ld}", max="+", count=limit))
            except rex.ResponseError:
                held = limit
            behind = held if held < limit else behind
    return GroupLag(key, g.name, behind, cap, g.pending, trimmed)


def _with(facts: RedisFacts, *, user: str | None, error: str) -> RedisFacts:
    return RedisFacts(facts.target, facts.tls, user, error)


# -- exchanges ---------------------------------------------------------------------------------


async def gather_markets(cfg: ExchangeSettings, timeout: float) -> MarketFacts:
    """Load the exchange's markets with the client the publisher builds; resolve each symbol."""
    from marketbus.symbols import SymbolResolver
    from publisher.ccxt_client import make_client
    from publisher.errors_map import from_ccxt

    url = cfg.url
    try:
        client = make_client(cfg, None)
    except MarketbusError as e:
        return MarketFacts(cfg.bus_name, url, error=str(e), fatal=True)
    client.timeout = int(timeout * 1000)  # CCXT's per-request timeout, ms
    try:
        async with asyncio.timeout(timeout):
            await client.load_markets()
    except TimeoutError:
        return MarketFacts(
            cfg.bus_name, url, error=f"no answer within {timeout:g} s", unreachable=True
        )
    except Exception as e:
        err = from_ccxt(e)
        return MarketFacts(
            cfg.bus_name,
            url,
            error=str(err)[:300],
            unreachable=isinstance(err, ExchangeUnavailableError),
            fatal=isinstance(err, FatalError),
        )
    finally:
        await client.close()
    resolver = SymbolResolver(cfg.name, client.markets.values())
    resolved: dict[str, str] = {}
    unknown: list[str] = []
    for raw in cfg.symbols:
        try:
            resolved[raw] = resolver.resolve(raw)
        except UnknownSymbolError as e:
            unknown.append(str(e))
    return MarketFacts(
        cfg.bus_name, url, markets=len(client.markets), resolved=resolved, unknown=tuple(unknown)
    )


# -- the command -------------------------------------------------------------------------------


def config_summary(settings: Settings, config: Path | None) -> str:
    """Where the settings came from and what they ask for, in one line."""
    sources = [f"file {config}" if config else "no file"]
    env = sorted(k for k in os.environ if k.startswith("MARKETBUS_"))
    if env:
        sources.append(f"{len(env)} MARKETBUS_* variable(s)")
    exchanges = ", ".join(
        f"{e.bus_name}: {len(e.symbols)} symbol(s) x {','.join(c.value for c in e.channels)}"
        for e in settings.exchanges
    )
    return f"valid ({' + '.join(sources)}): {exchanges}; maxlen {settings.redis.maxlen:,}"


async def diagnose(settings: Settings, role: Role, timeout: float) -> list[Check]:
    """Every check but the configuration's own (valid by now)."""
    markets: list[asyncio.Task[MarketFacts]] = []
    async with asyncio.TaskGroup() as tg:
        redis_task = tg.create_task(gather_redis(settings, role, timeout))
        if role is Role.PUBLISHER:  # consumers and archivers never talk to an exchange
            markets = [tg.create_task(gather_markets(e, timeout)) for e in settings.exchanges]
    control = role is Role.PUBLISHER and settings.control
    checks = redis_checks(redis_task.result(), role, estimate(settings), control)
    return checks + [check_markets(t.result()) for t in markets]


def run(
    settings: Settings | None, config_error: str | None, config: Path | None,
    role: Role, timeout: float,
) -> list[Check]:  # fmt: skip
    """The configuration's check, then (when it is valid) every other."""
    checks = [check_config(config_error or "invalid configuration", "")]
    if settings is not None:
        try:
            settings.redis.resolved_password()  # a password file we cannot read: config error
        except MarketbusError as e:
            checks = [check_config(str(e), "")]
        else:
            head = check_config(None, config_summary(settings, config))
            checks = [head, *asyncio.run(diagnose(settings, role, timeout))]
    # the details quote what the settings, Redis and the exchanges said: never a credential
    return [Check(c.name, c.status, scrub(c.detail)) for c in checks]


_STYLE = {Status.OK: "green", Status.WARN: "yellow", Status.ERROR: "bold red"}


def render(checks: Sequence[Check], role: Role, strict: bool, console: Console) -> None:
    table = Table(title=f"marketbus doctor (role {role})", title_justify="left")
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for c in checks:
        table.add_row(c.name, f"[{_STYLE[c.status]}]{c.status}[/]", c.detail)
    console.print(table)
    n = summary(checks)
    code = exit_code(checks, strict)
    if n["warn"] == n["error"] == 0:
        console.print(f"all good (exit {code})")
    else:
        console.print(f"{n['error']} error(s), {n['warn']} warning(s): exit {code}")


def as_json(checks: Sequence[Check], role: Role, strict: bool) -> str:
    data = {
        "role": role.value,
        "strict": strict,
        "exit_code": exit_code(checks, strict),
        "summary": summary(checks),
        "checks": [c.as_dict() for c in checks],
    }
    return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n"


__all__ = [
    "as_json",
    "config_summary",
    "diagnose",
    "exit_code",
    "gather_archivers",
    "gather_lag",
    "gather_markets",
    "gather_redis",
    "render",
    "run",
    "wanted",
]
