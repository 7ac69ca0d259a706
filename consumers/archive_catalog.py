"""Which Parquet files of an archive a reader may use: committed, not removed, ours, readable.

Shared by :mod:`consumers.history` and :mod:`archive.sql`; the manifest format and the footer
reader here are also what the writers (:mod:`archive.store`, :mod:`archive.compact`) commit
and recover with. A file counts when its commit is one the manifest holds (so a reader never
sees half a commit, nor a file a crashed writer left behind), the manifest does not list it
as removed (``gone``: replaced by a compacted file, or dropped by retention, in the same
atomic manifest write that made the replacement visible: so a day is never seen twice nor
not at all), its footer reads, and its schema is its channel's. A truncated or foreign file
is reported by name (logged once, kept in :attr:`Catalog.skipped`) and left out; a file of a
newer archive layout is a :class:`~marketbus.errors.SchemaVersionError` naming it. Footer
checks are cached by path, size and modification time; a listing that raced a manifest write
is done again.
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
    """What the directory holds (``_archive/manifest.json``, docs/history.md).

    ``commit``: the last complete commit. ``writers``: per consumer name (``""`` for a writer
    without one, as backfill), per stream, the last entry id it committed: with a consumer
    group, one stream's entries are split among the members, so each member's own mark is
    what tells an entry it reads again (its own pending entries) from a new one. ``floor``:
    per stream, an id every entry at or below which is archived (manifests written when one
    archiver at a time held the directory; their single ``streams`` mark means that).
    ``last``: per stream, the highest id archived by anyone (informational). ``gone``: files
    (paths relative to the root) removed by the commit given, not to be read even while they
    are still on disk."""

    commit: int = 0
    last: dict[str, str] = field(default_factory=dict)
    writers: dict[str, dict[str, str]] = field(default_factory=dict)
    floor: dict[str, str] = field(default_factory=dict)
    gone: dict[str, int] = field(default_factory=dict)

    def mark(self, writer: str, stream: str) -> str | None:
        """The id at or below which ``writer``'s entries of ``stream`` are archived: its own
        last commit's, or the legacy floor, whichever is higher (None: none)."""
        own = self.writers.get(writer, {}).get(stream)
        floor = self.floor.get(stream)
        if own is None or floor is None:
            return own or floor
        return own if id_key(own) >= id_key(floor) else floor

    def to_json(self) -> dict[str, Any]:
        return {
            "version": ARCHIVE_VERSION,
            "commit": self.commit,
            "streams": self.last,
            "writers": self.writers,
            "floor": self.floor,
            "gone": self.gone,
        }


def id_key(entry_id: str | None) -> tuple[int, int]:
    """A Redis entry id as a sortable pair (``None`` or ``""`` below every id)."""
    if not entry_id:
        return (-1, -1)
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


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
    return parse_manifest(raw, path)


def parse_manifest(raw: bytes, path: Path) -> Manifest:
    try:
        data = orjson.loads(raw)
        version, commit, last = data["version"], data["commit"], data["streams"]
        if not isinstance(commit, int) or not isinstance(last, dict):
            raise TypeError("bad field types")
        last = {str(k): str(v) for k, v in last.items()}
        if "writers" in data:
            writers = {
                str(w): {str(k): str(v) for k, v in marks.items()}
                for w, marks in dict(data["writers"]).items()
            }
            floor = {str(k): str(v) for k, v in dict(data.get("floor") or {}).items()}
        else:  # written by one archiver at a time: its marks hold for every entry below them
            writers, floor = {}, dict(last)
        gone = {str(k): int(v) for k, v in dict(data.get("gone") or {}).items()}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise FatalError(f"archive manifest {path} is damaged ({e}): restore it or move it") from e
    if version != ARCHIVE_VERSION:
        raise FatalError(
            f"archive manifest {path} has layout version {version}, "
            f"this marketbus writes {ARCHIVE_VERSION}"
        )
    return Manifest(commit, last, writers, floor, gone)


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


_RELIST = 5  # listings raced by a manifest write before the last one is taken as it is


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is replaced by a rename (its inode) or rewritten."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def relative(root: Path, path: Path) -> str:
    """A file's path under the archive root as the manifest names it (``channel=.../part-...``)."""
    return path.relative_to(root).as_posix()


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
        self._manifest: tuple[tuple[int, int, int], Manifest] | None = None

    def manifest(self) -> Manifest | None:
        """The manifest as on disk now (parsed again only when the file changed: it is
        replaced by a rename at each commit), or None when there is none."""
        stamp = _stamp(manifest_path(self.root))
        if stamp is None:
            self._manifest = None
            return None
        if self._manifest is not None and self._manifest[0] == stamp:
            return self._manifest[1]
        manifest = read_manifest(self.root)
        if manifest is not None:
            self._manifest = (stamp, manifest)
        return manifest

    def committed(self) -> int | None:
        """The last complete commit, or None when the directory has no manifest (files
        copied here by hand: then every file counts)."""
        manifest = self.manifest()
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
        (``YYYY-MM-DD``, both ends included): only those directories are listed.

        A commit that lands while the directories are listed (a compaction replacing a day's
        files, retention dropping them) could leave the listing with both the old files and
        their replacement, or neither: the manifest is checked again after the listing, and
        the listing done again when it changed."""
        out: list[Path] = []
        for _ in range(_RELIST):
            before = _stamp(manifest_path(self.root))
            out = self._list(channel, exchange, first_date, last_date, self.manifest())
            if _stamp(manifest_path(self.root)) == before:
                break
        return out

    def _list(
        self,
        channel: str,
        exchange: str | None,
        first_date: str | None,
        last_date: str | None,
        manifest: Manifest | None,
    ) -> list[Path]:
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
                out += self._usable(date_dir, channel, manifest)
        return out

    def _usable(self, date_dir: Path, channel: str, manifest: Manifest | None) -> list[Path]:
        out = []
        try:
            names = sorted(os.listdir(date_dir))
        except (NotADirectoryError, FileNotFoundError):
            return []
        committed = None if manifest is None else manifest.commit
        gone = {} if manifest is None else manifest.gone
        rel_dir = date_dir.relative_to(self.root).as_posix()
        for name in names:
            if name.startswith((".", "_")) or not name.endswith(".parquet"):
                continue  # a commit's temporary files, or not data
            n = commit_of(name)
            if n is not None and committed is not None and n > committed:
                continue  # written by a commit not (yet) complete
            if f"{rel_dir}/{name}" in gone:
                continue  # replaced (compaction) or dropped (retention): deleted soon
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
