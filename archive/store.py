"""The archive directory on disk: atomic commits of Parquet files, the manifest, recovery.

Several writers share one directory: archivers (one per consumer name of the group), backfill
and compaction. A *commit* writes one file per partition it touches and is the unit of
durability; commits are serialized by ``_archive/lock`` (an exclusive ``flock`` held for the
commit only, so a writer never waits longer than another's commit). Under the lock:

0. stale state is cleared: an intent left by a commit that did not finish is rolled back
   (its files deleted), and the manifest is read as it is now (other writers commit too);
1. the commit number is allocated (the manifest's + 1) and ``_archive/intent.json`` names the
   commit's files (written atomically, before them);
2. each file is written under a hidden temporary name, fsynced, renamed to
   ``part-<commit>.parquet``, and its directory (with every parent) fsynced;
3. ``_archive/manifest.json`` takes the commit number and the writer's per-stream marks (tmp
   file, fsync, rename, fsync of the directory): **the commit point**; the intent is removed;
4. then (the lock released) the archiver acknowledges the entries in Redis (``XACK``).

One intent file is enough for any number of writers: it only exists outside the lock when a
commit died (its process killed) or failed (an ``OSError`` it could not clean up after), and
in both cases no writer is still inside that commit, so the next lock holder may roll it back
whoever wrote it. Readers take only files of commits the manifest holds, so they never see
half a commit. Each archiver also holds ``_archive/writers/<name>.lock`` while it runs: two
archivers of one consumer name would read the same pending entries, so the second waits (and
gives up with a clear error); and a member whose lock is free is not running, so another may
adopt its pending entries (:mod:`archive.archiver`). Synchronous: callers use a thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import structlog

from consumers.archive_catalog import (
    STATE_DIR,
    Manifest,
    file_meta,
    id_key,
    iter_part_files,
    manifest_path,
    read_manifest,
    relative,
)
from consumers.archive_layout import (
    ARCHIVE_VERSION,
    META_KEY,
    commit_of,
    parquet_options,
    part_name,
    partition_dir,
)
from marketbus.errors import FatalError
from marketbus.keys import parse_stream_key
from marketbus.models import Channel

log = structlog.get_logger("marketbus.archive")

INTENT = "intent.json"
LOCK = "lock"
WRITERS = "writers"
ANONYMOUS = ""  # the marks of a writer that reads no consumer group (backfill)

Partition = tuple[Channel, str, str]  # channel, exchange, date

__all__ = [
    "STATE_DIR",
    "Committed",
    "Manifest",
    "Partition",
    "Store",
    "WriterBusyError",
    "read_manifest",
    "write_json_atomic",
]


class WriterBusyError(FatalError):
    """Another process runs an archiver of the same consumer name on this directory."""


@dataclass(frozen=True)
class Committed:
    files: int
    rows: int
    bytes: int
    commit: int = 0  # the number the commit took (0: nothing was written)


def write_json_atomic(path: Path, data: Any) -> None:
    """``path`` replaced by ``data`` as JSON all at once: a temporary file, fsynced, renamed,
    then the directory fsynced (the rename itself durable)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(orjson.dumps(data))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _try_flock(fd: int, wait_s: float) -> bool:
    """An exclusive flock on ``fd`` within ``wait_s`` (polled: never blocks forever)."""
    deadline = time.monotonic() + wait_s
    delay = 0.002
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.05)


def writer_lock_name(writer: str) -> str:
    """A file name for a consumer name (any text): quoted, or hashed when long."""
    name = quote(writer, safe="")
    if len(name) > 120:
        name = "h-" + hashlib.sha256(writer.encode()).hexdigest()
    return f"{name}.lock"


