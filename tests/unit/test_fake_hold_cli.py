"""The fake's registry and its two command lines: every exchange builds its sources and server
from the one table, and `--hold-until-subscribed` reaches the server as `registry.HOLD_S`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import fake_exchange.cli as fake_cli
from fake_exchange.__main__ import main
from fake_exchange.registry import FAKES, HOLD_S, fake, labels
from marketbus_cli import app

IDS = ["binance", "binanceusdm", "okx", "bybit", "coinbase"]


def test_the_table_holds_every_exchange_the_command_lines_offer() -> None:
    assert set(IDS) <= set(FAKES)
    assert fake_cli.EXCHANGES == tuple(FAKES)
    assert all(f.label and f.id in labels() and f.label in labels() for f in FAKES.values())
    with pytest.raises(ValueError, match="use one of binance, binanceusdm"):
        fake("nope")


@pytest.mark.parametrize("exchange", list(FAKES))  # an exchange added to the table too
def test_each_entry_builds_sources_its_server_takes_and_no_other(exchange: str) -> None:
    spec = FAKES[exchange]
    replay: Any = fake_cli.build_source(None, 5.0, True, None, 100.0, exchange)
    synthetic = fake_cli.build_source(None, 1.0, False, 3, 100.0, exchange)
    assert spec.accepts(replay) and spec.accepts(synthetic)
    assert (replay.speed, replay.loop) == (5.0, True)
    assert type(replay) is not type(synthetic)
    for source in (replay, synthetic):
        server = spec.build_server(source, "127.0.0.1", 0, HOLD_S)
        assert type(server) is spec.load(spec.server) and server.source is source
        assert server.hold.delay == HOLD_S and server.hold.subscribed_at is None
    assert spec.build_server(replay, "127.0.0.1", 0).hold.delay is None
    other = next(f for f in FAKES.values() if f.server != spec.server)
    stranger = other.build_source(None, 1.0, False, None, 1.0)
    assert not spec.accepts(stranger)
    with pytest.raises(ValueError, match=f"not a {spec.label} source"):
        spec.build_server(stranger, "127.0.0.1", 0)
    with pytest.raises(ValueError, match=f"not a {spec.label} source"):
        asyncio.run(fake_cli.serve(stranger, "127.0.0.1", 0, exchange))


def test_binance_venues_take_their_own_recording() -> None:
    spot: Any = fake_cli.build_source(None, 1.0, False, None, 1.0, "binance")
    usdm: Any = fake_cli.build_source(None, 1.0, False, None, 1.0, "binanceusdm")
    assert (spot.path.name, usdm.path.name) == ("BINANCE.jsonl", "BINANCE_FUTURES.jsonl")
    synthetic: Any = fake_cli.build_source(None, 1.0, False, 2, 1.0, "binanceusdm")
    assert synthetic.venue.futures


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """What `fake_exchange.cli.run` was called with (instead of serving)."""
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(fake_cli, "run", lambda *a: calls.append(a))
    return calls


def test_python_m_fake_exchange_passes_the_hold(
    runs: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("fake_exchange.__main__.run", fake_cli.run)
    main(["--exchange", "okx", "--speed", "0", "--hold-until-subscribed"])
    main(["--exchange", "coinbase", "--recording", "x.jsonl"])
    assert runs == [
        (None, 0.0, False, None, 1000.0, "127.0.0.1", 0, "okx", HOLD_S),
        (Path("x.jsonl"), 1.0, False, None, 1000.0, "127.0.0.1", 0, "coinbase", None),
    ]
    with pytest.raises(SystemExit):
        main(["--exchange", "nope"])


def test_marketbus_fake_exchange_passes_the_hold_and_lists_the_table(
    runs: list[tuple[Any, ...]],
) -> None:
    cli = CliRunner()
    r = cli.invoke(app, ["fake-exchange", "--exchange", "bybit", "--hold-until-subscribed"])
    assert r.exit_code == 0, r.output
    r = cli.invoke(app, ["fake-exchange", "--exchange", "binanceusdm", "--synthetic", "4"])
    assert r.exit_code == 0, r.output
    assert runs == [
        (None, 1.0, False, None, 1000.0, "127.0.0.1", 0, "bybit", HOLD_S),
        (None, 1.0, False, 4, 1000.0, "127.0.0.1", 0, "binanceusdm", None),
    ]
    r = cli.invoke(app, ["fake-exchange", "--exchange", "nope"])
    assert r.exit_code == 2 and ", ".join(FAKES) in r.output
    r = cli.invoke(app, ["fake-exchange", "--help"], env={"COLUMNS": "400"})
    assert r.exit_code == 0
    assert "--hold-until-subscribed" in r.output
    assert all(f"{f.id} ({f.label})" in r.output for f in FAKES.values())
