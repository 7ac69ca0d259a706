"""Counting the entries ``MAXLEN`` trimmed before a consumer read them. Pure: Redis replies in,
numbers out (:mod:`consumers.trim_watch` sends the commands).

Redis 7 keeps, per stream, ``entries-added`` (every entry ever added), ``length`` and the
oldest entry held (``recorded-first-entry-id``): trimming removes the oldest entries, so the
entries before the oldest one held number ``entries-added - length``, and the oldest one
held is entry number ``entries-added - length + 1`` of the stream's history. A consumer keeps
its own number (``pos``): how many of the stream's entries it has accounted for (read, filled
from the archive, or counted as trimmed). When a read returns the stream's oldest entry, the
entries between the last one read and it that the stream once held are the trimmed ones:
``entries-added - length - pos``.

A gap can only hide in a reply whose first entry was the oldest one held when Redis built
it, so the check is needed only for replies that reach back that far: with ``MAXLEN`` at
least ``count``, a full reply (:func:`threshold`). The stream is looked at after the read
(``XINFO STREAM``), and trimming goes on meanwhile: the arithmetic below uses only what the
look tells for certain (the oldest entry held then, and which of the reply's entries are no
longer held), so it stays exact however far trimming went in between.

``max-deleted-entry-id`` is moved by ``XDEL`` only (trimming leaves it at ``0-0``): an
``XDEL`` inside what the stream holds makes the numbering unknown (as Redis itself says in
its group lag), and the check then counts nothing.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from consumers.consumer_parts import as_str, id_tuple

Id = tuple[int, int]
ZERO: Id = (0, 0)
MAX_SEQ = 2**64 - 1


class TrimInfoUnavailable(Exception):
    """``XINFO STREAM`` lacks the Redis 7 fields (``entries-added``): Redis 6 or older."""


@dataclass(frozen=True)
class StreamInfo:
    """What ``XINFO STREAM`` says of a stream at one moment."""

    length: int
    entries_added: int
    first: Id | None  # the oldest entry held (None: the stream holds none)
    last_generated: Id
    max_deleted: Id = ZERO

    @property
    def below_first(self) -> int:
        """Entries of the stream's history before the oldest one held (trimmed)."""
        return self.entries_added - self.length

    @property
    def fragmented(self) -> bool:
        """Entries deleted (``XDEL``) inside what the stream holds: numbering unknown."""
        return self.first is not None and self.max_deleted >= self.first

    @property
    def trimmed_ever(self) -> bool:
        return self.entries_added > self.length


@dataclass(frozen=True)
class GroupInfo:
    """One consumer group of a stream, from ``XINFO GROUPS``."""

    name: str
    last_delivered: Id
    entries_read: int | None  # None: Redis does not know it (``nil``)
    lag: int | None
    pending: int


def as_map(reply: Any) -> Mapping[Any, Any]:
    """A map reply as a dict: RESP3 gives one, RESP2 a flat ``[name, value, ...]`` list."""
    if isinstance(reply, Mapping):
        return reply
    return dict(zip(reply[0::2], reply[1::2], strict=True))


def _field(reply: Mapping[Any, Any], name: str) -> Any:
    if name in reply:
        return reply[name]
    return reply.get(name.encode())


def parse_stream_info(reply: Mapping[Any, Any] | Sequence[Any]) -> StreamInfo:
    """An ``XINFO STREAM`` reply (redis-py's, or raw); :class:`TrimInfoUnavailable` on
    Redis < 7."""
    reply = as_map(reply)
    added = _field(reply, "entries-added")
    if added is None:
        raise TrimInfoUnavailable("XINFO STREAM has no entries-added (Redis 7 adds it)")
    length = int(_field(reply, "length"))
    first_raw = _field(reply, "recorded-first-entry-id")
    if first_raw is None:  # some servers only give the entry itself
        entry = _field(reply, "first-entry")
        first_raw = entry[0] if entry else None
    first = id_tuple(first_raw) if first_raw is not None and length > 0 else None
    deleted = _field(reply, "max-deleted-entry-id")
    return StreamInfo(
        length=length,
        entries_added=int(added),
        first=first,
        last_generated=id_tuple(_field(reply, "last-generated-id") or "0-0"),
        max_deleted=id_tuple(deleted) if deleted is not None else ZERO,
    )


