"""The throwaway virtualenv cryptofeed runs from (never a dependency of the project).

``bench-results/peer-venv-<version>/``: made on first use with a Python that version needs,
reused afterwards; what gets installed is printed. cryptofeed 3.x requires Python >= 3.13
(2.4.x was the last for 3.11): ``MARKETBUS_PEER_PYTHON`` names the interpreter, else
``python3.13`` on PATH or under pyenv.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CRYPTOFEED_VERSION = "3.0.1"
"""The cryptofeed measured (the newest on PyPI when the group was written, 2026-12)."""
PYTHON_MIN = (3, 13)


@dataclass(frozen=True)
class PeerEnv:
    python: str
    cryptofeed: str
    python_version: str
    packages: dict[str, str]


def _ok(python: str) -> str | None:
    """The interpreter's version if it runs and is new enough, else None."""
    code = "import sys; print('%d.%d.%d' % sys.version_info[:3])"
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    version = out.stdout.strip()
    major, minor, _ = (int(x) for x in version.split("."))
    return version if (major, minor) >= PYTHON_MIN else None


def find_python() -> str:
    candidates = [os.environ.get("MARKETBUS_PEER_PYTHON", ""), shutil.which("python3.13") or ""]
    home = os.path.expanduser("~/.pyenv/versions")
    candidates += sorted(glob.glob(f"{home}/3.1[3-9]*/bin/python3"), reverse=True)
    for c in candidates:
        if c and _ok(c):
            return c
    raise RuntimeError(
        f"cryptofeed {CRYPTOFEED_VERSION} needs Python >= 3.13 and none was found: install one "
        "(e.g. `pyenv install 3.13`) or point MARKETBUS_PEER_PYTHON at it"
    )


def _installed(python: Path) -> str | None:
    code = "import importlib.metadata as m; print(m.version('cryptofeed'))"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    return out.stdout.strip() if out.returncode == 0 else None


def _freeze(python: Path) -> dict[str, str]:
    out = subprocess.run(
        [str(python), "-m", "pip", "freeze", "--all"], capture_output=True, text=True, timeout=120
    )
    pairs = (line.split("==", 1) for line in out.stdout.splitlines() if "==" in line)
    return {name: version for name, version in pairs}


def ensure(root: str = "bench-results") -> PeerEnv:
    """The venv with cryptofeed ``CRYPTOFEED_VERSION`` (and its redis extra), made if missing."""
    venv = Path(root) / f"peer-venv-{CRYPTOFEED_VERSION}"
    python = venv / "bin" / "python"
    if not python.exists() or _installed(python) != CRYPTOFEED_VERSION:
        base = find_python()
        req = f"cryptofeed[redis]=={CRYPTOFEED_VERSION}"
        print(f"peer: installing {req} into {venv} (python {_ok(base)}, {base})", flush=True)
        subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", req],
            check=True,
            timeout=900,
        )
        packages = _freeze(python)
        print("peer: installed " + ", ".join(f"{k}=={v}" for k, v in sorted(packages.items())))
    else:
        packages = _freeze(python)
    return PeerEnv(str(python), CRYPTOFEED_VERSION, _ok(str(python)) or "?", packages)


__all__ = ["CRYPTOFEED_VERSION", "PeerEnv", "ensure", "find_python"]
