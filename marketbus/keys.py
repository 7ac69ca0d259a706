"""Redis key naming: the only place stream and status keys are built or parsed.

Stream keys carry a Redis Cluster hash tag around ``exchange:symbol`` so every
channel of one market lives in one slot: ``md:{binance:BTC/USDT}:trades``.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from marketbus.errors import DecodeError
from marketbus.models import Channel

DEFAULT_PREFIX = "md"
STATUS_PREFIX = "mb:status"
_NAMESPACE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class StreamKey(NamedTuple):
    exchange: str
    symbol: str
    channel: Channel


def stream_key(
    exchange: str, symbol: str, channel: Channel | str, prefix: str = DEFAULT_PREFIX
) -> str:
    """The stream holding one market's records of one channel."""
    ch = Channel(channel)
    if not exchange or not symbol:
        raise ValueError("exchange and symbol must be non-empty")
    if any(c in exchange + symbol for c in "{}") or ":" in exchange:
        raise ValueError(
            f"braces (and ':' in the exchange) are not allowed: {exchange!r} {symbol!r}"
        )
    return f"{prefix}:{{{exchange}:{symbol}}}:{ch.value}"


def parse_stream_key(key: str | bytes, prefix: str = DEFAULT_PREFIX) -> StreamKey:
    """Inverse of :func:`stream_key`; raises :class:`DecodeError` for a foreign key."""
    try:
        text = key.decode() if isinstance(key, bytes) else key
    except UnicodeDecodeError as e:
        raise DecodeError(f"not a marketbus stream key: {key!r}") from e
    head = f"{prefix}:{{"
    if not text.startswith(head):
        raise DecodeError(f"not a marketbus stream key: {text!r}")
    body, sep, channel = text[len(head) :].rpartition("}:")
    exchange, colon, symbol = body.partition(":")
    if not sep or not colon or not exchange or not symbol:
        raise DecodeError(f"not a marketbus stream key: {text!r}")
    try:
        return StreamKey(exchange, symbol, Channel(channel))
    except ValueError as e:
        raise DecodeError(f"unknown channel in stream key: {text!r}") from e


def namespace_prefix(namespace: str | None) -> str:
    """The stream key prefix of a namespace: ``md`` for the live bus (None), ``md.<name>``
    for a separate one (``marketbus replay --namespace bt1`` writes ``md.bt1:{...}:trades``),
    so replayed or test data never mixes with live streams, and the live pattern ``md:{*}:*``
    (what the archiver follows) does not match it."""
    if namespace is None:
        return DEFAULT_PREFIX
    if not _NAMESPACE.match(namespace):
        raise ValueError(f"a namespace is 1-64 letters, digits, '_' or '-': {namespace!r} is not")
    return f"{DEFAULT_PREFIX}.{namespace}"


def stream_pattern(prefix: str = DEFAULT_PREFIX) -> str:
    """A SCAN MATCH pattern for every marketbus stream."""
    return f"{prefix}:{{*}}:*"


TESTNET_SUFFIX = "-testnet"
"""What an exchange's name on the bus ends with in sandbox mode (CCXT ids hold no ``-``)."""


def sandbox_name(exchange_id: str) -> str:
    """The bus name of ``exchange_id``'s public testnet: ``binance`` -> ``binance-testnet``,
    so test data is keyed apart from live data (``md:{binance-testnet:BTC/USDT}:trades``)."""
    return f"{exchange_id}{TESTNET_SUFFIX}"


def split_testnet(exchange: str) -> tuple[str, bool]:
    """Inverse of :func:`sandbox_name`: the CCXT id and whether the name is a testnet's."""
    if exchange.endswith(TESTNET_SUFFIX) and len(exchange) > len(TESTNET_SUFFIX):
        return exchange[: -len(TESTNET_SUFFIX)], True
    return exchange, False


def worker_id(exchange: str, instance: str | None = None) -> str:
    """How status and control keys name a worker: ``binance``, or ``binance@eu`` when several
    publisher processes split one exchange's markets (each with its own ``instance``)."""
    return exchange if not instance else f"{exchange}@{instance}"


def status_key(worker: str) -> str:
    """The hash a publisher worker writes its state into (with a TTL as heartbeat);
    ``worker`` is an exchange id or a :func:`worker_id`."""
    return f"{STATUS_PREFIX}:{worker}"


CONTROL_PREFIX = "mb:ctl"
SUBS_PREFIX = "mb:subs"


def control_stream(exchange: str) -> str:
    """The stream that tells a running publisher its subscriptions changed (a notice only)."""
    return f"{CONTROL_PREFIX}:{{{exchange}}}"


def subscriptions_key(exchange: str) -> str:
    """The hash of run-time subscription changes, kept so they survive a publisher restart.

    Same hash tag as :func:`control_stream`: one slot on Redis Cluster.
    """
    return f"{SUBS_PREFIX}:{{{exchange}}}"
