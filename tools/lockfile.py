"""Read requirements.lock: the pins, their hashes, and which of them the runtime needs.

Used by `make test-latest`/`test-lowest` (what differs from the lock), by the Dockerfile (the
runtime-only subset of the lock, so the image holds no test tools), and by the tests that keep
the lock in step with pyproject.toml. Standard library plus ``packaging`` (pinned in the lock).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

_PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>[^\s;\\]+)\s*(?:;\s*(?P<marker>[^\\]+?))?\s*\\?$"
)


@dataclass
class Pin:
    name: str
    version: str
    marker: str | None
    hashes: list[str] = field(default_factory=list)

    def applies(self) -> bool:
        """Whether this pin is for the running interpreter and platform."""
        return self.marker is None or Marker(self.marker).evaluate()


def read_lock(path: Path) -> list[Pin]:
    """Every pin of a hashed requirements file (uv/pip-tools layout)."""
    pins: list[Pin] = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--hash="):
            if not pins:
                raise ValueError(f"{path}: a hash before any requirement")
            pins[-1].hashes.append(line.removeprefix("--hash=").rstrip("\\ ").strip())
            continue
        m = _PIN.match(line)
        if m is None:
            raise ValueError(f"{path}: not a pinned requirement: {line!r}")
        marker = m.group("marker")
        pins.append(
            Pin(
                canonicalize_name(m.group("name")),
                m.group("version"),
                marker.strip() if marker else None,
            )
        )
    return pins


def pins_here(pins: list[Pin]) -> dict[str, str]:
    """name -> version of the pins that apply to this interpreter and platform."""
    return {p.name: p.version for p in pins if p.applies()}


def runtime_closure(dist: str = "marketbus") -> set[str]:
    """Names of the installed distributions ``dist`` needs at run time (no extras), itself included."""
    seen: set[str] = set()
    todo = [canonicalize_name(dist)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in metadata.requires(name) or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            todo.append(canonicalize_name(req.name))
            # an extra asked for by name (redis[hiredis]) brings that extra's requirements
            for extra in req.extras:
                for sub in metadata.requires(req.name) or []:
                    sreq = Requirement(sub)
                    if sreq.marker is not None and sreq.marker.evaluate({"extra": extra}):
                        if not sreq.marker.evaluate({"extra": ""}):
                            todo.append(canonicalize_name(sreq.name))
    return seen


def diff_installed(pins: list[Pin]) -> list[str]:
    """Lines naming each installed distribution whose version is not the locked one."""
    locked = pins_here(pins)
    out: list[str] = []
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        if name in locked and locked[name] != dist.version:
            out.append(f"  {name}: {locked[name]} (lock) -> {dist.version}")
    return sorted(out)


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "runtime":
        # the lock's lines for the runtime closure of the installed project
        needed = runtime_closure() - {"marketbus"}
        for pin in read_lock(Path(argv[2])):
            if pin.name in needed and pin.applies():
                print(f"{pin.name}=={pin.version} " + " ".join(f"--hash={h}" for h in pin.hashes))
        return 0
    if len(argv) == 2:
        lines = diff_installed(read_lock(Path(argv[1])))
        print("\n".join(lines) if lines else "  none")
        return 0
    print("usage: lockfile.py LOCK | lockfile.py runtime LOCK", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
