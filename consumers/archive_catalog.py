"""Which Parquet files of an archive a reader may use: committed, ours, readable.

Shared by :mod:`consumers.history` and :mod:`archive.sql`; the manifest and footer readers
here are also what the archiver's store (:mod:`archive.store`) recovers from. A file counts when its commit is one
the manifest holds (so a reader never sees half a commit, nor a file a crashed archiver left
behind), its footer reads, and its schema is its channel's. A truncated or foreign file is
reported by name (logged once, kept in :attr:`Catalog.skipped`) and left out; a file of a
newer archive layout is a :class:`~marketbus.errors.SchemaVersionError` naming it. Footer
checks are cached by path, size and modification time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from consumers.archive_layout import ARCHIVE_VERSION, META_KEY, commit_of, schema_problem
from marketbus.errors import FatalError, SchemaVersionError
from marketbus.models import Channel

log = structlog.get_logger("marketbus.archive")


STATE_DIR = "_archive"  # a leading "_": pyarrow's dataset discovery skips it
MANIFEST = "manifest.json"


@dataclass
class Manifest:
    """What the directory holds: the last commit, and per stream the last entry id archived."""

    commit: int = 0
    last: dict[str, str] = field(default_factory=dict)


def manifest_path(root: Path) -> Path:
    return root / STATE_DIR / MANIFEST


def read_manifest(root: Path) -> Manifest | None:
    """The manifest, or None when the directory has none. A manifest that does not parse is a
    :class:`FatalError` naming it: it was written atomically, so the disk damaged it."""
    path = manifest_path(root)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        data = orjson.loads(raw)
        version, commit, last = data["version"], data["commit"], data["streams"]
        if not isinstance(commit, int) or not isinstance(last, dict):
            raise TypeError("bad field types")
    except (orjson.JSONDecodeError, KeyError, TypeError) as e:
        raise FatalError(f"archive manifest {path} is damaged ({e}): restore it or move it") from e
    if version != ARCHIVE_VERSION:
        raise FatalError(
            f"archive manifest {path} has layout version {version}, "
            f"this marketbus writes {ARCHIVE_VERSION}"
        )
    return Manifest(commit, {str(k): str(v) for k, v in last.items()})


def file_meta(schema: pa.Schema) -> dict[str, Any] | None:
    """The ``marketbus.archive`` footer of a file, or None (not a file the archiver wrote)."""
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is None:
        return None
    try:
        meta = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return meta if isinstance(meta, dict) else None


def iter_part_files(root: Path) -> Iterator[Path]:
    """Every ``part-<n>.parquet`` under the partition directories (hidden ones skipped)."""
    for path in sorted(root.glob("channel=*/exchange=*/date=*/*.parquet")):
        if commit_of(path.name) is not None:
            yield path


@dataclass(frozen=True)
class _Check:
    stamp: tuple[int, int]  # size, mtime_ns
    problem: str | None


class Catalog:
    """The usable files of one archive directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.skipped: dict[str, str] = {}  # path -> why it was left out
        self._checks: dict[Path, _Check] = {}

    def committed(self) -> int | None:
        """The last complete commit, or None when the directory has no manifest (files
        copied here by hand: then every file counts)."""
        manifest = read_manifest(self.root)
        return None if manifest is None else manifest.commit

    def channels(self) -> list[str]:
        """Every channel with a directory here (``trades``, ..., and any other found)."""
        return sorted(
            p.name.partition("=")[2]
            for p in self.root.glob("channel=*")
            if p.is_dir() and p.name.partition("=")[2]
        )

    def files(
        self,
        channel: str,
        exchange: str | None = None,
        first_date: str | None = None,
        last_date: str | None = None,
    ) -> list[Path]:
        """The usable files of a channel, optionally of one exchange and a date range
        (``YYYY-MM-DD``, both ends included): only those directories are listed."""
        committed = self.committed()
        base = self.root / f"channel={channel}"
        exchanges = [base / f"exchange={exchange}"] if exchange else sorted(base.glob("exchange=*"))
        out: list[Path] = []
        for ex_dir in exchanges:
            if not ex_dir.is_dir():
                continue
            for date_dir in sorted(ex_dir.glob("date=*")):
                date = date_dir.name.partition("=")[2]
                if (first_date and date < first_date) or (last_date and date > last_date):
                    continue
                out += self._usable(date_dir, channel, committed)
        return out

    def _usable(self, date_dir: Path, channel: str, committed: int | None) -> list[Path]:
        out = []
        try:
            names = sorted(os.listdir(date_dir))
        except (NotADirectoryError, FileNotFoundError):
            return []
        for name in names:
            if name.startswith((".", "_")) or not name.endswith(".parquet"):
                continue  # a commit's temporary files, or not data
            n = commit_of(name)
            if n is not None and committed is not None and n > committed:
                continue  # written by a commit not (yet) complete
            path = date_dir / name
            if self.check(path, channel) is None:
                out.append(path)
        return out

    def check(self, path: Path, channel: str) -> str | None:
        """Why ``path`` cannot be read as a ``channel`` file, or None when it can."""
        try:
            st = path.stat()
        except FileNotFoundError:
            return "gone"
        stamp = (st.st_size, st.st_mtime_ns)
        cached = self._checks.get(path)
        if cached is not None and cached.stamp == stamp:
            return cached.problem
        problem = self._problem(path, channel)
        self._checks[path] = _Check(stamp, problem)
        if problem is not None:
            self.report(path, problem)
        return problem

    def report(self, path: Path, problem: str) -> None:
        """A file left out: logged (once per file and reason) and kept in :attr:`skipped`."""
        if self.skipped.get(str(path)) != problem:
            self.skipped[str(path)] = problem
            log.warning("archive_file_skipped", path=str(path), why=problem)

    def forget(self, path: Path, problem: str) -> None:
        """A file whose data failed to read after its footer passed: left out from now on
        (until it changes)."""
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        self._checks[path] = _Check((st.st_size, st.st_mtime_ns), problem)
        self.report(path, problem)

    @staticmethod
    def _problem(path: Path, channel: str) -> str | None:
        try:
            schema = pq.read_schema(path)
        except (OSError, pa.ArrowException, ValueError) as e:
            return f"not a readable Parquet file: {str(e)[:200]}"
        meta = file_meta(schema)
        if meta is None:
            return "not written by the marketbus archiver (no marketbus.archive footer)"
        version = meta.get("version")
        if version != ARCHIVE_VERSION:
            raise SchemaVersionError(
                f"{path} has archive layout version {version!r}, this marketbus reads "
                f"{ARCHIVE_VERSION}: upgrade marketbus to read it"
            )
        try:
            ch = Channel(channel)
        except ValueError:
            return None  # a channel this version does not know: read as it is
        return schema_problem(schema, ch)
