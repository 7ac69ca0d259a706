"""Columnar, fixed-capacity ring buffer for one market's records.

Pure (no I/O, no clock). One preallocated numpy array per column and a write index that
wraps, so an append is O(1) and allocates nothing per row (string columns excepted: the
``str`` objects themselves). Reads slice one Arrow record batch wrapping the whole ring (built
once, zero-copy) and copy just the rows asked for in one call: the two contiguous segments of a
wrapped range become two chunks, never a copy of the whole buffer.

The arrays hold ``capacity + 1`` slots. The spare slot is always the next one written, so a
row that fails validation half-way through is never visible and never damages the oldest row;
the oldest row is evicted by moving the start index once the new row is complete.

Copy semantics: results copy only the requested rows by default (``copy=True``), so a table
taken now is unaffected by later appends. ``copy=False`` hands out zero-copy views of the
numeric and category columns; later appends overwrite those slots in place, so such a table is
valid only until ``capacity - len(result)`` further rows have been appended. See
``docs/ringbuffer.md``.

``int_string`` columns hold strings that are usually decimal integers (trade ids): those are
stored as int64 (8 bytes a row instead of a pointer and a ~59-byte ``str``); any other value
goes to a side array of ``str``. Reads give back exactly the strings appended
(:mod:`consumers.ringcolumns`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import repeat
from typing import Any, Final, cast

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

from consumers.ringcolumns import (
    BOOL,
    CAT,
    IN_SIDE,
    ISTR,
    NUM,
    STR,
    Column,
    ColumnType,
    RingBufferError,
    canonical_int,
    check_strs,
    kind_of,
    split_ints,
)

__all__ = ["Column", "ColumnType", "RingBuffer", "RingBufferError"]

_UNKNOWN: Final = -2  # transient code for a value outside the categories
_CAST_ERRORS: Final = (TypeError, ValueError, OverflowError, pa.ArrowException)
# One call that copies a range of every ring column (pyarrow >= 19); older: column by column.
_concat_batches: Final[Any] = getattr(pa, "concat_batches", None)


class RingBuffer:
    """Fixed-capacity columnar buffer keeping the last ``capacity`` rows of one market.

    ``time_column`` (numeric) enables :meth:`between`, which binary-searches while times are
    non-decreasing in append order and falls back to a scan while an out-of-order row is held.
    ``id_column`` (string, int_string or integer) makes appends idempotent: a row whose id is
    already held is dropped and counted in :attr:`duplicates`, so a backfill overlapping the
    live feed never stores an entry twice. ``None`` ids are never treated as duplicates.
    """

    def __init__(
        self,
        schema: Sequence[Column],
        capacity: int,
        *,
        time_column: str | None = None,
        id_column: str | None = None,
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise RingBufferError(f"capacity must be an int >= 1, got {capacity!r}")
        cols = tuple(schema)
        if not cols:
            raise RingBufferError("schema needs at least one column")
        if not all(isinstance(c, Column) for c in cols):
            raise RingBufferError("schema must be a sequence of Column")
        names = [c.name for c in cols]
        if len(set(names)) != len(names):
            raise RingBufferError(f"duplicate column names in {names!r}")

        self._columns: Final = cols
        self._names: Final = tuple(names)
        self._ncols: Final = len(cols)
        self._capacity: Final = capacity
        self._phys: Final = capacity + 1  # one spare slot, see the module docstring
        self._kinds: Final = tuple(kind_of(c) for c in cols)
        self._arrays: Final[list[npt.NDArray[Any]]] = [
            np.zeros(self._phys, dtype=c.numpy_dtype)
            if c.type != "string"
            else np.full(self._phys, None, dtype=object)
            for c in cols
        ]
        # int_string columns: the values that are not int64, allocated at the first one
        self._side: Final[list[npt.NDArray[Any] | None]] = [None] * len(cols)
        # value -> code; None -> -1 (null); anything else -> _UNKNOWN, stored as -1 and counted.
        self._code_maps: Final[tuple[dict[object, int] | None, ...]] = tuple(
            {None: -1, **{v: i for i, v in enumerate(c.categories)}}
            if c.type == "category"
            else None
            for c in cols
        )
        self._dictionaries: Final = tuple(
            pa.array(c.categories, type=pa.string()) if c.type == "category" else None for c in cols
        )
        self._arrow_schema: Final = pa.schema(
            [pa.field(c.name, c.arrow_type, nullable=True) for c in cols]
        )
        self._fields: Final = tuple(self._arrow_schema.field(j) for j in range(len(cols)))
        self._arrow_types: Final = tuple(c.arrow_type for c in cols)
        self._empty: Final = self._arrow_schema.empty_table()
        self._ring: Final = self._ring_batch()
        # the ring batch has every column, each as exported: reads need no per-column work
        self._plain: Final = all(k in (NUM, CAT) for k in self._kinds)
        self._time_idx = self._column_index(time_column, "time_column", numeric_only=True)
        self._id_idx = self._column_index(id_column, "id_column", numeric_only=False)
        self._ids: set[object] = set()

        self._start = 0  # physical slot of the oldest row
        self._head = 0  # physical slot the next row is written to (always free)
        self._size = 0
        self._total = 0  # rows ever stored, including evicted ones
        # Absolute index (in _total numbering) of the latest row whose time is lower than its
        # predecessor's; the buffer is sorted by time once that row's predecessor is evicted.
        self._disorder_abs = 0
        # Absolute index of the latest row with a null category code / an int_string value in
        # a side array: reads of rows all after them skip the per-column work those need.
        self._null_abs = -1
        self._side_abs = -1
        self._unknown_categories = 0
        self._duplicates = 0

    def _column_index(self, name: str | None, what: str, *, numeric_only: bool) -> int | None:
        if name is None:
            return None
        if name not in self._names:
            raise RingBufferError(f"{what} {name!r} is not a column of {list(self._names)!r}")
        idx = self._names.index(name)
        kind = self._columns[idx].type
        if numeric_only:
            ok = self._kinds[idx] == NUM
        else:
            ok = kind in ("string", "int_string") or kind.startswith(("int", "uint"))
        if not ok:
            raise RingBufferError(f"{what} {name!r} has unsupported type {kind!r}")
        return idx

    def _ring_batch(self) -> pa.RecordBatch | None:
        """Zero-copy Arrow view of every numeric, category and int_string column's whole
        ring (int_string as its int64 slots), built once: a read slices it (one call for all
        columns) instead of wrapping each column. None when there is no such column."""
        fields: list[pa.Field] = []
        arrays: list[pa.Array] = []
        phys = self._phys
        for j, kind in enumerate(self._kinds):
            buf = pa.py_buffer(self._arrays[j])
            if kind == NUM:
                arrays.append(pa.Array.from_buffers(self._arrow_types[j], phys, [None, buf]))
                fields.append(self._fields[j])
            elif kind == CAT:
                # codes of nulls are -1: a read covering one rebuilds the column (_null_abs)
                arrays.append(
                    pa.DictionaryArray.from_buffers(
                        self._arrow_types[j], phys, [None, buf], self._dictionaries[j]
                    )
                )
                fields.append(self._fields[j])
            elif kind == ISTR:
                arrays.append(pa.Array.from_buffers(pa.int64(), phys, [None, buf]))
                fields.append(pa.field(self._names[j], pa.int64()))
        if not arrays:
            return None
        return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))

    # ----------------------------------------------------------------- properties
    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def columns(self) -> tuple[Column, ...]:
        return self._columns

    @property
    def total_appended(self) -> int:
        """Rows ever stored, including those since overwritten (duplicates excluded)."""
        return self._total

    @property
    def duplicates(self) -> int:
        """Rows dropped because their ``id_column`` value was already held."""
        return self._duplicates

    @property
    def unknown_categories(self) -> int:
        """Non-null values outside a category column's categories, stored as null."""
        return self._unknown_categories

    @property
    def is_time_sorted(self) -> bool:
        """Whether the held rows are non-decreasing in time (``between`` can binary-search)."""
        return self._disorder_abs <= self._total - self._size

    @property
    def nbytes(self) -> int:
        """Bytes held by the column arrays (``(capacity + 1) * row width``).

        String columns count 8 bytes a slot for the pointer; the ``str`` objects they point to
        are extra (about 49 + len bytes each for ASCII) and not counted here. An int_string
        column is 8 bytes a slot, plus 8 more (and the ``str`` objects) once it holds a value
        that is not an int64.
        """
        side = sum(int(s.nbytes) for s in self._side if s is not None)
        return sum(int(a.nbytes) for a in self._arrays) + side

    @property
    def arrow_schema(self) -> pa.Schema:
        return self._arrow_schema

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return (
            f"RingBuffer(columns={list(self._names)!r}, len={self._size}, "
            f"capacity={self._capacity}, total_appended={self._total})"
        )

    # ----------------------------------------------------------------- writing
    def _side_array(self, j: int) -> npt.NDArray[Any]:
        side = self._side[j]
        if side is None:
            side = self._side[j] = np.full(self._phys, None, dtype=object)
        return side

    def _id_key(self, slot: int) -> object:
        """The id of a held row as the duplicate set keeps it (an int_string as its int)."""
        j = cast(int, self._id_idx)
        v = self._arrays[j][slot]
        if self._kinds[j] == ISTR:
            return cast(npt.NDArray[Any], self._side[j])[slot] if v == IN_SIDE else int(v)
        return v

    def append(self, row: Sequence[object]) -> bool:
        """Append one row (values in schema order). O(1), no Arrow allocation.

        Returns False when the row was dropped as a duplicate id. Raises RingBufferError for
        a wrong arity or a value its column cannot store; the buffer is then unchanged.
        """
        if len(row) != self._ncols:
            raise RingBufferError(
                f"row has {len(row)} values, schema has {self._ncols}: {list(self._names)!r}"
            )
        rid: object = None
        if self._id_idx is not None:
            rid = row[self._id_idx]
            kind = self._kinds[self._id_idx]
            try:
                if rid is not None and kind == NUM:
                    rid = int(rid)  # type: ignore[call-overload]  # as the int column stores it
                elif rid is not None and kind == ISTR:
                    if not isinstance(rid, str):
                        raise TypeError(f"expected str or None, got {type(rid).__name__}")
                    iv = canonical_int(rid)
                    rid = rid if iv is None else iv
                dup = rid is not None and rid in self._ids
            except _CAST_ERRORS as e:
                raise RingBufferError(f"id {rid!r} is not a valid id") from e
            if dup:
                self._duplicates += 1
                return False
        head = self._head
        unknown = 0
        null = in_side = False
        j = 0
        value: object = None
        try:
            for j, value in enumerate(row):
                kind = self._kinds[j]
                if kind == NUM:
                    self._arrays[j][head] = value
                elif kind == CAT:
                    code = self._code_maps[j].get(value, _UNKNOWN)  # type: ignore[union-attr]
                    if code == _UNKNOWN:
                        unknown += 1
                        code = -1
                    null = null or code == -1
                    self._arrays[j][head] = code
                elif kind == STR:
                    if value is not None and not isinstance(value, str):
                        raise TypeError(f"expected str or None, got {type(value).__name__}")
                    self._arrays[j][head] = value
                elif kind == ISTR:
                    if value is not None and not isinstance(value, str):
                        raise TypeError(f"expected str or None, got {type(value).__name__}")
                    iv = None if value is None else canonical_int(value)
                    if iv is None:
                        self._side_array(j)[head] = value
                        self._arrays[j][head] = IN_SIDE
                        in_side = True
                    else:
                        self._arrays[j][head] = iv
                        side = self._side[j]
                        if side is not None:
                            side[head] = None
                else:
                    if not isinstance(value, bool | np.bool_):
                        raise TypeError(f"expected bool, got {type(value).__name__}")
                    self._arrays[j][head] = value
        except _CAST_ERRORS as e:
            col = self._columns[j]
            raise RingBufferError(f"column {col.name!r} ({col.type}) cannot store {value!r}") from e

        phys = self._phys
        if self._time_idx is not None and self._size:
            times = self._arrays[self._time_idx]
            if not times[head] >= times[head - 1]:  # head - 1 == -1 wraps to the last slot
                self._disorder_abs = self._total
        if null:
            self._null_abs = self._total
        if in_side:
            self._side_abs = self._total
        if self._size == self._capacity:
            if self._id_idx is not None:
                self._ids.discard(self._id_key(self._start))
            self._start = (self._start + 1) % phys
        else:
            self._size += 1
        if rid is not None:
            self._ids.add(rid)
        self._head = (head + 1) % phys
        self._total += 1
        self._unknown_categories += unknown
        return True

    def extend(self, rows: Sequence[Sequence[object]]) -> int:
        """Append many rows (each in schema order), converted column-wise in one pass.

        Equivalent to appending them one by one; returns how many were stored. All rows are
        validated before any is written.
        """
        n = self._ncols
        for i, row in enumerate(rows):
            if len(row) != n:
                raise RingBufferError(
                    f"row {i} has {len(row)} values, schema has {n}: {list(self._names)!r}"
                )
        if not rows:
            return 0
        cols = list(zip(*rows, strict=True))
        return self._extend(cols, len(rows))

    def extend_columns(self, columns: Mapping[str, Sequence[object] | npt.NDArray[Any]]) -> int:
        """Append a batch given as one sequence (or numpy array) per column name."""
        if set(columns) != set(self._names):
            missing = sorted(set(self._names) - set(columns))
            extra = sorted(set(columns) - set(self._names))
            raise RingBufferError(f"extend_columns: missing columns {missing}, unknown {extra}")
        values = [columns[name] for name in self._names]
        lengths = {len(v) for v in values}
        if len(lengths) != 1:
            raise RingBufferError(f"extend_columns: columns have different lengths {lengths}")
        m = lengths.pop()
        if m == 0:
            return 0
        return self._extend(values, m)

    def _convert(
        self, j: int, values: Sequence[object] | npt.NDArray[Any], m: int
    ) -> tuple[npt.NDArray[Any], npt.NDArray[Any] | None]:
        """One batch column as an array of the column's dtype (category: _UNKNOWN kept), and
        for an int_string column the side values (None when every value is an int64)."""
        kind = self._kinds[j]
        col = self._columns[j]
        side = None
        try:
            if kind == NUM:
                arr = np.asarray(values, dtype=col.numpy_dtype)
            elif kind == BOOL:
                arr = np.asarray(values)
                if arr.dtype != np.bool_:
                    raise TypeError(f"expected bool values, got dtype {arr.dtype}")
            elif kind == CAT:
                vals = values.tolist() if isinstance(values, np.ndarray) else list(values)
                cmap = cast(dict[object, int], self._code_maps[j])
                codes = map(cmap.get, vals, repeat(_UNKNOWN, m))
                arr = np.fromiter(codes, dtype=np.int8, count=m)
            else:
                vals = values.tolist() if isinstance(values, np.ndarray) else list(values)
                if kind == ISTR:
                    arr, side = split_ints(vals, m)
                else:
                    check_strs(vals)
                    arr = np.empty(m, dtype=object)
                    arr[:] = vals
        except _CAST_ERRORS as e:
            raise RingBufferError(f"column {col.name!r} ({col.type}): {e}") from e
        if arr.shape != (m,):
            raise RingBufferError(f"column {col.name!r}: expected {m} values, got {arr.shape}")
        return arr, side

    def _extend(self, values: Sequence[Sequence[object] | npt.NDArray[Any]], m: int) -> int:
        pairs = [self._convert(j, values[j], m) for j in range(self._ncols)]
        converted = [a for a, _ in pairs]
        sides = {j: s for j, (_, s) in enumerate(pairs) if s is not None}
        # Nothing below can fail: the buffer changes only from here on.
        if self._id_idx is not None:
            keep = self._dedupe(self._batch_ids(converted, sides))
            if len(keep) != m:
                self._duplicates += m - len(keep)
                idx = np.asarray(keep, dtype=np.intp)
                converted = [a[idx] for a in converted]
                sides = {j: s[idx] for j, s in sides.items()}
                m = len(keep)
                if m == 0:
                    return 0
        for j, kind in enumerate(self._kinds):
            if kind == CAT and converted[j].min() < 0:
                codes = converted[j]
                unknown = codes == _UNKNOWN
                if unknown.any():
                    self._unknown_categories += int(np.count_nonzero(unknown))
                    codes[unknown] = -1
                last_null = int(np.flatnonzero(codes < 0)[-1])
                self._null_abs = max(self._null_abs, self._total + last_null)
            elif kind == ISTR and j in sides:
                rows = np.flatnonzero(converted[j] == IN_SIDE)
                if rows.size:
                    self._side_abs = max(self._side_abs, self._total + int(rows[-1]))

        if self._time_idx is not None:
            t = converted[self._time_idx]
            if self._size:
                t = np.concatenate(([self._arrays[self._time_idx][self._head - 1]], t))
                offset = 0  # pair (q, q+1) means batch row q is out of order
            else:
                offset = 1  # pair (q, q+1) means batch row q+1 is out of order
            bad = np.flatnonzero(~(t[1:] >= t[:-1]))
            if bad.size:
                self._disorder_abs = max(self._disorder_abs, self._total + int(bad[-1]) + offset)

        cap, phys = self._capacity, self._phys
        k = min(m, cap)
        head = self._head
        first = min(k, phys - head)
        targets: list[tuple[npt.NDArray[Any], npt.NDArray[Any] | None]] = list(
            zip(self._arrays, converted, strict=True)
        )
        for j, kind in enumerate(self._kinds):
            if kind == ISTR and (j in sides or self._side[j] is not None):
                targets.append((self._side_array(j), sides.get(j)))  # None clears stale strs
        for arr, new in targets:
            if new is None:
                arr[head : head + first] = None
                if k > first:
                    arr[: k - first] = None
                continue
            tail = new[m - k :]
            arr[head : head + first] = tail[:first]
            if k > first:
                arr[: k - first] = tail[first:]
        self._head = (head + k) % phys
        self._size = min(self._size + m, cap)
        self._start = (self._head - self._size) % phys
        self._total += m
        return m

    def _batch_ids(
        self, converted: list[npt.NDArray[Any]], sides: dict[int, npt.NDArray[Any]]
    ) -> list[object]:
        """The id column of a converted batch as the duplicate set keeps ids."""
        j = cast(int, self._id_idx)
        ids: list[object] = converted[j].tolist()
        side = sides.get(j)
        if side is not None:
            for r in np.flatnonzero(converted[j] == IN_SIDE).tolist():
                ids[r] = side[r]
        return ids

    def _dedupe(self, ids: list[object]) -> list[int]:
        """Batch positions kept, with exactly the outcome of appending one by one."""
        held = self._ids
        size, start, cap, phys = self._size, self._start, self._capacity, self._phys
        accepted: list[object] = []
        keep: list[int] = []
        for r, v in enumerate(ids):
            if v is not None and v in held:
                continue
            j = size + len(accepted) - cap  # logical index of the row this one evicts
            if j >= 0:
                held.discard(self._id_key((start + j) % phys) if j < size else accepted[j - size])
            if v is not None:
                held.add(v)
            accepted.append(v)
            keep.append(r)
        return keep

    def clear(self) -> None:
        """Drop every row (O(capacity) for string columns: their references are released)."""
        for j, (arr, kind) in enumerate(zip(self._arrays, self._kinds, strict=True)):
            if kind == STR:
                arr.fill(None)
            self._side[j] = None
        self._ids.clear()
        self._start = self._head = self._size = 0
        self._disorder_abs = self._total

    # ----------------------------------------------------------------- reading
    def _slices(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """Physical slices (at most two) of the logical row range [lo, hi), oldest = 0."""
        n = hi - lo
        a = (self._start + lo) % self._phys
        first = min(n, self._phys - a)
        out = [(a, a + first)]
        if n > first:
            out.append((0, n - first))
        return out

    def _export(
        self, j: int, data: npt.NDArray[Any], side: npt.NDArray[Any] | None = None
    ) -> pa.Array:
        """One column's rows as an Arrow array over ``data``'s memory (no copy but strings).

        ``from_buffers`` skips pyarrow's type inference: about 2 µs a column instead of 3-9.
        ``side`` is an int_string column's side values for the same rows.
        """
        kind = self._kinds[j]
        n = len(data)
        if kind == NUM:
            return pa.Array.from_buffers(self._arrow_types[j], n, [None, pa.py_buffer(data)])
        if kind == CAT:
            validity = None
            if n and data.min() < 0:
                validity = pa.py_buffer(np.packbits(data >= 0, bitorder="little"))
            return pa.DictionaryArray.from_buffers(
                self._arrow_types[j], n, [validity, pa.py_buffer(data)], self._dictionaries[j]
            )
        if kind == ISTR:
            if side is not None:
                in_side = data == IN_SIDE
                if in_side.any():
                    return pa.array(
                        [
                            s if f else str(i)
                            for i, s, f in zip(
                                data.tolist(), side.tolist(), in_side.tolist(), strict=True
                            )
                        ],
                        type=pa.string(),
                    )
            ints = pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(data)])
            return ints.cast(pa.string())  # decimal, as str(int) spells it
        if kind == STR:
            return pa.array(data, type=pa.string())
        return pa.array(data, type=pa.bool_())  # bit-packed by Arrow: always a copy

    def _column(self, j: int, slices: list[tuple[int, int]], copy: bool) -> Any:
        """One column of a range, exported on its own (a copy, or views of each segment)."""
        arr, side = self._arrays[j], self._side[j]
        if not copy:
            chunks = [
                self._export(j, arr[a:b], None if side is None else side[a:b]) for a, b in slices
            ]
            return pa.chunked_array(chunks, type=self._arrow_types[j])
        if len(slices) == 1:
            a, b = slices[0]
            return self._export(j, arr[a:b].copy(), None if side is None else side[a:b])
        data = np.concatenate([arr[a:b] for a, b in slices])
        sides = None if side is None else np.concatenate([side[a:b] for a, b in slices])
        return self._export(j, data, sides)

    def _range(self, lo: int, hi: int, copy: bool) -> pa.Table:
        if hi <= lo:
            return self._empty
        slices = self._slices(lo, hi)
        ring = self._ring
        if ring is None or _concat_batches is None:
            cols = [self._column(j, slices, copy) for j in range(self._ncols)]
            return pa.Table.from_arrays(cols, schema=self._arrow_schema)
        parts = [ring.slice(a, b - a) for a, b in slices]
        # copy: one Arrow call copies the rows of every ring column; else zero-copy slices
        table = pa.Table.from_batches([_concat_batches(parts)] if copy else parts)
        first_abs = self._total - self._size + lo
        nulls = self._null_abs >= first_abs
        if self._plain and not nulls:
            return table
        for j, kind in enumerate(self._kinds):
            if kind == NUM:
                continue
            if kind == CAT:
                if nulls:  # codes -1 need a validity bitmap
                    table = table.set_column(j, self._fields[j], self._column(j, slices, copy))
            elif kind == ISTR:
                if self._side_abs >= first_abs:
                    strings = self._column(j, slices, copy)
                else:
                    strings = table.column(j).cast(pa.string())
                table = table.set_column(j, self._fields[j], strings)
            else:  # string and bool columns are not in the ring batch
                table = table.add_column(j, self._fields[j], self._column(j, slices, copy))
        return table

    def latest(self, n: int, *, copy: bool = True) -> pa.Table:
        """The last ``n`` rows in append order (fewer if fewer are held). O(n).

        ``copy=False`` returns zero-copy views of numeric and category columns, valid only
        until ``capacity - n`` more rows are appended (later appends overwrite the slots).
        """
        n = min(n, self._size)
        return self._range(self._size - n, self._size, copy)

    def table(self, *, copy: bool = True) -> pa.Table:
        """Every held row, oldest first."""
        return self._range(0, self._size, copy)

    def between(self, start: float, end: float, *, copy: bool = True) -> pa.Table:
        """Rows with ``start <= time < end``, in append order.

        O(log n + output) while times are non-decreasing in append order; O(n) scan while an
        out-of-order row is held (see :attr:`is_time_sorted`).
        """
        if self._time_idx is None:
            raise RingBufferError("between() needs a time_column")
        if self._size == 0 or not start < end:
            return self._empty
        times = self._arrays[self._time_idx]
        segments = [times[a:b] for a, b in self._slices(0, self._size)]
        if self.is_time_sorted:
            # In a sorted concatenation, "count < x" is the sum over its segments.
            lo = sum(int(np.searchsorted(s, start, side="left")) for s in segments)
            hi = sum(int(np.searchsorted(s, end, side="left")) for s in segments)
            return self._range(lo, hi, copy)
        logical = np.concatenate(segments) if len(segments) > 1 else segments[0]
        rows = np.flatnonzero((logical >= start) & (logical < end))
        if rows.size == 0:
            return self._empty
        phys_idx = (rows + self._start) % self._phys
        cols = [
            self._export(j, arr[phys_idx], None if side is None else side[phys_idx])
            for j, (arr, side) in enumerate(zip(self._arrays, self._side, strict=True))
        ]
        return pa.Table.from_arrays(cols, schema=self._arrow_schema)

    def to_pandas(self, n: int | None = None) -> pd.DataFrame:
        """All rows (or the last ``n``) as a DataFrame; category columns become Categorical."""
        table = self.table() if n is None else self.latest(n)
        return table.to_pandas()

    def last(self) -> dict[str, object] | None:
        """The latest row as ``{column: python value}``, or None when empty."""
        if self._size == 0:
            return None
        p = self._head - 1
        out: dict[str, object] = {}
        for col, kind, arr, side in zip(
            self._columns, self._kinds, self._arrays, self._side, strict=True
        ):
            v = arr[p]
            if kind == CAT:
                out[col.name] = col.categories[v] if v >= 0 else None
            elif kind == STR:
                out[col.name] = v
            elif kind == ISTR:
                out[col.name] = cast(npt.NDArray[Any], side)[p] if v == IN_SIDE else str(v)
            else:
                out[col.name] = v.item()
        return out
