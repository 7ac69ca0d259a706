"""Render a saved bench run as the Markdown table docs/performance.md shows.

python -m bench.report [bench-results/<run>.json]      (default: the newest run)
"""

from __future__ import annotations

import glob
import json
import sys
from typing import Any


def _n(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def table(doc: dict[str, Any]) -> str:
    lines = [
        "| figure | min | median | unit | reference (same run) | ref median | ratio | target | met |",
        "|---|---:|---:|---|---|---:|---:|---|---|",
    ]
    for f in doc["figures"]:
        ratio = "-" if f.get("ratio") is None else f"{f['ratio']:.2f}x"
        met = {True: "yes", False: "**no**", None: "-"}[f.get("met")]
        if f.get("failed"):
            met = f"**FAILED**: {f['failed'][:80]}"
        lines.append(
            f"| {f['name']} | {_n(f['min'])} | {_n(f['median'])} | {f['unit']} | "
            f"{f.get('reference') or '-'} | {_n(f.get('ref_median'))} | {ratio} | "
            f"{f.get('target') or '-'} | {met} |"
        )
    return "\n".join(lines)


def main() -> None:
    runs = sorted(p for p in glob.glob("bench-results/*.json") if "soak" not in p)
    path = sys.argv[1] if len(sys.argv) > 1 else runs[-1]
    with open(path) as f:
        doc = json.load(f)
    print(f"Run `{path}`\n")
    print(table(doc))


if __name__ == "__main__":
    main()