class Store:
    """One archive directory, as one writer sees it.

    ``writer``: the consumer name whose marks the commits record (an archiver's), held
    exclusively while the store is open; None for a writer outside any consumer group
    (backfill, compaction): no name lock, its marks (if any) kept under ``""``."""

    def __init__(
        self,
        root: Path,
        *,
        writer: str | None = None,
        zstd_level: int = 3,
        row_group_rows: int = 65_536,
        lock_wait_s: float = 30.0,
    ) -> None:
        self.root = Path(root)
        self.writer = writer
        self._state = self.root / STATE_DIR
        self.zstd_level = zstd_level
        self.row_group_rows = row_group_rows
        self._lock_wait = lock_wait_s
        self._writer_fd: int | None = None
        self.manifest = Manifest()

    @property
    def marks_key(self) -> str:
        return self.writer if self.writer is not None else ANONYMOUS

    # -- open / recover -------------------------------------------------------------------
    def open(self, *, wait: bool = True) -> Manifest:
        """Take the writer's name (waiting up to ``lock_wait_s`` for it unless ``wait`` is
        False: :class:`WriterBusyError` if it stays taken) and bring the directory to its
        last complete commit."""
        self._state.mkdir(parents=True, exist_ok=True)
        if self.writer is not None:
            (self._state / WRITERS).mkdir(exist_ok=True)
            path = self._state / WRITERS / writer_lock_name(self.writer)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_flock(fd, self._lock_wait if wait else 0.0):
                os.close(fd)
                raise WriterBusyError(
                    f"another archiver named {self.writer!r} is writing to {self.root} "
                    f"(it holds {path}): give each archiver of a group its own --name"
                )
            self._writer_fd = fd
        try:
            with self.locked() as manifest:
                self.manifest = manifest
        except BaseException:
            self.close()
            raise
        return self.manifest

    def close(self) -> None:
        fd, self._writer_fd = self._writer_fd, None
        if fd is not None:
            os.close(fd)  # releases the name

    @contextlib.contextmanager
    def locked(self) -> Iterator[Manifest]:
        """The commit lock held (waiting up to ``lock_wait_s``: else :class:`TimeoutError`,
        an ``OSError`` the archiver retries), a dead commit rolled back, the manifest as it
        is now (rebuilt from the files' footers when missing)."""
        self._state.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._state / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _try_flock(fd, self._lock_wait):
                raise TimeoutError(
                    f"the archive's commit lock {self._state / LOCK} stayed taken for "
                    f"{self._lock_wait:.0f} s (a writer stuck inside a commit, or an archiver "
                    "of an older marketbus holding the whole directory)"
                )
            yield self._recover()
        finally:
            os.close(fd)  # releases the flock

    def _recover(self) -> Manifest:
        manifest = read_manifest(self.root)
        committed = manifest.commit if manifest is not None else 0
        intent = self._read_intent()
        if intent is not None and intent[0] > committed:
            removed = [p for p in intent[1] for q in (p, _tmp_of(p)) if _unlink(q)]
            for d in {p.parent for p in intent[1] if p.parent.exists()}:
                fsync_dir(d)
            log.warning(
                "archive_commit_rolled_back", commit=intent[0], files_removed=len(removed),
                why="written before a stop (or a failure) that came ahead of its manifest: "
                "its entries were not acknowledged and are read again",
            )  # fmt: skip
        if intent is not None or (self._state / INTENT).exists():
            _unlink(self._state / INTENT)
        if manifest is None:
            manifest = self._rebuild()
        return manifest

    def _read_intent(self) -> tuple[int, list[Path]] | None:
        try:
            data = orjson.loads((self._state / INTENT).read_bytes())
            files = [self.root / p for p in [*data["files"], *data.get("temps", ())]]
            return int(data["commit"]), files
        except FileNotFoundError:
            return None
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            # half-written (a crash inside write_json_atomic leaves only its temporary file,
            # so this is damage): nothing was renamed under it that the manifest holds
            log.warning("archive_intent_unreadable", path=str(self._state / INTENT))
            return None

    def _rebuild(self) -> Manifest:
        """No manifest: a new directory, or files copied here without one. The marks are
        taken from the files' footers (each holds its commit's, per stream, and its writer;
        a file without a writer was written when one archiver held the directory: its marks
        are a floor), and the files a compacted file replaced are gone again."""
        manifest = Manifest()
        found = 0
        replaced: dict[str, int] = {}
        for path in iter_part_files(self.root):
            try:
                meta = file_meta(pq.read_schema(path))
            except (OSError, pa.ArrowException, ValueError):
                continue
            if meta is None:
                continue
            found += 1
            n = max(commit_of(path.name) or 0, int(meta.get("commit") or 0))
            manifest.commit = max(manifest.commit, n)
            streams = {str(k): str(v) for k, v in dict(meta.get("streams") or {}).items()}
            _raise_marks(manifest.last, streams)
            if meta.get("compacted"):
                for w, marks in dict(meta.get("writers") or {}).items():
                    _raise_marks(manifest.writers.setdefault(str(w), {}), dict(marks))
                _raise_marks(manifest.floor, dict(meta.get("floor") or {}))
                for rel in meta.get("replaces") or ():
                    replaced[str(rel)] = max(replaced.get(str(rel), 0), n)
            elif "writer" in meta:
                w = meta["writer"] if meta["writer"] is not None else ANONYMOUS
                _raise_marks(manifest.writers.setdefault(str(w), {}), streams)
            else:
                _raise_marks(manifest.floor, streams)
        manifest.gone = {rel: n for rel, n in replaced.items() if (self.root / rel).exists()}
        if found:
            log.warning(
                "archive_manifest_rebuilt", files=found, commit=manifest.commit,
                streams=len(manifest.last), path=str(manifest_path(self.root)),
            )  # fmt: skip
            write_json_atomic(manifest_path(self.root), manifest.to_json())
        return manifest

    def refresh(self) -> Manifest:
        """The manifest as on disk now (without the lock: for a look, not to commit on)."""
        manifest = read_manifest(self.root)
        if manifest is not None:
            self.manifest = manifest
        return self.manifest

    # -- commit ---------------------------------------------------------------------------
    def commit(
        self,
        commit: int | None,
        tables: Mapping[Partition, pa.Table],
        last: Mapping[str, str] | None = None,
    ) -> Committed:
        """Write ``tables`` as the next commit and record ``last`` (stream -> last entry id,
        for every stream whose entries the commit covers) as this writer's marks. ``commit``:
        None takes the next number; a number is the lowest acceptable (another writer may have
        committed meanwhile: the next free one at or above it is taken). All or nothing: on
        an error (OSError: disk full, unwritable directory) the files written so far are
        removed where possible, the manifest is unchanged, and the error is raised."""
        last = dict(last or {})
        with self.locked() as manifest:
            n = max(manifest.commit + 1, commit or 0)
            paths = {
                part: partition_dir(self.root, part[0].value, part[1], part[2]) / part_name(n)
                for part in tables
            }
            rel = [relative(self.root, p) for p in paths.values()]
            written: list[Path] = []
            new = _with_marks(manifest, n, self.marks_key, last)
            try:
                write_json_atomic(self._state / INTENT, {"commit": n, "files": rel})
                size = 0
                for part, table in tables.items():
                    streams = {k: v for k, v in last.items() if _in_partition(k, part)}
                    size += self._write(paths[part], part[0], table, n, streams, written)
                for path in paths.values():
                    os.replace(_tmp_of(path), path)
                for d in _dirs_upto(self.root, [p.parent for p in paths.values()]):
                    fsync_dir(d)
                write_json_atomic(manifest_path(self.root), new.to_json())
            except Exception as e:
                if not self._landed(n, e):
                    _remove_quietly(written)
                    raise
            except BaseException:
                if not self._landed(n, None):
                    _remove_quietly(written)
                raise
            with contextlib.suppress(OSError):  # done; if this is lost, the manifest is ahead
                _unlink(self._state / INTENT)
            self.manifest = new
        return Committed(len(tables), sum(t.num_rows for t in tables.values()), size, n)

    def _landed(self, commit: int, error: Exception | None) -> bool:
        """Whether the manifest on disk holds ``commit`` although a step failed (its rename
        done, the fsync of its directory not): then it is committed (nobody else commits
        while the lock is held), its files must stay, and the commit counts as done."""
        try:
            manifest = read_manifest(self.root)
        except Exception:
            return False
        landed = manifest is not None and manifest.commit == commit
        if landed and error is not None:
            log.warning(
                "archive_commit_not_fsynced", commit=commit, error=str(error)[:200],
                effect="the manifest holds the commit; a power cut now could lose its rename",
            )  # fmt: skip
        return landed

    def _write(
        self,
        path: Path,
        channel: Channel,
        table: pa.Table,
        commit: int,
        streams: dict[str, str],
        written: list[Path],
    ) -> int:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_of(path)
        written.append(path)
        order = pc.sort_indices(table, [("symbol", "ascending"), ("ts_ms", "ascending")])
        meta = {
            "version": ARCHIVE_VERSION, "commit": commit, "streams": streams,
            "writer": self.writer,
        }  # fmt: skip
        table = table.take(order).replace_schema_metadata({META_KEY: orjson.dumps(meta)})
        pq.write_table(table, tmp, **parquet_options(channel, self.zstd_level, self.row_group_rows))
        _fsync_file(tmp)
        return tmp.stat().st_size

    # -- replacing and removing files (compaction, retention) -----------------------------
    def swap(self, new: Sequence[tuple[Path, Path]], remove: Sequence[Path]) -> int | None:
        """One commit that adds files written beforehand and removes others, atomically for
        readers: ``new`` holds (finished temporary file, partition directory) pairs, each
        renamed to the partition's ``part-<commit>.parquet``; ``remove`` are files the
        manifest then lists as ``gone`` (deleted later by :meth:`collect`). Returns the
        commit, or None (nothing changed, the temporary files deleted) when a file to
        remove is no longer visible: another compaction or retention got there first."""
        with self.locked() as manifest:
            rels = [relative(self.root, p) for p in remove]
            if any(not _visible(self.root, manifest, r) for r in rels):
                _remove_quietly([tmp for tmp, _ in new])
                return None
            n = manifest.commit + 1
            finals = [d / part_name(n) for _, d in new]
            intent = {
                "commit": n, "files": [relative(self.root, p) for p in finals],
                "temps": [relative(self.root, tmp) for tmp, _ in new],
            }  # fmt: skip
            gone = {**manifest.gone, **dict.fromkeys(rels, n)}
            updated = Manifest(n, manifest.last, manifest.writers, manifest.floor, gone)
            try:
                write_json_atomic(self._state / INTENT, intent)
                for (tmp, _), final in zip(new, finals, strict=True):
                    os.replace(tmp, final)
                for d in _dirs_upto(self.root, [p.parent for p in finals]):
                    fsync_dir(d)
                write_json_atomic(manifest_path(self.root), updated.to_json())
            except Exception as e:
                if not self._landed(n, e):
                    _remove_quietly([*finals, *(tmp for tmp, _ in new)])
                    raise
            with contextlib.suppress(OSError):
                _unlink(self._state / INTENT)
            self.manifest = updated
            return n

    def collect(self) -> int:
        """Delete the files the manifest lists as gone (and the partition directories left
        empty), then drop them from the list. Returns how many files were deleted."""
        with self.locked() as manifest:
            deleted = 0
            dirs: set[Path] = set()
            for rel in manifest.gone:
                path = self.root / rel
                if _unlink(path):
                    deleted += 1
                dirs.add(path.parent)
            for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
                _prune_empty(self.root, d)
            if manifest.gone:
                for parent in {p for d in dirs for p in _dirs_upto(self.root, [d]) if p.exists()}:
                    fsync_dir(parent)
                left = {r: n for r, n in manifest.gone.items() if (self.root / r).exists()}
                updated = Manifest(
                    manifest.commit, manifest.last, manifest.writers, manifest.floor, left
                )
                write_json_atomic(manifest_path(self.root), updated.to_json())
                self.manifest = updated
            return deleted

    def forget_writer(self, writer: str, streams: Sequence[str]) -> None:
        """Drop a consumer name's marks of ``streams``, where it has nothing pending any more
        (an archiver of that name starting again reads only new entries there, whose ids are
        above every mark); the name goes when it has no mark left."""
        with self.locked() as manifest:
            if writer not in manifest.writers:
                return
            writers = dict(manifest.writers)
            left = {k: v for k, v in writers[writer].items() if k not in set(streams)}
            if left:
                writers[writer] = left
            else:
                del writers[writer]
            updated = Manifest(
                manifest.commit, manifest.last, writers, manifest.floor, manifest.gone
            )
            write_json_atomic(manifest_path(self.root), updated.to_json())
            self.manifest = updated


