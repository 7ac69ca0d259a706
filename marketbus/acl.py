"""What each role sends to Redis, as data: the commands, the keys they touch, and why.

The one place that defines a least-privilege Redis ACL user per role: ``marketbus doctor
--role`` checks a user against it and the security tests create their users from it
(:func:`acl_rules`). The lists follow what the code sends (``publisher/sink.py``,
``publisher/app.py``, ``publisher/control.py``, ``consumers/``, and for ``archive`` the
modules ``marketbus archive`` runs: ``archive/archiver.py``, ``archive/status.py``); a change
there belongs here.

Each need carries a *harmless form* of its command, used to ask Redis whether a user may run
it (``ACL DRYRUN``, or sending it where that is not permitted): Redis checks the ACL first,
and the form either only reads or is refused after that check (odd field count, a
non-numeric argument, an invalid entry id), so probing never writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from marketbus.keys import (
    CONTROL_PREFIX,
    DEFAULT_PREFIX,
    STATUS_PREFIX,
    SUBS_PREFIX,
    control_stream,
    status_key,
    stream_key,
    subscriptions_key,
    worker_id,
)
from marketbus.settings import Settings
from marketbus.symbols import normalize_symbol

STREAMS = f"{DEFAULT_PREFIX}:*"
STATUS = f"{STATUS_PREFIX}:*"
ARCHIVE_STATUS = f"{STATUS_PREFIX}:archive:*"  # archive.status: mb:status:archive:<name>
CONTROL = f"{CONTROL_PREFIX}:*"
SUBS = f"{SUBS_PREFIX}:*"
KEY = "{key}"  # stands for a key matching the need's pattern in ``probe``


FEATURES = {
    "control": "run-time subscription changes (marketbus subscribe) will be ignored",
    "memory-check": "the publisher cannot compare its streams with maxmemory at start",
    "archive-status": "the archiver writes no status hash: `marketbus archive status` will "
    "not see it",
    "trim-detection": "a consumer cannot count the entries trimmed before it read them "
    "(stats.trimmed stays 0, no history fill)",
    "trim-group-count": "a consumer group's lag stays inflated after a trim (the count is "
    "still right in each member's stats)",
    "window": "Consumer.window() cannot read the stream between the archive and the buffer",
}
"""What a role loses without an optional need, by feature."""


class Role(StrEnum):
    PUBLISHER = "publisher"
    CONSUMER = "consumer"
    ARCHIVE = "archive"  # a group member archiving every stream; writes only its own status


@dataclass(frozen=True)
class Need:
    """One command a role sends, on the keys of one pattern (``None``: no key)."""

    command: str  # the ACL name: ``xadd``, ``xgroup|create``
    probe: tuple[str, ...]  # a harmless form of it; ``{key}`` is replaced by a key
    pattern: str | None
    why: str
    feature: str | None = None  # optional: the role runs without it, with this feature off
    dryrun_only: bool = False  # no harmless form exists (MULTI): checked by ACL DRYRUN only

    @property
    def optional(self) -> bool:
        return self.feature is not None

    def args(self, key: str | None) -> tuple[str, ...]:
        return tuple(key if a == KEY and key is not None else a for a in self.probe)


_PING = Need("ping", ("PING",), None, "checks Redis at start")
_SCAN = ("SCAN", "0", "MATCH", f"{DEFAULT_PREFIX}:*", "COUNT", "1")
_TAIL = ("XREVRANGE", KEY, "+", "-", "COUNT", "1")
_LAST_ID = "18446744073709551615-18446744073709551615"  # nothing comes after it: reads nothing
_XREAD = ("XREAD", "COUNT", "1", "STREAMS", KEY, _LAST_ID)

ROLES: dict[Role, tuple[Need, ...]] = {
    Role.PUBLISHER: (
        _PING,
        Need("xadd", ("XADD", KEY, "*", "f", "v", "odd"), STREAMS, "writes the records"),
        Need(
            "xrevrange",
            _TAIL,
            STREAMS,
            "checks a stream's tail before re-sending a batch whose reply was lost",
        ),
        Need("hset", ("HSET", KEY, "f", "v", "odd"), STATUS, "writes the worker status"),
        Need("expire", ("EXPIRE", KEY, "not-a-number"), STATUS, "status heartbeat TTL"),
        Need(
            "xread",
            _XREAD,
            CONTROL,
            "follows the notices of run-time subscription changes",
            feature="control",
        ),
        Need(
            "xrevrange",
            _TAIL,
            CONTROL,
            "finds where the subscription-change notices end",
            feature="control",
        ),
        Need(
            "hgetall",
            ("HGETALL", KEY),
            SUBS,
            "reads the run-time subscription changes",
            feature="control",
        ),
        Need(
            "info",
            ("INFO", "memory"),
            None,
            "reads maxmemory to warn when the streams may not fit",
            feature="memory-check",
        ),
    ),
    Role.CONSUMER: (
        Need("scan", _SCAN, None, "finds the streams of markets given without a symbol"),
        Need("xrevrange", _TAIL, STREAMS, "backfills the latest entries at start"),
        Need("xread", _XREAD, STREAMS, "follows the streams"),
        Need(
            "xgroup|create",
            ("XGROUP", "CREATE", KEY, "g", "not-an-id"),
            STREAMS,
            "creates its consumer group",
        ),
        Need(
            "xreadgroup",
            ("XREADGROUP", "GROUP", "g", "c", "COUNT", "not-a-number", "STREAMS", KEY, ">"),
            STREAMS,
            "follows as a consumer-group member",
        ),
        Need("xack", ("XACK", KEY, "g", "not-an-id"), STREAMS, "acknowledges after its callback"),
        Need(
            "xautoclaim",
            ("XAUTOCLAIM", KEY, "g", "c", "0", "not-an-id"),
            STREAMS,
            "reclaims entries a crashed member left pending",
        ),
        Need(
            "xinfo|stream",
            ("XINFO", "STREAM", KEY),
            STREAMS,
            "counts the entries trimmed before it read them (entries-added)",
            feature="trim-detection",
        ),
        Need(
            "xinfo|groups",
            ("XINFO", "GROUPS", KEY),
            STREAMS,
            "counts what its group lost to trimming, and its lag",
            feature="trim-detection",
        ),
        Need(
            "multi",
            ("MULTI",),
            None,
            "reads the backfill and the stream's counters at one instant",
            feature="trim-detection",
            dryrun_only=True,
        ),
        Need(
            "exec",
            ("EXEC",),
            None,
            "reads the backfill and the stream's counters at one instant",
            feature="trim-detection",
        ),
        Need(
            "eval",
            ("EVAL", "return 1", "not-a-number"),
            None,
            "corrects its group's read count after a trim, once per group",
            feature="trim-group-count",
        ),
        Need(
            "xgroup|setid",
            ("XGROUP", "SETID", KEY, "g", "not-an-id"),
            STREAMS,
            "corrects its group's read count after a trim (inside the script)",
            feature="trim-group-count",
        ),
        Need(
            "xrange",
            ("XRANGE", KEY, "+", "-", "COUNT", "1"),
            STREAMS,
            "reads the stream between the archive and the ring buffer (window)",
            feature="window",
        ),
    ),
    Role.ARCHIVE: (
        Need("scan", _SCAN, None, "finds the streams (again, periodically, for new ones)"),
        Need("exists", ("EXISTS", KEY), STREAMS, "tells a lost group from a removed stream"),
        Need(
            "xgroup|create",
            ("XGROUP", "CREATE", KEY, "g", "not-an-id"),
            STREAMS,
            "creates its consumer group at 0 (everything the stream still holds)",
        ),
        Need(
            "xreadgroup",
            ("XREADGROUP", "GROUP", "g", "c", "COUNT", "not-a-number", "STREAMS", KEY, ">"),
            STREAMS,
            "reads as a consumer-group member",
        ),
        Need(
            "xack",
            ("XACK", KEY, "g", "not-an-id"),
            STREAMS,
            "acknowledges an entry once its Parquet file is on disk",
        ),
        Need(
            "xpending",
            ("XPENDING", KEY, "g", "-", "+", "not-a-number"),
            STREAMS,
            "finds members no longer running that left entries pending (it adopts them)",
        ),
        Need("xinfo|groups", ("XINFO", "GROUPS", KEY), STREAMS, "reads its group's lag"),
        Need(
            "hset",
            ("HSET", KEY, "f", "v", "odd"),
            ARCHIVE_STATUS,
            "writes its status (marketbus archive status)",
            feature="archive-status",
        ),
        Need(
            "expire",
            ("EXPIRE", KEY, "not-a-number"),
            ARCHIVE_STATUS,
            "status heartbeat TTL",
            feature="archive-status",
        ),
    ),
}


def needs(role: Role | str, *, optional: bool = True) -> tuple[Need, ...]:
    return tuple(n for n in ROLES[Role(role)] if optional or not n.optional)


def acl_rules(role: Role | str, *, optional: bool = True) -> str:
    """The ``ACL SETUSER`` rules (after ``on >password``) granting exactly what ``role`` needs."""
    chosen = needs(role, optional=optional)
    patterns = dict.fromkeys(n.pattern for n in chosen if n.pattern is not None)
    commands = dict.fromkeys(n.command for n in chosen)
    return " ".join(
        ["resetkeys", *(f"~{p}" for p in patterns), "-@all", *(f"+{c}" for c in commands)]
    )


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _stream_keys(settings: Settings) -> Iterable[str]:
    for e in settings.exchanges:
        for s in e.symbols:
            for c in e.channels:
                try:
                    yield stream_key(e.name, normalize_symbol(s), c)
                except ValueError:  # a symbol no exchange lists: the markets check names it
                    continue


def configured_keys(settings: Settings) -> dict[str, tuple[str, ...]]:
    """pattern -> the keys of that pattern the configured publisher would touch.

    Symbols as configured, spelled as the exchange's unified symbol where spelling alone
    tells (``btc-usdt`` -> ``BTC/USDT``); the key list is what ACL key patterns are checked on.
    """
    workers = [worker_id(e.name, settings.instance) for e in settings.exchanges]
    return {
        STREAMS: _unique(_stream_keys(settings)),
        STATUS: _unique(status_key(w) for w in workers),
        CONTROL: _unique(control_stream(w) for w in workers),
        SUBS: _unique(subscriptions_key(w) for w in workers),
    }


__all__ = [
    "ARCHIVE_STATUS",
    "FEATURES",
    "ROLES",
    "Need",
    "Role",
    "acl_rules",
    "configured_keys",
    "needs",
]