def parse_groups(reply: Sequence[Any]) -> dict[str, GroupInfo]:
    """An ``XINFO GROUPS`` reply (redis-py's, or raw), by group name."""
    out: dict[str, GroupInfo] = {}
    for g in map(as_map, reply):
        read, lag = _field(g, "entries-read"), _field(g, "lag")
        name = as_str(_field(g, "name"))
        out[name] = GroupInfo(
            name=name,
            last_delivered=id_tuple(_field(g, "last-delivered-id") or "0-0"),
            entries_read=None if read is None else int(read),
            lag=None if lag is None else int(lag),
            pending=int(_field(g, "pending") or 0),
        )
    return out


class ReplyIds(Sequence[Id]):
    """The entry ids of one stream's reply, parsed only where looked at (its first, its last,
    and a binary search): a check costs O(log n) id parses, not one per entry."""

    def __init__(self, entries: Sequence[Sequence[Any]]) -> None:
        self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [id_tuple(e[0]) for e in self._entries[i]]
        return id_tuple(self._entries[i][0])


@dataclass(frozen=True)
class Gap:
    """Entries trimmed between two ids (both exclusive): ``after`` the last one read,
    ``before`` the next one Redis still held."""

    after: Id
    before: Id


@dataclass(frozen=True)
class ReadCheck:
    """What one reply of one stream hid, and the consumer's position after it.

    ``lost``: entries trimmed before they were read (None: unknown, the position was not
    known). ``head``: the range before the reply's entries. ``tail``: only when every entry
    of the reply was trimmed too before the stream was looked at: a range after them, which
    the next read jumps over; ``lost`` then counts both ranges (how it splits is not known).
    """

    pos: int | None
    lost: int | None = 0
    head: Gap | None = None
    tail: Gap | None = None


def just_below(i: Id) -> Id:
    """The greatest id below ``i``: as an excluded lower bound, "from ``i`` on"."""
    return (i[0], i[1] - 1) if i[1] else (i[0] - 1, MAX_SEQ)


def after_read(
    pos: int | None, last: Id, ids: Sequence[Id], info: StreamInfo, floor: Id = ZERO
) -> ReadCheck:
    """A plain read of ``ids`` (non-empty) after ``last``, checked against ``info`` taken after
    the read; ``pos``: how many of the stream's entries are accounted for, which is every
    entry up to ``last``, and up to ``floor`` (excluded bound) when an earlier check counted
    a range past ``last`` (its ``tail``)."""
    k = len(ids)
    lo = max(last, floor)
    moved = None if pos is None else pos + k
    if info.fragmented:
        return ReadCheck(moved)
    first, end = ids[0], ids[-1]
    oldest = info.first
    if oldest is not None and oldest < first:
        # the stream held an entry older than the reply's first: it held every entry after
        # ``last`` (the reply starts at the first of them), nothing was trimmed in between
        return ReadCheck(moved)
    below = info.below_first
    if oldest is not None and oldest <= end:
        j = bisect_left(ids, oldest)  # the reply's entries trimmed since the read
        first_no = below - j + 1  # the number of the reply's first entry in the stream
        if pos is None:
            return ReadCheck(first_no + k - 1, None, Gap(lo, first) if last > ZERO else None)
        lost = max(first_no - 1 - pos, 0)
        return ReadCheck(first_no + k - 1, lost, Gap(lo, first) if lost else None)
    # every entry of the reply is gone by now: only "everything before ``oldest``" is known
    bound = oldest if oldest is not None else (info.last_generated[0], info.last_generated[1] + 1)
    tail = Gap(end, bound)
    if pos is None:
        return ReadCheck(below, None, Gap(lo, first) if last > ZERO else None, tail)
    head = Gap(lo, first) if lo < just_below(first) else None  # a range, or nothing left
    lost = max(below - pos - k, 0)
    return ReadCheck(below, lost, head if lost else None, tail if lost else None)


