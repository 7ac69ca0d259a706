"""What the publisher knows about one exchange, as data: :class:`ExchangeProfile`.

Each exchange we add something for has one profile, in its own module (``publisher.binance``,
``publisher.okx``, ...), collected in ``publisher.exchanges``; every other exchange CCXT knows
gets the defaults below. The worker and its helpers read the profile, never an exchange id.

A leaf module: the small value types a profile holds (:class:`Tap`, :class:`ExchangeLimits`,
:class:`Source`, :class:`BackfillMode`) are defined here, so the exchange modules and the
modules that read profiles import them without a cycle; ``publisher.ccxt_client``,
``publisher.pacing``, ``publisher.deriv_feeds`` and ``publisher.backfill`` re-export them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from marketbus.models import Channel
from publisher.fast_path import FastPathFactory

if TYPE_CHECKING:
    from marketbus.settings import ExchangeSettings


@dataclass(frozen=True)
class Tap:
    """Wrap ``method`` of the adapter: its result is a structure of ``channel``.

    ``within``: only while CCXT runs this (websocket) handler, for adapters whose websocket
    and REST paths share one parse method (OKX's ``parse_trade``): REST results are the
    caller's to publish. ``event_time``: where the exchange time is when the parsed structure
    has none yet (Bybit's tickers: CCXT stamps them after parsing), read from the arguments
    of the ``within`` handler. ``message``: a test of those arguments, for a handler that
    serves several channels (OKX's ``handle_ticker`` parses ``tickers`` and ``mark-price``
    frames alike); several taps may share a method. ``convert``: the structure of ``channel``
    made from the parsed one (None: nothing to deliver), where CCXT parses it as something
    else (Binance USD-M's funding rate inside its mark price ticker).
    """

    method: str
    channel: Channel
    accept: Callable[[tuple[Any, ...]], bool] = lambda args: True
    within: str | None = None
    event_time: Callable[[tuple[Any, ...]], Any] | None = None
    message: Callable[[tuple[Any, ...]], bool] | None = None
    convert: Callable[[Any], Any] | None = None


@dataclass(frozen=True, slots=True)
class ExchangeLimits:
    """What the publisher keeps to on one exchange."""

    rest_budget: bool = False
    """Pace REST calls by CCXT's cost of each within ``60 s / rateLimit`` per window."""
    messages_per_second: float | None = None
    """At most this many messages sent a second on one websocket connection."""
    snapshot_limits: tuple[int, ...] = ()
    """Book snapshot sizes the exchange's REST serves, smallest first (empty: books come
    over the websocket, no REST snapshot)."""
    rest_window_ms: float | None = None
    """The exchange's REST window when it is not CCXT's ``rollingWindowSize`` (60 s): OKX
    counts per 2 s, so a minute's budget spent in one second would be refused."""
    subscribes_per_window: int | None = None
    """Subscribe/unsubscribe requests one websocket connection may send per
    ``subscribe_window_s`` (OKX: 480 an hour)."""
    subscribe_window_s: float = 3_600.0


class Feed(StrEnum):
    TICKER = "ticker"
    WATCH = "watch"
    POLL = "poll"
    NONE = "none"


@dataclass(frozen=True)
class Source:
    """How one channel is fed: the feed, and the CCXT method (``None`` for TICKER/NONE);
    ``many``: the method takes a list of symbols."""

    feed: Feed
    method: str | None = None
    many: bool = False


class BackfillMode(StrEnum):
    FROM_ID = "from_id"
    SINCE = "since"
    BACK_BY_ID = "back_by_id"


def since_with_fetch_trades(trade_stream: str, has_fetch_trades: bool) -> BackfillMode | None:
    """The generic backfill: by time, wherever CCXT has ``fetchTrades``."""
    return BackfillMode.SINCE if has_fetch_trades else None


MarkIndex = tuple[Callable[[Mapping[str, Any], list[str]], list[str]], dict[str, str]]
"""(the index symbols to watch for these contracts, the ``watch_tickers`` params)."""


@dataclass(frozen=True)
class ExchangeProfile:
    """One exchange, by its CCXT id. Every field's default is what any other exchange gets."""

    id: str
    """CCXT's id (``binance``, ``okx``): what ``ExchangeSettings.name`` says."""
    taps: tuple[Tap, ...] = ()
    """Adapter methods whose parsed structures are delivered as CCXT parses them (none: the
    ``watch_*`` results are published, through CCXT's caches)."""
    overrides: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    """Adapter method -> a maker of its replacement (given CCXT's method): the checks and fixes
    CCXT lacks (book sequences and checksums, resubscribes...). Default: CCXT's adapter as is."""
    market_types: tuple[str, ...] = ("spot",)
    """What ``load_markets`` loads (CCXT's ``fetchMarkets.types``). Default: spot only."""
    default_type: str = "spot"
    """CCXT's ``defaultType`` (what a call without a market means). Default: spot."""
    subscribe_limit: int | None = None
    """Most symbols one subscribe request (one ``watch_*_for_symbols`` call) may hold.
    Default (None): the worker's own ``MAX_SYMBOLS_PER_SUBSCRIBE``."""
    streams_per_connection: Mapping[str, int] | None = None
    """CCXT's ``subscriptionLimitByStream`` by market type, where CCXT's own is wrong.
    Default (None): CCXT's (the option is not set)."""
    client_options: Callable[[int], dict[str, Any]] | None = None
    """More CCXT options from the records' book depth (Kraken's subscribed depth).
    Default: none."""
    watch_params: Callable[[Channel, ExchangeSettings], dict[str, Any]] | None = None
    """The params of a trades/ticker ``watch_*`` call (Binance: which stream). Default: {}."""
    limits: ExchangeLimits = ExchangeLimits()
    """REST budget, websocket messages and subscribes, book snapshot sizes
    (``publisher.pacing``). Default: nothing paced beyond CCXT's ``enableRateLimit``, books
    from CCXT's default snapshot."""
    native_parser: FastPathFactory | None = None
    """Our parser of trade and ticker frames ahead of CCXT (``parser = "native"``/``auto``).
    Default: none, CCXT parses every frame. ``marketbus.settings.NATIVE_PARSERS`` lists the
    exchanges that have one (a test keeps the two equal)."""
    backfill: Callable[[str, bool], BackfillMode | None] = since_with_fetch_trades
    """How missed trades are paged after a reconnect: (trade stream, CCXT has
    ``fetchTrades``) -> the mode, None: not at all (``publisher.backfill``). Default: by time
    (SINCE) wherever ``fetchTrades`` exists."""
    unique_trade_ids: bool = False
    """Trade ids are unique but do not follow one another per market: only duplicates are
    checked, a gap cannot be seen (``publisher.trade_ids``). Default: numeric ids must step
    by one."""
    ticker_carries: frozenset[Channel] = frozenset()
    """Derivatives channels the exchange's contract tickers carry (``publisher.deriv_feeds``:
    fed by the ``tickers`` subscription). Default: none."""
    feeds: Mapping[Channel, Source] = field(default_factory=dict)
    """A derivatives channel's websocket feed where CCXT's generic methods would miss it.
    Default: the generic rows of ``publisher.deriv_feeds``."""
    mark_index: MarkIndex | None = None
    """Where mark prices lack the index price another subscription carries: what to watch
    beside them. Default: none (the mark frames have it, or it stays None)."""
    liquidation_side_is_position: bool = False
    """The liquidation side is the liquidated position's, not the order's (turned around in
    ``publisher.derivatives``). Default: the order's."""
    sandbox_tested: bool = False
    """Its sandbox mode is tested against the fake (``marketbus.settings.SANDBOX_TESTED``
    lists the same). Default: untested (allowed where CCXT has test urls)."""


__all__ = [
    "BackfillMode",
    "ExchangeLimits",
    "ExchangeProfile",
    "Feed",
    "MarkIndex",
    "Source",
    "Tap",
    "since_with_fetch_trades",
]
