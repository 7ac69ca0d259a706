"""The archiver's settings: frozen, validated once, passed down (never read from globals)."""

from __future__ import annotations

import os
import socket
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from marketbus.errors import ConfigError
from marketbus.keys import stream_pattern
from marketbus.settings import ArchiveSettings


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
    adopt_every_s: float = Field(
        30.0,
        gt=0,
        description="look this often for members of the group no longer running whose pending "
        "entries this archiver adopts (also at start and when new streams join)",
    )
    lock_wait_s: float = Field(
        30.0,
        ge=0,
        description="how long to wait for this consumer name's lock in the directory (held by "
        "another archiver of the same name, or one adopting it) and for the commit lock",
    )
    pause_gc: bool = Field(
        False,
        description="switch Python's cyclic GC off (process-wide) during each read and its "
        "decoding: about 1.7x the ingest rate; for a process of its own (marketbus archive)",
    )


SECTION_ONLY = frozenset(
    {"dir", "metrics_port", "metrics_host", "status_every_s", "keep_days", "compact"}
)
"""Fields of the ``[archive]`` section that are not the archiver's own settings."""


def from_settings(section: ArchiveSettings, **overrides: Any) -> ArchiveConfig:
    """The archiver's settings from the ``[archive]`` section (``marketbus.settings``), then
    ``overrides`` (command-line flags; None: not given). A bad value is a
    :class:`ConfigError` naming ``archive.<field>``."""
    values = {
        k: v
        for k in ArchiveConfig.model_fields
        if k not in SECTION_ONLY and (v := getattr(section, k, None)) is not None
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return ArchiveConfig(**values)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(map(str, err["loc"]))
        got = err.get("input")
        raise ConfigError(f"archive.{field}: {err['msg']} (got {got!r})") from None
