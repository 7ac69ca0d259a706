"""A subset of a watch batch stays on the batch's connection (CCXT's Binance adapters). Pure.

CCXT's Binance adapters pick the websocket connection of a call from a hash of its symbol
list (``options['streamBySubscriptionsHash']``: ``"multipleTrades::AAA/USDT,BBB/USDT"`` ->
connection ``"0"``), and a list never seen goes round-robin to the next connection. So when a
market leaves a batch at run time, both follow-up calls used to land elsewhere: the
``unWatch`` of the removed market went out on a fresh connection that never held its stream
(the exchange went on sending it on the old one), and the batch restarted with the markets
it keeps subscribed them again on another connection while the old one still carried them:
every frame of those markets arrived twice (trades were dropped as duplicates by id; books
and tickers had no such guard). Mapping the subset's hash to the batch's connection first
keeps both calls on it. Adapters without that table are left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

TABLE_KEY = "streamBySubscriptionsHash"


def keep_on_batch_connection(client: Any, batch: Sequence[str], subset: Sequence[str]) -> int:
    """Route the calls for ``subset`` (in this order) to the connection of ``batch``, for
    every kind of stream (trades, tickers, books...) the batch's symbol list has a hash for;
    returns how many hashes were routed."""
    options = getattr(client, "options", None)
    table = options.get(TABLE_KEY) if isinstance(options, dict) else None
    if not table or not subset:
        return 0
    members, tail = set(batch), ",".join(subset)
    routed = 0
    for key, stream in list(table.items()):
        prefix, sep, listed = str(key).partition("::")
        if sep and set(listed.split(",")) == members:
            table[f"{prefix}::{tail}"] = stream
            routed += 1
    return routed
