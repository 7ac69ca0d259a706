"""``marketbus doctor``'s verdicts: pure functions from gathered facts to checks.

``marketbus_cli.doctor`` gathers the facts (settings, Redis replies, exchange markets); every
judgement lives here, so each threshold and message is unit-tested without a server.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from archive.status import health, status_line
from marketbus.acl import FEATURES, Need, Role, needs
from marketbus.capacity import Estimate, fits, human_bytes

MIN_STREAMS = (5, 0)
MIN_GROUPS = (6, 2)  # XAUTOCLAIM: a consumer group reclaims what a crashed member left
MIN_DRYRUN = (7, 0)
NOT_EVICTING = ("noeviction",)  # and volatile-*: stream keys carry no TTL
OFFLINE_HINT = "`make run` would replay the bundled recording from the fake exchange instead"


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    ERROR = "error"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status.value, "detail": self.detail}


@dataclass(frozen=True)
class Denial:
    """Redis refused ``need`` for this user: its command, or ``key``."""

    need: Need
    key: str | None
    what: str  # "command" or "key"


@dataclass(frozen=True)
class AclFacts:
    user: str
    method: str  # "ACL DRYRUN" or "probes"
    denials: tuple[Denial, ...] = ()
    error: str | None = None  # the permissions could not be checked


@dataclass(frozen=True)
class GroupLag:
    """One consumer group on one ``md:*`` stream, as ``XINFO`` tells it."""

    stream: str
    group: str
    behind: int  # entries the stream holds after the group's last delivered one
    cap: int  # the stream's length cap: its length once trimmed, else the configured MAXLEN
    pending: int = 0  # delivered, not acknowledged
    trimmed: int = 0  # entries trimmed before the group read them, which it has not passed yet


@dataclass(frozen=True)
class RedisFacts:
    target: str  # the URL, password redacted
    tls: bool = False
    user: str | None = None
    error: str | None = None  # not reachable, or refused our credentials
    version: str | None = None
    config: Mapping[str, str] | None = None  # CONFIG GET replies; None: not permitted
    config_error: str | None = None
    acl: AclFacts | None = None
    lag: tuple[GroupLag, ...] | None = None  # None: not looked at (not permitted, Redis < 7)
    # the archivers' status hashes (archive.status); None: not looked at (not permitted)
    archivers: tuple[dict[str, Any], ...] | None = None


@dataclass(frozen=True)
class MarketFacts:
    exchange: str
    url: str | None = None
    error: str | None = None
    unreachable: bool = False  # network, timeout, 5xx: the error passes (warning)
    fatal: bool = False  # retrying cannot help (not supported, refused credentials)
    markets: int = 0
    resolved: Mapping[str, str] = field(default_factory=dict)  # configured -> unified symbol
    unknown: tuple[str, ...] = ()  # one message per unknown symbol, naming it


# -- parsing Redis replies ---------------------------------------------------------------------

_NOPERM_COMMAND = re.compile(r"no permissions to run the '([^']+)' command", re.IGNORECASE)
_NOPERM_KEY = re.compile(r"no permissions to access (the '[^']*' key|one of the keys)", re.I)


def denial_of(reply: str) -> str | None:
    """``"command"`` or ``"key"`` when ``reply`` (an ``ACL DRYRUN`` answer or a NOPERM error)
    refuses, else None."""
    if _NOPERM_COMMAND.search(reply):
        return "command"
    if _NOPERM_KEY.search(reply):
        return "key"
    return None


def parse_version(text: str | None) -> tuple[int, ...] | None:
    """``"7.0.15"`` -> ``(7, 0, 15)``; None when there is no version to read."""
    if not text:
        return None
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    return tuple(int(g) for g in m.groups() if g is not None) if m else None


def version_from_hello(reply: Any) -> str | None:
    """The ``version`` of a HELLO reply (a flat RESP2 list or a RESP3 map)."""
    if isinstance(reply, Mapping):
        items = list(reply.items())
    elif isinstance(reply, Sequence) and not isinstance(reply, bytes | str):
        items = list(zip(reply[0::2], reply[1::2], strict=False))
    else:
        return None
    for k, v in items:
        if _text(k) == "version":
            return _text(v)
    return None


def version_from_info(text: str) -> str | None:
    m = re.search(r"^redis_version:(\S+)", text, re.MULTILINE)
    return m.group(1) if m else None


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


# -- checks ------------------------------------------------------------------------------------


def check_config(error: str | None, summary: str) -> Check:
    if error is not None:
        return Check("config", Status.ERROR, error)
    return Check("config", Status.OK, summary)


def check_redis(facts: RedisFacts) -> Check:
    who = f" as {facts.user!r}" if facts.user else ""
    tls = " over TLS" if facts.tls else ""
    if facts.error is not None:
        return Check("redis", Status.ERROR, f"{facts.target}{who}: {facts.error}")
    return Check("redis", Status.OK, f"connected to {facts.target}{who}{tls}")


def check_version(version: str | None, role: Role) -> Check:
    v = parse_version(version)
    if v is None:
        return Check("version", Status.WARN, "unknown: HELLO and INFO were refused")
    if v < MIN_STREAMS:
        return Check("version", Status.ERROR, f"Redis {version}: streams need 5.0 or later")
    if role is Role.CONSUMER and v < MIN_GROUPS:
        return Check(
            "version",
            Status.ERROR,
            f"Redis {version}: consumer groups need XAUTOCLAIM (6.2 or later) to reclaim "
            "what a crashed member left pending",
        )
    note = "" if v >= MIN_GROUPS else " (consumer groups would need 6.2+ for XAUTOCLAIM)"
    return Check("version", Status.OK, f"Redis {version}{note}")


def _missing(denials: Sequence[Denial]) -> str:
    """``+xadd (writes the records); ~md:* for xrevrange (refused on md:{...}:ticker)``."""
    parts: list[str] = []
    by_need: dict[Need, list[Denial]] = {}
    for d in denials:
        by_need.setdefault(d.need, []).append(d)
    for need, ds in by_need.items():
        if any(d.what == "command" for d in ds):
            parts.append(f"+{need.command} ({need.why})")
        else:
            keys = [d.key for d in ds if d.key]
            more = f" and {len(keys) - 1} more" if len(keys) > 1 else ""
            parts.append(f"~{need.pattern} for {need.command} (refused on {keys[0]}{more})")
    return "; ".join(dict.fromkeys(parts))


def _grant(denials: Sequence[Denial]) -> str:
    """The ACL rules that would lift ``denials``: ``+xadd ~md:*``."""
    rules = []
    for d in denials:
        if d.what == "command":
            rules.append(f"+{d.need.command}")
        elif d.need.pattern is not None:
            rules.append(f"~{d.need.pattern}")
    return " ".join(dict.fromkeys(rules))


def check_acl(role: Role, acl: AclFacts | None, control: bool) -> list[Check]:
    """Missing required permissions are an error; each optional feature whose permissions are
    missing a warning (``control``: only while the publisher follows run-time changes)."""
    if acl is None:
        return []
    if acl.error is not None:
        return [Check("acl", Status.WARN, f"user {acl.user!r}: not checked: {acl.error}")]
    required = [d for d in acl.denials if not d.need.optional]
    how = f"checked with {acl.method}"
    out = []
    if required:
        out.append(
            Check(
                "acl",
                Status.ERROR,
                f"user {acl.user!r} lacks what role {role} needs: {_missing(required)} "
                f"({how}); grant it: ACL SETUSER {acl.user} {_grant(required)}",
            )
        )
    else:
        n = len({n.command for n in needs(role, optional=False)})
        ok = f"user {acl.user!r} may run the {n} commands role {role} needs on its keys"
        out.append(Check("acl", Status.OK, f"{ok} ({how})"))
    by_feature: dict[str, list[Denial]] = {}
    for d in acl.denials:
        if d.need.feature is not None and (control or d.need.feature != "control"):
            by_feature.setdefault(d.need.feature, []).append(d)
    for feature, ds in by_feature.items():
        out.append(
            Check(
                f"acl-{feature}",
                Status.WARN,
                f"user {acl.user!r}: {FEATURES[feature]}: {_missing(ds)}; grant it: "
                f"ACL SETUSER {acl.user} {_grant(ds)}",
            )
        )
    return out


def _config_unknown(name: str, what: str, error: str | None) -> Check:
    why = error or "CONFIG GET refused"
    return Check(name, Status.WARN, f"unknown: {why} ({what} not checked)")


def check_persistence(config: Mapping[str, str] | None, error: str | None = None) -> Check:
    if config is None or "appendonly" not in config:
        return _config_unknown("persistence", "AOF and RDB settings", error)
    aof = config["appendonly"].strip().lower() == "yes"
    save = config.get("save")
    if aof:
        rdb = f", RDB save {save.strip()!r}" if save and save.strip() else ""
        return Check("persistence", Status.OK, f"AOF on{rdb}")
    if save is None:  # read from INFO: the snapshot schedule is not there
        why = error or "CONFIG GET refused"
        return Check(
            "persistence",
            Status.WARN,
            f"AOF off, RDB snapshots unknown ({why}): without them a restart loses the streams",
        )
    if save.strip():
        return Check(
            "persistence",
            Status.OK,
            f"RDB snapshots (save {save.strip()!r}); AOF off: a crash loses what came after "
            "the last snapshot",
        )
    return Check(
        "persistence",
        Status.WARN,
        "off (appendonly no, save ''): a Redis restart loses every stream",
    )


def check_eviction(config: Mapping[str, str] | None, error: str | None = None) -> Check:
    if config is None or "maxmemory-policy" not in config:
        return _config_unknown("eviction", "maxmemory-policy", error)
    policy = config["maxmemory-policy"].strip().lower()
    if policy in NOT_EVICTING:
        return Check(
            "eviction",
            Status.OK,
            "noeviction: a full Redis refuses writes (the publisher spools them) and "
            "never drops a stream",
        )
    if policy.startswith("volatile-"):
        return Check(
            "eviction", Status.OK, f"{policy}: evicts keys with a TTL only; streams have none"
        )
    return Check(
        "eviction",
        Status.WARN,
        f"{policy}: when maxmemory is reached Redis may evict whole stream keys; use "
        "noeviction (or a volatile-* policy)",
    )


def check_capacity(
    est: Estimate, config: Mapping[str, str] | None, error: str | None = None
) -> Check:
    need = f"{est.streams} streams x MAXLEN ~{est.maxlen:,} may hold ~{human_bytes(est.bytes)}"
    raw = None if config is None else config.get("maxmemory")
    try:
        maxmemory = int(raw) if raw is not None else None
    except ValueError:
        maxmemory = None
    if maxmemory is None:
        why = error or "CONFIG GET refused"
        return Check("capacity", Status.WARN, f"{need}; maxmemory unknown: {why}")
    if maxmemory <= 0:
        return Check(
            "capacity", Status.OK, f"{need}; no maxmemory set: the host's memory is the limit"
        )
    share = est.bytes / maxmemory
    detail = f"{need}, {share:.0%} of maxmemory {human_bytes(maxmemory)}"
    if not fits(est.bytes, maxmemory):
        return Check(
            "capacity",
            Status.WARN,
            f"{detail}: does not fit with 10% headroom; lower redis.maxlen or raise maxmemory",
        )
    return Check("capacity", Status.OK, detail)


def check_markets(m: MarketFacts) -> Check:
    name = f"markets:{m.exchange}"
    where = f" at {m.url}" if m.url else ""
    if m.error is not None:
        if m.fatal:
            return Check(name, Status.ERROR, f"{m.exchange}{where}: {m.error}")
        if m.unreachable:
            return Check(
                name,
                Status.WARN,
                f"{m.exchange}{where} unreachable ({m.error}); {OFFLINE_HINT}",
            )
        return Check(name, Status.WARN, f"{m.exchange}{where}: markets not loaded: {m.error}")
    renamed = [f"{raw} -> {sym}" for raw, sym in m.resolved.items() if raw != sym]
    spelled = f" ({', '.join(renamed)})" if renamed else ""
    ok = f"{len(m.resolved)} symbol(s) listed{spelled}"
    if m.unknown:
        return Check(name, Status.ERROR, "; ".join(m.unknown) + f"; {ok}")
    return Check(name, Status.OK, f"{ok} among {m.markets} markets{where}")


LAG_SHARE = 0.5
"""A group this far behind, as a share of its stream's length cap, is warned about."""


