"""Ring buffer: checked against a plain list that keeps the last `capacity` rows."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from consumers.ringbuffer import Column, RingBuffer, RingBufferError

SCHEMA = (
    Column("ts_ms", "int64"),
    Column("recv_ns", "int64"),
    Column("price", "float64"),
    Column("amount", "float64"),
    Column("side", "category", categories=("buy", "sell")),
    Column("id", "string"),
)
NAMES = [c.name for c in SCHEMA]
Row = tuple[int, int, float, float, str | None, str | None]


def row(i: int, *, ts: int | None = None, side: str | None = "buy") -> Row:
    t = i if ts is None else ts
    return (t, t * 1_000_000 + 7, 100.0 + i / 8, 0.5 + i, side, f"t{i}")


def as_dict(r: Row) -> dict[str, Any]:
    d = dict(zip(NAMES, r, strict=True))
    if d["side"] not in ("buy", "sell"):
        d["side"] = None
    return d


def rows_of(table: pa.Table) -> list[dict[str, Any]]:
    assert table.schema == SCHEMA_ARROW
    out: list[dict[str, Any]] = table.to_pylist()
    return out


SCHEMA_ARROW = RingBuffer(SCHEMA, 1).arrow_schema


SCHEMA_INT_IDS = (*SCHEMA[:-1], Column("id", "int_string"))
"""The same columns with the id stored as int64 where it is a plain decimal integer."""


def make(capacity: int, schema: tuple[Column, ...] = SCHEMA, **kw: Any) -> RingBuffer:
    return RingBuffer(schema, capacity, time_column="ts_ms", **kw)


# ------------------------------------------------------------------ construction


def test_schema_and_types() -> None:
    rb = make(4)
    assert rb.arrow_schema == pa.schema(
        [
            ("ts_ms", pa.int64()),
            ("recv_ns", pa.int64()),
            ("price", pa.float64()),
            ("amount", pa.float64()),
            ("side", pa.dictionary(pa.int8(), pa.string())),
            ("id", pa.string()),
        ]
    )
    assert rb.capacity == 4
    assert rb.columns == SCHEMA


@pytest.mark.parametrize("capacity", [0, -1, 1.5, True, "10"])
def test_bad_capacity(capacity: Any) -> None:
    with pytest.raises(RingBufferError, match="capacity"):
        RingBuffer(SCHEMA, capacity)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "x", "type": "decimal"}, "unknown type"),
        ({"name": "", "type": "int64"}, "non-empty"),
        ({"name": "x", "type": "category"}, "non-empty tuple"),
        ({"name": "x", "type": "category", "categories": ("a", "a")}, "duplicate"),
        ({"name": "x", "type": "category", "categories": ("a", 1)}, "must be str"),
        ({"name": "x", "type": "category", "categories": tuple(map(str, range(128)))}, "127"),
        ({"name": "x", "type": "int64", "categories": ("a",)}, "categories given"),
    ],
)
def test_bad_column(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(RingBufferError, match=match):
        Column(**kwargs)


def test_bad_schema() -> None:
    with pytest.raises(RingBufferError, match="at least one"):
        RingBuffer((), 3)
    with pytest.raises(RingBufferError, match="duplicate column"):
        RingBuffer((Column("a", "int64"), Column("a", "float64")), 3)
    with pytest.raises(RingBufferError, match="time_column 'nope'"):
        RingBuffer(SCHEMA, 3, time_column="nope")
    with pytest.raises(RingBufferError, match="unsupported type 'string'"):
        RingBuffer(SCHEMA, 3, time_column="id")
    with pytest.raises(RingBufferError, match="unsupported type 'float64'"):
        RingBuffer(SCHEMA, 3, id_column="price")
    assert issubclass(RingBufferError, ValueError)


def test_between_needs_time_column() -> None:
    with pytest.raises(RingBufferError, match="time_column"):
        RingBuffer(SCHEMA, 3).between(0, 1)


# ------------------------------------------------------------------ empty and filling


def test_empty() -> None:
    rb = make(5)
    assert len(rb) == 0
    assert rb.total_appended == 0
    assert rb.last() is None
    for table in (
        rb.latest(3),
        rb.latest(0),
        rb.table(),
        rb.between(0, 10),
        rb.latest(3, copy=False),
    ):
        assert table.num_rows == 0
        assert table.schema == rb.arrow_schema
    df = rb.to_pandas()
    assert list(df.columns) == NAMES
    assert len(df) == 0


def test_fill_below_at_and_past_capacity() -> None:
    rb = make(4)
    model: list[Row] = []
    for i in range(11):
        r = row(i)
        rb.append(r)
        model = [*model, r][-4:]
        assert len(rb) == len(model)
        assert rows_of(rb.table()) == [as_dict(x) for x in model]
        assert rb.last() == as_dict(r)
    assert rb.total_appended == 11


@pytest.mark.parametrize("capacity", [1, 2, 7])
def test_wraps_many_times(capacity: int) -> None:
    rb = make(capacity)
    for i in range(capacity * 10 + 3):
        rb.append(row(i))
    assert [r["ts_ms"] for r in rows_of(rb.table())] == list(
        range(capacity * 9 + 3, capacity * 10 + 3)
    )


@pytest.mark.parametrize("n", [-3, 0, 1, 4, 5, 6, 100])
def test_latest_n(n: int) -> None:
    rb = make(5)
    for i in range(13):  # wrapped
        rb.append(row(i))
    expect = list(range(8, 13))[-n:] if n > 0 else []
    assert _ts(rb.latest(n)) == expect
    assert _ts(rb.latest(n, copy=False)) == expect


def test_last_types() -> None:
    rb = make(3)
    rb.append((1, 2, 3.5, 4.0, "zzz", None))
    last = rb.last()
    assert last == {"ts_ms": 1, "recv_ns": 2, "price": 3.5, "amount": 4.0, "side": None, "id": None}
    assert last is not None
    assert type(last["ts_ms"]) is int and type(last["price"]) is float


# ------------------------------------------------------------------ between


def _filled(capacity: int, times: list[int]) -> RingBuffer:
    rb = make(capacity)
    for i, t in enumerate(times):
        rb.append(row(i, ts=t))
    return rb


def _ts(table: pa.Table) -> list[int]:
    return [r["ts_ms"] for r in rows_of(table)]


def test_between_edges() -> None:
    # capacity 6 after 9 appends: held times 30..80, physically wrapped
    rb = _filled(6, [0, 10, 20, 30, 40, 50, 60, 70, 80])
    assert rb.is_time_sorted
    assert _ts(rb.between(30, 80)) == [30, 40, 50, 60, 70]  # start inclusive, end exclusive
    assert _ts(rb.between(31, 81)) == [40, 50, 60, 70, 80]
    assert _ts(rb.between(-100, 1000)) == [30, 40, 50, 60, 70, 80]  # all
    assert _ts(rb.between(0, 30)) == []  # all evicted
    assert _ts(rb.between(81, 90)) == []
    assert _ts(rb.between(45, 50)) == []
    assert _ts(rb.between(50, 50)) == []  # empty range
    assert _ts(rb.between(60, 40)) == []  # inverted range


def test_between_spans_wrap_point() -> None:
    rb = make(5)
    for i in range(8):
        rb.append(row(i, ts=i * 10))
    # physical slots: 6 of them; rows 50..70 sit before the write index, 30, 40 after it
    assert rb.between(35, 65, copy=False).column("ts_ms").num_chunks == 2
    assert _ts(rb.between(35, 65)) == [40, 50, 60]
    assert rb.between(35, 65).column("ts_ms").num_chunks == 1


def test_between_duplicate_times() -> None:
    rb = _filled(10, [1, 2, 2, 2, 3, 3, 5])
    assert _ts(rb.between(2, 3)) == [2, 2, 2]
    assert _ts(rb.between(3, 4)) == [3, 3]
    assert _ts(rb.between(2, 6)) == [2, 2, 2, 3, 3, 5]


def test_between_out_of_order_falls_back_until_evicted() -> None:
    rb = _filled(4, [10, 20, 5, 30])
    assert not rb.is_time_sorted
    assert _ts(rb.between(5, 21)) == [10, 20, 5]  # append order, by scan
    rb.append(row(9, ts=40))  # evicts 10; 20 -> 5 still held
    assert not rb.is_time_sorted
    assert _ts(rb.between(0, 100)) == [20, 5, 30, 40]
    rb.append(row(10, ts=50))  # evicts 20: sorted again
    assert rb.is_time_sorted
    assert _ts(rb.between(6, 45)) == [30, 40]
    rb.clear()
    assert rb.is_time_sorted
    rb.append(row(1, ts=1))
    assert rb.is_time_sorted  # no predecessor after clear


def test_between_float_time_with_nan() -> None:
    rb = RingBuffer((Column("t", "float64"), Column("v", "int32")), 5, time_column="t")
    rb.extend([(1.0, 1), (math.nan, 2), (3.0, 3)])
    assert not rb.is_time_sorted
    assert rb.between(0.0, 10.0).column("v").to_pylist() == [1, 3]


# ------------------------------------------------------------------ columns


def test_category_export_and_unknown() -> None:
    rb = make(4)
    rb.append(row(0, side="buy"))
    rb.append(row(1, side="sell"))
    rb.append(row(2, side="hold"))  # unknown -> null, counted
    rb.append(row(3, side=None))  # null, not counted
    assert rb.unknown_categories == 1
    side = rb.table().column("side")
    assert side.type == pa.dictionary(pa.int8(), pa.string())
    assert side.to_pylist() == ["buy", "sell", None, None]
    assert side.null_count == 2
    assert side.chunk(0).dictionary.to_pylist() == ["buy", "sell"]
    df = rb.to_pandas()
    assert isinstance(df["side"].dtype, pd.CategoricalDtype)
    assert list(df["side"].cat.categories) == ["buy", "sell"]
    rb.extend_columns({**{n: [0, 1] for n in NAMES}, "side": ["sell", "nope"], "id": ["a", "b"]})
    assert rb.unknown_categories == 2
    assert rb.latest(2).column("side").to_pylist() == ["sell", None]


def test_string_column() -> None:
    rb = make(3)
    rb.append(row(0))
    rb.append((1, 1, 1.0, 1.0, "buy", None))
    rb.append((2, 2, 2.0, 2.0, "buy", "ünïcode-€"))
    assert rb.table().column("id").to_pylist() == ["t0", None, "ünïcode-€"]
    assert rb.table().column("id").type == pa.string()
    with pytest.raises(RingBufferError, match="'id'"):
        rb.append((3, 3, 3.0, 3.0, "buy", 123))
    with pytest.raises(RingBufferError, match="'id'"):
        rb.extend([(3, 3, 3.0, 3.0, "buy", b"bytes")])


def test_numeric_and_bool_types() -> None:
    schema = (
        Column("i8", "int8"),
        Column("u32", "uint32"),
        Column("f32", "float32"),
        Column("flag", "bool"),
    )
    rb = RingBuffer(schema, 3)
    rb.append((-5, 7, 1.5, True))
    rb.extend([(1, 2, 0.25, False), (3, 4, None, np.bool_(True))])  # None -> NaN in floats
    t = rb.table()
    assert t.schema.types == [pa.int8(), pa.uint32(), pa.float32(), pa.bool_()]
    assert t.column("i8").to_pylist() == [-5, 1, 3]
    assert t.column("flag").to_pylist() == [True, False, True]
    assert math.isnan(t.column("f32")[2].as_py())
    with pytest.raises(RingBufferError, match="'i8'"):
        rb.append((300, 1, 1.0, True))  # out of int8 range
    with pytest.raises(RingBufferError, match="'flag'"):
        rb.append((1, 1, 1.0, "False"))  # numpy would store True
    with pytest.raises(RingBufferError, match="'flag'"):
        rb.extend_columns({"i8": [1], "u32": [1], "f32": [1.0], "flag": [1]})


# ------------------------------------------------------------------ validation / atomicity


def test_wrong_arity() -> None:
    rb = make(3)
    with pytest.raises(RingBufferError, match="row has 2 values, schema has 6"):
        rb.append((1, 2))
    with pytest.raises(RingBufferError, match="row 1 has 7 values"):
        rb.extend([row(0), (*row(1), "extra")])
    with pytest.raises(RingBufferError, match="missing columns \\['id'\\]"):
        rb.extend_columns({n: [1] for n in NAMES[:-1]})
    with pytest.raises(RingBufferError, match="different lengths"):
        rb.extend_columns({**{n: [1, 2] for n in NAMES}, "id": ["a"]})
    assert len(rb) == 0


def test_failed_append_leaves_full_buffer_intact() -> None:
    rb = make(3)
    for i in range(5):
        rb.append(row(i))
    before = rb.table()
    with pytest.raises(RingBufferError, match="'amount'") as exc:
        rb.append((99, 99, 99.0, "not a number", "buy", "x"))
    assert isinstance(exc.value.__cause__, ValueError)
    assert rb.table().equals(before)
    assert rb.total_appended == 5
    with pytest.raises(RingBufferError):
        rb.extend([row(5), (6, 6, 6.0, 6.0, "buy", 6)])
    assert rb.table().equals(before)
    rb.append(row(5))
    assert _ts(rb.table()) == [3, 4, 5]


# ------------------------------------------------------------------ extend


def test_extend_equals_append_and_extend_columns() -> None:
    rows = [row(i, side=("buy", "sell", "x", None)[i % 4]) for i in range(23)]
    a, b, c = make(7), make(7), make(7)
    for r in rows:
        a.append(r)
    b.extend(rows[:5])
    b.extend(rows[5:])
    c.extend_columns({n: [r[j] for r in rows] for j, n in enumerate(NAMES)})
    assert a.table().equals(b.table())
    assert a.table().equals(c.table())
    assert a.total_appended == b.total_appended == c.total_appended == 23
    assert a.unknown_categories == b.unknown_categories == c.unknown_categories


def test_extend_columns_numpy_and_bigger_than_capacity() -> None:
    rb = make(1000)
    n = 2500
    ts = np.arange(n, dtype=np.int64)
    got = rb.extend_columns(
        {
            "ts_ms": ts,
            "recv_ns": ts * 10,
            "price": ts / 2,
            "amount": np.ones(n),
            "side": np.array(["buy", "sell"] * (n // 2), dtype=object),
            "id": np.array([str(i) for i in range(n)]),
        }
    )
    assert got == n
    assert rb.total_appended == n and len(rb) == 1000
    t = rb.table()
    assert t.column("ts_ms").to_pylist() == list(range(1500, 2500))
    assert t.column("id").to_pylist() == [str(i) for i in range(1500, 2500)]
    assert rb.between(1990, 2010).num_rows == 20


# ------------------------------------------------------------------ id dedupe


def test_id_column_drops_duplicates() -> None:
    rb = make(3, id_column="id")
    assert rb.append(row(1))
    assert not rb.append(row(1))
    assert rb.extend([row(1), row(2), row(2), row(3)]) == 2
    assert rb.duplicates == 3
    assert _ts(rb.table()) == [1, 2, 3]
    assert rb.append(row(4))  # evicts t1 ...
    assert rb.append(row(1))  # ... so t1 is new again
    assert _ts(rb.table()) == [3, 4, 1]


def test_int_id_column() -> None:
    schema = (Column("ts", "int64"), Column("seq", "uint64"))
    rb = RingBuffer(schema, 2, id_column="seq")
    assert rb.append((1, 5))
    assert not rb.append((2, np.uint64(5)))
    assert rb.extend_columns({"ts": [3, 4, 5], "seq": np.array([5, 6, 7])}) == 2
    assert rb.append((6, 5))  # 5 evicted
    assert rb.table().column("seq").to_pylist() == [7, 5]


# ------------------------------------------------------------------ int_string ids


def test_int_string_round_trips_every_value_exactly() -> None:
    ids = [*TRICKY_IDS, None, "18446744073709551616" * 3]
    rb = make(len(ids) + 2, SCHEMA_INT_IDS)
    rb.append(row(0))  # "t0": opaque
    rb.extend([(i, i, 1.0, 1.0, "buy", v) for i, v in enumerate(ids, 1)])
    rb.append((99, 99, 1.0, 1.0, "buy", "42"))
    want = ["t0", *ids, "42"]
    for copy in (True, False):
        got = rb.table(copy=copy).column("id")
        assert got.type == pa.string()
        assert got.to_pylist() == want
    assert [None if pd.isna(v) else v for v in rb.to_pandas()["id"]] == want
    assert rb.last() == {**as_dict((99, 99, 1.0, 1.0, "buy", "42"))}
    assert type(rb.last()["id"]) is str  # type: ignore[index]
    assert rb.latest(1).column("id").to_pylist() == ["42"]


def test_int_string_stores_plain_integers_as_int64() -> None:
    rb = make(4, SCHEMA_INT_IDS)
    rb.extend([(*row(i)[:5], str(3_000_000_000 + i)) for i in range(6)])
    assert rb._side[5] is None  # no side array while every id is an int64
    assert rb.nbytes == 5 * (8 + 8 + 8 + 8 + 1 + 8)
    assert rb._arrays[5].dtype == np.int64
    assert rb.latest(2).column("id").to_pylist() == ["3000000004", "3000000005"]
    rb.append((*row(9)[:5], "abc"))
    assert rb.nbytes == 5 * (8 + 8 + 8 + 8 + 1 + 8 + 8)  # side array allocated on first use
    assert rb.table().column("id").to_pylist() == ["3000000003", "3000000004", "3000000005", "abc"]
    rb.clear()
    assert rb._side[5] is None


def test_int_string_rejects_what_a_string_column_rejects() -> None:
    rb = make(3, SCHEMA_INT_IDS)
    with pytest.raises(RingBufferError, match="'id'"):
        rb.append((3, 3, 3.0, 3.0, "buy", 123))
    with pytest.raises(RingBufferError, match="'id'"):
        rb.extend([(3, 3, 3.0, 3.0, "buy", b"12")])
    with pytest.raises(RingBufferError, match="id 5"):
        make(3, SCHEMA_INT_IDS, id_column="id").append((3, 3, 3.0, 3.0, "buy", 5))
    assert len(rb) == 0


def test_int_string_id_column_dedupes_by_exact_string() -> None:
    rb = make(3, SCHEMA_INT_IDS, id_column="id")
    assert rb.extend([(i, i, 1.0, 1.0, "buy", v) for i, v in enumerate(["5", "05", "x", "5"])]) == 3
    assert not rb.append((9, 9, 1.0, 1.0, "buy", "05"))
    assert rb.append((9, 9, 1.0, 1.0, "buy", "6"))  # evicts "5" ...
    assert rb.append((10, 10, 1.0, 1.0, "buy", "5"))  # ... so "5" is new again
    assert rb.table().column("id").to_pylist() == ["x", "6", "5"]
    assert rb.duplicates == 2


@pytest.mark.parametrize("schema", [SCHEMA, SCHEMA_INT_IDS])
@pytest.mark.parametrize("copy", [True, False])
def test_reads_equal_the_column_by_column_path(
    schema: tuple[Column, ...], copy: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ring-batch read (one Arrow call for all columns) gives what exporting each column
    on its own gives: wrapped, with and without null categories and side-array ids."""
    rb = make(7, schema)
    sides = ["buy", "sell", None, "buy", "x", "sell", "buy", "buy", "sell", "buy", "sell"]
    rids = [str(i) if i % 4 else f"o{i}" for i in range(len(sides))]
    rb.extend(
        [(i, i, 1.0 + i, 2.0, s, r) for i, (s, r) in enumerate(zip(sides, rids, strict=True))]
    )
    reads = [(n, lambda n=n: rb.latest(n, copy=copy)) for n in range(8)]
    reads += [(-1, lambda: rb.table(copy=copy)), (-2, lambda: rb.between(5, 10, copy=copy))]
    fast = {k: f() for k, f in reads}
    monkeypatch.setattr("consumers.ringbuffer._concat_batches", None)
    for k, f in reads:
        slow = f()
        assert fast[k].schema == slow.schema == rb.arrow_schema
        assert fast[k].to_pylist() == slow.to_pylist(), k
        fast[k].validate(full=True)
    assert rb.latest(2).column("id").to_pylist() == ["9", "10"]  # no side id in range
    assert rb.latest(2).column("side").null_count == 0  # no null category in range


