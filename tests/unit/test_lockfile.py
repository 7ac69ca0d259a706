"""requirements.lock: hashed, in step with pyproject.toml, and the image's runtime subset."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tools.lockfile import Pin, diff_installed, main, pins_here, read_lock, runtime_closure

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _direct() -> list[Requirement]:
    project = PYPROJECT["project"]
    reqs = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    reqs += PYPROJECT["dependency-groups"]["build"]
    return [Requirement(r) for r in reqs]


def test_every_pin_is_exact_and_hashed() -> None:
    pins = read_lock(LOCK)
    assert len(pins) > 40
    for pin in pins:
        assert pin.hashes, f"{pin.name} has no hash: pip --require-hashes would refuse it"
        assert all(h.startswith("sha256:") for h in pin.hashes), pin.name


def test_every_direct_dependency_is_locked_within_its_range() -> None:
    """A dependency added to or re-ranged in pyproject.toml without `make lock` fails here."""
    locked = pins_here(read_lock(LOCK))
    for req in _direct():
        name = canonicalize_name(req.name)
        assert name in locked, f"{req} is not in requirements.lock: run make lock"
        assert req.specifier.contains(locked[name], prereleases=True), (
            f"{name} {locked[name]} is outside {req.specifier}: run make lock"
        )


def test_the_venv_holds_exactly_the_lock() -> None:
    """`make venv` installs the lock as it is: nothing installed differs from it."""
    assert diff_installed(read_lock(LOCK)) == []


def test_every_range_has_a_ceiling_below_the_next_major() -> None:
    for req in [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]:
        ops = {s.operator for s in req.specifier}
        assert ">=" in ops and "<" in ops, f"{req}: a tested floor and a ceiling, please"


def test_the_runtime_subset_has_no_test_tools(capsys: object) -> None:
    needed = runtime_closure()
    for name in ("ccxt", "pyarrow", "redis", "hiredis", "pydantic", "structlog", "aiohttp"):
        assert name in needed, name
    for name in ("pytest", "mypy", "ruff", "hypothesis", "fakeredis", "uv", "setuptools"):
        assert name not in needed, name
    assert main(["lockfile.py", "runtime", str(LOCK)]) == 0
    out = capsys.readouterr().out.splitlines()  # type: ignore[attr-defined]
    names = {line.split("==")[0] for line in out}
    assert names == {n for n in needed if n != "marketbus"}
    assert all("--hash=sha256:" in line for line in out)


def test_markers_choose_one_pin_per_interpreter() -> None:
    pins = [
        Pin("numpy", "2.4.6", "python_full_version < '3.12'", ["sha256:a"]),
        Pin("numpy", "2.5.5", "python_full_version >= '3.12'", ["sha256:b"]),
    ]
    assert len(pins_here(pins)) == 1


def test_the_image_installs_from_the_lock_with_hashes() -> None:
    docker = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes -r requirements.lock" in docker
    assert "--require-hashes -r /wheels/runtime.lock" in docker
    assert "tools/lockfile.py runtime requirements.lock" in docker
    make = (ROOT / "Makefile").read_text()
    assert "--require-hashes -r $(LOCK)" in make