def check_lag(groups: Sequence[GroupLag] | None, share: float = LAG_SHARE) -> Check | None:
    """Consumer groups (bots, the archiver's) close to losing entries: once a group is
    behind by the stream's MAXLEN, what it has not read is trimmed before it does. None
    when there is no group to look at."""
    if not groups:
        return None
    near = [g for g in groups if g.trimmed or g.behind > share * g.cap]
    if not near:
        worst = max(groups, key=lambda g: g.behind / max(g.cap, 1))
        streams = len({g.stream for g in groups})
        return Check(
            "lag",
            Status.OK,
            f"{len(groups)} consumer group(s) on {streams} stream(s); the furthest behind: "
            f"{_behind(worst)}",
        )
    near.sort(key=lambda g: (-g.trimmed, -g.behind / max(g.cap, 1)))
    parts = [_behind(g) for g in near[:5]]
    more = f"; and {len(near) - 5} more" if len(near) > 5 else ""
    return Check(
        "lag",
        Status.WARN,
        "; ".join(parts) + more + ": once a group is MAXLEN behind, what it has not read is "
        "trimmed unread; speed it up (or restart it), or raise redis.maxlen",
    )


def _behind(g: GroupLag) -> str:
    text = (
        f"group {g.group!r} on {g.stream} is {g.behind:,} entries behind "
        f"({g.behind / max(g.cap, 1):.0%} of its ~{g.cap:,} cap"
    )
    text += f", {g.pending:,} pending)" if g.pending else ")"
    if g.trimmed:
        text += f", {g.trimmed:,} entries were trimmed before it read them"
    return text