# ------------------------------------------------------------------ memory and copies


def test_nbytes_is_raw_row_width() -> None:
    rb = make(100_000)
    width = 8 + 8 + 8 + 8 + 1 + 8  # int64 x2, float64 x2, int8 codes, object pointer
    assert rb.nbytes == (100_000 + 1) * width


def test_copy_semantics() -> None:
    rb = make(4)
    for i in range(6):
        rb.append(row(i))
    copied = rb.latest(2)
    view = rb.latest(2, copy=False)
    assert rows_of(copied) == rows_of(view)
    frozen = rows_of(copied)
    for i in range(6, 12):  # overwrites every slot
        rb.append(row(i))
    assert rows_of(copied) == frozen  # copy: unchanged
    assert rows_of(view) != frozen  # view: slots reused (documented)
    assert view.column("id").to_pylist() == ["t4", "t5"]  # strings are always copied


def test_view_is_zero_copy() -> None:
    rb = make(8)
    rb.extend([row(i) for i in range(5)])
    view = rb.latest(3, copy=False)
    chunk = view.column("price").chunk(0)
    ring = rb._arrays[2]
    # a slice of the ring's own memory: its buffer is the ring, the rows start at the offset
    assert chunk.buffers()[1].address + chunk.offset * ring.itemsize == (
        ring.ctypes.data + 2 * ring.itemsize
    )
    ring[3] = -1.0  # the view sees writes to its slots
    assert view.column("price").to_pylist()[1] == -1.0


