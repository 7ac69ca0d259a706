"""The archiver's status in Redis: a hash ``mb:status:archive:<name>`` with a TTL (a heartbeat,
like the publisher's ``mb:status:<exchange>``), so ``marketbus archive status`` (and any
operator with ``redis-cli HGETALL``) sees every archiver of a deployment, its lag against
MAXLEN, and whether it can write.

Fields: ``state`` (``archiving``, ``failing``: commits fail, nothing acknowledged;
``redis-down``; ``stopped``: written at a clean stop), ``updated_ms``, and ``stats``: JSON of
the archiver's figures (:class:`archive.ArchiverStats`) with its name, group, directory and the
MAXLEN its lag is compared with. (No ``json`` field: ``marketbus inspect`` reads that one as a
publisher worker's.)
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Any

import orjson
import structlog

from archive.archiver import Archiver
from marketbus.keys import status_key
from marketbus.redaction import scrub

log = structlog.get_logger("marketbus.archive")

LAG_WARN = 0.5
"""Lag (entries not archived, largest stream) over MAXLEN at which an archiver is unhealthy:
past it, an outage as long as the lag took to build loses entries to trimming."""


def archive_status_key(name: str) -> str:
    return status_key(f"archive:{name}")


STATUS_PATTERN = archive_status_key("*")


def state_of(a: Archiver, *, final: bool = False) -> str:
    if final:
        return "stopped"
    if not a.stats.writable:
        return "failing"
    return "archiving" if a.stats.redis_up else "redis-down"


def status_fields(
    a: Archiver, *, maxlen: int | None, started_at: float, final: bool = False
) -> dict[str, str]:
    now = time.time()
    stats = asdict(a.stats)
    lag_max = stats.get("lag_max")
    data: dict[str, Any] = {
        "name": a.config.name, "group": a.config.group, "dir": str(a.dir),
        "state": state_of(a, final=final), "updated_ms": int(now * 1000),
        "uptime_s": round(now - started_at, 1), "maxlen": maxlen,
        "lag_ratio": None if lag_max is None or not maxlen else round(lag_max / maxlen, 4),
        **stats,
    }  # fmt: skip
    return {
        "state": data["state"],
        "updated_ms": str(data["updated_ms"]),
        "stats": scrub(orjson.dumps(data).decode()),  # an error text may quote a URL
    }


class StatusWriter:
    """Writes the status every ``interval_s`` (TTL: five intervals, at least 10 s)."""

    def __init__(self, archiver: Archiver, *, maxlen: int | None, interval_s: float = 5.0) -> None:
        self.archiver = archiver
        self.maxlen = maxlen
        self.interval_s = interval_s
        self.ttl = max(10, int(interval_s * 5))
        self.key = archive_status_key(archiver.config.name)
        self._started_at = time.time()
        self._failed = False

    async def write(self, *, final: bool = False) -> None:
        fields = status_fields(
            self.archiver, maxlen=self.maxlen, started_at=self._started_at, final=final
        )
        pipe = self.archiver.redis.pipeline(transaction=False)
        pipe.hset(self.key, mapping=fields)
        pipe.expire(self.key, self.ttl)
        await pipe.execute()

    async def run(self) -> None:
        """Until cancelled; a failed write is logged once until one succeeds (no ACL for the
        status hash is not fatal: the archive goes on, unseen by ``archive status``)."""
        while True:
            try:
                await self.write()
                self._failed = False
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if not self._failed:
                    log.warning("archive_status_write_failed", key=self.key, error=str(e)[:200])
                self._failed = True
            await asyncio.sleep(self.interval_s)


def parse_status(fields: dict[bytes, bytes]) -> dict[str, Any] | None:
    """A status hash as written above, or None for anything else."""
    raw = fields.get(b"stats")
    if raw is None:
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) and "name" in data else None


def health(status: dict[str, Any], now_ms: int, max_age_s: float) -> tuple[bool, str]:
    """(healthy, why) of one archiver's status."""
    name = status.get("name")
    age = (now_ms - int(status.get("updated_ms") or 0)) / 1000
    if age > max_age_s:
        return False, f"{name}: status {age:.0f} s old (not running?)"
    state = status.get("state")
    if state != "archiving":
        return False, f"{name} is {state}: {status.get('last_error') or ''}".rstrip(": ")
    ratio = status.get("lag_ratio")
    if isinstance(ratio, int | float) and ratio >= LAG_WARN:
        return False, (
            f"{name}: lag {status.get('lag_max')} entries on its busiest stream is "
            f"{ratio:.0%} of MAXLEN {status.get('maxlen')}: entries will be trimmed unread"
        )
    return True, f"{name} archiving, lag {status.get('lag')}"


def _count(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else "?"


def status_line(status: dict[str, Any], now_ms: int) -> str:
    """One archiver's figures on one line (``marketbus doctor`` and ``inspect``): its lag
    (entries not archived; on its busiest stream, against MAXLEN), rows and files written,
    the age of its last commit and of its status, its errors."""
    lag = f"lag {_count(status.get('lag'))} entries"
    ratio, maxlen = status.get("lag_ratio"), status.get("maxlen")
    if status.get("lag_max") is not None:
        lag += f" (busiest stream {_count(status.get('lag_max'))}"
        if isinstance(ratio, int | float) and isinstance(maxlen, int):
            lag += f", {ratio:.0%} of MAXLEN {maxlen:,}"
        lag += ")"
    written = f"{_count(status.get('rows'))} rows in {_count(status.get('files'))} files"
    last = status.get("last_commit_ms")
    commit = (
        f"last commit {max(now_ms - last, 0) / 1000:.0f} s ago"
        if isinstance(last, int)
        else "no commit yet"
    )
    errors = f"errors: {_count(status.get('write_errors'))} write, "
    errors += f"{_count(status.get('redis_errors'))} Redis"
    if status.get("last_error"):
        errors += f" (last: {str(status['last_error'])[:120]})"
    age = (now_ms - int(status.get("updated_ms") or 0)) / 1000
    head = f"{status.get('state')}, status {age:.0f} s old"
    return "; ".join((head, lag, written, commit, errors))
