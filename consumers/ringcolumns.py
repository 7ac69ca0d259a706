"""The columns of a ring buffer: types, the ``Column`` schema entry, and how values of each
kind are checked and stored (``int_string``: decimal integers as int64, the rest aside).
Pure; :mod:`consumers.ringbuffer` is the buffer itself and re-exports the public names.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Final, Literal, cast, get_args

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from marketbus.errors import MarketbusError

__all__ = ["Column", "ColumnType", "RingBufferError"]

ColumnType = Literal[
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float32",
    "float64",
    "category",
    "string",
    "int_string",
]
_COLUMN_TYPES: Final[frozenset[str]] = frozenset(get_args(ColumnType))
_MAX_CATEGORIES: Final = 127  # int8 codes; -1 is null

# Column kinds, dispatched on in the append loop (small ints compare fastest).
NUM: Final = 0
BOOL: Final = 1
CAT: Final = 2
STR: Final = 3
ISTR: Final = 4

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
IN_SIDE: Final = _INT64_MIN  # int_string slot whose value is in the side array
_MAX_ID_CHARS: Final = 20  # len(str(-(2**63) + 1)); longer strings are never int64


class RingBufferError(MarketbusError, ValueError):
    """A bad schema, a malformed row or a value a column cannot store."""


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a ring buffer schema.

    ``category`` columns store int8 codes into the fixed ``categories`` (at most 127); a value
    outside them is stored as null and counted in ``RingBuffer.unknown_categories``.
    ``string`` columns hold Python ``str`` (or ``None``) in an object array. ``int_string``
    columns take the same values and export the same Arrow ``string`` column, but store a
    value that is the canonical spelling of an int64 (``str(int(v)) == v``, e.g. ``"123"``,
    not ``"0123"``) as that integer; the others (and ``None``) go to a side array of objects,
    allocated at the first such value.
    """

    name: str
    type: ColumnType
    categories: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise RingBufferError(f"column name must be a non-empty str, got {self.name!r}")
        if self.type not in _COLUMN_TYPES:
            allowed = ", ".join(sorted(_COLUMN_TYPES))
            raise RingBufferError(
                f"column {self.name!r}: unknown type {self.type!r} (allowed: {allowed})"
            )
        if self.type == "category":
            cats = self.categories
            if not isinstance(cats, tuple) or not cats:
                raise RingBufferError(
                    f"column {self.name!r}: a category column needs a non-empty tuple of categories"
                )
            if not all(isinstance(c, str) for c in cats):
                raise RingBufferError(f"column {self.name!r}: categories must be str")
            if len(set(cats)) != len(cats):
                raise RingBufferError(f"column {self.name!r}: duplicate categories {cats!r}")
            if len(cats) > _MAX_CATEGORIES:
                raise RingBufferError(
                    f"column {self.name!r}: {len(cats)} categories, at most {_MAX_CATEGORIES}"
                )
        elif self.categories:
            raise RingBufferError(f"column {self.name!r}: categories given for type {self.type!r}")

    @property
    def numpy_dtype(self) -> np.dtype[Any]:
        """The dtype of the backing array."""
        if self.type == "category":
            return np.dtype(np.int8)
        if self.type == "string":
            return np.dtype(object)
        if self.type == "int_string":
            return np.dtype(np.int64)
        return np.dtype(self.type)

    @property
    def arrow_type(self) -> pa.DataType:
        """The Arrow type the column is exported as."""
        if self.type == "category":
            return pa.dictionary(pa.int8(), pa.string())
        if self.type in ("string", "int_string"):
            return pa.string()
        return pa.from_numpy_dtype(np.dtype(self.type))


def kind_of(col: Column) -> int:
    if col.type == "category":
        return CAT
    if col.type == "string":
        return STR
    if col.type == "int_string":
        return ISTR
    if col.type == "bool":
        return BOOL
    return NUM


def canonical_int(value: str) -> int | None:
    """``value`` as an int when it is the canonical spelling of one (``str(int(value)) ==
    value``) in int64 range, -2**63 excepted (it marks a side-array slot); else None."""
    if not 0 < len(value) <= _MAX_ID_CHARS:
        return None
    try:
        v = int(value)
    except ValueError:
        return None
    if _INT64_MIN < v <= _INT64_MAX and str(v) == value:
        return v
    return None


_STR_TYPES: Final = frozenset({str, type(None)})
_FAST_DIGITS: Final = 18  # any 18-digit number is an int64
_first_char: Final = itemgetter(0)


def check_strs(values: list[object]) -> None:
    """TypeError unless every value is a ``str`` or None (one C-level pass when they are)."""
    if set(map(type, values)) <= _STR_TYPES:
        return
    for v in values:
        if v is not None and not isinstance(v, str):
            raise TypeError(f"expected str or None, got {type(v).__name__}: {v!r}")


def _plain_ints(values: list[str]) -> npt.NDArray[np.int64] | None:
    """The values as int64 when each is 1-18 ASCII digits without a leading zero (so the
    canonical spelling of an int64): C-level passes over the batch, no Python per value. None
    says "look closer", not "not ints" ("0" itself, 19 digits and negatives go the long way)."""
    lengths = set(map(len, values))
    if min(lengths) < 1 or max(lengths) > _FAST_DIGITS:
        return None
    joined = "".join(values)
    if not (joined.isascii() and joined.isdigit()) or "0" in set(map(_first_char, values)):
        return None
    return np.array(values, dtype=np.int64)


def split_ints(
    values: list[object], m: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any] | None]:
    """An ``int_string`` batch as (int64 slots, side values or None when none is needed)."""
    check_strs(values)
    if None not in values:
        arr = _plain_ints(cast(list[str], values))
        if arr is not None:
            return arr, None
    out = np.empty(m, dtype=np.int64)
    side = np.full(m, None, dtype=object)
    for r, v in enumerate(values):
        iv = None if v is None else canonical_int(cast(str, v))
        if iv is None:
            out[r] = IN_SIDE
            side[r] = v
        else:
            out[r] = iv
    return out, side if (out == IN_SIDE).any() else None
