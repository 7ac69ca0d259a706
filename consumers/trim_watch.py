"""A consumer's watch for entries ``MAXLEN`` trimmed before it read them (issue #11, item 6),
and the fill of such a range from the archive (``Consumer(..., history=PATH)``).

Off the hot path: a read's reply is checked only when it may hide a gap
(:func:`consumers.trims.threshold`: in practice a full reply, while behind), with one
pipelined ``XINFO STREAM`` (group mode: and ``XINFO GROUPS``) for the streams concerned;
every ``TRIM_EVERY_S`` each stream is looked at once more (which also counts a gap an
unchecked reply jumped over, late). The numbers are in :mod:`consumers.trims`.

What is found is counted (``stats.trimmed``: entries; ``stats.trim_gaps``: ranges) and
logged once per range (``stream_trimmed``: the stream, the ids around the range, how many
entries it held and how many the archive gave back). With ``history=`` the range is first
read from the archive (waiting up to ``history_wait_s`` for the archiver to commit up to its
end) and ingested as if Redis had sent it, before the reply's entries: only what the archive
does not hold is counted as trimmed.

Group mode: Redis counts a group's reads (``entries-read``) one delivered entry at a time,
so a trimmed range leaves that count behind the group's position; the member that finds it
counts it and sets the group's count to the position (``XGROUP SETID ... ENTRIESREAD``, in
a script that first checks no other member read meanwhile). Each range is so counted once
for the whole group, a restarted member starts from a count that is right, and ``XINFO
GROUPS``' ``lag`` is the real one again. Without the right to run the script (an ACL), each
member keeps what it counted itself.

Redis 6 (no ``entries-added``), or a user not permitted ``MULTI``/``XINFO``: logged once
(``trim_detection_off``), and the consumer reads on without the watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import structlog
from redis.exceptions import ResponseError

from consumers.archive_rows import entries_of, fillable
from consumers.consumer_parts import ConsumerParts, as_str, id_or_none, id_tuple
from consumers.history import History
from consumers.streams import ReplyPipe
from consumers.trims import (
    ZERO,
    Gap,
    GroupInfo,
    Id,
    ReadCheck,
    ReplyIds,
    StreamInfo,
    TrimInfoUnavailable,
    after_read,
    at_tail,
    behind,
    group_behind,
    group_check,
    id_text,
    just_below,
    parse_groups,
    parse_stream_info,
    threshold,
)
from marketbus.errors import MarketbusError
from marketbus.keys import stream_key

log = structlog.get_logger("marketbus.consumer")

TRIM_EVERY_S = 5.0
"""How often each stream is looked at besides the checked replies."""

_SUBS = {False: ("STREAM",), True: ("STREAM", "GROUPS")}
_UNSUPPORTED = (ResponseError, TrimInfoUnavailable, AttributeError, NotImplementedError)
"""What tells the watch cannot run here: Redis refused a command (ACL, unknown command), an
old Redis, a client without the command."""

# Set the group's entries-read to ARGV[4] if its last delivered id and entries-read are still
# ARGV[2] and ARGV[3]: no member read in between (a script runs alone).
_SET_READ = """
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  if f['name'] == ARGV[1] then
    if f['last-delivered-id'] == ARGV[2] and tostring(f['entries-read']) == ARGV[3] then
      redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], ARGV[2], 'ENTRIESREAD', ARGV[4])
      return 1
    end
    return 0
  end
end
return 0
"""


@dataclass
class TrimState:
    """The watch's state, per stream key."""

    on: bool = True
    pos: dict[str, int | None] = field(default_factory=dict)  # plain: entries accounted for
    floor: dict[str, Id] = field(default_factory=dict)  # plain: accounted up to, past last
    cap: dict[str, int] = field(default_factory=dict)  # shortest length seen once trimmed
    limit: dict[str, int] = field(default_factory=dict)  # reply size that gets checked
    last: dict[str, Id] = field(default_factory=dict)  # group: this member's last new entry
    seen: dict[str, int] = field(default_factory=dict)  # group, no script: counted already
    set_read: bool = True  # group: may set the group's entries-read
    unfillable: set[str] = field(default_factory=set)