def _with_marks(manifest: Manifest, commit: int, writer: str, last: Mapping[str, str]) -> Manifest:
    writers = dict(manifest.writers)
    if last:
        writers[writer] = {**writers.get(writer, {}), **last}
    top = dict(manifest.last)
    _raise_marks(top, last)
    return Manifest(commit, top, writers, manifest.floor, manifest.gone)


def _raise_marks(marks: dict[str, str], new: Mapping[str, Any]) -> None:
    for key, value in new.items():
        if id_key(str(value)) > id_key(marks.get(str(key))):
            marks[str(key)] = str(value)


def _visible(root: Path, manifest: Manifest, rel: str) -> bool:
    n = commit_of(rel.rpartition("/")[2])
    return (
        (root / rel).exists() and rel not in manifest.gone and (n is None or n <= manifest.commit)
    )


def _remove_quietly(paths: Sequence[Path]) -> None:
    for path in (q for p in paths for q in (p, _tmp_of(p))):
        with contextlib.suppress(OSError):  # else the next lock holder's recovery removes it
            _unlink(path)


def _prune_empty(root: Path, d: Path) -> None:
    """``d`` and its parents up to (not including) ``root``, each removed while empty."""
    while d != root and root in d.parents:
        try:
            d.rmdir()
        except OSError:  # not empty, gone, or not ours to remove
            return
        d = d.parent


def _tmp_of(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def _in_partition(key: str, part: Partition) -> bool:
    try:
        sk = parse_stream_key(key)
    except ValueError:
        return False
    return sk.channel is part[0] and sk.exchange == part[1]


def _dirs_upto(root: Path, dirs: list[Path]) -> list[Path]:
    """``dirs`` and each parent up to ``root`` (each directory once): where a rename or a
    new directory must be made durable."""
    out: dict[Path, None] = {}
    for d in dirs:
        while True:
            out[d] = None
            if d == root or root not in d.parents:
                break
            d = d.parent
    return list(out)
