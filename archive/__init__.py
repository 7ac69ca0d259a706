"""History: every record archived from Redis into Parquet, read back by time range or SQL.

Above the consumer library (it reuses its decoding, columns and candle rules), below the CLI.
See docs/history.md.
"""

from archive.archiver import Archiver, ArchiverStats
from archive.config import ArchiveConfig
from archive.history import History
from archive.schema import file_schema, result_schema

__all__ = ["ArchiveConfig", "Archiver", "ArchiverStats", "History", "file_schema", "result_schema"]
