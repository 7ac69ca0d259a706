"""A recorded Kraken websocket v1 session: its pairs and data frames, read once.

Any v1 session replays, not only the bundled one: pairs come from every `0/public/AssetPairs`
answer; data frames (`[channelID, payload..., channelName, pair]`) from every connection,
whatever pairs and channels they hold. The pair and the channel name are in each frame, so the
channel ids only matter to a v1 client: `channel_ids` keeps the recorded ones (from the
`subscriptionStatus` replies). When several connections carry the same (channel, pair), only
the first one's frames are kept, so nothing is played twice. Heartbeats, `systemStatus` and
acks are left out: the fake makes its own.
"""

from __future__ import annotations

import importlib.resources
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from fake_exchange.kraken.frames import Payload
from fake_exchange.recording import RecordingError


def kraken_recording() -> Path:
    """Path of the Kraken recording shipped inside the package (2021-04-17, 18 s, v1)."""
    return Path(str(importlib.resources.files("fake_exchange") / "data" / "KRAKEN.jsonl"))


@dataclass(frozen=True, slots=True)
class RecordedFrame:
    """One v1 data frame: receive time (epoch s), channel name (`book-1000`, `trade`,
    `ticker`), the pair's `wsname`, the payload parts and the frame's text as received."""

    ts: float
    channel: str
    pair: str
    parts: list[Any]
    text: str


@dataclass(slots=True)
class KrakenRecording:
    pairs: dict[str, Payload] = field(default_factory=dict)
    """AssetPairs `result`: Kraken's pair id -> its entry."""
    frames: list[RecordedFrame] = field(default_factory=list)
    channel_ids: dict[tuple[str, str], int] = field(default_factory=dict)
    """(channel name, pair) -> the recorded v1 channel id."""


def _is_pairs(url: str) -> bool:
    return urlparse(url).path.rstrip("/").endswith("/public/AssetPairs")


def load_kraken_recording(path: Path) -> KrakenRecording:
    """Pairs (first answer wins) and data frames in receive order (see the module)."""
    rec = KrakenRecording()
    owner: dict[tuple[str, str], str] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                kind = item.get("t")
                if kind == "http" and _is_pairs(item["url"]):
                    for pid, entry in json.loads(item["data"]).get("result", {}).items():
                        rec.pairs.setdefault(pid, entry)
                elif kind == "recv":
                    msg = json.loads(item["data"])
                    if isinstance(msg, dict):
                        if msg.get("event") == "subscriptionStatus" and "channelID" in msg:
                            key = (str(msg["channelName"]), str(msg["pair"]))
                            rec.channel_ids.setdefault(key, int(msg["channelID"]))
                        continue
                    if not isinstance(msg, list) or len(msg) < 4:
                        continue
                    channel, pair = str(msg[-2]), str(msg[-1])
                    if owner.setdefault((channel, pair), item["conn"]) != item["conn"]:
                        continue  # another connection already carries this stream
                    rec.frames.append(
                        RecordedFrame(float(item["ts"]), channel, pair, msg[1:-2], item["data"])
                    )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise RecordingError(f"{path}:{lineno}: not a Kraken recording line") from e
    if not rec.pairs:
        raise RecordingError(f"{path}: no AssetPairs answer")
    rec.frames.sort(key=lambda f: f.ts)
    return rec


__all__ = ["KrakenRecording", "RecordedFrame", "kraken_recording", "load_kraken_recording"]
