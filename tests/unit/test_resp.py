"""The hand-packed XADD bytes are exactly what redis-py would send for the same command."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection

from publisher.resp import XaddPacker


def redis_py_bytes(key: str, d: bytes, h: bytes, maxlen: int) -> bytes:
    conn = Connection()
    return b"".join(conn.pack_command("XADD", key, "MAXLEN", "~", str(maxlen), "*", "d", d, "h", h))


@given(
    st.text(min_size=1, max_size=40),
    st.binary(max_size=300),
    st.binary(max_size=300),
    st.integers(1, 10**9),
)
def test_packed_xadd_matches_redis_py(key: str, d: bytes, h: bytes, maxlen: int) -> None:
    assert XaddPacker(maxlen).pack([(key, d, h)]) == redis_py_bytes(key, d, h, maxlen)


def test_many_commands_are_concatenated_in_order() -> None:
    p = XaddPacker(100)
    items = [("md:{binance:BTC/USDT}:trades", b"\x93\x01", b"one"), ("k2", b"", b"two")]
    assert p.pack(items) == b"".join(redis_py_bytes(k, d, h, 100) for k, d, h in items)
