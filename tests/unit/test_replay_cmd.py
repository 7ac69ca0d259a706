"""``marketbus replay``: its arguments, and the errors said before Redis is touched."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from marketbus.errors import ConfigError
from marketbus_cli import app
from marketbus_cli.replay_cmd import parse_speed, parse_time, register

DAY = 86_400_000
NOV30 = 1_764_460_800_000  # 2025-11-30T00:00:00Z


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2025-11-30", NOV30),
        ("2025-11-30T00:00:01Z", NOV30 + 1000),
        ("2025-11-30 12:00", NOV30 + DAY // 2),
        ("2025-11-30T01:00:00+01:00", NOV30),
        ("2025-11-30T00:00:00.123Z", NOV30 + 123),
        (" 1764460800000 ", NOV30),
    ],
)
def test_times_are_iso_utc_or_ms(text: str, ms: int) -> None:
    assert parse_time(text, "--start") == ms


@pytest.mark.parametrize("text", ["yesterday", "2025-13-01", "", "-5"])
def test_a_bad_time_names_the_option(text: str) -> None:
    with pytest.raises(ConfigError, match="--end"):
        parse_time(text, "--end")


def test_speed_is_a_positive_factor_or_max() -> None:
    assert parse_speed("max") is None
    assert parse_speed(" MAX ") is None
    assert parse_speed("10") == 10.0
    assert parse_speed("2.5x") == 2.5
    for bad in ("0", "-1", "fast", "inf", "nan", "x"):
        with pytest.raises(ConfigError, match="--speed"):
            parse_speed(bad)


def invoke(tmp_path: Path, *args: str) -> tuple[int, str]:
    base = ["replay", "--dir", str(tmp_path), "--redis-url", "redis://127.0.0.1:1/0"]
    res = CliRunner().invoke(app, [*base, *args])
    return res.exit_code, res.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--start", "2025-11-30", "--end", "2025-11-30", "--namespace", "a"], "before end"),
        (["--start", "2025-11-30", "--end", "soon", "--namespace", "a"], "--end"),
        (["--start", "0", "--end", "9", "--namespace", "no spaces"], "--namespace"),
        (["--start", "0", "--end", "9", "--namespace", "a", "--speed", "0"], "--speed"),
        (["--start", "0", "--end", "9", "--namespace", "a", "--markets", "BTCUSDT"], "market"),
        (["--start", "0", "--end", "9", "--namespace", "a", "--channels", "news"], "--channels"),
    ],
)
def test_usage_errors_exit_2_before_redis_is_touched(
    tmp_path: Path, args: list[str], says: str
) -> None:
    code, output = invoke(tmp_path, *args)
    assert code == 2, output
    assert "error:" in output and says in output and "Traceback" not in output


def test_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    code, output = invoke(tmp_path / "nope", "--start", "0", "--end", "9", "--namespace", "a")
    assert code == 2 and "no such directory" in output


def test_an_empty_range_says_so_and_exits_1(tmp_path: Path) -> None:
    # nothing in range: Redis (an unreachable port here) is never contacted
    code, output = invoke(tmp_path, "--start", "0", "--end", "9", "--namespace", "a")
    assert code == 1, output
    assert "nothing to replay" in output and "namespace was left as it was" in output


def test_register_adds_the_command() -> None:
    sub = typer.Typer()
    register(sub)
    assert [c.name for c in sub.registered_commands] == ["replay"]
    assert "replay" in {c.name for c in app.registered_commands}
