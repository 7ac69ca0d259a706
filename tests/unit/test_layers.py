"""The packages stay in layers: contract <- publisher, consumers, fake exchange <- CLI.

A small AST scan of every module (lazy imports inside functions and ``TYPE_CHECKING`` blocks
included, since they are imports all the same), so no dependency such as import-linter is needed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# package -> the packages of ours it may import. The middle layer does not import itself sideways
# today (the publisher never imports the consumers, nor either of them the fake exchange, which
# does not even need the contract: it speaks the exchanges' protocols); a new edge among them is a
# design change to make here on purpose, not by accident.
ALLOWED: dict[str, frozenset[str]] = {
    "marketbus": frozenset(),
    "publisher": frozenset({"marketbus"}),
    "consumers": frozenset({"marketbus"}),
    "fake_exchange": frozenset({"marketbus"}),
    # the archiver reads streams through the consumers' raw reads and writes the layout the
    # consumers' History reads (consumers.archive_layout): the writer sits above the readers
    "archive": frozenset({"marketbus", "consumers"}),
    "marketbus_cli": frozenset({"marketbus", "publisher", "consumers", "fake_exchange", "archive"}),
}
# packages of this repo that sit outside the layers: they may import any of them
OUTSIDE = frozenset({"tests", "bench", "tools"})


def imported_modules(source: str, module: str, is_package: bool) -> set[str]:
    """Absolute names of the modules ``source`` imports anywhere (relative imports resolved)."""
    out: set[str] = set()
    here = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                out.add(".".join([*base, *([node.module] if node.module else [])]))
            elif node.module:
                out.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            out.add(node.args[0].value)
    return out


def violations(package: str, files: dict[str, str]) -> list[str]:
    """``file: imports X`` for each import of ours ``package`` may not make (files: path -> text)."""
    ours = set(ALLOWED)
    bad = []
    for path, source in sorted(files.items()):
        parts = Path(path).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_package else parts)
        for name in sorted(imported_modules(source, module, is_package)):
            top = name.split(".")[0]
            if top in ours and top != package and top not in ALLOWED[package]:
                bad.append(f"{path}: imports {name}")
    return bad


def package_sources(package: str) -> dict[str, str]:
    return {
        str(p.relative_to(ROOT)): p.read_text()
        for p in sorted((ROOT / package).rglob("*.py"))
        if "__pycache__" not in p.parts
    }


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_the_layers_below_it(package: str) -> None:
    sources = package_sources(package)
    assert sources, f"{package}/ holds no module"
    assert violations(package, sources) == []


def test_every_package_of_the_repo_has_its_place() -> None:
    """A new top-level package must be put in a layer (or declared outside them) here."""
    found = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert found - set(ALLOWED) - OUTSIDE == set()
    assert set(ALLOWED) <= found


def test_the_cli_is_no_longer_inside_the_contract() -> None:
    assert not (ROOT / "marketbus" / "cli").exists()
    assert not (ROOT / "marketbus" / "cli.py").exists()


def test_the_scan_sees_the_cli_driving_the_layers_below() -> None:
    """The scan is not blind: the CLI's lazy imports of the publisher and the fake exchange count."""
    seen = set()
    for path, source in package_sources("marketbus_cli").items():
        module = ".".join(Path(path).with_suffix("").parts)
        seen |= {m.split(".")[0] for m in imported_modules(source, module, False)}
    assert {"marketbus", "publisher", "consumers", "fake_exchange"} <= seen


@pytest.mark.parametrize(
    "source",
    [
        "from marketbus_cli import app\n",
        "import publisher.app\n",
        "def f():\n    from consumers import Consumer\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import fake_exchange\n",
        "import importlib\nimportlib.import_module('publisher.sink')\n",
    ],
)
def test_an_import_up_the_stack_is_caught(source: str) -> None:
    assert violations("marketbus", {"marketbus/x.py": source}) != []


@pytest.mark.parametrize(
    ("package", "source"),
    [
        ("publisher", "from consumers.ringbuffer import RingBuffer\n"),
        ("consumers", "import publisher\n"),
        ("fake_exchange", "from publisher.normalize import normalize_trade\n"),
        ("publisher", "from marketbus_cli.subs import outcome\n"),
    ],
)
def test_a_new_edge_in_the_middle_layer_is_caught(package: str, source: str) -> None:
    assert violations(package, {f"{package}/x.py": source}) != []


def test_relative_imports_resolve_inside_their_package() -> None:
    assert imported_modules("from . import codec\n", "marketbus.keys", False) == {"marketbus"}
    assert imported_modules("from .. import keys\n", "marketbus.sub.mod", False) == {"marketbus"}
    assert imported_modules("from .okx import x\n", "fake_exchange", True) == {"fake_exchange.okx"}
    assert violations("publisher", {"publisher/x.py": "from .sink import Sink\n"}) == []
