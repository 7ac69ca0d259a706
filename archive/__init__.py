"""History: every record archived from Redis into Parquet, read back by time range or SQL.

Above the consumer library (it reuses its decoding, columns and candle rules), below the CLI.
The read side (:class:`History`, the file layout and catalog) lives in the consumer library, so
a bot's ``Consumer(history=...)`` can read the archive; this package writes it. See
docs/history.md.
"""

from archive.archiver import Archiver, ArchiverStats
from archive.config import ArchiveConfig
from consumers.archive_layout import file_schema, result_schema
from consumers.history import History

__all__ = ["ArchiveConfig", "Archiver", "ArchiverStats", "History", "file_schema", "result_schema"]
