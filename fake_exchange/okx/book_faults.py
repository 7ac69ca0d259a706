"""Planned books faults of the fake OKX (a seqId gap, a wrong checksum), applied on the way out.

Pure and synchronous. Only the frames written change, never the mirrored book, so after a gap
every later seqId (and any snapshot) moves by one and the chain goes on from there, as it would
after a frame lost upstream.
"""

from __future__ import annotations

from fake_exchange.okx.frames import Payload

SEQ_CHANNELS = frozenset({"books", "books5", "bbo-tbt"})
"""Channels whose rows carry a seqId."""


class BookFaults:
    """Pending gaps and bad checksums, by instId (None: the next books update of any)."""

    def __init__(self) -> None:
        self._gaps: list[str | None] = []
        self._bad_checksums: list[str | None] = []
        self._seq_shift: dict[str, int] = {}
        self.gaps_sent = 0
        self.bad_checksums_sent = 0
        self.faulted: list[tuple[str, int]] = []
        """(instId, seqId as sent) of each frame a fault was applied to: a client that
        publishes a book at one of these seqIds published a book it should have refused."""

    def add_gap(self, n: int, inst_id: str | None) -> None:
        self._gaps.extend([inst_id] * n)

    def add_bad_checksum(self, n: int, inst_id: str | None) -> None:
        self._bad_checksums.extend([inst_id] * n)

    def seq_shift(self, inst_id: str) -> int:
        """How far the seqIds of `inst_id` moved: one per gap sent."""
        return self._seq_shift.get(inst_id, 0)

    def outgoing(self, channel: str, inst: str, frame: Payload) -> Payload:
        """The frame as written: seqIds moved past injected gaps, faults applied."""
        gap = bad = False
        if channel == "books" and frame.get("action") == "update":
            gap = _take(self._gaps, inst)
            bad = _take(self._bad_checksums, inst)
        if gap:
            self._seq_shift[inst] = self._seq_shift.get(inst, 0) + 1
            self.gaps_sent += 1
        shift = self._seq_shift.get(inst, 0)
        if not bad and (shift == 0 or channel not in SEQ_CHANNELS):
            return frame
        rows = []
        for row in frame["data"]:
            row = dict(row)
            row["seqId"] += shift
            if row.get("prevSeqId", -1) != -1:
                row["prevSeqId"] += shift
            if gap or bad:
                self.faulted.append((inst, row["seqId"]))
                gap = False
            if bad:
                row["checksum"] ^= 1
                self.bad_checksums_sent += 1
                bad = False
            rows.append(row)
        return dict(frame, data=rows)


def _take(pending: list[str | None], inst: str) -> bool:
    """Consume the first pending fault that applies to `inst`."""
    for i, target in enumerate(pending):
        if target is None or target == inst:
            del pending[i]
            return True
    return False


__all__ = ["SEQ_CHANNELS", "BookFaults"]
