"""The archive directory on disk: atomic commits of Parquet files, the manifest, recovery.

A *commit* writes one file per partition it touches and is the unit of durability:

1. ``_archive/intent.json`` names the commit's files (written atomically, before them);
2. each file is written under a hidden temporary name, fsynced, renamed to
   ``part-<commit>.parquet``, and its directory (with every parent) fsynced;
3. ``_archive/manifest.json`` takes the commit number and, per stream, the last entry id
   archived (tmp file, fsync, rename, fsync of the directory): **the commit point**; the
   intent is removed;
4. only then does the archiver acknowledge the entries in Redis (``XACK``).

Readers take only files of commits the manifest holds, so they never see half a commit.
On start, files of a commit the manifest does not hold (a crash between 1 and 3) are deleted:
their entries were not acknowledged and come again. Entries at or below the manifest's last
id of their stream (a crash between 3 and 4) are skipped when they come again. So a kill at
any moment loses nothing and writes nothing twice. Synchronous: the archiver calls it from
a thread. One archiver per directory (``_archive/lock``, an exclusive ``flock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import structlog

from consumers.archive_catalog import (
    STATE_DIR,
    Manifest,
    file_meta,
    iter_part_files,
    manifest_path,
    read_manifest,
)
from consumers.archive_layout import (
    ARCHIVE_VERSION,
    META_KEY,
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

Partition = tuple[Channel, str, str]  # channel, exchange, date


@dataclass(frozen=True)
class Committed:
    files: int
    rows: int
    bytes: int


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


class Store:
    """One archive directory, opened by one archiver at a time."""

    def __init__(self, root: Path, *, zstd_level: int = 3, row_group_rows: int = 65_536) -> None:
        self.root = Path(root)
        self._state = self.root / STATE_DIR
        self._zstd = zstd_level
        self._row_group = row_group_rows
        self._lock_fd: int | None = None
        self.manifest = Manifest()

    # -- open / recover -------------------------------------------------------------------
    def open(self) -> Manifest:
        """Lock the directory and bring it to its last complete commit."""
        self._state.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._state / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FatalError(
                f"another archiver is writing to {self.root} (it holds {self._state / LOCK})"
            ) from None
        self._lock_fd = fd
        try:
            self.manifest = self._recover()
        except BaseException:
            self.close()
            raise
        return self.manifest

    def close(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
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
                why="written before a stop that came ahead of its manifest: its entries "
                "were not acknowledged and are read again",
            )  # fmt: skip
        _unlink(self._state / INTENT)
        if manifest is None:
            manifest = self._rebuild()
        return manifest

    def _read_intent(self) -> tuple[int, list[Path]] | None:
        try:
            data = orjson.loads((self._state / INTENT).read_bytes())
            return int(data["commit"]), [self.root / p for p in data["files"]]
        except FileNotFoundError:
            return None
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            # half-written (a crash inside write_json_atomic leaves only its temporary file,
            # so this is damage): nothing was renamed under it that the manifest holds
            log.warning("archive_intent_unreadable", path=str(self._state / INTENT))
            return None

    def _rebuild(self) -> Manifest:
        """No manifest: a new directory, or files copied here without one. The last ids are
        taken from the files' footers (each holds its commit's, per stream)."""
        manifest = Manifest()
        found = 0
        for path in iter_part_files(self.root):
            try:
                meta = file_meta(pq.read_schema(path))
            except (OSError, pa.ArrowException, ValueError):
                continue
            if meta is None:
                continue
            found += 1
            manifest.commit = max(manifest.commit, int(meta.get("commit", 0)))
            for key, last in dict(meta.get("streams", {})).items():
                if _id_key(last) > _id_key(manifest.last.get(key)):
                    manifest.last[key] = last
        if found:
            log.warning(
                "archive_manifest_rebuilt", files=found, commit=manifest.commit,
                streams=len(manifest.last), path=str(manifest_path(self.root)),
            )  # fmt: skip
            write_json_atomic(manifest_path(self.root), _manifest_json(manifest))
        return manifest

    # -- commit ---------------------------------------------------------------------------
    def commit(
        self,
        commit: int,
        tables: Mapping[Partition, pa.Table],
        last: Mapping[str, str],
    ) -> Committed:
        """Write ``tables`` as commit ``commit`` and record ``last`` (stream -> last entry id,
        for every stream whose entries the commit covers) in the manifest. All or nothing:
        on an error (OSError: disk full, unwritable directory) the files written so far are
        removed where possible, the manifest is unchanged, and the error is raised."""
        if commit <= self.manifest.commit:
            raise ValueError(f"commit {commit} is not after {self.manifest.commit}")
        paths = {
            part: partition_dir(self.root, part[0].value, part[1], part[2]) / part_name(commit)
            for part in tables
        }
        rel = [str(p.relative_to(self.root)) for p in paths.values()]
        written: list[Path] = []
        try:
            write_json_atomic(self._state / INTENT, {"commit": commit, "files": rel})
            size = 0
            for part, table in tables.items():
                streams = {k: v for k, v in last.items() if _in_partition(k, part)}
                size += self._write(paths[part], part[0], table, commit, streams, written)
            for path in paths.values():
                os.replace(_tmp_of(path), path)
            for d in _dirs_upto(self.root, [p.parent for p in paths.values()]):
                fsync_dir(d)
            new = Manifest(commit, {**self.manifest.last, **last})
            write_json_atomic(manifest_path(self.root), _manifest_json(new))
        except BaseException:
            if not self._on_disk(commit):  # else the manifest took it: its files must stay
                for path in (q for p in written for q in (p, _tmp_of(p))):
                    with contextlib.suppress(OSError):  # else the next open() removes it
                        _unlink(path)
            raise
        with contextlib.suppress(OSError):  # done; if this is lost, the manifest is ahead of it
            _unlink(self._state / INTENT)
        self.manifest = new
        return Committed(len(tables), sum(t.num_rows for t in tables.values()), size)

    def _on_disk(self, commit: int) -> bool:
        """Whether the manifest on disk holds ``commit`` (its rename done, a later step
        failed): a retry of the same commit then rewrites the same files, never new ones."""
        try:
            manifest = read_manifest(self.root)
        except Exception:
            return False
        return manifest is not None and manifest.commit >= commit

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
        meta = {"version": ARCHIVE_VERSION, "commit": commit, "streams": streams}
        table = table.take(order).replace_schema_metadata({META_KEY: orjson.dumps(meta)})
        pq.write_table(table, tmp, **parquet_options(channel, self._zstd, self._row_group))
        _fsync_file(tmp)
        return tmp.stat().st_size


def _tmp_of(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def _manifest_json(m: Manifest) -> dict[str, Any]:
    return {"version": ARCHIVE_VERSION, "commit": m.commit, "streams": m.last}


def _in_partition(key: str, part: Partition) -> bool:
    try:
        sk = parse_stream_key(key)
    except ValueError:
        return False
    return sk.channel is part[0] and sk.exchange == part[1]


def _id_key(entry_id: str | None) -> tuple[int, int]:
    if not entry_id:
        return (-1, -1)
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


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
