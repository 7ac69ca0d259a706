"""`marketbus publish` runs on uvloop where it is installed (auto), asyncio when asked."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from marketbus.aio import loop_factory
from marketbus.settings import Settings
from marketbus_cli import _run


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_auto_and_uvloop_run_on_uvloop_asyncio_on_asyncio() -> None:
    assert _run(_loop_type(), "auto") is uvloop.Loop
    assert _run(_loop_type(), "uvloop") is uvloop.Loop
    assert _run(_loop_type(), "asyncio") is not uvloop.Loop
    assert loop_factory("asyncio") is None


def test_the_loop_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().loop == "auto"
    monkeypatch.setenv("MARKETBUS_LOOP", "asyncio")
    assert Settings().loop == "asyncio"
    monkeypatch.setenv("MARKETBUS_LOOP", "trio")
    with pytest.raises(ValueError, match="loop"):
        Settings()
