"""One instrument's order book in OKX's own strings, with OKX's checksum.

The sorted string book itself is shared (`fake_exchange.levels`); OKX adds its `books` rows
(snapshot/update with seqId and ts) and the CRC32 checksum, which runs over the strings as sent:
"30236" and "30236.0" would give different checksums. Pure and synchronous: the sources, the
server mirror and the tests all use it.
"""

from __future__ import annotations

from fake_exchange.levels import LevelBook
from fake_exchange.okx import frames as of
from fake_exchange.okx.frames import Payload

SNAPSHOT_DEPTH = 400
"""Levels a side in a `books` snapshot (OKX sends 400)."""


class OkxBook(LevelBook):
    """Price levels of one instrument plus the last seqId and exchange time applied."""

    __slots__ = ()

    def reset(self, row: Payload) -> None:
        """Replace everything with a snapshot row."""
        self.clear()
        self.update(row)

    def update(self, row: Payload) -> None:
        """Apply a `books` row (snapshot or update): levels, then seqId and ts when present."""
        self.apply(row.get("asks", ()), row.get("bids", ()))
        if "seqId" in row:
            self.seq_id = int(row["seqId"])
        if "ts" in row:
            self.ts_ms = int(row["ts"])

    def checksum(self) -> int:
        """OKX's CRC32 over the top 25 levels, interleaved bid:ask."""
        depth = of.CHECKSUM_DEPTH
        return of.checksum(self.bids(depth), self.asks(depth))

    def verify(self, row: Payload) -> bool:
        """Whether a received row's checksum matches this book (after applying the row)."""
        return "checksum" not in row or int(row["checksum"]) == self.checksum()

    def snapshot_row(self, depth: int = SNAPSHOT_DEPTH, seq_shift: int = 0) -> Payload:
        """The `books` snapshot row of the current state: prevSeqId -1, checksum computed."""
        return of.book_row(
            self.asks(depth),
            self.bids(depth),
            self.ts_ms,
            checksum=self.checksum(),
            seq_id=self.seq_id + seq_shift,
            prev_seq_id=-1,
        )


__all__ = ["SNAPSHOT_DEPTH", "OkxBook"]
