"""The peer benchmark's own logic: the fake's sustained-load frames, loss counting, ratios.

The cryptofeed side runs only from its throwaway venv (``bench/peer_venv.py``), so what is
tested here is everything of ours around it, with real frames and real Redis entries.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import orjson
import pytest

from bench import peer_measure as pm
from bench.fig_peer import CF_DEFAULT, CF_LOSSLESS, MB_NATIVE, add_ratios
from bench.peer_load import _template
from bench.peer_table import cells
from fake_exchange import binance_frames as bf
from fake_exchange.wsframes import text_frame
from marketbus import codec
from tests.factories import trade


@pytest.mark.parametrize("combined", [True, False])
def test_flood_frames_are_the_fakes_own_aggtrade_frames(combined: bool) -> None:
    stream = bf.stream_name("BTCUSDT", "aggTrade")
    sample = bf.agg_trade("BTCUSDT", 0, "101.5", "1.00000000", 0, 0, 0, 0, False)
    make = _template(stream, sample, combined)
    ms, agg, tid = 1_700_000_000_123, 4_321, 98_765
    payload = bf.agg_trade("BTCUSDT", agg, "101.5", "1.00000000", tid, tid, ms, ms, False)
    body = {"stream": stream, "data": payload} if combined else payload
    assert make(ms, agg, tid) == text_frame(orjson.dumps(body))


def test_losses_count_missing_duplicate_and_foreign_ids_per_market() -> None:
    sent = {"BTCUSDT": (10, 19), "ETHUSDT": (1, 5)}
    stored = {
        "BTCUSDT": [10, 11, 11, 13, *range(14, 20), 99],  # 12 missing, 11 twice, 99 not sent
        # ETHUSDT: its stream was never created
    }
    got = pm.losses(sent, stored)
    assert got.sent == 15
    assert got.stored == 11
    assert got.per_market == {"BTCUSDT": 1, "ETHUSDT": 5}
    assert got.lost == 6
    assert got.duplicates == 1
    assert got.foreign == 1


def test_marketbus_id_is_the_trade_id_of_the_entry() -> None:
    entry = codec.encode(trade(7))  # as redis-py returns it: bytes keys and values
    fields = {k.encode(): v.encode() if isinstance(v, str) else v for k, v in entry.items()}
    assert pm.marketbus_id(fields) == 7
    assert pm.cryptofeed_id({b"id": b"123456", b"price": b"1.5"}) == 123456


def _row(pub: str, load: str, rate: float, us: float, **kw: Any) -> dict[str, Any]:
    return {"publisher": pub, "load_key": load, "load": load, "records_s": rate, "pub_us": us}


def test_ratios_are_to_cryptofeed_defaults_on_the_same_load() -> None:
    rows = [
        _row(CF_DEFAULT.label, "overload", 10_000, 70.0),
        _row(CF_LOSSLESS.label, "overload", 20_000, 35.0),
        _row(MB_NATIVE.label, "overload", 80_000, 10.5),
        _row(MB_NATIVE.label, "steady", 4_000, 26.0),  # no cryptofeed row for this load
        {"publisher": CF_DEFAULT.label, "load_key": "burst", "load": "b", "error": "boom"},
        _row(MB_NATIVE.label, "burst", 50_000, 10.0),
    ]
    add_ratios(rows)
    assert rows[0]["ratio_rate"] == 1.0 and rows[0]["ratio_cpu"] == 1.0
    assert rows[1]["ratio_rate"] == 2.0 and rows[1]["ratio_cpu"] == 0.5
    assert rows[2]["ratio_rate"] == 8.0 and rows[2]["ratio_cpu"] == pytest.approx(0.15)
    assert "ratio_rate" not in rows[3] and "ratio_rate" not in rows[5]


def test_table_row_shows_the_lost_share_and_the_fakes_wait() -> None:
    row = _row(CF_DEFAULT.label, "overload", 9_871.2, 72.25) | {
        "redis_us": 2.3,
        "peak_rss_mb": 61.4,
        "bytes_per_entry": 113.2,
        "lost": 216_138,
        "sent": 294_772,
        "ratio_rate": 1.0,
        "fake_rate": 48_137.0,
        "fake_waited_share": 0.693,
    }
    got = cells(row)
    assert got[2] == "9,871"
    assert got[7] == "216,138 of 294,772 (73%)"
    assert got[8] == "1.00x" and got[9] == "-"
    assert got[10] == "48,137 (waited 69%)"


def test_peak_rss_can_be_reset_between_loads() -> None:
    """Measured on a small child process: the test runner's own RSS (a full suite holds
    more than a GB) would hide a 64 MB drop."""
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys\nb = bytearray(64 << 20)\nb[::4096] = b'x' * len(b[::4096])\ndel b\n"
         "print('freed', flush=True)\nsys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "freed"
        high = pm.peak_rss_mb(child.pid)
        assert pm.reset_peak(child.pid)
        assert pm.peak_rss_mb(child.pid) < high - 32
        assert pm.rss_mb(child.pid) <= pm.peak_rss_mb(child.pid) + 1
    finally:
        child.kill()
        child.wait()