def test_clear() -> None:
    rb = make(3, id_column="id")
    rb.extend([row(i) for i in range(5)])
    rb.clear()
    assert len(rb) == 0 and rb.last() is None and rb.table().num_rows == 0
    assert rb.total_appended == 5
    assert rb.append(row(4))  # ids forgotten too
    assert _ts(rb.table()) == [4]


def test_to_pandas() -> None:
    rb = make(5)
    rb.extend([row(i) for i in range(8)])
    df = rb.to_pandas()
    assert list(df["ts_ms"]) == [3, 4, 5, 6, 7]
    assert list(rb.to_pandas(2)["id"]) == ["t6", "t7"]
    assert df["price"].dtype == np.float64


# ------------------------------------------------------------------ property / stateful

side_st = st.sampled_from(["buy", "sell", "other", None])
TRICKY_IDS = [
    "0", "7", "-3", "123", "9223372036854775807",  # int64 spellings: stored as ints
    "007", "-0", "+5", " 5", "5_0", "1e3", "",  # int() reads them, but not canonical
    "9223372036854775808", "-9223372036854775808",  # beyond int64 / the side-array marker
    "\u0661\u0662", "id0", "id1", "t",  # Arabic-Indic digits, opaque ids
]  # fmt: skip
id_st = st.one_of(st.none(), st.sampled_from([f"id{i}" for i in range(6)] + TRICKY_IDS))


