"""A recorded Bybit v5 public session: its instruments and the frames Bybit pushed, read once.

Any session of the protocol replays, not only the bundled one: instruments come from every
`instruments-info` answer (by its `category`), frames from every public connection, each filed
under the category its url names (`/v5/public/linear`), whatever symbols and topics it holds.
"""

from __future__ import annotations

import importlib.resources
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from fake_exchange.bybit.frames import CATEGORIES, Payload
from fake_exchange.recording import RecordingError


def bybit_recording() -> Path:
    """Path of the Bybit recording shipped inside the package (2026-08-09, linear, 26 s)."""
    return Path(str(importlib.resources.files("fake_exchange") / "data" / "BYBIT.jsonl"))


@dataclass(frozen=True, slots=True)
class RecordedPush:
    """A data frame Bybit sent: receive time (epoch s), the url's category, the frame."""

    ts: float
    category: str
    frame: Payload


@dataclass(slots=True)
class BybitRecording:
    instruments: dict[str, list[Payload]] = field(default_factory=dict)
    frames: list[RecordedPush] = field(default_factory=list)


def load_bybit_recording(path: Path) -> BybitRecording:
    """Instruments by category (pages merged) and every data frame, in receive order."""
    rec = BybitRecording()
    categories: dict[str, str] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                kind = item.get("t")
                if kind == "http" and "/v5/market/instruments-info" in item["url"]:
                    category = parse_qs(urlparse(item["url"]).query)["category"][0]
                    entries = json.loads(item["data"])["result"]["list"]
                    rec.instruments.setdefault(category, []).extend(entries)
                elif kind == "connect":
                    categories[item["conn"]] = urlparse(item["addr"]).path.rsplit("/", 1)[-1]
                elif kind == "recv" and item["data"].startswith("{"):
                    msg = json.loads(item["data"])
                    category = categories.get(item["conn"], "")
                    if "topic" in msg and "data" in msg and category in CATEGORIES:
                        rec.frames.append(RecordedPush(float(item["ts"]), category, msg))
            except (json.JSONDecodeError, KeyError, IndexError, TypeError) as e:
                raise RecordingError(f"{path}:{lineno}: not a Bybit recording line") from e
    if not rec.instruments:
        raise RecordingError(f"{path}: no instruments-info answer")
    rec.frames.sort(key=lambda f: f.ts)
    return rec


__all__ = ["BybitRecording", "RecordedPush", "bybit_recording", "load_bybit_recording"]