ARCHIVE_MAX_AGE_S = 30.0
"""An archiver's status older than this: it is not running (it writes it every 5 s)."""


def check_archivers(
    statuses: Sequence[dict[str, Any]] | None, now_ms: int, max_age_s: float = ARCHIVE_MAX_AGE_S
) -> list[Check]:
    """One line per archiver that reported a status (``marketbus archive``): ok while it
    archives, its status is fresh and its lag on its busiest stream is under half of MAXLEN
    (the window in which nothing is lost, docs/history.md); a warning saying which, else.
    None or no archiver: no line (archiving is optional)."""
    out = []
    for s in sorted(statuses or (), key=lambda s: str(s.get("name"))):
        ok, why = health(s, now_ms, max_age_s)
        detail = status_line(s, now_ms)
        out.append(Check(f"archive:{s.get('name')}", Status.OK if ok else Status.WARN,
                         detail if ok else f"{why} -- {detail}"))  # fmt: skip
    return out


def redis_checks(
    facts: RedisFacts, role: Role, est: Estimate | None, control: bool, now_ms: int | None = None
) -> list[Check]:
    out = [check_redis(facts)]
    if facts.error is not None:
        return out
    out.append(check_version(facts.version, role))
    out += check_acl(role, facts.acl, control)
    out.append(check_persistence(facts.config, facts.config_error))
    out.append(check_eviction(facts.config, facts.config_error))
    if est is not None:
        out.append(check_capacity(est, facts.config, facts.config_error))
    lag = check_lag(facts.lag)
    if lag is not None:
        out.append(lag)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return out + check_archivers(facts.archivers, now)


def exit_code(checks: Sequence[Check], strict: bool) -> int:
    """2 on any error; 1 on warnings with ``strict``; else 0."""
    statuses = {c.status for c in checks}
    if Status.ERROR in statuses:
        return 2
    return 1 if strict and Status.WARN in statuses else 0


def summary(checks: Sequence[Check]) -> dict[str, int]:
    return {s.value: sum(c.status is s for c in checks) for s in Status}


__all__ = [
    "AclFacts",
    "Check",
    "Denial",
    "GroupLag",
    "MarketFacts",
    "RedisFacts",
    "Status",
    "check_acl",
    "check_archivers",
    "check_capacity",
    "check_config",
    "check_eviction",
    "check_lag",
    "check_markets",
    "check_persistence",
    "check_redis",
    "check_version",
    "denial_of",
    "exit_code",
    "parse_version",
    "redis_checks",
    "summary",
]
