"""The fake OKX's planned book faults (pure): what a client sees on the wire."""

from __future__ import annotations

from typing import Any

from fake_exchange.okx.book_faults import BookFaults


def update(seq: int, checksum: int = 100) -> dict[str, Any]:
    return {"action": "update", "data": [{"seqId": seq, "prevSeqId": seq - 1,
                                          "checksum": checksum}]}  # fmt: skip


def test_a_gap_breaks_the_chain_once_and_later_frames_chain_on_from_it() -> None:
    f = BookFaults()
    f.add_gap(1, "BTC-USDT")
    out = [f.outgoing("books", "BTC-USDT", update(s))["data"][0] for s in (11, 12, 13)]
    assert [(r["prevSeqId"], r["seqId"]) for r in out] == [(11, 12), (12, 13), (13, 14)]
    # the client saw 12 follow nothing it had (10 was the last seqId before): a gap of one
    assert f.gaps_sent == 1 and f.seq_shift("BTC-USDT") == 1
    assert f.outgoing("books", "ETH-USDT", update(5))["data"][0]["seqId"] == 5  # others untouched


def test_a_bad_checksum_changes_one_frame_only() -> None:
    f = BookFaults()
    f.add_bad_checksum(1, None)  # the next books update of any instrument
    first = f.outgoing("books", "ETH-USDT", update(7, checksum=100))["data"][0]
    second = f.outgoing("books", "ETH-USDT", update(8, checksum=100))["data"][0]
    assert first["checksum"] != 100 and second["checksum"] == 100
    assert (first["seqId"], second["seqId"]) == (7, 8) and f.bad_checksums_sent == 1


def test_snapshots_and_other_channels_do_not_take_a_planned_fault() -> None:
    f = BookFaults()
    f.add_gap(1, None)
    snap = {"action": "snapshot", "data": [{"seqId": 1, "prevSeqId": -1, "checksum": 5}]}
    assert f.outgoing("books", "A-B", snap) == snap
    trades = {"data": [{"tradeId": "1"}]}
    assert f.outgoing("trades", "A-B", trades) == trades
    assert f.gaps_sent == 0  # still pending for the next books update
    assert f.outgoing("books", "A-B", update(2))["data"][0]["seqId"] == 3
