"""A recorded Coinbase Advanced Trade session: its products and the data messages, read once.

Any session of the protocol replays, not only the bundled one: products come from every
`market/products` (or `brokerage/products`) answer, pages merged; data messages from every
connection, whatever products and channels they hold. `subscriptions` acks and `heartbeats`
are left out: the fake makes its own, per connection.
"""

from __future__ import annotations

import importlib.resources
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from fake_exchange.coinbase.frames import DATA_CHANNELS, Payload, parse_iso
from fake_exchange.recording import RecordingError


def coinbase_recording() -> Path:
    """Path of the Coinbase recording shipped inside the package (2026-08-09, 12 s)."""
    return Path(str(importlib.resources.files("fake_exchange") / "data" / "COINBASE.jsonl"))


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """One event of a data message: receive time (epoch s), channel, envelope time (ns)."""

    ts: float
    channel: str
    event: Payload
    ts_ns: int


@dataclass(slots=True)
class CoinbaseRecording:
    products: list[Payload] = field(default_factory=list)
    events: list[RecordedEvent] = field(default_factory=list)


def _is_products(url: str) -> bool:
    path = urlparse(url).path.rstrip("/")
    return path.endswith(("/brokerage/market/products", "/brokerage/products"))


def load_coinbase_recording(path: Path) -> CoinbaseRecording:
    """Products (deduplicated by id, first answer wins) and every data event, in receive
    order (a message of several events gives several, same time)."""
    rec = CoinbaseRecording()
    seen: set[str] = set()
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                kind = item.get("t")
                if kind == "http" and _is_products(item["url"]):
                    for entry in json.loads(item["data"]).get("products", []):
                        if entry["product_id"] not in seen:
                            seen.add(entry["product_id"])
                            rec.products.append(entry)
                elif kind == "recv" and item["data"].startswith("{"):
                    msg = json.loads(item["data"])
                    channel = msg.get("channel")
                    if channel not in DATA_CHANNELS:
                        continue
                    ts_ns = parse_iso(msg["timestamp"])
                    for event in msg["events"]:
                        rec.events.append(RecordedEvent(float(item["ts"]), channel, event, ts_ns))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise RecordingError(f"{path}:{lineno}: not a Coinbase recording line") from e
    if not rec.products:
        raise RecordingError(f"{path}: no market/products answer")
    rec.events.sort(key=lambda e: e.ts)
    return rec


__all__ = ["CoinbaseRecording", "RecordedEvent", "coinbase_recording", "load_coinbase_recording"]
