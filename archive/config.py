"""The archiver's settings: frozen, validated once, passed down (never read from globals)."""

from __future__ import annotations

import os
import socket

from pydantic import BaseModel, ConfigDict, Field

from marketbus.keys import stream_pattern


def default_name() -> str:
    """This host's name: a restarted archiver keeps its consumer name, so it re-reads its own
    pending entries at once (entries another name left pending are claimed at start)."""
    return os.environ.get("HOSTNAME") or socket.gethostname() or "archiver"


class ArchiveConfig(BaseModel):
    """How the archiver reads Redis and rolls Parquet files (docs/history.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    streams: str = Field(
        stream_pattern(), min_length=1, description="SCAN MATCH pattern of the streams archived"
    )
    group: str = Field("archive", min_length=1, max_length=200)
    name: str = Field(default_factory=default_name, min_length=1, max_length=200)
    roll_bytes: int = Field(
        64 * 2**20,
        ge=1,
        description="commit when the rows held reach this many bytes (Arrow, uncompressed; "
        "the Parquet file is several times smaller)",
    )
    roll_age_s: float = Field(
        60.0, gt=0, description="commit at the latest this long after the first row held"
    )
    rescan_s: float = Field(5.0, gt=0, description="look for new streams (and the lag) this often")
    count: int = Field(10_000, ge=1, le=1_000_000, description="entries per stream per read")
    block_ms: int = Field(1_000, ge=1, description="longest blocking read")
    retry_min_s: float = Field(0.5, gt=0, description="first retry after a failed commit")
    retry_max_s: float = Field(30.0, gt=0, description="longest wait between commit retries")
    log_every_s: float = Field(
        30.0, gt=0, description="a failing disk or Redis is logged at most once per interval"
    )
    stop_timeout_s: float = Field(
        30.0, ge=0, description="at stop, how long to keep retrying the last commit"
    )
    row_group_rows: int = Field(
        64 * 1024, ge=1, description="Parquet row group size: the unit read() can skip"
    )
    zstd_level: int = Field(3, ge=1, le=22)
    pause_gc: bool = Field(
        False,
        description="switch Python's cyclic GC off (process-wide) during each read and its "
        "decoding: about 1.7x the ingest rate; for a process of its own (marketbus archive)",
    )
