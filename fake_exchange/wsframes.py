"""Server-to-client websocket text frames as bytes (RFC 6455 section 5.2), pure.

A burst of tens of thousands of frames through aiohttp's ``send_str`` costs the fake more CPU
than the client under test spends reading them (the fake was the ceiling of the burst figures).
Frames built here are written to the transport in large chunks instead. A server never masks;
the fake never negotiates compression, so the frames are plain.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

_TEXT_FIN = 0x81
_U16 = struct.Struct(">BBH")
_U64 = struct.Struct(">BBQ")


def text_frame(data: bytes) -> bytes:
    """One final, unmasked text frame holding ``data`` (UTF-8)."""
    n = len(data)
    if n < 126:
        return bytes((_TEXT_FIN, n)) + data
    if n < 1 << 16:
        return _U16.pack(_TEXT_FIN, 126, n) + data
    return _U64.pack(_TEXT_FIN, 127, n) + data


def text_frames(texts: Iterable[bytes]) -> bytes:
    """Consecutive text frames as one buffer, for one ``transport.write``."""
    return b"".join(map(text_frame, texts))


__all__ = ["text_frame", "text_frames"]