def at_tail(pos: int | None, last: Id, info: StreamInfo) -> tuple[int | None, int]:
    """A periodic look at a stream: when the consumer has read up to its newest entry, its
    position is the stream's count of entries (a position not known yet becomes known), and
    what it has not accounted for was trimmed unseen (a range an unchecked read jumped
    over). Returns (the position, entries newly found trimmed)."""
    if info.fragmented or last != info.last_generated:
        return pos, 0
    if pos is None:
        return info.entries_added, 0
    return info.entries_added, max(info.entries_added - pos, 0)


def group_check(info: StreamInfo, group: GroupInfo, ids: Sequence[Id] = ()) -> ReadCheck:
    """What the group lost that its read count does not show, and the count to set.

    Redis counts a group's reads (``entries-read``) one delivered entry at a time and never
    counts the entries trimmed before delivery, so the count falls behind the group's
    position by what it lost, since the count was last set (:mod:`consumers.trim_watch` sets
    it after counting). The position is known when the group's last delivered entry is the
    stream's newest, or the last of ``ids`` (this member's reply, the group's latest read)
    while the oldest entry held is one of them. When every entry of the reply was trimmed
    before the look, everything before the oldest entry held is counted (``tail``: the range
    after the reply, which the next read jumps), as in :func:`after_read`; the count to set
    (``pos``) is then ahead of the group's position, which Redis accepts and reads on from.
    ``pos`` None: nothing known (or nothing to set)."""
    if group.entries_read is None or info.fragmented:
        return ReadCheck(None)
    ld = group.last_delivered
    oldest = info.first
    tail = None
    if ids and ld == ids[-1]:
        if oldest is not None and oldest < ids[0]:
            return ReadCheck(None)  # the reply did not start at the oldest: nothing behind it
        if oldest is not None and oldest <= ld:
            n = info.below_first + len(ids) - bisect_left(ids, oldest)
        else:
            n = info.below_first
            last = info.last_generated
            tail = Gap(ld, oldest if oldest is not None else (last[0], last[1] + 1))
    elif ld == info.last_generated:
        n = info.entries_added
    else:
        return ReadCheck(None)
    lost = max(n - group.entries_read, 0)
    return ReadCheck(n, lost, None, tail if lost else None)


def behind(pos: int | None, last: Id, info: StreamInfo) -> int | None:
    """Entries added to the stream after the last one a plain consumer read (still held, or
    trimmed and not yet counted); None when not known."""
    if pos is not None:
        return max(info.entries_added - pos, 0)
    if last == info.last_generated:
        return 0
    return None


def group_behind(info: StreamInfo, group: GroupInfo, counted: int = 0) -> int | None:
    """Entries added after the group's last delivered one, minus what was found trimmed
    and not yet set in Redis (``counted``). Redis' own ``lag`` would include those."""
    if group.last_delivered == info.last_generated:
        return 0
    if group.entries_read is None or info.fragmented:
        return group.lag
    return max(info.entries_added - group.entries_read - counted, 0)


def threshold(count: int, cap: int | None) -> int:
    """The reply size from which a reply may hide a gap: a gap means the stream held at
    least ``MAXLEN`` entries after it, so the reply is full (``count``) unless the stream is
    capped lower (``cap``: the shortest length seen once trimming began); half of that, as
    approximate trimming lets the length vary."""
    if cap is None or cap >= count:
        return count
    return max(1, cap // 2)


def id_text(i: Id) -> str:
    return f"{i[0]}-{i[1]}"
