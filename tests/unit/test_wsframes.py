"""The fake's ready-made websocket frames: RFC 6455 headers for every length class."""

from __future__ import annotations

import struct

import pytest

from fake_exchange.wsframes import text_frame, text_frames


def _parse(buf: bytes) -> list[bytes]:
    """A minimal RFC 6455 reader for unmasked final text frames (what a client sees)."""
    out, i = [], 0
    while i < len(buf):
        b0, b1 = buf[i], buf[i + 1]
        assert b0 == 0x81, "FIN + text opcode"
        assert not b1 & 0x80, "a server never masks"
        n, i = b1 & 0x7F, i + 2
        if n == 126:
            (n,), i = struct.unpack_from(">H", buf, i), i + 2
        elif n == 127:
            (n,), i = struct.unpack_from(">Q", buf, i), i + 8
        out.append(buf[i : i + n])
        i += n
    return out


@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 65_535, 65_536, 200_000])
def test_text_frame_uses_the_shortest_length_form(n: int) -> None:
    data = b"x" * n
    frame = text_frame(data)
    header = {True: 2, False: 4 if n < 65_536 else 10}[n < 126]
    assert len(frame) == header + n
    assert _parse(frame) == [data]


def test_text_frames_concatenate_in_order() -> None:
    texts = [b'{"a":1}', b"y" * 300, "é".encode(), b"z" * 70_000]
    assert _parse(text_frames(texts)) == texts