class RingModel(RuleBasedStateMachine):
    """Every operation mirrored on a list; reads must agree after each step."""

    dedupe = False
    schema = SCHEMA

    def __init__(self) -> None:
        super().__init__()
        self.rb: RingBuffer | None = None
        self.model: list[Row] = []
        self.cap = 1
        self.t = 0

    @precondition(lambda self: self.rb is None)
    @rule(cap=st.integers(1, 9))
    def create(self, cap: int) -> None:
        self.cap = cap
        self.rb = make(cap, self.schema, id_column="id" if self.dedupe else None)

    def _rows(self, data: list[tuple[int, str | None, str | None]]) -> list[Row]:
        out: list[Row] = []
        for step, side, rid in data:
            self.t += step
            out.append((self.t, self.t * 3, self.t / 4, float(step), side, rid))
        return out

    def _model_add(self, rows: list[Row]) -> int:
        stored = 0
        for r in rows:
            if self.dedupe and r[5] is not None and r[5] in {m[5] for m in self.model}:
                continue
            self.model = [*self.model, r][-self.cap :]
            stored += 1
        return stored

    step_st = st.tuples(st.integers(-3, 5), side_st, id_st)

    @precondition(lambda self: self.rb is not None)
    @rule(data=step_st)
    def append(self, data: tuple[int, str | None, str | None]) -> None:
        assert self.rb is not None
        (r,) = self._rows([data])
        assert self.rb.append(r) == bool(self._model_add([r]))

    @precondition(lambda self: self.rb is not None)
    @rule(data=st.lists(step_st, max_size=25), columns=st.booleans())
    def extend(self, data: list[tuple[int, str | None, str | None]], columns: bool) -> None:
        assert self.rb is not None
        rows = self._rows(data)
        if columns:
            got = self.rb.extend_columns({n: [r[j] for r in rows] for j, n in enumerate(NAMES)})
        else:
            got = self.rb.extend(rows)
        assert got == self._model_add(rows)

    @precondition(lambda self: self.rb is not None)
    @rule()
    def clear(self) -> None:
        assert self.rb is not None
        self.rb.clear()
        self.model = []

    @precondition(lambda self: self.rb is not None)
    @rule(n=st.integers(-1, 12), copy=st.booleans())
    def latest(self, n: int, copy: bool) -> None:
        assert self.rb is not None
        expect = self.model[-n:] if n > 0 else []
        assert rows_of(self.rb.latest(n, copy=copy)) == [as_dict(r) for r in expect]

    @precondition(lambda self: self.rb is not None)
    @rule(a=st.integers(-10, 120), width=st.integers(-2, 40), copy=st.booleans())
    def between(self, a: int, width: int, copy: bool) -> None:
        assert self.rb is not None
        lo, hi = self.t - a, self.t - a + width
        expect = [as_dict(r) for r in self.model if lo <= r[0] < hi]
        assert rows_of(self.rb.between(lo, hi, copy=copy)) == expect

    @invariant()
    def agrees(self) -> None:
        if self.rb is None:
            return
        assert len(self.rb) == len(self.model)
        assert rows_of(self.rb.table()) == [as_dict(r) for r in self.model]
        assert self.rb.last() == (as_dict(self.model[-1]) if self.model else None)
        times = [r[0] for r in self.model]
        assert self.rb.is_time_sorted == (times == sorted(times))
        if self.dedupe:
            ids = [r[5] for r in self.model if r[5] is not None]
            assert len(ids) == len(set(ids))


