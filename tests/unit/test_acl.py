"""``marketbus.acl``: the roles' commands follow what the code sends, and their rules render."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from marketbus.acl import (
    ARCHIVE_STATUS,
    CONTROL,
    FEATURES,
    KEY,
    ROLES,
    STATUS,
    STREAMS,
    SUBS,
    Role,
    acl_rules,
    configured_keys,
    needs,
)
from marketbus.settings import ExchangeSettings, Settings

ROOT = Path(__file__).resolve().parents[2]

# redis-py method -> the ACL command it sends
METHODS = {
    "ping": "ping", "xadd": "xadd", "xrevrange": "xrevrange", "xrange": "xrange",
    "xread": "xread", "xreadgroup": "xreadgroup", "xack": "xack", "xautoclaim": "xautoclaim",
    "xgroup_create": "xgroup|create", "xlen": "xlen", "xtrim": "xtrim", "xdel": "xdel",
    "xpending": "xpending", "xpending_range": "xpending", "xclaim": "xclaim",
    "xinfo_stream": "xinfo|stream", "xinfo_groups": "xinfo|groups", "hset": "hset",
    "hget": "hget", "hgetall": "hgetall", "hdel": "hdel", "expire": "expire",
    "pexpire": "pexpire", "scan_iter": "scan", "scan": "scan", "delete": "del", "set": "set",
    "get": "get", "type": "type", "eval": "eval", "evalsha": "evalsha", "publish": "publish",
    "info": "info", "config_get": "config|get", "exists": "exists",
}  # fmt: skip
# calls on a Redis client or pipeline that send no command of their own
NOT_COMMANDS = {"pipeline", "execute", "aclose", "close", "send", "reply", "pack_command"}
# raw commands (hand-packed, or sent through ``raw_command``/``ReplyPipe``)
RAW = re.compile(r"\b(X[A-Z]{2,}|HSET|HGETALL|EXPIRE|PING|SCAN)\b")


def _receiver(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def commands_sent(package: str, paths: list[Path] | None = None) -> set[str]:
    """The Redis commands the code of ``package`` (or of ``paths``) sends (ACL names)."""
    found: set[str] = set()
    for path in paths if paths is not None else sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)
        }  # a string alone as a statement: documentation, not a command
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and re.search(r"redis$|^pipe$", _receiver(node.func.value))
            ):
                method = node.func.attr
                if method in NOT_COMMANDS:
                    continue
                assert method in METHODS, f"{path}: {method}(): add it to METHODS (and the roles)"
                found.add(METHODS[method])
            elif isinstance(node, ast.Constant) and id(node) not in docstrings:
                text = node.value.decode("latin-1") if isinstance(node.value, bytes) else node.value
                if isinstance(text, str):
                    found |= {m.lower() for m in RAW.findall(text)}
    return found


def test_the_publisher_role_allows_every_command_the_publisher_sends_and_no_other() -> None:
    sent = commands_sent("publisher")
    assert "xadd" in sent and "hset" in sent  # the scan is not blind
    assert sent == {n.command for n in ROLES[Role.PUBLISHER]}


def test_the_consumer_role_allows_every_command_the_consumers_send_and_no_other() -> None:
    sent = commands_sent("consumers")
    assert "xreadgroup" in sent and "xautoclaim" in sent
    expected = {n.command for n in ROLES[Role.CONSUMER]}
    # a command spelled in a script or a raw tuple whose subcommand is a variable reads bare
    bare = {c for c in sent if "|" not in c and any(e.startswith(c + "|") for e in expected)}
    assert sent - bare <= expected and expected - {"multi", "exec"} <= sent | {
        e for e in expected if e.split("|")[0] in bare
    }


# what `marketbus archive` runs (marketbus_cli/history_cmds.py): the archiver, its status
# writer, its endpoints, compaction and retention; other commands of the package (backfill,
# replay) are other processes with other needs
ARCHIVER_ENTRY = ("archiver", "status", "metrics", "compact")


def package_closure(package: str, entry: tuple[str, ...]) -> list[Path]:
    """The modules of ``package`` that ``entry`` imports, directly or not."""
    todo = [ROOT / package / f"{m}.py" for m in entry]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.startswith(f"{package}."):
                    todo.append(ROOT / package / (name.split(".")[1] + ".py"))
    return sorted(seen)


def test_the_archive_role_allows_every_command_the_archiver_sends_and_no_other() -> None:
    modules = package_closure("archive", ARCHIVER_ENTRY)
    assert {p.stem for p in modules} >= {*ARCHIVER_ENTRY, "store", "decode", "config"}
    sent = commands_sent("archive", modules)
    assert "xreadgroup" in sent and "xack" in sent and "hset" in sent
    assert sent == {n.command for n in ROLES[Role.ARCHIVE]}
    writes = {"xadd", "xtrim", "xdel", "hset", "del", "set", "expire"}
    for need in ROLES[Role.ARCHIVE]:  # it never changes the data it archives: only its status
        if need.command in writes:
            assert need.pattern == ARCHIVE_STATUS and need.optional, need


@pytest.mark.parametrize("role", list(Role))
def test_each_need_names_its_key_where_it_has_a_pattern(role: Role) -> None:
    for need in ROLES[role]:
        assert (KEY in need.probe) == (need.pattern is not None), need
        assert need.probe[0].lower() == need.command.split("|")[0], need
        assert need.args("md:{binance:BTC/USDT}:trades").count(KEY) == 0
        assert need.why


def test_acl_rules_grant_exactly_the_role() -> None:
    assert acl_rules(Role.PUBLISHER, optional=False) == (
        "resetkeys ~md:* ~mb:status:* -@all +ping +xadd +xrevrange +hset +expire"
    )
    full = acl_rules(Role.PUBLISHER).split()
    assert {"~mb:ctl:*", "~mb:subs:*", "+xread", "+hgetall", "+info"} <= set(full)
    assert full.count("+xrevrange") == 1  # once, though two needs send it
    consumer = acl_rules("consumer")
    assert "+xgroup|create" in consumer and "+xadd" not in consumer
    archive = acl_rules(Role.ARCHIVE)
    assert archive.startswith("resetkeys ~md:* ~mb:status:archive:* -@all ")
    assert "+xack" in archive and "+xautoclaim" not in archive and "+hset" in archive
    assert acl_rules(Role.ARCHIVE, optional=False) == (
        "resetkeys ~md:* -@all +scan +exists +xgroup|create +xreadgroup +xack +xpending "
        "+xinfo|groups"
    )


def test_needs_without_the_optional_ones() -> None:
    assert all(not n.optional for n in needs(Role.PUBLISHER, optional=False))
    assert len(needs(Role.PUBLISHER)) > len(needs(Role.PUBLISHER, optional=False))
    features = {n.feature for n in needs(Role.PUBLISHER)} - {None}
    assert features == {"control", "memory-check"}
    assert {n.feature for n in needs(Role.ARCHIVE)} - {None} == {"archive-status"}
    every = {n.feature for role in Role for n in needs(role)} - {None}
    assert every == set(FEATURES)


def test_configured_keys_are_the_keys_the_publisher_would_touch() -> None:
    s = Settings(
        exchanges=(
            ExchangeSettings(name="binance", symbols=("btc-usdt", "BTC/USDT", "ETHUSDT")),
            ExchangeSettings(name="okx", symbols=("BTC/USDT",), channels=("book",)),
        ),
        instance="eu",
    )
    keys = configured_keys(s)
    assert keys[STREAMS] == (
        "md:{binance:BTC/USDT}:ticker",
        "md:{binance:BTC/USDT}:trades",
        "md:{binance:ETHUSDT}:ticker",
        "md:{binance:ETHUSDT}:trades",
        "md:{okx:BTC/USDT}:book",
    )
    assert keys[STATUS] == ("mb:status:binance@eu", "mb:status:okx@eu")
    assert keys[CONTROL] == ("mb:ctl:{binance@eu}", "mb:ctl:{okx@eu}")
    assert keys[SUBS] == ("mb:subs:{binance@eu}", "mb:subs:{okx@eu}")


def test_a_symbol_that_cannot_name_a_key_is_left_to_the_markets_check() -> None:
    s = Settings(exchanges=(ExchangeSettings(symbols=("BTC/USDT", "{bad}")),))
    assert all("bad" not in k for k in configured_keys(s)[STREAMS])
