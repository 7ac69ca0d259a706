"""Run-time subscription changes for one worker, read from Redis.

``marketbus subscribe``/``unsubscribe`` write the change into ``mb:subs:{exchange}``
(kept, so a restarted publisher comes back with it) and add a notice to
``mb:ctl:{exchange}``. This loop blocks on that stream, so a change is applied as soon
as the notice lands; on any notice it re-reads the whole hash (idempotent, nothing to
miss). The stream's last id is taken before the hash is read, so a change made in
between is seen by the next read. Without permission to read these keys (a tight ACL)
the loop says so once and the worker keeps its configured subscriptions.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import structlog

from marketbus.errors import RedisAuthError
from marketbus.keys import control_stream, subscriptions_key
from marketbus.models import Channel
from marketbus.redis_client import from_redis
from marketbus.subscriptions import Change, parse_changes

log = structlog.get_logger("marketbus.control")

BLOCK_MS = 1_000


class Subscriber(Protocol):
    name: str

    def apply_changes(self, changes: list[Change]) -> dict[Channel, list[str]]: ...


class ControlLoop:
    """Keeps one worker's subscriptions equal to its config plus the changes in Redis."""

    def __init__(self, redis: Any, worker: Subscriber, worker_id: str | None = None) -> None:
        self.redis = redis
        self.worker = worker
        wid = worker_id or worker.name  # exchange, or exchange@instance
        self.stream = control_stream(wid)
        self.key = subscriptions_key(wid)
        self.applied = 0
        self.enabled = True
        self._stopping = False
        self._had_changes = False
        self.log = log.bind(exchange=wid)

    def stop(self) -> None:
        """The blocking read ends within ``BLOCK_MS`` even if a cancellation is swallowed."""
        self._stopping = True

    async def run(self) -> None:
        delay = 0.5
        last_id: str | None = None
        while not self._stopping:
            try:
                if last_id is None:
                    last_id = await self._last_id()
                    await self.reload()
                resp = await self.redis.xread({self.stream: last_id}, count=100, block=BLOCK_MS)
                if resp:
                    last_id = resp[0][1][-1][0].decode()
                    await self.reload()
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as e:
                err = from_redis(e)
                if isinstance(err, RedisAuthError):
                    self.enabled = False
                    self.log.warning(
                        "control_disabled", error=str(err)[:300],
                        hint="no permission on mb:ctl/mb:subs keys: run-time subscription "
                        "changes are off; the configured subscriptions stay",
                    )  # fmt: skip
                    return
                self.log.warning("control_read_failed", error=str(err)[:300], retry_in_s=delay)
                last_id = None  # re-read everything once Redis is back
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _last_id(self) -> str:
        tail = await self.redis.xrevrange(self.stream, "+", "-", count=1)
        return tail[0][0].decode() if tail else "0-0"

    async def reload(self) -> None:
        raw = await self.redis.hgetall(self.key)
        changes, bad = parse_changes(raw)
        if bad:
            self.log.warning("subscription_changes_unreadable", fields=bad, key=self.key)
        if not changes and not self._had_changes:
            return  # nothing changed at run time: the configuration stands as it is
        self._had_changes = bool(changes)
        active = self.worker.apply_changes(changes)
        self.applied += 1
        self.log.info(
            "subscriptions_applied",
            changes=len(changes),
            active={c.value: len(s) for c, s in active.items()},
        )
