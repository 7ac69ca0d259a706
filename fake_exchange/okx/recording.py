"""The recorded OKX session: its instruments and the data frames OKX pushed, read once.

Both sources start from it: replay plays the frames, synthetic takes the instrument list.
"""

from __future__ import annotations

import importlib.resources
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from fake_exchange.okx.frames import Payload
from fake_exchange.recording import RecordingError


def okx_recording() -> Path:
    """Path of the OKX recording shipped inside the package."""
    return Path(str(importlib.resources.files("fake_exchange") / "data" / "OKX.jsonl"))


@dataclass(frozen=True, slots=True)
class RecordedPush:
    """A data frame the exchange sent: receive time (epoch s) and the frame."""

    ts: float
    frame: Payload


@dataclass(slots=True)
class OkxRecording:
    instruments: dict[str, list[Payload]] = field(default_factory=dict)
    frames: list[RecordedPush] = field(default_factory=list)


def load_okx_recording(path: Path) -> OkxRecording:
    """Instruments by instType (OPTION merged over its underlyings) and every data frame."""
    rec = OkxRecording()
    options: dict[str, Payload] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                kind = item.get("t")
                if kind == "http" and "/public/instruments" in item["url"]:
                    inst_type = parse_qs(urlparse(item["url"]).query)["instType"][0]
                    entries = json.loads(item["data"])["data"]
                    if inst_type == "OPTION":
                        options.update((e["instId"], e) for e in entries)
                    else:
                        rec.instruments[inst_type] = entries
                elif kind == "recv" and item["data"].startswith("{"):
                    msg = json.loads(item["data"])
                    if "arg" in msg and "data" in msg and "event" not in msg:
                        rec.frames.append(RecordedPush(float(item["ts"]), msg))
            except (json.JSONDecodeError, KeyError, IndexError) as e:
                raise RecordingError(f"{path}:{lineno}: not an OKX recording line") from e
    if options:
        rec.instruments["OPTION"] = list(options.values())
    if "SPOT" not in rec.instruments:
        raise RecordingError(f"{path}: no SPOT instruments")
    rec.frames.sort(key=lambda f: f.ts)
    return rec


__all__ = ["OkxRecording", "RecordedPush", "load_okx_recording", "okx_recording"]
