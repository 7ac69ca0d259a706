"""The archiver on a Redis Cluster: its reads and acknowledgements, sent node by node.

Streams are keyed ``md:{exchange:symbol}:channel``: every channel of a market shares one hash
slot, and different markets live in different slots, mostly on different masters. A command
naming several keys must stay in one slot (else ``CROSSSLOT``), so a read round is one
``XREADGROUP`` per slot, and the commands of one node go in one write on a connection of
that node, the nodes at once: 1,000 streams cost one round trip per master, not 1,000. The
``XACK`` commands (:func:`archive.acks.xack_commands`) go the same way.

No ``BLOCK``: a blocking read covers one slot only. A round that finds nothing new is
followed by a pause (:meth:`ClusterIO.idle_wait`) that doubles from 10 ms up to the
archiver's ``block_ms``, and is back to none once a round brings entries.

Replies are raw (no redis-py callback), as on standalone (:func:`consumers.streams.raw_command`).
A redirection (``MOVED``/``ASK``: a resharding, a failover) or a broken connection asks
redis-py for a fresh slot map and is returned to the archiver, which retries it as any
Redis error (backoff; its own pending entries read again: nothing is lost, nothing written
twice). What the other nodes answered in that round is kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import hiredis
from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, ResponseError, TryAgainError

from archive.acks import xack_commands
from consumers.consumer_parts import reply_items

_STALE = (AskError, ClusterDownError, TryAgainError)  # (MovedError is an AskError)
_IDLE_MIN_S = 0.01


class ClusterIO:
    """Reads and acknowledgements of one archiver (one consumer name) on a cluster client
    (``redis.asyncio.cluster.RedisCluster``)."""

    def __init__(self, client: Any, group: str, name: str, count: int) -> None:
        self.client = client
        self.group = group
        self.name = name
        self.count = count
        self._slots: dict[str, int] = {}  # stream -> hash slot
        self._nodes: dict[int, Any] = {}  # hash slot -> the node serving it (a cache)
        self._idle = 0.0  # the pause after the last round (0: it found entries)
        self.found = False  # the last round brought entries
        self.rounds = 0  # read rounds sent (each one write per node)

    # -- reads ----------------------------------------------------------------------------
    async def read(
        self, keys: Sequence[str], ids: Sequence[str]
    ) -> tuple[list[tuple[Any, list[Any]]], Exception | None]:
        """One round: ``XREADGROUP ... STREAMS keys ids`` split by slot, sent per node.
        Returns the streams' entries (as :func:`reply_items` gives them) from every node
        that answered, and the first error (a node down, a redirection), if any."""
        await self.client.initialize()  # (at once unless a refresh was asked for)
        by_slot: dict[int, tuple[list[str], list[str]]] = {}
        for key, entry_id in zip(keys, ids, strict=True):
            ks, vs = by_slot.setdefault(self._slot(key), ([], []))
            ks.append(key)
            vs.append(entry_id)
        head: tuple[Any, ...] = (
            "XREADGROUP", "GROUP", self.group, self.name, "COUNT", self.count, "STREAMS",
        )  # fmt: skip
        commands: dict[str, tuple[Any, list[bytes]]] = {}
        for slot, (ks, vs) in by_slot.items():
            node = self._node(slot, ks[0])
            packed = hiredis.pack_command((*head, *ks, *vs))
            commands.setdefault(node.name, (node, []))[1].append(packed)
        self.rounds += 1
        items: list[tuple[Any, list[Any]]] = []
        error: Exception | None = None
        for replies in await self._send(commands):
            if isinstance(replies, Exception):
                error = error or replies
                continue
            for r in replies:
                if isinstance(r, Exception):
                    error = error or r
                elif r:
                    items.extend(reply_items(r))
        if error is not None:
            self._stale(error)
        self.found = any(entries for _, entries in items)
        if self.found:
            self._idle = 0.0
        return items, error

    def idle_wait(self, longest_s: float) -> float:
        """After a round that found nothing new: how long to wait before the next (10 ms,
        doubling, at most ``longest_s``)."""
        self._idle = min(max(self._idle * 2, _IDLE_MIN_S), max(longest_s, _IDLE_MIN_S))
        return self._idle

    # -- acknowledgements -----------------------------------------------------------------
    async def ack(
        self, todo: Mapping[str, Sequence[bytes]], failed: dict[str, list[bytes]]
    ) -> tuple[int, list[str], Exception | None]:
        """``XACK`` every id of ``todo`` (stream -> ids), one write per node: (ids Redis
        acknowledged, error replies, the first node or redirection error). The ids of a
        node that failed, or of a stream redirected, are added to ``failed`` (XACK is
        idempotent: sent again later)."""
        await self.client.initialize()
        commands: dict[str, tuple[Any, list[bytes]]] = {}
        owners: dict[str, list[tuple[str, int]]] = {}  # node -> (stream, commands) in order
        for key, ids in todo.items():
            if not ids:
                continue
            node = self._node(self._slot(key), key)
            packed = xack_commands(key, self.group, ids)
            commands.setdefault(node.name, (node, []))[1].extend(packed)
            owners.setdefault(node.name, []).append((key, len(packed)))
        acked, refused = 0, []
        error: Exception | None = None
        for name, replies in zip(commands, await self._send(commands), strict=True):
            if isinstance(replies, Exception):
                error = error or replies
                for key, _ in owners[name]:
                    failed.setdefault(key, []).extend(todo[key])
                continue
            at = 0
            for key, n in owners[name]:
                mine = replies[at : at + n]
                at += n
                for r in mine:
                    if isinstance(r, _STALE):
                        error = error or r
                    elif isinstance(r, Exception):
                        refused.append(str(r)[:200])
                    else:
                        acked += int(r)
                if any(isinstance(r, _STALE) for r in mine):
                    failed.setdefault(key, []).extend(todo[key])
        if error is not None:
            self._stale(error)
        return acked, refused, error

    # -- nodes ----------------------------------------------------------------------------
    def _slot(self, key: str) -> int:
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = key_slot(key.encode())
        return slot

    def _node(self, slot: int, key: str) -> Any:
        node = self._nodes.get(slot)
        if node is None:
            node = self._nodes[slot] = self.client.get_node_from_key(key)
        return node

    def _stale(self, error: BaseException) -> None:
        """After a redirection or a connection error: the slot map is asked again (by
        redis-py, at the next command) and this cache dropped."""
        if isinstance(error, ResponseError) and not isinstance(error, _STALE):
            return  # an error reply of the command itself (NOGROUP...): the map is right
        self._nodes.clear()
        request = getattr(self.client, "_request_refresh", None)
        if callable(request):
            request()
        else:  # redis-py without it: the flag its commands check
            self.client._initialize = True

    async def _send(
        self, commands: Mapping[str, tuple[Any, list[bytes]]]
    ) -> list[list[Any] | Exception]:
        """Every node's commands at once: per node its replies (an error reply as its
        exception), or the exception that broke that node's connection."""
        if not commands:
            return []
        got = await asyncio.gather(
            *(_node_replies(node, cmds) for node, cmds in commands.values()),
            return_exceptions=True,
        )
        out: list[list[Any] | Exception] = []
        for r in got:
            if isinstance(r, BaseException) and not isinstance(r, Exception):
                raise r  # a cancellation
            out.append(r)
        return out


async def _node_replies(node: Any, commands: list[bytes]) -> list[Any]:
    """``commands`` in one write on a connection of ``node``, their replies. An error or a
    cancellation mid-way drops that connection (it may be out of step)."""
    conn = node.acquire_connection()
    try:
        await conn.send_packed_command(commands, check_health=False)
        out: list[Any] = []
        for _ in commands:
            try:
                out.append(await conn.read_response())
            except ResponseError as e:  # an error reply: the connection is still in step
                out.append(e)
        return out
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        node.release(conn)
