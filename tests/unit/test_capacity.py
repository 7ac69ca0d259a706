"""``marketbus.capacity``: what the configured streams may hold (pure)."""

from __future__ import annotations

import pytest

from marketbus.capacity import (
    BOOK_BASE_BYTES,
    BOOK_LEVEL_BYTES,
    ENTRY_BYTES,
    TRIM_SLACK,
    entry_bytes,
    estimate,
    fits,
    human_bytes,
)
from marketbus.models import Channel
from marketbus.settings import ExchangeSettings, RedisSettings, Settings


def test_a_book_entry_grows_with_its_depth() -> None:
    assert entry_bytes(Channel.BOOK, 1) == BOOK_BASE_BYTES + BOOK_LEVEL_BYTES
    assert entry_bytes(Channel.BOOK, 20) - entry_bytes(Channel.BOOK, 10) == 10 * BOOK_LEVEL_BYTES
    assert entry_bytes(Channel.TRADES, 50) == ENTRY_BYTES[Channel.TRADES]  # depth: books only
    assert entry_bytes(Channel.TRADES) < entry_bytes(Channel.TICKER) < entry_bytes(Channel.BOOK)


def test_streams_times_maxlen_times_entry_bytes() -> None:
    s = Settings(
        redis=RedisSettings(maxlen=1_000),
        exchanges=(
            # BTCUSDT and btc-usdt are one market, one stream per channel
            ExchangeSettings(name="binance", symbols=("BTCUSDT", "btc-usdt", "ETH/USDT")),
            ExchangeSettings(
                name="okx", symbols=("BTC/USDT",), channels=("book",), book_depth=5,
            ),
        ),
    )  # fmt: skip
    est = estimate(s)
    entries = 1_000 + TRIM_SLACK
    by = {(p.exchange, p.channel): p for p in est.parts}
    assert set(by) == {
        ("binance", Channel.TICKER), ("binance", Channel.TRADES), ("okx", Channel.BOOK),
    }  # fmt: skip
    assert by["binance", Channel.TRADES].streams == 2
    assert by["binance", Channel.TRADES].bytes == 2 * entries * ENTRY_BYTES[Channel.TRADES]
    assert by["okx", Channel.BOOK].entry_bytes == BOOK_BASE_BYTES + 5 * BOOK_LEVEL_BYTES
    assert est.streams == 5
    assert est.bytes == sum(p.bytes for p in est.parts)
    assert est.maxlen == 1_000


def test_the_defaults_take_about_a_quarter_gigabyte() -> None:
    """5 symbols x ticker+trades x MAXLEN ~100,000: the figure an operator sizes Redis by."""
    est = estimate(Settings())
    assert est.streams == 10
    assert 200 * 2**20 < est.bytes < 260 * 2**20


@pytest.mark.parametrize(
    ("needed", "maxmemory", "ok"),
    [(10, 0, True), (90, 100, True), (91, 100, False), (2**40, 2**30, False)],
)
def test_fits_leaves_headroom_and_zero_means_no_limit(
    needed: int, maxmemory: int, ok: bool
) -> None:
    assert fits(needed, maxmemory) is ok


@pytest.mark.parametrize(
    ("n", "text"),
    [(512, "512 B"), (2048, "2.0 KiB"), (231 * 2**20, "231 MiB"), (3 * 2**30, "3.0 GiB")],
)
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text
