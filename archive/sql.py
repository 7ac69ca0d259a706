"""SQL over the archive: DuckDB with one view per channel.

::

    con = connect("/data/archive")
    con.execute("SELECT symbol, count(*) FROM trades WHERE date = '2026-11-30' GROUP BY 1")

Views ``trades``, ``ticker``, ``book`` and ``candles`` always exist (empty until the archive
has files of that channel), plus one for any other channel directory found. Columns are the
record's as docs/wire.md names them, with ``exchange``, ``symbol`` and ``entry_id`` first,
the ring buffer's ``entry_ms`` (with ``entry_seq``) and the ``date`` partition (a DATE).
Each view reads the files :class:`consumers.archive_catalog.Catalog` lets through (committed,
readable, the channel's schema: a bad file is reported by name and left out), as they are
when :func:`connect` runs: connect again to see later commits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from consumers.archive_catalog import Catalog
from consumers.archive_layout import result_schema, valid_name
from marketbus.errors import ConfigError
from marketbus.models import Channel

_HIVE = (
    "hive_partitioning = true, hive_types_autocast = false, "
    "hive_types = {'channel': VARCHAR, 'exchange': VARCHAR, 'date': DATE}"
)


def connect(root: str | Path, *, catalog: Catalog | None = None) -> Any:
    """An in-memory DuckDB connection with the archive's views (``duckdb`` must be
    installed: it is the one dependency only this module needs)."""
    try:
        import duckdb
    except ImportError as e:
        raise ConfigError("SQL over the archive needs DuckDB: pip install duckdb") from e
    path = Path(root)
    if not path.is_dir():
        raise ConfigError(f"no archive directory at {path}")
    catalog = catalog or Catalog(path)
    con = duckdb.connect(":memory:")
    channels = dict.fromkeys([c.value for c in Channel] + catalog.channels())
    for channel in channels:
        if not valid_name(channel):
            continue
        con.execute(view_sql(channel, [str(f) for f in catalog.files(channel)]))
    return con


def view_sql(channel: str, files: list[str]) -> str:
    """``CREATE VIEW`` of one channel over ``files`` (an empty view of the channel's columns
    when there are none)."""
    name = _ident(channel)
    try:
        schema: pa.Schema | None = result_schema(Channel(channel))
    except ValueError:
        schema = None  # a channel this version does not know: its files' own columns
    if not files:
        if schema is None:
            return f"CREATE VIEW {name} AS SELECT NULL AS exchange WHERE false"
        cols = [f"CAST(NULL AS {duck_type(f.type)}) AS {_ident(f.name)}" for f in schema]
        return f"CREATE VIEW {name} AS SELECT {', '.join(cols)}, CAST(NULL AS DATE) AS date WHERE false"
    source = f"read_parquet([{', '.join(map(_literal, files))}], {_HIVE}, union_by_name = true)"
    entry_id = "CAST(entry_ms AS VARCHAR) || '-' || CAST(entry_seq AS VARCHAR) AS entry_id"
    if schema is None:
        return f"CREATE VIEW {name} AS SELECT * EXCLUDE (channel) FROM {source}"
    rest = [_ident(f.name) for f in schema if f.name not in ("exchange", "symbol", "entry_id")]
    return (
        f"CREATE VIEW {name} AS SELECT exchange, symbol, {entry_id}, {', '.join(rest)}, date "
        f"FROM {source}"
    )


def duck_type(t: pa.DataType) -> str:
    """The DuckDB type a Parquet column of Arrow type ``t`` reads as."""
    if pa.types.is_dictionary(t):
        return duck_type(t.value_type)
    if pa.types.is_list(t):
        return f"{duck_type(t.value_type)}[]"
    if pa.types.is_struct(t):
        inner = ", ".join(f"{_ident(f.name)} {duck_type(f.type)}" for f in t)
        return f"STRUCT({inner})"
    names = {
        pa.int64(): "BIGINT", pa.int32(): "INTEGER", pa.int16(): "SMALLINT", pa.int8(): "TINYINT",
        pa.uint64(): "UBIGINT", pa.uint32(): "UINTEGER", pa.uint16(): "USMALLINT",
        pa.uint8(): "UTINYINT", pa.float64(): "DOUBLE", pa.float32(): "FLOAT",
        pa.string(): "VARCHAR", pa.bool_(): "BOOLEAN",
    }  # fmt: skip
    return names[t]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
