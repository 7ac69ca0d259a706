"""The archive's layout, pure: one Arrow schema per channel, partition paths, file names.

A file's columns are the consumer ring buffer's (``consumers.columns.COLUMNS``: the same
names, types and values, so history and live tables concatenate), plus ``symbol`` first,
``entry_seq`` (the entry id is ``entry_ms-entry_seq``: two integers are smaller than the text
and compare as Redis orders ids) and, for books, every level as list columns ``bids`` and
``asks`` of ``{price, size}``. ``channel``, ``exchange`` and ``date`` are hive partitions in
the path, not columns in the file. See docs/history.md.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, Final

import pyarrow as pa

from consumers.columns import COLUMNS
from marketbus.models import Channel

ARCHIVE_VERSION: Final = 1
"""Layout version written into every file's footer (``marketbus.archive``); a reader meeting
a newer one refuses the file with a clear error instead of misreading it."""

META_KEY: Final = b"marketbus.archive"
PARTITIONS: Final = ("channel", "exchange", "date")
DAY_MS: Final = 86_400_000
MAX_DAY: Final = 2_932_896  # 9999-12-31: later times share that partition

LEVEL: Final = pa.struct([("price", pa.float64()), ("size", pa.float64())])
LEVELS: Final = pa.list_(LEVEL)
_EXTRA: dict[Channel, tuple[pa.Field, ...]] = {
    Channel.BOOK: (pa.field("bids", LEVELS), pa.field("asks", LEVELS)),
}

_PART = re.compile(r"^part-(\d{1,18})\.parquet$")
_NAME_OK = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@cache
def file_schema(channel: Channel) -> pa.Schema:
    """The columns of a channel's Parquet files, in order."""
    fields = [pa.field("symbol", pa.string())]
    fields += [pa.field(c.name, c.arrow_type) for c in COLUMNS[channel]]
    fields.append(pa.field("entry_seq", pa.int64()))
    fields += _EXTRA.get(channel, ())
    return pa.schema(fields)


@cache
def result_schema(channel: Channel) -> pa.Schema:
    """What :meth:`consumers.history.History.read` returns: ``exchange``, ``symbol`` and
    ``entry_id`` (text, as Redis spells it) first, then the file's columns."""
    fs = file_schema(channel)
    head = [
        pa.field("exchange", pa.string()),
        fs.field("symbol"),
        pa.field("entry_id", pa.string()),
    ]
    return pa.schema(head + [f for f in fs if f.name != "symbol"])


def compatible(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Whether a file's column type reads as the expected one (a list's item name, or a
    dictionary's index width, may differ after a round trip through Parquet)."""
    if pa.types.is_dictionary(expected):
        return pa.types.is_dictionary(actual) and compatible(actual.value_type, expected.value_type)
    if pa.types.is_list(expected) or pa.types.is_large_list(expected):
        return (pa.types.is_list(actual) or pa.types.is_large_list(actual)) and compatible(
            actual.value_type, expected.value_type
        )
    if pa.types.is_struct(expected):
        return (
            pa.types.is_struct(actual)
            and actual.num_fields == expected.num_fields
            and all(
                actual.field(i).name == expected.field(i).name
                and compatible(actual.field(i).type, expected.field(i).type)
                for i in range(expected.num_fields)
            )
        )
    same: bool = actual.equals(expected)
    return same


def schema_problem(actual: pa.Schema, channel: Channel) -> str | None:
    """Why a file's schema is not the channel's (a missing or retyped column), or None."""
    for f in file_schema(channel):
        i = actual.get_field_index(f.name)
        if i < 0:
            return f"no column {f.name!r}"
        if not compatible(actual.field(i).type, f.type):
            return f"column {f.name!r} is {actual.field(i).type}, expected {f.type}"
    return None


def parquet_options(channel: Channel, zstd_level: int, row_group_rows: int) -> dict[str, Any]:
    """``pq.ParquetWriter`` options: zstd; dictionaries only where values repeat (symbol and
    category columns); delta encoding for the int64 columns, which are times or ids rising
    within a symbol (measured: 26 -> 12 bytes a trade, docs/history.md)."""
    schema = file_schema(channel)
    ints = [f.name for f in schema if pa.types.is_int64(f.type)]
    dicts = [f.name for f in schema if f.name == "symbol" or pa.types.is_dictionary(f.type)]
    return {
        "compression": "zstd",
        "compression_level": zstd_level,
        "use_dictionary": dicts,
        "column_encoding": dict.fromkeys(ints, "DELTA_BINARY_PACKED"),
        "write_statistics": True,
        "row_group_size": row_group_rows,
    }


_DATES: dict[int, str] = {}


def day_text(day: int) -> str:
    """Days since 1970-01-01 (UTC) as ``YYYY-MM-DD`` (times past year 9999 share its last day)."""
    text = _DATES.get(day)
    if text is None:
        d = min(max(day, 0), MAX_DAY)
        text = datetime.fromtimestamp(d * 86_400, tz=UTC).strftime("%Y-%m-%d")
        if len(_DATES) < 100_000:
            _DATES[day] = text
    return text


def date_of(ts_ms: int) -> str:
    """The partition date of an exchange time (UTC)."""
    return day_text(ts_ms // DAY_MS)


def day_of(text: str) -> int:
    """Inverse of :func:`day_text`."""
    return int(datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()) // 86_400


def partition_dir(root: Path, channel: str, exchange: str, date: str) -> Path:
    return root / f"channel={channel}" / f"exchange={exchange}" / f"date={date}"


def part_name(commit: int) -> str:
    """The file a commit writes in each partition it touches: one per partition and commit."""
    return f"part-{commit:010d}.parquet"


def commit_of(name: str) -> int | None:
    """The commit number in a part file's name, or None for another name."""
    m = _PART.match(name)
    return int(m.group(1)) if m else None


def valid_name(value: str) -> bool:
    """An exchange (or channel) usable as a path segment as it is: ``binance``, ``okx``."""
    return bool(_NAME_OK.match(value)) and value not in (".", "..")
