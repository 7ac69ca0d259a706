"""The peer table: one row per (load, publisher), as printed by ``python -m bench`` and as
docs/performance.md shows it.

    python -m bench.peer_table [bench-results/<run>.json]   (default: the newest run with it)
"""

from __future__ import annotations

import glob
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

COLUMNS = (
    "load",
    "publisher",
    "records/s",
    "CPU µs/record (publisher)",
    "CPU µs/record (redis)",
    "peak RSS MB",
    "B/entry",
    "lost (of sent)",
    "records/s vs cryptofeed",
    "CPU/record vs cryptofeed",
    "fake sent/s",
)


def _num(v: Any, digits: int = 1) -> str:
    if not isinstance(v, int | float) or v != v:  # None, or nan
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def _ratio(v: Any) -> str:
    return "-" if not isinstance(v, int | float) else f"{v:.2f}x"


def cells(row: Mapping[str, Any]) -> list[str]:
    """One table row as text."""
    if row.get("error"):
        return [row["load"], row["publisher"], f"error: {row['error'][:60]}"] + ["-"] * 8
    lost = f"{row['lost']:,} of {row['sent']:,}"
    if row["lost"] and row["sent"]:
        lost += f" ({100 * row['lost'] / row['sent']:.0f}%)"
    return [
        row["load"],
        row["publisher"],
        _num(row["records_s"], 0),
        _num(row["pub_us"]),
        _num(row["redis_us"]),
        _num(row["peak_rss_mb"], 0),
        _num(row["bytes_per_entry"], 0),
        lost,
        _ratio(row.get("ratio_rate")),
        _ratio(row.get("ratio_cpu")),
        _num(row["fake_rate"], 0) + _waited(row),
    ]


def _waited(row: Mapping[str, Any]) -> str:
    """Under overload: the share of the time the fake waited for the client to read (the
    client set the pace, not the fake)."""
    share = row.get("fake_waited_share")
    return "" if share is None else f" (waited {100 * share:.0f}%)"


def markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    out = ["| " + " | ".join(COLUMNS) + " |", "|---|---|" + "---:|" * (len(COLUMNS) - 2)]
    out += ["| " + " | ".join(cells(r)) + " |" for r in rows]
    return "\n".join(out)


def rows_of(doc: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    for f in doc.get("figures", []):
        rows = f.get("notes", {}).get("peer_rows")
        if rows is not None:
            return list(rows)
    return None


def main() -> None:
    paths = [sys.argv[1]] if len(sys.argv) > 1 else sorted(glob.glob("bench-results/*.json"))
    for path in reversed(paths):
        with open(path) as f:
            doc = json.load(f)
        rows = rows_of(doc)
        if rows is not None:
            print(f"Run `{doc.get('timestamp', path)}`\n")
            print(markdown(rows))
            return
    raise SystemExit("no run with the peer table found")


if __name__ == "__main__":
    main()
