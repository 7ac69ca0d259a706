"""`marketbus inspect`'s table of publisher workers (pure rendering)."""

from __future__ import annotations

import io
import time

from rich.console import Console

from marketbus_cli.inspect import print_inspection


def test_every_worker_gets_a_row_with_its_instance() -> None:
    now_ms = int(time.time() * 1000)
    workers = [
        {"exchange": "binance", "state": "CONNECTED", "markets": ["BTC/USDT"],
         "last_frame_age_s": 0.5, "updated_ms": now_ms, "records": 10},
        {"exchange": "binance", "instance": "eu", "state": "RECONNECTING", "markets": [],
         "last_frame_age_s": None, "records": 0, "last_error": "refused"},
        {"exchange": "okx", "state": "CONNECTED", "markets": ["ETH/USDT"],
         "last_frame_age_s": 1.0, "records": 3},
    ]  # fmt: skip
    out = io.StringIO()
    print_inspection({"streams": [], "workers": workers}, Console(file=out, width=200))
    text = out.getvalue()
    assert "binance@eu" in text and "RECONNECTING" in text and "refused" in text
    assert text.count("CONNECTED") == 2  # both CONNECTED rows, not only the last one
    assert "okx" in text and "ETH/USDT" in text and "BTC/USDT" in text