class RingModelDedupe(RingModel):
    dedupe = True


class RingModelIntIds(RingModel):
    schema = SCHEMA_INT_IDS


class RingModelIntIdsDedupe(RingModel):
    schema = SCHEMA_INT_IDS
    dedupe = True


_stateful = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[*HealthCheck]
)
TestRingModel = RingModel.TestCase
TestRingModel.settings = _stateful
TestRingModelDedupe = RingModelDedupe.TestCase
TestRingModelDedupe.settings = _stateful
TestRingModelIntIds = RingModelIntIds.TestCase
TestRingModelIntIds.settings = _stateful
TestRingModelIntIdsDedupe = RingModelIntIdsDedupe.TestCase
TestRingModelIntIdsDedupe.settings = _stateful


@given(
    cap=st.integers(1, 20),
    batches=st.lists(st.lists(st.integers(0, 3), max_size=30), max_size=8),
)
@settings(max_examples=100, deadline=None)
def test_batches_match_appends(cap: int, batches: list[list[int]]) -> None:
    by_row, by_batch = make(cap), make(cap)
    t = 0
    for batch in batches:
        rows = []
        for step in batch:
            t += step
            rows.append(row(t))
        for r in rows:
            by_row.append(r)
        by_batch.extend(rows)
        assert by_row.table().equals(by_batch.table())
        assert by_row.total_appended == by_batch.total_appended
