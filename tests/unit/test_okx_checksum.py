"""OKX book checksums in the publisher, checked against the recorded frames' own checksums."""

from __future__ import annotations

import orjson

from fake_exchange.okx import frames as fake_frames
from fake_exchange.recording import bundled_recording
from publisher.okx_books import StringBook, checksum


def recorded_book_frames() -> list[dict]:
    path = bundled_recording().with_name("OKX.jsonl")
    out = []
    for line in path.read_text().splitlines():
        rec = orjson.loads(line)
        if rec.get("t") != "recv" or '"books"' not in rec.get("data", ""):
            continue
        msg = orjson.loads(rec["data"])
        if msg.get("arg", {}).get("channel") == "books" and "data" in msg:
            out.append(msg)
    return out


def test_every_recorded_checksum_matches_the_book_we_keep_in_strings() -> None:
    books: dict[str, StringBook] = {}
    checked = 0
    for msg in recorded_book_frames():
        inst = msg["arg"]["instId"]
        for row in msg["data"]:
            if msg.get("action") == "snapshot":
                books[inst] = StringBook()
            if inst not in books:
                continue
            books[inst].apply(row)
            assert books[inst].checksum() == int(row["checksum"]), (inst, checked)
            checked += 1
    assert checked > 200  # the recording has 290 books frames on 3 instruments


def test_a_changed_level_changes_the_checksum_and_the_fake_agrees() -> None:
    bids = [("100.1", "2"), ("100", "0.5")]
    asks = [("100.2", "1"), ("100.3", "4"), ("100.4", "1")]
    assert checksum(bids, asks) == fake_frames.checksum(bids, asks)
    assert checksum(bids, asks) != checksum(bids, [("100.2", "1.5"), *asks[1:]])
    # strings as sent: 100.0 and 100 are different text, so different checksums
    assert checksum([("100.0", "1")], []) != checksum([("100", "1")], [])


def test_zero_size_removes_a_level() -> None:
    b = StringBook()
    b.apply(
        {"bids": [["10", "1", "0", "1"], ["9", "1", "0", "1"]], "asks": [["11", "1", "0", "1"]]}
    )
    b.apply({"bids": [["10", "0", "0", "0"]], "asks": []})
    assert b.bids.top(5) == [("9", "1")]
    assert b.checksum() == checksum([("9", "1")], [("11", "1")])
