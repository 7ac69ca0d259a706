"""Small asyncio helpers for clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("marketbus.aio")


def loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop factory for ``kind`` (``auto``, ``asyncio``, ``uvloop``); None: asyncio's.

    ``auto`` takes uvloop where it is installed (Linux and macOS CPython). Asking for
    ``uvloop`` where it is not is a configuration error, said by name.
    """
    if kind == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if kind == "uvloop":
            from marketbus.errors import ConfigError

            raise ConfigError("loop: 'uvloop' is not installed here; use auto or asyncio") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def cancel_and_wait(
    task: asyncio.Task[object] | asyncio.Task[None],
    timeout: float = 2.0,
    on_stuck: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Cancel ``task`` and wait for it, at most ``timeout`` seconds per attempt.

    A cancellation can be swallowed deep inside a library (a blocking Redis read whose
    timeout fires at the same moment); then ``on_stuck`` (e.g. closing the sockets)
    breaks the wait and we cancel once more. Never hangs a shutdown.
    """
    if task.done():
        _report(task)
        return
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        log.warning("task_ignored_cancel", task=task.get_name())
        if on_stuck is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(on_stuck(), timeout)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            log.error("task_left_running", task=task.get_name())
            return
    _report(task)


def _report(task: asyncio.Task[object] | asyncio.Task[None]) -> None:
    """Log how a task we stopped had ended, if it ended by an error: never dropped silently."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error(
            "task_failed",
            task=task.get_name(),
            error=f"{type(exc).__name__}: {exc}"[:300],
            exc_info=exc,
        )
