"""Read a recorded Binance session, spot or USD-M futures (format 2, see
shared/recordings/README.md).

Kept apart from the replay logic so the file format is parsed in one place and the replay works
on plain data. Which market a recording holds is read from its REST urls (`/fapi/` is USD-M).
"""

from __future__ import annotations

import importlib.resources
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from fake_exchange.binance_frames import SPOT, USDM, Payload, Venue


class RecordingError(ValueError):
    """The file is not a Binance recording this fake can replay."""


@dataclass(frozen=True, slots=True)
class RecordedFrame:
    """One websocket frame the exchange sent: receive time (epoch s), stream, payload."""

    ts: float
    stream: str
    data: Payload


@dataclass(slots=True)
class Recording:
    """What a replay needs from a recording."""

    exchange_info: Payload
    snapshots: dict[str, Payload] = field(default_factory=dict)
    frames: list[RecordedFrame] = field(default_factory=list)
    venue: Venue = SPOT


def bundled_recording(venue: Venue = SPOT) -> Path:
    """Path of the Binance recording shipped inside the package (spot, or `USDM`'s)."""
    ref = importlib.resources.files("fake_exchange") / "data" / venue.recording
    return Path(str(ref))


def _loads(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RecordingError(f"undecodable {what}") from e


def load_exchange_info(path: Path) -> Payload:
    """Only the exchangeInfo body, without parsing every frame (for synthetic sources)."""
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if "/exchangeInfo" in line[:300]:
                rec = _loads(line, "line")
                body: Payload = _loads(rec["data"], "exchangeInfo")
                return body
    raise RecordingError(f"{path}: no exchangeInfo line")


def load_recording(path: Path) -> Recording:
    """Parse a recording: exchangeInfo, depth snapshots by symbol id, websocket frames."""
    exchange_info: Payload | None = None
    snapshots: dict[str, Payload] = {}
    frames: list[RecordedFrame] = []
    venue = SPOT
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            rec = _loads(line, f"line {lineno}")
            kind = rec.get("t")
            if kind == "http":
                url = urlparse(rec["url"])
                if url.path.startswith("/fapi/"):
                    venue = USDM
                if url.path.endswith("/exchangeInfo"):
                    exchange_info = _loads(rec["data"], "exchangeInfo")
                elif url.path.endswith("/depth"):
                    symbol = parse_qs(url.query)["symbol"][0]
                    snapshots[symbol] = _loads(rec["data"], "depth snapshot")
            elif kind == "recv":
                msg = _loads(rec["data"], f"frame on line {lineno}")
                if isinstance(msg, dict) and "stream" in msg and "data" in msg:
                    frames.append(RecordedFrame(float(rec["ts"]), msg["stream"], msg["data"]))
    if exchange_info is None:
        raise RecordingError(f"{path}: no exchangeInfo line")
    frames.sort(key=lambda f: f.ts)
    return Recording(exchange_info, snapshots, frames, venue)
