"""Run-time subscription changes: what a worker publishes is its configuration, plus
what was subscribed, minus what was unsubscribed while it ran. Pure, no I/O.

The changes live in one Redis hash per exchange (``mb:subs:{exchange}``): field
``channel|SYMBOL``, value ``<ms>:+`` or ``<ms>:-``; the latest change of a market and
channel wins. Keeping them apart from the configuration means a config edit still takes
effect after a restart, while run-time changes are not lost by one; ``reset`` drops them.
Symbols are compared after resolution against the exchange's markets (``canon``), so
``ETHUSDT`` removes what ``ETH/USDT`` added.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from marketbus.errors import DecodeError
from marketbus.models import Channel
from marketbus.symbols import normalize_symbol

Op = Literal["+", "-"]


@dataclass(frozen=True, slots=True)
class Change:
    channel: Channel
    symbol: str
    op: Op
    at_ms: int


def field_name(channel: Channel | str, symbol: str) -> str:
    return f"{Channel(channel).value}|{loose_symbol(symbol)}"


def field_value(op: Op, at_ms: int) -> str:
    return f"{at_ms}:{op}"


loose_symbol = normalize_symbol
"""``btc-usdt`` -> ``BTC/USDT``; exact resolution happens against the exchange's markets."""


def parse_changes(raw: Mapping[bytes | str, bytes | str]) -> tuple[list[Change], int]:
    """The hash's fields as changes, oldest first, and how many fields were unreadable."""
    out: list[Change] = []
    bad = 0
    for k, v in raw.items():
        try:
            out.append(_parse(_text(k), _text(v)))
        except (DecodeError, ValueError):
            bad += 1
    out.sort(key=lambda c: c.at_ms)
    return out, bad


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _parse(field: str, value: str) -> Change:
    channel, sep, symbol = field.partition("|")
    at, sep2, op = value.partition(":")
    if not sep or not sep2 or not symbol or op not in ("+", "-"):
        raise DecodeError(f"bad subscription change {field!r}={value!r}")
    return Change(Channel(channel), symbol, op, int(at))  # type: ignore[arg-type]


def effective(
    config: Mapping[Channel, Iterable[str]],
    changes: Iterable[Change],
    canon: Callable[[str], str] = loose_symbol,
) -> dict[Channel, tuple[str, ...]]:
    """Config plus run-time changes (latest per market and channel wins), by channel."""
    want: dict[Channel, dict[str, str]] = {}  # channel -> canonical -> as given
    for channel, symbols in config.items():
        for s in symbols:
            want.setdefault(Channel(channel), {}).setdefault(canon(s), s)
    for c in changes:  # oldest first: later changes override earlier ones
        key = canon(c.symbol)
        per = want.setdefault(c.channel, {})
        if c.op == "+":
            per.setdefault(key, c.symbol)
        else:
            per.pop(key, None)
    return {c: tuple(per.values()) for c, per in want.items() if per}