class TrimWatch(ConsumerParts):
    """Detects, counts, logs and (with history) fills what MAXLEN trimmed unread."""

    # -- state ----------------------------------------------------------------------------
    def _trim_off(self, why: str) -> None:
        if self._trim.on:
            self._trim.on = False
            log.warning("trim_detection_off", reason=why[:300])

    def _checked_size(self, key: str) -> int:
        return self._trim.limit.get(key, self.count)

    def _learn(self, key: str, info: StreamInfo) -> None:
        """The shortest length of a trimmed stream: replies that long may hide a gap."""
        if info.trimmed_ever and info.length > 0:
            cap = min(self._trim.cap.get(key, info.length), info.length)
            self._trim.cap[key] = cap
            self._trim.limit[key] = threshold(self.count, cap)

    # -- Redis ----------------------------------------------------------------------------
    async def _read_tail(self, key: str, n: int) -> list[Any]:
        """The newest ``n`` entries of ``key`` (backfill), and with them, in one transaction,
        the stream's counters, which give the consumer's position exactly."""
        if self._trim.on:
            try:
                pipe = self.redis.pipeline(transaction=True)
                pipe.xrevrange(key, "+", "-", count=n)
                pipe.xinfo_stream(key)
                entries, info = await pipe.execute(raise_on_error=False)
                if isinstance(entries, Exception):
                    raise entries
                parsed = self._parse_info(info)
            except _UNSUPPORTED as e:
                self._trim_off(f"{type(e).__name__}: {e}")
            else:
                last = id_tuple(entries[0][0]) if entries else ZERO
                self._trim.pos[key] = self._start_pos(last, parsed)
                return list(entries)
        return list(await self.redis.xrevrange(key, "+", "-", count=n))

    async def _trim_positions(self, keys: Sequence[str]) -> None:
        """The positions of streams started from given ids (``start_ids``)."""
        for key, (info, _) in (await self._infos(keys)).items():
            last = id_or_none(self.last_ids[key])
            self._trim.pos[key] = None if last is None else self._start_pos(last, info)

    def _parse_info(self, reply: Any) -> StreamInfo | None:
        """An ``XINFO STREAM`` reply; None for a stream that does not exist."""
        if isinstance(reply, ResponseError) and "no such key" in str(reply).lower():
            return None
        if isinstance(reply, Exception):
            raise reply
        return parse_stream_info(reply)

    @staticmethod
    def _start_pos(last: Id, info: StreamInfo | None) -> int | None:
        """The position of a consumer starting after ``last``: every entry so far when that
        is the newest, those before the oldest held when it starts from the beginning."""
        if info is None:
            return 0
        if last == info.last_generated:
            return info.entries_added
        if last == ZERO:
            return info.below_first
        return None  # a start id in the middle (start_ids): known once at the newest

    async def _infos(
        self, keys: Sequence[str], *, groups: bool = False
    ) -> dict[str, tuple[StreamInfo | None, dict[str, GroupInfo]]]:
        """``XINFO STREAM`` (and ``XINFO GROUPS``) of ``keys``, pipelined; {} when the watch
        cannot run (turned off) or Redis failed (logged; the next look counts what this one
        missed)."""
        if not keys or not self._trim.on:
            return {}
        try:
            commands = [("XINFO", sub, k) for k in keys for sub in _SUBS[groups]]
            replies = await self._pipelined(commands)
            out: dict[str, tuple[StreamInfo | None, dict[str, GroupInfo]]] = {}
            step = 2 if groups else 1
            for i, k in enumerate(keys):
                info = self._parse_info(replies[i * step])
                gs: dict[str, GroupInfo] = {}
                if groups and info is not None:
                    reply = replies[i * step + 1]
                    if isinstance(reply, Exception):
                        raise reply
                    gs = parse_groups(reply)
                out[k] = (info, gs)
            return out
        except asyncio.CancelledError:
            raise
        except _UNSUPPORTED as e:
            self._trim_off(f"{type(e).__name__}: {e}")
        except Exception as e:  # a connection error: the read loop sees it too
            log.warning("trim_check_failed", error=str(e)[:200])
        return {}

    async def _pipelined(self, commands: list[tuple[str, str, str]]) -> list[Any]:
        """The replies of ``commands`` sent in one write, errors returned in place: raw (as
        hiredis parses them) on a standalone client with a pool, else through redis-py."""
        if self._raw_reads:
            pipe = ReplyPipe(self.redis)
            try:
                await pipe.send(commands)
                return [await pipe.reply() for _ in commands]
            finally:
                await pipe.close()
        rp = self.redis.pipeline(transaction=False)
        for _name, sub, key in commands:
            if sub == "STREAM":
                rp.xinfo_stream(key)
            else:
                rp.xinfo_groups(key)
        return list(await rp.execute(raise_on_error=False))

    # -- plain mode -----------------------------------------------------------------------
    async def _trim_plain(self, items: list[tuple[Any, list[Any]]]) -> dict[str, ReadCheck]:
        """Before a plain reply is ingested: its streams' positions moved on, and the replies
        that may hide a gap checked. The checks that found one, by stream."""
        pos = self._trim.pos
        todo: list[tuple[str, list[Any]]] = []
        for raw_key, entries in items:
            n = len(entries)
            if not n:
                continue
            key = as_str(raw_key)
            if n >= self._checked_size(key):
                todo.append((key, entries))
            else:
                p = pos.get(key)
                if p is not None:
                    pos[key] = p + n
        if not todo:
            return {}
        infos = await self._infos([k for k, _ in todo])
        out: dict[str, ReadCheck] = {}
        for key, entries in todo:
            info = infos.get(key, (None, {}))[0]
            p = pos.get(key)
            if info is None:
                pos[key] = None if p is None else p + len(entries)
                continue
            self._learn(key, info)
            last = id_or_none(self.last_ids[key]) or ZERO
            check = after_read(p, last, ReplyIds(entries), info, self._trim.floor.get(key, ZERO))
            pos[key] = check.pos
            if check.tail is not None:  # counted (and filled) already when read next
                self._trim.floor[key] = just_below(check.tail.before)
            if check.head is not None or check.tail is not None or check.lost:
                out[key] = check
        return out

    async def _trim_look_plain(self, keys: Sequence[str]) -> None:
        """The periodic look (plain): a consumer at a stream's newest entry has accounted for
        every entry; what it has not was trimmed unseen (counted late, not filled: the
        entries after it were delivered already)."""
        infos = await self._infos(keys)
        for key, (info, _) in infos.items():
            if info is None:
                continue
            self._learn(key, info)
            last = id_or_none(self.last_ids[key])
            if last is None:
                continue
            pos, lost = at_tail(self._trim.pos.get(key), last, info)
            self._trim.pos[key] = pos
            if lost:
                self._count_trim(key, lost, 0, None, late=True)

    # -- group mode -----------------------------------------------------------------------
    async def _trim_group_start(self) -> None:
        """Each stream's group as this member starts: where it is, for the ranges' logs."""
        infos = await self._infos(list(self.keys), groups=True)
        for key, (_, gs) in infos.items():
            g = gs.get(str(self.group))
            if g is not None:
                self._trim.last[key] = g.last_delivered

    def _start_entries_read(self, key: str, start: str) -> int | None:
        """The group's read count to create it with at ``start`` (the backfill's last id):
        the consumer's position there, when known (else Redis estimates it)."""
        if not self._trim.on or id_or_none(start) is None:
            return None
        return self._trim.pos.get(key)

    async def _trim_group(self, items: list[tuple[Any, list[Any]]]) -> dict[str, ReadCheck]:
        """Before a group reply of new entries is ingested (and before the next read is sent
        ahead): the replies that may hide a gap checked against the group's counters."""
        todo: list[tuple[str, list[Any], Id]] = []
        for raw_key, entries in items:
            if not entries:
                continue
            key = as_str(raw_key)
            before = self._trim.last.get(key, ZERO)
            self._trim.last[key] = id_tuple(entries[-1][0])
            if len(entries) >= self._checked_size(key):
                todo.append((key, entries, before))
        if not todo:
            return {}
        infos = await self._infos([k for k, _, _ in todo], groups=True)
        out: dict[str, ReadCheck] = {}
        for key, entries, before in todo:
            info, gs = infos.get(key, (None, {}))
            g = gs.get(str(self.group))
            if info is None or g is None:
                continue
            self._learn(key, info)
            ids = ReplyIds(entries)
            found = await self._group_found(key, info, g, ids)
            if found is not None:
                lo, first = max(before, self._trim.floor.get(key, ZERO)), ids[0]
                head = Gap(lo, first) if lo < just_below(first) else None
                out[key] = ReadCheck(None, found.lost, head, found.tail)
                if found.tail is not None:  # counted (and filled) already when read next
                    self._trim.floor[key] = just_below(found.tail.before)
        return out

    async def _trim_look_group(self, keys: Sequence[str]) -> None:
        """The periodic look (group mode): a group at the stream's newest entry has read
        every entry; what its count lacks was trimmed unseen (counted late)."""
        infos = await self._infos(keys, groups=True)
        for key, (info, gs) in infos.items():
            g = gs.get(str(self.group))
            if info is None or g is None:
                continue
            self._learn(key, info)
            found = await self._group_found(key, info, g, ())
            if found is not None:
                self._count_trim(key, found.lost, 0, None, late=True)

    async def _group_found(
        self, key: str, info: StreamInfo, g: GroupInfo, ids: Sequence[Id]
    ) -> ReadCheck | None:
        """What the group lost that no member counted yet, to be counted here (and the
        group's read count set to its position: :func:`consumers.trims.group_check`); None
        when nothing (or another member counts it)."""
        check = group_check(info, g, ids)
        lost = check.lost
        if not lost or check.pos is None:
            return None
        if self._trim.set_read:
            n = check.pos
            try:
                done = await self.redis.eval(
                    _SET_READ, 1, key, str(self.group), id_text(g.last_delivered),
                    str(g.entries_read), str(n),
                )  # fmt: skip
            except asyncio.CancelledError:
                raise
            except ResponseError as e:  # not permitted (ACL), scripts disabled
                self._trim.set_read = False
                log.warning("trim_group_count_not_set", stream=key, error=str(e)[:200])
            except Exception as e:
                log.warning("trim_check_failed", error=str(e)[:200])
                return None
            else:
                return check if int(done) else None  # another member read meanwhile
        new = lost - self._trim.seen.get(key, 0)  # the group's count stays behind: ours grows
        self._trim.seen[key] = lost
        return ReadCheck(None, new, None, check.tail) if new > 0 else None

    # -- both -----------------------------------------------------------------------------
    async def _trim_look(self, keys: list[str]) -> float:
        """The periodic look at one read loop's streams; when the next is due (monotonic)."""
        if self.group is None:
            await self._trim_look_plain(keys)
        else:
            await self._trim_look_group(keys)
        return time.monotonic() + TRIM_EVERY_S

    async def _trim_before(self, key: str, check: ReadCheck) -> int:
        """What a check found before the reply's entries: filled (when it can be)."""
        return 0 if check.head is None else await self._fill(key, check.head, check.lost)

    async def _trim_after(self, key: str, check: ReadCheck, filled: int) -> None:
        """After the reply's entries: the range after them filled, and the whole counted."""
        if check.tail is not None:
            filled += await self._fill(key, check.tail, None)
        self._count_trim(key, check.lost, filled, check)

    def _count_trim(
        self, key: str, lost: int | None, filled: int, check: ReadCheck | None, *,
        late: bool = False,
    ) -> None:  # fmt: skip
        """One range found: counted (what the archive did not give back) and logged."""
        trimmed = None if lost is None else max(lost - filled, 0)
        self.stats.trim_gaps += 1
        self.stats.trimmed += trimmed or 0
        extra: dict[str, Any] = {}
        if check is not None and check.head is not None:
            extra.update(after_id=id_text(check.head.after), before_id=id_text(check.head.before))
        if check is not None and check.tail is not None:
            extra.update(
                tail_after_id=id_text(check.tail.after), tail_before_id=id_text(check.tail.before)
            )
        log.warning(
            "stream_trimmed", stream=key, mode="group" if self.group else "plain", entries=lost,
            filled=filled, trimmed=trimmed, late=late, total=self.stats.trimmed, **extra,
        )  # fmt: skip

    # -- filling from the archive ---------------------------------------------------------
    async def _fill(self, key: str, gap: Gap, limit: int | None) -> int:
        """The archived entries of ``gap`` ingested as if Redis had sent them (the last
        ``limit`` of them: with several group members, the range below may hold entries
        another member got); how many."""
        history = self._history
        if history is None or key in self._trim.unfillable:
            return 0
        sk = self.keys[key]
        await self._await_archive(history, stream_key(sk.exchange, sk.symbol, sk.channel), gap)
        try:
            table = await asyncio.to_thread(
                history.read_ids, sk.exchange, sk.symbol, sk.channel,
                id_text(gap.after), id_text(gap.before),
            )  # fmt: skip
        except (MarketbusError, OSError, pa.ArrowException) as e:
            log.warning("history_fill_failed", stream=key, error=str(e)[:300])
            return 0
        if not fillable(sk.channel, table.schema):
            self._trim.unfillable.add(key)
            log.warning("history_fill_unsupported", stream=key, channel=sk.channel.value)
            return 0
        entries = entries_of(sk.channel, sk.exchange, table)
        if limit is not None and len(entries) > limit:
            entries = entries[-limit:]
        if not entries:
            return 0
        if self._callbacks:
            for entry_id, fields in entries:
                try:
                    await self._ingest(key, entry_id, fields)
                except Exception as e:  # a bot's callback bug must not stop the feed
                    self._callback_error(key, entry_id, e)
        else:
            self._ingest_batch(key, entries)
        self.stats.filled += len(entries)
        return len(entries)

    async def _await_archive(self, history: History, live_key: str, gap: Gap) -> None:
        """Until the archive holds the entries up to the gap's end (its manifest's last id
        of the stream reaches it), at most ``history_wait_s``: the archiver commits every
        few seconds, so a range trimmed just now is usually not on disk yet. No wait for a
        stream the archive does not follow."""
        deadline = time.monotonic() + self.history_wait_s
        while not self._stopping:
            with contextlib.suppress(MarketbusError, OSError):
                manifest = history.catalog.manifest()
                last = None if manifest is None else manifest.last.get(live_key)
                if last is None or id_tuple(last) >= gap.before:
                    return
            if time.monotonic() >= deadline:
                log.warning(
                    "history_fill_waited", stream=live_key, before_id=id_text(gap.before),
                    waited_s=self.history_wait_s,
                )  # fmt: skip
                return
            await asyncio.sleep(0.05)

    # -- public ---------------------------------------------------------------------------
    async def lag(self) -> dict[str, int | None]:
        """Entries each followed stream holds after what this consumer read (plain mode: its
        last id; group mode: its group's last delivered one), trimmed ones not yet found
        included; None where Redis cannot tell (Redis 6, not permitted, a start id in the
        middle of a stream not yet caught up)."""
        group = self.group is not None
        infos = await self._infos(list(self.keys), groups=group)
        out: dict[str, int | None] = {}
        for key in self.keys:
            info, gs = infos.get(key, (None, {}))
            if info is None:
                out[key] = None if not infos else 0
            elif group:
                g = gs.get(str(self.group))
                counted = 0 if self._trim.set_read else self._trim.seen.get(key, 0)
                out[key] = None if g is None else group_behind(info, g, counted)
            else:
                last = id_or_none(self.last_ids[key]) or ZERO
                out[key] = behind(self._trim.pos.get(key), last, info)
        return out
