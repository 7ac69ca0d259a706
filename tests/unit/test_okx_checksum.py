"""OKX book checksums in the publisher, checked against the recorded frames' own checksums."""

from __future__ import annotations

import orjson

from fake_exchange.okx import frames as fake_frames
from fake_exchange.recording import bundled_recording
from publisher.okx_books import MAX_LEVELS, StringBook, checksum


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


def test_the_string_book_is_bounded_by_the_subscription_depth() -> None:
    """A price walking up for hours leaves levels OKX never deletes: the copy keeps the best
    MAX_LEVELS of each side, and the checksum over the top 25 is unchanged by the trim."""
    book = StringBook()
    book.apply(
        {
            "bids": [[f"{100 - i * 0.01:.2f}", "1", "0", "1"] for i in range(400)],
            "asks": [[f"{100.01 + i * 0.01:.2f}", "1", "0", "1"] for i in range(400)],
        }
    )
    reference = StringBook()
    for step in range(1, 2_001):  # the price walks up a cent per update, never deleting
        mid = 100 + step * 0.01
        update = {
            "bids": [[f"{mid:.2f}", "2", "0", "1"]],
            "asks": [[f"{mid + 400 * 0.01:.2f}", "2", "0", "1"]],
        }
        book.apply(update)
    assert len(book.bids.keys) <= MAX_LEVELS and len(book.asks.keys) <= MAX_LEVELS
    assert len(book.bids.levels) == len(book.bids.keys)
    assert len(book.asks.levels) == len(book.asks.keys)
    # the best levels are exactly those an unbounded book would show
    reference.bids.apply([[f"{100 + s * 0.01:.2f}", "2"] for s in range(1_976, 2_001)])
    assert book.bids.top(25) == reference.bids.top(25)
